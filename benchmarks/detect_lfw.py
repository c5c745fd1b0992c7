"""Face detection: siamface's port of dlib's MMOD CNN detector against dlib itself, dlib's HOG detector and the
Haar cascade, on LFW deep-funneled and AT&T.

    python benchmarks/detect_lfw.py                          # LFW: a seeded sample of 2,000 images
    python benchmarks/detect_lfw.py --lfw-limit 0 --only lfw.port_upsample_0 --out detect_lfw_full
                                                             # the port alone on all 13,233 LFW images

Reports (benchmarks/results/detect_lfw.json): the share of images where each detector finds at least one
face (LFW: port, Haar and dlib HOG on the same sample; the port with upsample 1 on a smaller sample; AT&T: all
400 images with upsample 0 and 1); on a timing sample of LFW images, the time per image of every detector
(single image, --threads torch threads; dlib-bin runs on one thread) and the agreement of the port with
dlib.cnn_face_detection_model_v1 (IoU of the best-matching box, confidence difference, identical box lists).
Image decoding is not timed.
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import random
import time
from pathlib import Path
from typing import Any

import cv2
import dlib
import numpy as np
import torch
from common import command, data_root, machine, write_result

from siamface.faces import AlignConfig, detect_faces
from siamface.faces.mmod import MMODDetector

MODELS = importlib.resources.files("face_recognition_models") / "models"


def rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def iou(a: tuple, b: tuple) -> float:
    iw, ih = min(a[2], b[2]) - max(a[0], b[0]) + 1, min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter)


def port_rate(port: MMODDetector, files: list[Path], upsample: int, grey: bool = False) -> dict[str, Any]:
    """Share of images with >= 1 face, batched by image size (16), with the wall time."""
    found, n_faces, t, cpu = 0, 0, 0.0, 0.0
    for start in range(0, len(files), 16):
        chunk = files[start:start + 16]
        images = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) if grey else rgb(f) for f in chunk]
        t0, c0 = time.perf_counter(), time.process_time()
        dets = port(images, upsample=upsample)
        t, cpu = t + time.perf_counter() - t0, cpu + time.process_time() - c0
        found += sum(bool(d) for d in dets)
        n_faces += sum(len(d) for d in dets)
    return {"images": len(files), "with_face": found, "rate": found / len(files), "faces": n_faces,
            "ms_per_image_batched": 1000 * t / len(files), "cpu_ms_per_image": 1000 * cpu / len(files)}


def simple_rate(detect: Any, files: list[Path], grey: bool = False) -> dict[str, Any]:
    found, t = 0, 0.0
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) if grey else rgb(f)
        t0 = time.perf_counter()
        found += bool(len(detect(img)))
        t += time.perf_counter() - t0
    return {"images": len(files), "with_face": found, "rate": found / len(files), "ms_per_image": 1000 * t / len(files)}


def timing_and_agreement(port: MMODDetector, files: list[Path]) -> dict[str, Any]:
    """Per-image times of every detector, and the port's boxes against dlib's CNN detector's."""
    cnn = dlib.cnn_face_detection_model_v1(str(MODELS / "mmod_human_face_detector.dat"))
    hog = dlib.get_frontal_face_detector()
    images = [rgb(f) for f in files]
    haar = AlignConfig()
    runs: dict[str, Any] = {
        "haar (siamface default cascade)": lambda im: detect_faces(im, haar),
        "dlib HOG, upsample 0": lambda im: hog(im, 0),
        "dlib HOG, upsample 1": lambda im: hog(im, 1),
        "dlib CNN (dlib-bin), upsample 0": lambda im: cnn(im, 0),
        "dlib CNN (dlib-bin), upsample 1": lambda im: cnn(im, 1),
        "siamface mmod port, upsample 0": lambda im: port([im], upsample=0)[0],
        "siamface mmod port, upsample 1": lambda im: port([im], upsample=1)[0],
    }
    times, outputs = {}, {}
    for name, fn in runs.items():
        fn(images[0])  # warm-up
        t0 = time.perf_counter()
        outputs[name] = [fn(im) for im in images]
        times[name] = 1000 * (time.perf_counter() - t0) / len(images)
    t0 = time.perf_counter()
    port(images, upsample=0)
    times["siamface mmod port, upsample 0, batch of all"] = 1000 * (time.perf_counter() - t0) / len(images)
    agreement = {}
    for up in (0, 1):
        ref, got = outputs[f"dlib CNN (dlib-bin), upsample {up}"], outputs[f"siamface mmod port, upsample {up}"]
        ious, conf_diff, same_lists, n_ref, n_got = [], [], 0, 0, 0
        for r, g in zip(ref, got):
            rr = [((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), d.confidence) for d in r]
            gg = [(d.rect, d.confidence) for d in g]
            n_ref, n_got = n_ref + len(rr), n_got + len(gg)
            same_lists += sorted(b for b, _ in rr) == sorted(b for b, _ in gg)
            for box, conf in rr:
                if gg:
                    best = max(gg, key=lambda x, box=box: iou(box, x[0]))
                    ious.append(iou(box, best[0]))
                    conf_diff.append(abs(best[1] - conf))
        a = np.array(ious)
        agreement[f"upsample {up}"] = {
            "dlib_faces": n_ref, "port_faces": n_got, "images_with_identical_box_sets": int(same_lists),
            "images": len(images), "dlib_faces_matched_iou_ge_0.9": int((a >= 0.9).sum()),
            "share_iou_ge_0.9": float((a >= 0.9).mean()) if len(a) else None,
            "min_iou": float(a.min()) if len(a) else None,
            "max_confidence_diff": float(max(conf_diff)) if conf_diff else None}
    return {"images": len(images), "ms_per_image": times, "agreement_with_dlib_cnn": agreement}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lfw-limit", type=int, default=2000, help="seeded LFW sample (0 = all 13,233)")
    p.add_argument("--lfw-up1-limit", type=int, default=200, help="LFW sample for the port with upsample 1")
    p.add_argument("--timing-n", type=int, default=20, help="LFW images for timings and agreement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads for the port")
    p.add_argument("--only", nargs="*", default=None,
                   help="run only these sections, e.g. lfw.port_upsample_0 att.port_upsample_1 timing_sample")
    p.add_argument("--out", default="detect_lfw")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    root = data_root()
    lfw = sorted((root / "lfw" / "deepfunneled").glob("*/*.jpg"))
    rng = random.Random(args.seed)
    sample = lfw if args.lfw_limit == 0 else sorted(rng.sample(lfw, args.lfw_limit))
    up1_sample = sorted(random.Random(args.seed + 1).sample(lfw, args.lfw_up1_limit))
    timing = sorted(random.Random(args.seed + 2).sample(lfw, args.timing_n))
    att = sorted((root / "att_faces").glob("s*/*.pgm"))
    port = MMODDetector.load()
    hog = dlib.get_frontal_face_detector()
    haar = AlignConfig()
    t_start = time.time()
    result: dict[str, Any] = {
        "command": command(), "machine": machine(), "load_average_at_start": os.getloadavg(),
        "note": ("LFW rates on a seeded random sample (random.Random(seed).sample of the sorted paths) unless "
                 "--lfw-limit 0; the full set would take more than the ~15 CPU minutes a benchmark may use here"
                 if args.lfw_limit else "LFW rates on all images"),
        "complete": False, "lfw": {"sample": len(sample), "seed": args.seed}, "att": {},
    }
    sections = [  # each section's result is written as soon as it is done (a partial file says so)
        ("lfw", "port_upsample_0", lambda: port_rate(port, sample, 0)),
        ("att", "port_upsample_0", lambda: port_rate(port, att, 0, grey=True)),
        ("att", "port_upsample_1", lambda: port_rate(port, att, 1, grey=True)),
        ("att", "haar", lambda: simple_rate(lambda im: detect_faces(im, haar), att, grey=True)),
        ("att", "dlib_hog_upsample_1", lambda: simple_rate(lambda im: hog(im, 1), att, grey=True)),
        ("timing_sample", None, lambda: {"seed": args.seed + 2, **timing_and_agreement(port, timing)}),
        ("lfw", "haar", lambda: simple_rate(lambda im: detect_faces(im, haar), sample)),
        ("lfw", "dlib_hog_upsample_0", lambda: simple_rate(lambda im: hog(im, 0), sample)),
        ("lfw", "port_upsample_1", lambda: {"seed": args.seed + 1, **port_rate(port, up1_sample, 1)}),
    ]
    for group, key, run in sections:
        if args.only is not None and (group if key is None else f"{group}.{key}") not in args.only:
            continue
        value = run()
        if key is None:
            result[group] = value
        else:
            result[group][key] = value
        result["wall_s"] = round(time.time() - t_start, 1)
        write_result(args.out, result)
    result["complete"] = True
    write_result(args.out, result)


if __name__ == "__main__":
    main()
