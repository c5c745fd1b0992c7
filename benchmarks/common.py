"""Shared helpers for benchmarks: data location, machine description, atomic JSON results."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from siamface.cli import add_config_flags, config_from_args
from siamface.config import DataConfig, ModelConfig, PreprocessConfig, RunConfig, TrainConfig
from siamface.data import data_root

__all__ = ["REPO", "RESULTS", "command", "data_root", "machine", "pct", "std_error", "write_result"]

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


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
        return default_preprocess(model, align=AlignConfig())
    return default_preprocess(model, crop=crop)


# The published View 1 recipe; the LFW benchmarks vary these fields by flags generated from the config classes.
LFW_RECIPE = RunConfig(
    ModelConfig("resface64"), PreprocessConfig(crop=0.45), DataConfig(n_val=150),
    TrainConfig(epochs=16, pairs_per_epoch=20_000, lr=1e-3, weight_decay=5e-3, flip=True, select="eer",
                val_way=20, val_tasks=320, val_pairs=4000, pairing="all"))
LFW_ALIGN = "haar"
LFW_FLAGS = {
    ModelConfig: ("name",), PreprocessConfig: ("crop",), DataConfig: ("n_val",),
    TrainConfig: ("epochs", "pairs_per_epoch", "lr", "weight_decay", "pairing", "classes_per_batch",
                  "images_per_class", "id_loss", "id_margin", "id_scale", "max_minutes", "seed", "device",
                  "threads", "progress"),
}


def add_lfw_args(p: argparse.ArgumentParser, recipe: RunConfig = LFW_RECIPE, align: str = LFW_ALIGN) -> None:
    """The LFW protocol benchmarks' options: one flag per varied config field (siamface train's own flags),
    defaults from `recipe`; --align haar | none (a fixed centred crop, see --crop)."""
    for cls, names in LFW_FLAGS.items():
        section = {ModelConfig: recipe.model, PreprocessConfig: recipe.preprocess, DataConfig: recipe.data,
                   TrainConfig: recipe.train}[cls]
        add_config_flags(p, cls, base=section, only=names)
    p.add_argument("--model-kwargs", type=json.loads, default=None,
                   help=f"factory overrides as JSON (default: {json.dumps(recipe.model.kwargs)})")
    p.add_argument("--align", choices=("haar", "none"), default=align,
                   help=f"detect and align faces (haar) or take a fixed centred crop (none) (default: {align})")


def lfw_options(args: argparse.Namespace, recipe: RunConfig = LFW_RECIPE) -> RunConfig:
    """The recipe with the flags applied (data still without its split: see lfw_run_config)."""
    model = config_from_args(ModelConfig, args, recipe.model)
    if args.model_kwargs is not None:
        model = replace(model, kwargs=args.model_kwargs)
    train = config_from_args(TrainConfig, args, recipe.train)
    train = replace(train, patience=train.epochs)  # every epoch runs; the best on validation is kept
    pre = config_from_args(PreprocessConfig, args, recipe.preprocess)
    return RunConfig(model, face_preprocess(model.name, args.align, pre.crop),
                     config_from_args(DataConfig, args, recipe.data), train)


def lfw_run_config(options: RunConfig, split: Any) -> RunConfig:
    """An LFW protocol run: `lfw_options` with the identity split of a siamface.data.Split."""
    lfw = data_root() / "lfw"  # the explicit split replaces n_val (it only chose the split's size)
    data = DataConfig(root=str(lfw / "deepfunneled"), train_ids=split.train, val_ids=split.val, test_ids=split.test)
    return replace(options, data=data)
