"""Descriptor throughput of siamface's dlib_resnet tower against dlib-bin's own, on the same real chips.

One run, one machine:
  (a) 64 face chips from distinct LFW people (deep-funneled), made by dlib itself (HOG detector with one
      upsampling, 5-point shape predictor, get_face_chip 150x150 padding 0.25), so both sides see identical
      input; people taken at a fixed stride through the sorted folder list (no randomness);
  (b) dlib-bin's compute_face_descriptor: one chip per call, and its batch form (a list of chips) -- dlib-bin
      runs on one CPU thread;
  (c) the torch tower (create_model("dlib_resnet").tower) at batch 1 and batch 64: fp32 as registered (the
      parity path), fp32 with the affines folded into the convs (tower.fused()), the fast path (fused + bf16
      autocast + channels_last) and the unfused tower under bf16 autocast + channels_last; with torch's
      default threads and with one thread;
  (d) accuracy of each path on the same chips: max abs difference to dlib's descriptors, and of the fast path
      to fp32; and how many of the 2,016 chip pairs change side of dlib's 0.6 distance threshold.
Throughput = chips per second, median of --reps timed repetitions after one warm-up (batch 1: one call per
chip over the first 16 chips). On a shared machine the default threads suffer most from other jobs (threads
wait on each other), so the like-for-like figure is one thread on each side.

    nice -n 10 python benchmarks/dlib_speed.py            # -> benchmarks/results/dlib_speed.json
    python benchmarks/dlib_speed.py --quick               # smoke run -> benchmarks/results/dlib_speed_quick.json
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from importlib.resources import files
from pathlib import Path
from typing import Any

import dlib
import numpy as np
import torch
from common import command, data_root, machine, write_result
from PIL import Image

from siamface.models import create_model, default_preprocess
from siamface.preprocess import normalize

SRC = Path(str(files("face_recognition_models") / "models"))
TARGET_BATCHED_RATIO = 10.0
BATCH1_CHIPS = 16  # batch-1 throughput is timed on the first 16 chips, one call each


def make_chips(n: int) -> np.ndarray:
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(SRC / "shape_predictor_5_face_landmarks.dat"))
    people = sorted((data_root() / "lfw" / "deepfunneled").iterdir())
    chips = []
    for person in people[:: max(1, len(people) // (2 * n))]:
        img = np.asarray(Image.open(sorted(person.glob("*.jpg"))[0]).convert("RGB"))
        boxes = detector(img, 1)
        if boxes:
            chips.append(dlib.get_face_chip(img, predictor(img, boxes[0]), size=150, padding=0.25))
        if len(chips) == n:
            return np.stack(chips)
    raise SystemExit(f"only {len(chips)} faces found")


def rate(fn: Callable[[], Any], n_items: int, reps: int) -> dict[str, float]:
    """Median items/s of `reps` timed calls of fn after one warm-up."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"items_per_s": n_items / med, "ms_per_item": 1000 * med / n_items, "reps": reps}


