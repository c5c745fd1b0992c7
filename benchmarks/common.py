"""Shared helpers for benchmarks: data location, machine description, atomic JSON results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def data_root() -> Path:
    """SIAMFACE_DATA, default ../shared/data beside the repository."""
    return Path(os.environ.get("SIAMFACE_DATA", REPO.parent / "shared" / "data")).resolve()


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": sys.version.split()[0],
            "git_commit": _git_commit()}


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write benchmarks/results/<name>.json atomically and print it."""
    from siamface.files import atomic_write_json

    path = RESULTS / f"{name}.json"
    atomic_write_json(path, result)
    print(json.dumps(result, indent=2))
    return path


def command() -> str:
    """The command line that produced a result, quoted so it can be pasted back into a shell."""
    import shlex

    return shlex.join(["python", *sys.argv])


def pct(v: float) -> str:
    """A fraction as a percentage with one decimal, as the RESULTS tables print it."""
    return f"{100 * v:.1f}%"


def std_error(values: Any) -> float | None:
    """Standard error of the mean (sample sd / sqrt(n)); None for fewer than two values."""
    import numpy as np

    a = np.asarray(values, dtype=float)
    return float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else None


def train_once(run: Any, out: Path) -> dict[str, Any]:
    """Train `run` into `out` unless a complete model is already there (resuming a crashed run);
    returns its model.json. Lets an interrupted benchmark pick up where it stopped."""
    import json

    from siamface import train
    from siamface.config import RunConfig
    from siamface.resume import run_differences

    meta_path = out / "model.json"
    if meta_path.exists() and json.loads(meta_path.read_text()).get("status") == "complete":
        meta = json.loads(meta_path.read_text())
        diff = run_differences(RunConfig.from_dict(meta), run)
        if diff:
            raise SystemExit(f"{out}: holds a finished run that differs in {', '.join(diff)}; use another --out")
        return meta
    train(run, out, resume=(out / "state.json").exists())
    return json.loads(meta_path.read_text())


def face_preprocess(model: str, align: str, crop: float) -> Any:
    """LFW preprocessing: Haar detection + eye alignment (what verify does on photos), or a fixed centred
    crop of the 250 px deep-funneled image."""
    from siamface.faces import AlignConfig
    from siamface.models import default_preprocess

    if align == "haar":
        return default_preprocess(model, align=AlignConfig().to_dict())
    return default_preprocess(model, crop=crop)


def add_lfw_args(p: Any) -> None:
    """Training options shared by the LFW protocol benchmarks (defaults: the published View 1 run)."""
    import argparse

    p.add_argument("--model", default="resface64")
    p.add_argument("--model-kwargs", type=json.loads, default={},
                   help='factory overrides as JSON, e.g. \'{"head_weights": "nonpositive"}\'')
    p.add_argument("--id-loss", type=float, default=0.0, help="weight of the CosFace identity loss (0: off)")
    p.add_argument("--id-margin", type=float, default=0.35)
    p.add_argument("--id-scale", type=float, default=16.0)
    p.add_argument("--align", choices=("haar", "none"), default="haar",
                   help="detect and align faces (haar) or take a fixed centred crop (none, see --crop)")
    p.add_argument("--crop", type=float, default=0.45, help="centred square of the 250 px deep-funneled image")
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--pairs-per-epoch", type=int, default=20_000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=5e-3)
    p.add_argument("--pairing", choices=("sampled", "all"), default="all")
    p.add_argument("--classes-per-batch", type=int, default=32)
    p.add_argument("--images-per-class", type=int, default=4)
    p.add_argument("--n-val", type=int, default=150)
    p.add_argument("--max-minutes", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)


def lfw_run_config(args: Any, split: Any) -> Any:
    """The RunConfig of an LFW protocol model from add_lfw_args options and a siamface.data.Split."""
    from siamface.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    lfw = data_root() / "lfw"
    data = DataConfig(root=str(lfw / "deepfunneled"), train_ids=split.train, val_ids=split.val, test_ids=split.test)
    cfg = TrainConfig(epochs=args.epochs, pairs_per_epoch=args.pairs_per_epoch, lr=args.lr,
                      weight_decay=args.weight_decay, flip=True, select="eer", val_way=20, val_tasks=320,
                      val_pairs=4000, patience=args.epochs, max_minutes=args.max_minutes, seed=args.seed,
                      device=args.device, pairing=args.pairing, classes_per_batch=args.classes_per_batch,
                      images_per_class=args.images_per_class, id_loss=args.id_loss, id_margin=args.id_margin,
                      id_scale=args.id_scale,
                      threads=args.threads, progress=args.progress)
    return RunConfig(ModelConfig(args.model, args.model_kwargs), face_preprocess(args.model, args.align, args.crop),
                     data, cfg)
