"""Does the dlib_resnet fast path (bf16 autocast + channels_last, affines folded) change verification on LFW?

On all 6,000 pairs of LFW View 2 (deep-funneled), the same chips go through the tower in fp32 (equal to
dlib's descriptor within 1e-5) and through the fast path; both are scored by the plain Euclidean distance
(score = -distance) and compared: 10-fold accuracy (threshold chosen on the nine other folds), AUC, EER,
TAR@FAR, and how many pairs change decision at dlib's 0.6 threshold and at each fold's chosen threshold.

Chips: dlib-bin's HOG detector without upsampling (with one upsampling where it finds nothing, then a fixed
central box as a last resort), the face nearest the image centre, the 5-point shape predictor and
get_face_chip (150x150, padding 0.25). The point is the fp32-versus-fast comparison on identical chips; the
accuracy itself is not dlib's published pipeline (face_recognition upsamples once everywhere).

    nice -n 10 python benchmarks/dlib_fastpath_view2.py    # -> benchmarks/results/dlib_fastpath_view2.json
    python benchmarks/dlib_fastpath_view2.py --limit 200   # smoke run on 200 pairs spread over the folds
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext
from importlib.resources import files
from pathlib import Path
from typing import Any

import dlib
import numpy as np
import torch
from common import command, data_root, machine, write_result
from PIL import Image

from siamface import metrics
from siamface.data.lfw import view2_pairs
from siamface.models import create_model, default_preprocess
from siamface.preprocess import normalize

SRC = Path(str(files("face_recognition_models") / "models"))


def make_chips(paths: list[Path]) -> tuple[np.ndarray, dict[str, int]]:
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(SRC / "shape_predictor_5_face_landmarks.dat"))
    chips, how = [], {"upsample_0": 0, "upsample_1": 0, "central_box": 0}
    for p in paths:
        img = np.asarray(Image.open(p).convert("RGB"))
        h, w = img.shape[:2]
        boxes, key = detector(img, 0), "upsample_0"
        if not boxes:
            boxes, key = detector(img, 1), "upsample_1"
        if boxes:
            box = min(boxes, key=lambda b: (b.center().x - w / 2) ** 2 + (b.center().y - h / 2) ** 2)
        else:
            box, key = dlib.rectangle(w // 2 - 55, h // 2 - 55, w // 2 + 55, h // 2 + 55), "central_box"
        how[key] += 1
        chips.append(dlib.get_face_chip(img, predictor(img, box), size=150, padding=0.25))
    return np.stack(chips), how


@torch.no_grad()
def descriptors(tower: torch.nn.Module, chips: np.ndarray, fast: bool, batch: int = 64) -> np.ndarray:
    pre = default_preprocess("dlib_resnet")
    out = []
    for i in range(0, len(chips), batch):
        x = normalize(torch.from_numpy(chips[i : i + batch]).permute(0, 3, 1, 2), pre)
        if fast:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16) if fast else nullcontext():
            out.append(tower(x).float().numpy())
    return np.concatenate(out).astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="only N pairs spread over the folds (smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the machine is shared; one thread is the like-for-like setting
    pairs = view2_pairs(data_root() / "lfw")
    if args.limit:
        pairs = pairs[:: max(1, len(pairs) // args.limit)][: args.limit]
    paths = sorted({p for pair in pairs for p in (pair.a, pair.b)})
    index = {p: i for i, p in enumerate(paths)}
    t0 = time.perf_counter()
    chips, how = make_chips(paths)
    t_chips = time.perf_counter() - t0
    tower = create_model("dlib_resnet").tower.eval()
    fast_tower = tower.fused().to(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    d32 = descriptors(tower, chips, fast=False)
    t32 = time.perf_counter() - t0
    t0 = time.perf_counter()
    dfast = descriptors(fast_tower, chips, fast=True)
    tfast = time.perf_counter() - t0
    a = np.array([index[p.a] for p in pairs])
    b = np.array([index[p.b] for p in pairs])
    labels = np.array([p.same for p in pairs], dtype=np.int64)
    folds = np.array([p.fold for p in pairs], dtype=np.int64)
    result: dict[str, Any] = {"pairs": len(pairs), "images": len(paths), "chips_from": how}
    scores = {}
    for name, d in (("fp32", d32), ("fast", dfast)):
        scores[name] = -np.linalg.norm(d[a] - d[b], axis=1)
        result[name] = metrics.verification_summary(labels, scores[name], folds if len(set(folds)) > 1 else None)
    k32 = metrics.kfold_accuracy(labels, scores["fp32"], folds) if len(set(folds)) > 1 else None
    kfast = metrics.kfold_accuracy(labels, scores["fast"], folds) if len(set(folds)) > 1 else None
    flips_fold = None
    if k32 and kfast:
        flips_fold = int(sum(((scores["fp32"][folds == f] >= t1) != (scores["fast"][folds == f] >= t2)).sum()
                             for f, t1, t2 in zip(np.unique(folds), k32.thresholds, kfast.thresholds)))
    result["comparison"] = {
        "max_abs_descriptor_difference": float(np.abs(dfast - d32).max()),
        "max_abs_distance_difference": float(np.abs(scores["fast"] - scores["fp32"]).max()),
        "decisions_changed_at_0.6": int(((-scores["fp32"] < 0.6) != (-scores["fast"] < 0.6)).sum()),
        "decisions_changed_at_each_folds_threshold": flips_fold,
        "kfold_accuracy_fp32_minus_fast": (k32.mean - kfast.mean) if k32 and kfast else None,
    }
    result["seconds"] = {"chips": t_chips, "fp32_descriptors": t32, "fast_descriptors": tfast, "threads": 1}
    result["machine"], result["command"] = machine(), command()
    write_result("dlib_fastpath_view2" if args.limit is None else "dlib_fastpath_view2_smoke", result)


if __name__ == "__main__":
    main()
