"""Omniglot one-shot under Koch et al.'s protocol, on this CPU.

Train on the 30 background alphabets (same/different pairs, negatives within an alphabet, the paper's
affine distortions), select the epoch by 20-way within-alphabet one-shot accuracy on 320 tasks from the
10 evaluation alphabets the official runs do not use, then test once on the 20 official runs (400 trials).
Also measures the training speed of the faithful `koch2015` network here, for the GPU command.

    python benchmarks/omniglot.py --epochs 24 --pairs-per-epoch 25000 --max-minutes 55 --threads 1
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from common import command, data_root, machine, train_once, write_result

from siamface.cli import add_config_flags, config_from_args
from siamface.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from siamface.data import OMNIGLOT_VAL_ALPHABETS
from siamface.evaluate import run_evaluation
from siamface.models import create_model, default_preprocess
from siamface.step import Step, affine_for

RECIPE = RunConfig(
    ModelConfig("conv4"), default_preprocess("conv4", invert=True), DataConfig(within_group=True),
    TrainConfig(epochs=24, pairs_per_epoch=25_000, select="oneshot", val_way=20, val_tasks=320, val_pairs=10_000,
                patience=20, max_minutes=55.0, pairing="all"))
FLAGS = {ModelConfig: ("name",), TrainConfig: ("regime", "pairing", "classes_per_batch", "images_per_class",
                                               "class_rotations", "epochs", "pairs_per_epoch", "batch_size", "lr",
                                               "weight_decay", "max_minutes", "seed", "threads", "progress")}


def run_config(args: argparse.Namespace) -> RunConfig:
    """RECIPE with the flags applied: background alphabets train, 10 evaluation alphabets validate."""
    omni = data_root() / "omniglot"
    model = config_from_args(ModelConfig, args, RECIPE.model)
    data = replace(RECIPE.data, root=str(omni / "images_background"), val_root=str(omni / "images_evaluation"),
                   val_groups=OMNIGLOT_VAL_ALPHABETS)
    return RunConfig(model, default_preprocess(model.name, invert=True), data,
                     config_from_args(TrainConfig, args, RECIPE.train))


def koch_pairs_per_second(steps: int = 3, batch: int = 128) -> dict:
    """Training pairs/s of the paper's network with siamface's default step (bf16 autocast, channels_last)."""
    pre = default_preprocess("koch2015")
    cfg = TrainConfig(batch_size=batch)
    torch.manual_seed(0)
    model = create_model("koch2015").to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.5)
    images = torch.randint(0, 256, (2 * batch, 1, 105, 105), dtype=torch.uint8)
    rows = np.stack([np.arange(batch), np.arange(batch, 2 * batch), np.arange(batch) % 2], 1)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        loss = Step(model, images, pre, cfg).pair_loss(rows, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    dt = float(np.median(times[1:]))
    return {"model": "koch2015", "batch": batch, "pairs_per_second": round(batch / dt, 1),
            "mode": "bf16 autocast + channels_last, both towers in one batched pass", "affine": str(affine_for(pre))}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for cls, names in FLAGS.items():  # siamface train's own flags, defaults from RECIPE
        add_config_flags(p, cls, base=RECIPE.model if cls is ModelConfig else RECIPE.train, only=names)
    p.add_argument("--out", default=str(Path("runs") / "bench-omniglot"))
    p.add_argument("--name", default="omniglot")
    p.add_argument("--skip-koch-speed", action="store_true")
    return p


def main() -> None:
    args = parser().parse_args()
    run = run_config(args)
    out = Path(args.out)
    t0 = time.perf_counter()
    meta = train_once(run, out)
    test = run_evaluation(str(out), omniglot_runs=str(data_root() / "omniglot" / "all_runs"))
    result = {
        "benchmark": "Omniglot 20-way within-alphabet one-shot, 20 official runs (400 trials)",
        "command": command(), "data": str(data_root() / "omniglot"), "config": run.to_dict(),
        "train_seconds": meta["train_seconds"], "best_epoch": meta["epoch"], "epochs_run": meta["epochs_run"],
        "val_oneshot_accuracy_20way_320_tasks": meta["val"]["oneshot_accuracy"],
        "val_verification_accuracy": meta["val"]["best_accuracy"],
        "test_oneshot_accuracy": test["oneshot_accuracy"], "test_trials": test["n_tasks"],
        "test_embeddings": test["embeddings"], "wall_seconds": round(time.perf_counter() - t0, 1),
        "machine": machine(), "paper_table2_convolutional_siamese": 0.92,
    }
    if not args.skip_koch_speed:
        result["koch2015_speed_here"] = koch_pairs_per_second()
    write_result(args.name, result)


if __name__ == "__main__":
    main()
