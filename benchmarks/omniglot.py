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
from pathlib import Path

import numpy as np
import torch
from common import command, data_root, machine, train_once, write_result

from siamface.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from siamface.data import OMNIGLOT_VAL_ALPHABETS
from siamface.evaluate import run_evaluation
from siamface.models import create_model, default_preprocess
from siamface.training import affine_for, pair_batch_loss


def run_config(args: argparse.Namespace) -> RunConfig:
    omni = data_root() / "omniglot"
    pre = default_preprocess(args.model, invert=True)
    data = DataConfig(root=str(omni / "images_background"), val_root=str(omni / "images_evaluation"),
                      val_groups=OMNIGLOT_VAL_ALPHABETS, within_group=True)
    cfg = TrainConfig(regime=args.regime, epochs=args.epochs, pairs_per_epoch=args.pairs_per_epoch, lr=args.lr,
                      weight_decay=args.weight_decay, batch_size=args.batch_size, select="oneshot", val_way=20,
                      val_tasks=320, val_pairs=10_000, patience=20, max_minutes=args.max_minutes, seed=args.seed,
                      pairing=args.pairing, classes_per_batch=args.classes_per_batch,
                      images_per_class=args.images_per_class, class_rotations=args.class_rotations,
                      threads=args.threads, progress=args.progress)
    return RunConfig(ModelConfig(args.model), pre, data, cfg)


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
        loss = pair_batch_loss(model, images, rows, pre, cfg, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    dt = float(np.median(times[1:]))
    return {"model": "koch2015", "batch": batch, "pairs_per_second": round(batch / dt, 1),
            "mode": "bf16 autocast + channels_last, both towers in one batched pass", "affine": str(affine_for(pre))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="conv4")
    p.add_argument("--regime", default="adamw")
    p.add_argument("--pairing", choices=("sampled", "all"), default="all",
                   help="all: every pair of a class-balanced batch from one alphabet (see siamface/losses.py)")
    p.add_argument("--classes-per-batch", type=int, default=32)
    p.add_argument("--images-per-class", type=int, default=4)
    p.add_argument("--class-rotations", action=argparse.BooleanOptionalAction, default=False,
                   help="turn each class of a batch by a random multiple of 90 degrees (class augmentation)")
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--pairs-per-epoch", type=int, default=25_000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--max-minutes", type=float, default=55.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default=str(Path("runs") / "bench-omniglot"))
    p.add_argument("--name", default="omniglot")
    p.add_argument("--skip-koch-speed", action="store_true")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args()
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