def torch_paths(model: torch.nn.Module, x: torch.Tensor, reps: int, threads: int) -> dict[str, Any]:
    """Four paths: fp32 (the registered tower as is: the parity path), fp32_fused (affines folded into the
    convs, tower.fused()), fast (fused + bf16 autocast + channels_last) and fast_unfused (the tower as is
    under bf16 autocast + channels_last, as embed_batches(bf16=True) would run it)."""
    torch.set_num_threads(threads)
    fused = model.fused()
    cl = torch.channels_last
    paths = {"fp32": (model, False), "fp32_fused": (fused, False),
             "fast": (copy.deepcopy(fused).to(memory_format=cl), True),
             "fast_unfused": (copy.deepcopy(model).to(memory_format=cl), True)}
    out: dict[str, Any] = {}
    for key, (m, fast) in paths.items():
        xx = x.contiguous(memory_format=cl) if fast else x

        def embed(batch: torch.Tensor, m: torch.nn.Module = m, fast: bool = fast) -> torch.Tensor:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16) if fast else nullcontext():
                return m(batch).float()

        def singles(xx: torch.Tensor = xx[:BATCH1_CHIPS], embed: Callable[..., torch.Tensor] = embed) -> list[Any]:
            return [embed(xx[i : i + 1]) for i in range(len(xx))]

        out[f"{key}_batch{len(xx)}"] = rate(lambda xx=xx, embed=embed: embed(xx), len(xx), reps)
        out[f"{key}_batch1"] = rate(singles, min(len(xx), BATCH1_CHIPS), max(1, reps // 2))
        out[f"_{key}_descriptors"] = embed(xx).double().numpy()
    return out


def pair_distances(d: np.ndarray) -> np.ndarray:
    return np.linalg.norm(d[:, None] - d[None], axis=-1)[np.triu_indices(len(d), 1)]


def flips(a: np.ndarray, b: np.ndarray, threshold: float = 0.6) -> int:
    """Pairs of chips that one set of descriptors calls the same person and the other does not."""
    return int(((pair_distances(a) < threshold) != (pair_distances(b) < threshold)).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 chips, 1 repetition (a smoke run)")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    n, reps = (8, 1) if args.quick else (64, args.reps)
    load_before = os.getloadavg()
    default_threads = torch.get_num_threads()
    chips = make_chips(n)
    recogniser = dlib.face_recognition_model_v1(str(SRC / "dlib_face_recognition_resnet_model_v1.dat"))
    chip_list = list(chips)
    reference = np.array([np.array(recogniser.compute_face_descriptor(c)) for c in chips])
    dlib_single = rate(lambda: [recogniser.compute_face_descriptor(c) for c in chip_list], n, max(1, reps // 2))
    dlib_batch = rate(lambda: recogniser.compute_face_descriptor(chip_list), n, max(1, reps // 2))
    best_dlib = max(dlib_single["items_per_s"], dlib_batch["items_per_s"])

    model = create_model("dlib_resnet").tower.eval()
    x = normalize(torch.from_numpy(chips).permute(0, 3, 1, 2), default_preprocess("dlib_resnet"))
    result: dict[str, Any] = {"chips": n, "dlib_bin": {"single": dlib_single, "batch": dlib_batch}, "torch": {}}
    for threads in sorted({default_threads, 1}):
        paths = torch_paths(model, x, reps, threads)
        desc = {k[1:-len("_descriptors")]: paths.pop(k) for k in list(paths) if k.startswith("_")}
        for r in paths.values():
            r["ratio_to_dlib_bin"] = r["items_per_s"] / best_dlib
        result["torch"][f"threads_{threads}"] = paths
        if threads == default_threads:
            acc: dict[str, Any] = {"pairs": n * (n - 1) // 2}
            for key, d in desc.items():
                acc[f"{key}_vs_dlib_max_abs"] = float(np.abs(d - reference).max())
                acc[f"{key}_vs_fp32_max_abs"] = float(np.abs(d - desc["fp32"]).max())
                acc[f"{key}_vs_fp32_max_distance_change"] = float(np.abs(pair_distances(d)
                                                                          - pair_distances(desc["fp32"])).max())
                acc[f"{key}_pairs_flipping_at_0.6_vs_dlib"] = flips(d, reference)
            result["accuracy"] = acc
    ratios = {t: {k: v["ratio_to_dlib_bin"] for k, v in paths.items()} for t, paths in result["torch"].items()}
    result["summary"] = {
        "dlib_bin_best_items_per_s": best_dlib, "ratios_to_dlib_bin": ratios,
        "target_batched_ratio": TARGET_BATCHED_RATIO,
        "target_met_by": sorted(f"{t}/{k}" for t, r in ratios.items() for k, v in r.items()
                                if v >= TARGET_BATCHED_RATIO and "batch1" not in k),
        "like_for_like": "threads_1: one CPU thread on each side (dlib-bin computes on one thread)",
    }
    result["load_average_1_5_15min"] = {"before": load_before, "after": os.getloadavg(),
                                        "note": "the machine is shared: other jobs slow both sides"}
    result["machine"], result["command"] = machine(), command()
    write_result("dlib_speed_quick" if args.quick else "dlib_speed", result)


if __name__ == "__main__":
    main()
