"""How fast siamface trains and answers, against a plain implementation and against the machine itself.

In one run on one machine:
  (a) training pairs/s of each model in the plain reference mode (benchmarks/reference.py: fp32, NCHW, one tower
      pass per side, per-image augmentation in a Python loop) and in siamface's default mode
      (siamface.step.Step.pair_loss: bf16 autocast, channels_last, each distinct image embedded once,
      batched augmentation), batch 128, median of --steps timed steps after --warmup; the ratio; and with
      --compile the default mode with torch.compile(model.embed), reported separately;
  (b) the measured matmul peak of the machine (fp32 and bf16 torch.matmul of square matrices), GFLOP/s;
  (c) the FLOPs of one training step, counted from the layer shapes (conv and linear multiply-adds, x2 for
      FLOPs, x3 for forward + backward, times the images embedded per step), and the fraction of the bf16
      peak the default step reaches;
  (d) the time of the 400-trial 20-way one-shot evaluation on the official Omniglot runs (untrained koch2015
      and conv4) and how many embeddings it computes;
  (e) warm verify latency (p50/p99) for one pair with a saved koch2015 and a stand-in calibration;
  (f) peak memory (ru_maxrss).

Training batches use synthetic images, every image distinct (as on Omniglot's 11.5k training images), so the
default mode gains nothing from repeated images here. Both modes distort every image (the paper's affine).

    python benchmarks/speed.py                      # full run -> benchmarks/results/speed.json
    python benchmarks/speed.py --quick              # smoke run (seconds) -> benchmarks/results/speed_quick.json
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import command, data_root, machine, write_result
from reference import reference_step
from torch import nn

from siamface.card import Calibration, ModelCard
from siamface.checkpoint import save_model
from siamface.config import ModelConfig, TrainConfig
from siamface.data import read_omniglot_runs
from siamface.embed import embed_batches
from siamface.evaluate import evaluate_oneshot
from siamface.models import SiameseNet, create_model, default_preprocess
from siamface.optim import make_optimizer
from siamface.step import Step
from siamface.verify import Verifier

TARGETS = {"koch2015_speedup_over_reference": 4.0, "koch2015_fraction_of_bf16_peak": 0.5}


# ---- (c) FLOPs from the layer shapes --------------------------------------------------------------------------

def layer_macs(model: SiameseNet) -> list[dict[str, Any]]:
    """Multiply-adds of each conv / linear layer of the tower for one image (shapes read from a dry run)."""
    rows: list[dict[str, Any]] = []

    def hook(name: str) -> Any:
        def record(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            if isinstance(mod, nn.Conv2d):
                kh, kw = mod.kernel_size
                per_output = mod.in_channels // mod.groups * kh * kw
            else:
                per_output = mod.in_features  # type: ignore[assignment]
            rows.append({"layer": name, "output": list(out.shape[1:]), "macs": int(out[0].numel() * per_output)})
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.tower.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model.embed(torch.zeros(1, model.in_channels, model.input_size, model.input_size))
    model.train(was_training)
    for h in handles:
        h.remove()
    return rows


def step_flops(model: SiameseNet, images: int, pairs: int) -> float:
    """FLOPs of one training step: 2 x MACs per image x 3 (forward + backward) x images, plus the head."""
    per_image = sum(r["macs"] for r in layer_macs(model))
    return 2.0 * 3.0 * (per_image * images + model.embed_dim * pairs)


# ---- (b) the machine's matmul peak ----------------------------------------------------------------------------

def matmul_gflops(dtype: torch.dtype, n: int, reps: int) -> dict[str, float]:
    """Best and median GFLOP/s of an n x n x n torch.matmul in dtype."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(dtype) for _ in range(2))
    torch.matmul(a, b)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - t0)
    flop = 2.0 * n**3
    return {"size": n, "peak_gflops": round(flop / min(times) / 1e9, 1),
            "median_gflops": round(flop / float(np.median(times)) / 1e9, 1)}


# ---- (a) training throughput ----------------------------------------------------------------------------------

