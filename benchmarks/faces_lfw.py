"""Face detection / alignment benchmark on LFW deep-funneled: detection rate, eye rate, ms per image.

    python benchmarks/faces_lfw.py                 # all 13,233 images
    python benchmarks/faces_lfw.py --limit 300     # a seeded random sample

Times extract_face only (detect + choose + eyes + align); JPEG decoding is timed separately.
Writes the JSON report atomically (tmp file + os.replace) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from siamface import __version__
from siamface.data import data_root
from siamface.errors import NoFaceError
from siamface.faces import AlignConfig, extract_face
from siamface.progress import progress_bar

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=data_root(), help="root holding lfw/deepfunneled")
    p.add_argument("--limit", type=int, default=0, help="random sample of N images (0 = all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit sample")
    p.add_argument("--size", type=int, default=105, help="aligned output side in pixels")
    p.add_argument("--select", choices=["largest", "central"], default="largest")
    p.add_argument("--eyes", choices=["detect", "estimate"], default="detect")
    p.add_argument("--threads", type=int, default=-1, help="cv2.setNumThreads (-1 = OpenCV default)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "faces_lfw.json")
    args = p.parse_args(argv)
    if args.limit < 0 or args.size < 2:
        p.error("--limit must be >= 0 and --size >= 2")
    return args


def list_images(data: Path, limit: int, seed: int) -> tuple[list[Path], str]:
    """Sorted LFW deep-funneled JPEGs (or a seeded random sample of `limit`) and a description."""
    root = data / "lfw" / "deepfunneled"
    files = sorted(root.glob("*/*.jpg"))
    if not files:
        raise SystemExit(f"no images under {root} (set --data or SIAMFACE_DATA)")
    if limit and limit < len(files):
        sample = sorted(random.Random(seed).sample(files, limit))
        return sample, f"random {limit} of {len(files)}, seed {seed}"
    return files, f"all {len(files)}"


def machine_info() -> dict[str, Any]:
    """Platform, CPU and library versions for the report."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cv2": cv2.__version__,
        "cv2_threads": cv2.getNumThreads(),
        "numpy": np.__version__,
        "siamface": __version__,
    }


def write_atomic(path: Path, text: str) -> None:
    """Write text to path via a temporary file in the same folder and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run extract_face over the images and summarise."""
    if args.threads >= 0:
        cv2.setNumThreads(args.threads)
    cfg = AlignConfig(select=args.select, eyes=args.eyes)
    files, sample = list_images(args.data, args.limit, args.seed)
    ms: list[float] = []
    decode_ms: list[float] = []
    n_faces: Counter[int] = Counter()
    eyes_source: Counter[str] = Counter()
    confidences: list[float] = []
    no_face: list[str] = []
    unreadable: list[str] = []
    for path in progress_bar(files, desc="faces", unit="img", mininterval=1.0):
        t0 = time.perf_counter()
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            unreadable.append(str(path.relative_to(args.data)))
            continue
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        t1 = time.perf_counter()
        try:
            crop = extract_face(image, args.size, cfg, source=str(path))
        except NoFaceError:
            crop = None
        t2 = time.perf_counter()
        decode_ms.append((t1 - t0) * 1e3)
        ms.append((t2 - t1) * 1e3)
        if crop is None or crop.used is None:
            n_faces[0] += 1
            no_face.append(path.name)
            continue
        n_faces[len(crop.faces)] += 1
        eyes_source[crop.eyes_source] += 1
        confidences.append(crop.used.confidence)
    n = len(ms)
    found = n - n_faces[0]
    t = np.asarray(ms) if ms else np.zeros(1)
    return {
        "benchmark": "faces_lfw",
        "dataset": "LFW deep-funneled (250x250 RGB)",
        "n_images": n,
        "sample": sample,
        "face_found_rate": found / n if n else 0.0,
        "eyes_detected_rate": eyes_source["detected"] / found if found else 0.0,
        "multi_face_rate": sum(c for k, c in n_faces.items() if k > 1) / n if n else 0.0,
        "n_faces_histogram": {str(k): n_faces[k] for k in sorted(n_faces)},
        "used_confidence": {
            "mean": float(np.mean(confidences)) if confidences else None,
            "p05": float(np.percentile(confidences, 5)) if confidences else None,
        },
        "ms_per_image": {
            "mean": float(t.mean()),
            "p50": float(np.percentile(t, 50)),
            "p99": float(np.percentile(t, 99)),
            "max": float(t.max()),
        },
        "decode_ms_mean": float(np.mean(decode_ms)) if decode_ms else 0.0,
        "no_face_examples": no_face[:50],
        "unreadable": unreadable,
        "size": args.size,
        "align_config": cfg.to_dict(),
        "machine": machine_info(),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point: run, print and write the JSON report."""
    args = parse_args(argv)
    report = run(args)
    text = json.dumps(report, indent=2) + "\n"
    write_atomic(args.out, text)
    print(text, end="")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
