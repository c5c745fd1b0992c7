"""LFW View 1 ("unrestricted, no outside data"): train and select on DevTrain people, test on pairsDevTest.

Validation (model selection and the threshold) uses a seeded set of DevTrain people with at least two
images, removed from training; DevTest people never reach training or selection (checked).

    python benchmarks/lfw_view1.py --epochs 15 --pairs-per-epoch 20000 --max-minutes 35
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import add_lfw_args, command, data_root, lfw_options, lfw_run_config, machine, train_once, write_result

from siamface.config import RunConfig
from siamface.data.lfw import view1_split
from siamface.evaluate import run_evaluation


def run_config(args: argparse.Namespace) -> RunConfig:
    options = lfw_options(args)
    return lfw_run_config(options, view1_split(data_root() / "lfw", options.data.n_val, options.train.seed))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_lfw_args(p)
    p.add_argument("--out", default=str(Path("runs") / "bench-lfw-view1"))
    p.add_argument("--name", default="lfw_view1")
    args = p.parse_args()
    run = run_config(args)
    out = Path(args.out)
    t0 = time.perf_counter()
    meta = train_once(run, out)
    test = run_evaluation(str(out), protocol="lfw-view1", data=str(data_root() / "lfw"))
    keys = ("auc", "eer", "best_accuracy", "accuracy_at_calibrated_threshold", "TAR@FAR=1e-02", "TAR@FAR=1e-01")
    write_result(args.name, {
        "benchmark": "LFW View 1: train/select on DevTrain people, test on pairsDevTest (1000 pairs)",
        "command": command(), "data": str(data_root() / "lfw"), "config": run.to_dict(),
        "train_seconds": meta["train_seconds"], "best_epoch": meta["epoch"], "epochs_run": meta["epochs_run"],
        "val": {k: meta["val"][k] for k in ("auc", "eer", "oneshot_accuracy")},
        "test": {k: test[k] for k in keys}, "calibration": meta["calibration"],
        "wall_seconds": round(time.perf_counter() - t0, 1), "machine": machine(),
    })


if __name__ == "__main__":
    main()