def _batches(n_images: int, batch: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """Random [i, j, same] rows over distinct images (no image twice in a batch)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        perm = rng.permutation(n_images)[: 2 * batch]
        out.append(np.stack([perm[:batch], perm[batch:], rng.integers(0, 2, batch)], 1).astype(np.int64))
    return out


def time_training(name: str, mode: str, batch: int, steps: int, warmup: int) -> dict[str, Any]:
    """Median step time of one mode: 'reference', 'default' or 'compiled' (default + torch.compile)."""
    pre = default_preprocess(name)
    torch.manual_seed(0)
    model = create_model(name, preprocess=pre)
    cfg = TrainConfig(regime="koch", batch_size=batch)
    embed = None
    if mode == "reference":
        cfg = replace(cfg, bf16=False, channels_last=False)
    else:
        model = model.to(memory_format=torch.channels_last)
        embed = torch.compile(model.embed) if mode == "compiled" else None
    opt = make_optimizer(model, cfg)
    images = torch.randint(0, 256, (2 * batch, pre.channels, pre.size, pre.size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    model.train()
    times = []
    for rows in _batches(len(images), batch, warmup + steps):
        t0 = time.perf_counter()
        if mode == "reference":
            reference_step(model, opt, images, rows, pre, cfg, gen)
        else:
            loss = Step(model, images, pre, cfg, embed=embed).pair_loss(rows, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
        times.append(time.perf_counter() - t0)
    dt = float(np.median(times[warmup:]))
    flops = step_flops(model, images=2 * batch, pairs=batch)
    return {"pairs_per_second": round(batch / dt, 2), "step_seconds": round(dt, 4),
            "step_gflop": round(flops / 1e9, 1), "achieved_gflops": round(flops / dt / 1e9, 1),
            "first_step_seconds": round(times[0], 3), "timed_steps": steps}


def training_section(names: list[str], batch: int, steps: int, warmup: int, compiled: bool,
                     peaks: dict[str, dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        modes = ["reference", "default"] + (["compiled"] if compiled else [])
        res = {m: time_training(name, m, batch, steps, warmup) for m in modes}
        res["reference"]["fraction_of_fp32_peak"] = round(res["reference"]["achieved_gflops"]
                                                          / peaks["fp32"]["peak_gflops"], 3)
        for m in modes[1:]:
            res[m]["fraction_of_bf16_peak"] = round(res[m]["achieved_gflops"] / peaks["bf16"]["peak_gflops"], 3)
            res[m]["speedup_over_reference"] = round(res[m]["pairs_per_second"]
                                                     / res["reference"]["pairs_per_second"], 2)
        out[name] = res
        print(f"[speed] {name}: " + ", ".join(f"{m} {r['pairs_per_second']} pairs/s" for m, r in res.items()),
              flush=True)
    return out


# ---- (d) one-shot evaluation, (e) verify latency --------------------------------------------------------------

def oneshot_section(n_tasks: int) -> dict[str, Any]:
    """evaluate_oneshot on the official runs (decode + embed + score) with untrained models."""
    tasks = read_omniglot_runs(data_root() / "omniglot" / "all_runs")[:n_tasks]
    out: dict[str, Any] = {"trials": len(tasks), "naive_tower_passes": 2 * sum(len(t.candidates) for t in tasks)}
    for name in ("koch2015", "conv4"):
        pre = default_preprocess(name, invert=True)
        torch.manual_seed(0)
        model = create_model(name, preprocess=pre)
        t0 = time.perf_counter()
        res = evaluate_oneshot(model, pre, tasks)
        out[name] = {"seconds": round(time.perf_counter() - t0, 3), "embeddings": res["embeddings"],
                     "n_way": res["n_way"], "accuracy_untrained": res["oneshot_accuracy"]}
    return out


def _percentiles(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "calls": len(ms)}


def verify_section(calls: int, warmup: int = 3) -> dict[str, Any]:
    """Warm latency of Verifier.verify on two image files, and of embed + score on decoded inputs."""
    pre = default_preprocess("koch2015", invert=True)
    torch.manual_seed(0)
    model = create_model("koch2015", preprocess=pre)
    run01 = data_root() / "omniglot" / "all_runs" / "run01"
    a, b = sorted((run01 / "training").glob("*.png"))[:2]
    with tempfile.TemporaryDirectory() as tmp:
        cal = Calibration.from_dict({"threshold": 0.5, "source": "stand-in threshold for the latency benchmark"},
                                    "calibration")
        save_model(Path(tmp), model, ModelCard(Path(tmp), ModelConfig("koch2015"), pre, "", calibration=cal))
        v = Verifier(tmp)
        full, core = [], []
        x, _ = v.inputs([a, b])
        for k in range(warmup + calls):
            t0 = time.perf_counter()
            v.verify(a, b)
            t1 = time.perf_counter()
            emb = embed_batches(v.loaded.model, x, v.loaded.preprocess)
            v.probability(emb[:1], emb[1:])
            t2 = time.perf_counter()
            if k >= warmup:
                full.append(1000 * (t1 - t0))
                core.append(1000 * (t2 - t1))
    return {"model": "koch2015 (untrained, fp32)", "verify_files": _percentiles(full),
            "embed_and_score_decoded": _percentiles(core)}


# ---- main -----------------------------------------------------------------------------------------------------

def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: batch 8, 2 steps, small matmul, 40 trials")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per mode (median)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=128, help="pairs per training step")
    p.add_argument("--models", default="koch2015,resface64", help="comma-separated registered models")
    p.add_argument("--compile", action="store_true", help="also time the default mode with torch.compile")
    p.add_argument("--matmul-size", type=int, default=4096)
    p.add_argument("--matmul-reps", type=int, default=5)
    p.add_argument("--oneshot-tasks", type=int, default=400)
    p.add_argument("--verify-calls", type=int, default=50)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--name", default="", help="result name (default speed, or speed_quick with --quick)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.batch = min(args.steps, 2), 1, min(args.batch, 8)
        args.matmul_size, args.matmul_reps = min(args.matmul_size, 1024), 3
        args.oneshot_tasks, args.verify_calls = min(args.oneshot_tasks, 40), min(args.verify_calls, 5)
    args.name = args.name or ("speed_quick" if args.quick else "speed")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    peaks = {"fp32": matmul_gflops(torch.float32, args.matmul_size, args.matmul_reps),
             "bf16": matmul_gflops(torch.bfloat16, args.matmul_size, args.matmul_reps)}
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    training = training_section(names, args.batch, args.steps, args.warmup, args.compile, peaks)
    koch = create_model("koch2015")
    result: dict[str, Any] = {
        "benchmark": "siamface training/evaluation/verify speed vs a plain reference and the machine's matmul peak",
        "command": command(), "quick": args.quick, "machine": machine(),
        "settings": {"batch_pairs": args.batch, "timed_steps": args.steps, "warmup_steps": args.warmup,
                     "images_per_step": 2 * args.batch, "compile": args.compile},
        "matmul_peak": peaks,
        "training": training,
        "koch2015_flops": {"layers": layer_macs(koch), "forward_macs_per_image": sum(r["macs"]
                                                                                   for r in layer_macs(koch)),
                           "train_step_flops_batch": step_flops(koch, 2 * args.batch, args.batch),
                           "rule": "conv/linear MACs from layer shapes x2 (FLOPs) x3 (forward+backward) "
                                   "x images per step, plus the L1 head per pair"},
        "oneshot_eval": oneshot_section(args.oneshot_tasks),
        "verify_latency": verify_section(args.verify_calls),
    }
    if "koch2015" in training:
        k = training["koch2015"]["default"]
        result["targets"] = {
            "koch2015_speedup_over_reference": {"target": TARGETS["koch2015_speedup_over_reference"],
                                                "measured": k["speedup_over_reference"]},
            "koch2015_fraction_of_bf16_peak": {"target": TARGETS["koch2015_fraction_of_bf16_peak"],
                                               "measured": k["fraction_of_bf16_peak"]},
        }
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    write_result(args.name, result)
    return result


if __name__ == "__main__":
    main()
