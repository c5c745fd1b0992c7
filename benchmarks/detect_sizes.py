"""Detection on every photo size: siamface's MMOD port (boxes + 5 landmarks) against dlib's HOG detector with
dlib's own 5 landmarks (face_recognition's pipeline), one thread, the same photos, one run.

    python benchmarks/detect_sizes.py                  # about 2 minutes on 2 busy cores

Photos (made at run time, never stored): `--lfw` LFW deep-funneled photos (250x250, seed 0); large photos of
1.5-4 Mpx: IMM photos (640x480) enlarged x2.25, x2.6, x3 (bilinear) and the LFW grid (2000x2000: 64 LFW photos of
a seed-0 sample at their own size, faces of about 100 px). Reported per set: the median time per photo of each
pipeline and the ratio siamface / dlib HOG (upsample 1 on LFW, 0 on the large photos, as the targets are set),
and for the grid the number of its 64 cells whose face was found (a box centred within 50 px of the cell's
centre). `siamface_1024` is the previous behaviour, for reference: the photo shrunk to 1,024 px for detection.
Image decoding is not timed.
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import dlib
import numpy as np
import torch
from common import command, data_root, machine, write_result

from siamface.faces import DLIB_CHIP, detect_faces

MODELS = importlib.resources.files("face_recognition_models") / "models"
CELL = 250


def rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def lfw_grid(root: Path, side: int = 8, seed: int = 0) -> np.ndarray:
    """side x side LFW photos (a seeded sample) tiled at their own size into one RGB image."""
    files = random.Random(seed).sample(sorted((root / "lfw" / "deepfunneled").glob("*/*.jpg")), side * side)
    grid = np.zeros((side * CELL, side * CELL, 3), np.uint8)
    for k, f in enumerate(files):
        r, c = divmod(k, side)
        grid[r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = rgb(f)
    return grid


def cells_found(centres: list[tuple[float, float]]) -> int:
    cells = set()
    for cx, cy in centres:
        r, c = int(cy // CELL), int(cx // CELL)
        if abs(cx - (c + 0.5) * CELL) < 50 and abs(cy - (r + 0.5) * CELL) < 50:
            cells.add((r, c))
    return len(cells)


def pipelines() -> dict[str, Callable[[np.ndarray], list[tuple[float, float]]]]:
    hog = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(MODELS / "shape_predictor_5_face_landmarks.dat"))

    def siamface(image: np.ndarray) -> list[tuple[float, float]]:
        return [f.center for f in detect_faces(image, DLIB_CHIP)]

    def siamface_1024(image: np.ndarray) -> list[tuple[float, float]]:
        scale = min(1.0, 1024 / max(image.shape[:2]))
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
        return [(f.center[0] / scale, f.center[1] / scale) for f in detect_faces(small, DLIB_CHIP)]

    def hog_up(upsample: int) -> Callable[[np.ndarray], list[tuple[float, float]]]:
        def run(image: np.ndarray) -> list[tuple[float, float]]:
            rects = hog(image, upsample)
            for r in rects:
                sp(image, r)  # landmarks of every face, as siamface computes them
            return [((r.left() + r.right() + 1) / 2, (r.top() + r.bottom() + 1) / 2) for r in rects]
        return run

    return {"siamface": siamface, "siamface_1024": siamface_1024, "dlib_hog_up0": hog_up(0),
            "dlib_hog_up1": hog_up(1)}


def timed(fn: Callable[[np.ndarray], Any], images: list[np.ndarray]) -> tuple[list[float], list[Any]]:
    fn(images[0])  # warm: first calls allocate and pick kernels
    times, outs = [], []
    for im in images:
        t0 = time.perf_counter()
        outs.append(fn(im))
        times.append(1000 * (time.perf_counter() - t0))
    return times, outs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lfw", type=int, default=40, help="LFW photos (seed 0)")
    p.add_argument("--imm", type=int, default=3, help="IMM photos, each at every enlargement")
    p.add_argument("--name", default="detect_sizes", help="results/<name>.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    load_start = os.getloadavg()[0]
    root = data_root()
    lfw_files = random.Random(0).sample(sorted((root / "lfw" / "deepfunneled").glob("*/*.jpg")), args.lfw)
    imm_files = sorted((root / "imm_faces").glob("*/*.jpg"))[:: 40][: args.imm]
    sets = {"lfw_250px": [rgb(f) for f in lfw_files],
            "large_1.5_4mpx": [cv2.resize(rgb(f), None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
                               for f in imm_files for s in (2.25, 2.6, 3.0)] + [lfw_grid(root)]}
    sizes = {k: [round(im.shape[0] * im.shape[1] / 1e6, 2) for im in v] for k, v in sets.items()}
    runs = pipelines()
    rows: dict[str, Any] = {}
    for name, images in sets.items():
        row: dict[str, Any] = {"photos": len(images), "mpx": sizes[name]}
        for key, fn in runs.items():
            times, outs = timed(fn, images)
            row[key] = {"median_ms": round(float(np.median(times)), 1), "ms": [round(t, 1) for t in times],
                        "faces": [len(o) for o in outs]}
            if name.startswith("large"):
                row[key]["grid_cells_found_of_64"] = cells_found(outs[-1])
        hog = "dlib_hog_up1" if name == "lfw_250px" else "dlib_hog_up0"
        ratios = np.array(row["siamface"]["ms"]) / np.array(row[hog]["ms"])
        row["ratio_siamface_to"] = {"versus": hog, "median_of_per_photo_ratios": round(float(np.median(ratios)), 2),
                                    "ratio_of_medians": round(row["siamface"]["median_ms"] / row[hog]["median_ms"], 2)}
        rows[name] = row
    write_result(args.name, {"benchmark": "detection + 5 landmarks per photo, one thread: siamface (MMOD port) "
                                  "vs dlib HOG + dlib shape_predictor", "command": command(), "seed": 0,
                                  "sets": rows, "load_avg_1min_start_end": [load_start, os.getloadavg()[0]],
                                  "machine": machine()})


if __name__ == "__main__":
    main()
