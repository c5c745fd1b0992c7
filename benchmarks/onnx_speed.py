"""Latency of onnxruntime against torch on this CPU, one thread, paired runs: the shipped twin's tower (dlib's
ResNet, the fused inference copy that Verifier runs) on aligned LFW chips at batch 1 and 8, dlib's MMOD
detector network on the canvas of a 250x250 LFW photo, and the whole `Verifier.verify` of two LFW photos
(detection, landmarks and alignment included; only the tower changes runtime there).

Paired: each repeat times torch then onnxruntime (the order alternating) on the same input, so both see the
same machine load; reported are p50/p90 of each and the median of the per-repeat ratios (torch / onnx).

    python benchmarks/onnx_speed.py --repeats 30
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from common import command, data_root, machine, write_result

from siamface.checkpoint import load_model
from siamface.data import load_image, read_lfw_pairs
from siamface.export import mmod_onnx, parity_inputs, session, tower_onnx
from siamface.faces.mmod import MMODDetector
from siamface.verify import Verifier, inference_net


def paired(torch_call: Callable[[], object], onnx_call: Callable[[], object], repeats: int,
           warmup: int = 3) -> dict[str, float | int]:
    """Milliseconds of both calls, `repeats` pairs after `warmup`, the order alternating each repeat."""
    for _ in range(warmup):
        torch_call()
        onnx_call()
    t_ms, o_ms = [], []
    for k in range(repeats):
        for which in ((0, 1) if k % 2 == 0 else (1, 0)):
            t0 = time.perf_counter()
            (torch_call if which == 0 else onnx_call)()
            (t_ms if which == 0 else o_ms).append(1000 * (time.perf_counter() - t0))
    t, o = np.array(t_ms), np.array(o_ms)
    return {"repeats": repeats, "torch_p50_ms": round(float(np.percentile(t, 50)), 3),
            "torch_p90_ms": round(float(np.percentile(t, 90)), 3),
            "onnx_p50_ms": round(float(np.percentile(o, 50)), 3), "onnx_p90_ms": round(float(np.percentile(o, 90)), 3),
            "speedup_median_of_ratios": round(float(np.median(t / o)), 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--name", default="onnx_speed", help="benchmarks/results/<name>.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    lfw = data_root() / "lfw"
    pairs = [(q.a, q.b) for q in read_lfw_pairs(lfw / "pairsDevTest.txt", lfw / "deepfunneled")][:8]
    loaded = load_model("dlib-twin")
    net = inference_net(loaded.model).eval()
    tower = session(tower_onnx(loaded.model), args.threads)
    chips = parity_inputs(loaded, [a for a, _ in pairs])  # 8 aligned, normalised chips
    rows = {}
    with torch.no_grad():
        for n in (1, 8):
            x = chips[:n]
            rows[f"tower_batch{n}"] = paired(lambda x=x: net.embed(x),
                                             lambda x=x: tower.run(None, {"images": x.numpy()}), args.repeats)
        detector = MMODDetector.load()
        mmod = session(mmod_onnx()[0], args.threads)
        rgb = np.ascontiguousarray(load_image(pairs[0][0], channels=3).transpose(1, 2, 0))
        canvas = np.ascontiguousarray(detector.canvas(rgb)[0])[None].astype(np.float32)
        rows["mmod_network"] = paired(lambda: detector.scores(canvas), lambda: mmod.run(None, {"canvas": canvas}),
                                      args.repeats)
    a, b = pairs[1]
    v_torch, v_onnx = Verifier("dlib-twin"), Verifier("dlib-twin", runtime="onnx")
    v_onnx.net.session = tower  # the session made above, with --threads (the cached one is equivalent)
    rows["verify_two_photos"] = paired(lambda: v_torch.verify(a, b), lambda: v_onnx.verify(a, b), args.repeats)
    write_result(args.name, {
        "benchmark": "onnxruntime vs torch, paired, warm; tower = dlib's ResNet (fused) on 150x150 aligned LFW "
                     "chips; mmod = the detector network on one LFW photo's pyramid canvas; verify = "
                     "Verifier.verify of two 250x250 LFW photos, detection included (MMOD stays torch)",
        "command": command(), "threads": args.threads, "results": rows,
        "canvas_shape": list(canvas.shape), "machine": machine()})


if __name__ == "__main__":
    main()
