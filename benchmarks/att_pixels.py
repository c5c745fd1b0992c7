"""A no-learning baseline for the AT&T benchmark: L1 distance between normalised 32x32 pixels.

Same test subjects (read from the seed's run in runs/bench-att), same seeded 4,000 balanced pairs as
benchmarks/att.py's evaluation. Shows how much the trained models add on unseen subjects.

    python benchmarks/att_pixels.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import command, data_root, machine, write_result

from siamface import metrics
from siamface.data import filter_identities, label_array, load_image, sample_pairs, scan_folder


def pixel_eer(ids: list[str], seed: int, size: int) -> dict:
    records = filter_identities(scan_folder(data_root() / "att_faces"), ids)
    labels, _ = label_array(records)
    x = np.stack([load_image(r.path, 1, size).astype(np.float32).ravel() for r in records])
    x = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    pairs = sample_pairs(labels, 4000, np.random.default_rng(seed))
    scores = -np.abs(x[pairs[:, 0]] - x[pairs[:, 1]]).mean(1)
    return {"eer": metrics.eer(pairs[:, 2], scores)[0], "auc": metrics.roc_auc(pairs[:, 2], scores)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--runs", default=str(Path("runs") / "bench-att"))
    args = p.parse_args()
    rows = []
    for seed in args.seeds:
        split = json.loads((Path(args.runs) / f"seed{seed}" / "model.json").read_text())["split"]
        rows.append({"seed": seed, "test": pixel_eer(split["test"], seed, args.size),
                     "val": pixel_eer(split["val"], seed, args.size)})
    write_result("att_pixels", {"benchmark": "AT&T raw-pixel L1 baseline (no training)", "command": command(),
                                "size": args.size, "per_seed": rows, "machine": machine()})


if __name__ == "__main__":
    main()
