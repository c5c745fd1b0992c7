"""A face prior: resface64 trained on every LFW person, the starting point for fine-tuning on a few faces.

25 AT&T people are far too few to learn what makes two faces the same person; a model that has seen
thousands of people first starts from general face features (benchmarks/att.py --init). This trains it:
all-pairs BCE plus a CosFace identity loss over every LFW person with two or more images, a fixed centred
crop (the centred 55% of the deep-funneled image, framed like an AT&T photo; no detector), grey 64 px, an
"l2" embedding (models/small.py) and a non-positive L1 head. 150 people (seed 0) are held out
to select the epoch and calibrate the threshold. Because it has seen every LFW person, this model must
never be scored on an LFW protocol: its lineage makes `siamface evaluate` refuse those people.

    python benchmarks/face_prior.py --ship      # trains, writes results/face_prior.json, ships the weights
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from common import (
    LFW_RECIPE,
    REPO,
    add_lfw_args,
    command,
    data_root,
    lfw_options,
    lfw_run_config,
    machine,
    train_once,
    write_result,
)

from siamface.checkpoint import META, WEIGHTS, load_model
from siamface.config import RunConfig
from siamface.data.lfw import all_people_split

SHIPPED = REPO / "siamface" / "weights" / "face-prior"
RECIPE = replace(
    LFW_RECIPE, model=replace(LFW_RECIPE.model, kwargs={"head_weights": "nonpositive", "embedding": "l2"}),
    preprocess=replace(LFW_RECIPE.preprocess, crop=0.55),
    train=replace(LFW_RECIPE.train, epochs=20, id_loss=1.0, threads=2))


def ship(run: Path, dest: Path = SHIPPED) -> Path:
    """Copy a finished run's model.json and weights into the package. The new folder is complete before the
    old one moves aside; between the two renames no model is there, but never a half-copied one."""
    load_model(run)  # complete and loadable (SHA-256 checked) before anything is replaced
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = dest.with_name(f".{dest.name}-old")
    shutil.rmtree(old, ignore_errors=True)  # left by an interrupted earlier ship
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; package data must be readable by every user
    for name in (META, WEIGHTS):
        shutil.copy2(run / name, tmp / name)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_lfw_args(p, RECIPE, align="none")
    p.add_argument("--out", default=str(Path("runs") / "bench-face-prior"))
    p.add_argument("--name", default="face_prior")
    p.add_argument("--ship", action="store_true", help=f"copy the finished model to {SHIPPED.relative_to(REPO)}")
    return p


def run_config(args: argparse.Namespace) -> RunConfig:
    options = lfw_options(args, RECIPE)
    return lfw_run_config(options, all_people_split(data_root() / "lfw", options.data.n_val, options.train.seed))


def main() -> None:
    args = parser().parse_args()
    run = run_config(args)
    out = Path(args.out)
    t0 = time.perf_counter()
    meta = train_once(run, out)
    shipped = str(ship(out).relative_to(REPO)) if args.ship else ""
    write_result(args.name, {
        "benchmark": "face prior: every LFW person but 150 held out for selection (no LFW protocol applies)",
        "command": command(), "data": str(data_root() / "lfw"), "config": run.to_dict(),
        "train_people": len(run.data.train_ids), "val_people": len(run.data.val_ids),
        "train_seconds": meta["train_seconds"], "best_epoch": meta["epoch"], "epochs_run": meta["epochs_run"],
        "val": {k: meta["val"][k] for k in ("auc", "eer", "oneshot_accuracy")}, "calibration": meta["calibration"],
        "shipped_as": shipped, "wall_seconds": round(time.perf_counter() - t0, 1), "machine": machine(),
    })


if __name__ == "__main__":
    main()
