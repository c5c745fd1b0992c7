"""Shared helpers for the model, checkpoint, training, evaluation, CLI and verifier tests.

`tiny_run` trains ONE tiny AT&T model per test session (a few seconds on two cores) while spying on every
image the run decodes, so the leakage tests and every consumer of a trained model share the same run.
Tests that change a run folder copy it first (`copy_run`).
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import siamface.preprocess
import siamface.training
from siamface.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from siamface.data.prepare import Prepared
from siamface.models import default_preprocess

FAST_TRAIN: dict[str, Any] = dict(
    epochs=2, pairs_per_epoch=256, batch_size=64, val_way=5, val_tasks=50, val_pairs=200, progress=False, bf16=False
)


def att_dir(data_root: Path) -> Path:
    return data_root / "att_faces"


def att_run(data_root: Path, **train: Any) -> RunConfig:
    """The tiny model on AT&T (5 val and 10 test subjects held out) with FAST_TRAIN, changed by `train`."""
    return RunConfig(
        ModelConfig("tiny"), default_preprocess("tiny"),
        DataConfig(root=str(att_dir(data_root)), n_val=5, n_test=10), TrainConfig(**{**FAST_TRAIN, **train}),
    )


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]


def log_without_time(run_dir: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in read_log(run_dir)]


def read_meta(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "model.json").read_text())


def write_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    (run_dir / "model.json").write_text(json.dumps(meta, indent=2))


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path)


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def run_file(run_dir: Path, name: str) -> Path:
    """A run's file; 'state.safetensors' means the per-epoch state file that state.json names."""
    if name == "state.safetensors":
        return run_dir / json.loads((run_dir / "state.json").read_text())["tensors"]
    return run_dir / name


def copy_run(src: Path, dst: Path) -> Path:
    """A private copy of a run folder for tests that change it."""
    shutil.copytree(src, dst)
    return dst


def identity_of(path: Path) -> str:
    """AT&T identity of an image path: its folder name (sN)."""
    return Path(path).parent.name


@dataclass
class TinyRun:
    """The session's trained tiny model and what was observed while it trained."""

    path: Path
    run: RunConfig
    meta: dict[str, Any]
    decoded: list[Path] = field(default_factory=list)  # every image file decoded during train()
    prepared: list[Prepared] = field(default_factory=list)  # what prepare_data returned
    batch_sources: list[bool] = field(default_factory=list)  # each batch's images were the training store's
    batch_max_index: int = -1


_CACHE: dict[str, TinyRun] = {}


def _train_with_spies(run: RunConfig, out: Path) -> TinyRun:
    result = TinyRun(out, run, {})
    real_load, real_prepare, real_loss = (siamface.preprocess.load_image, siamface.training.prepare_data,
                                          siamface.step.Step.pair_loss)

    def load_image(path: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        result.decoded.append(Path(path))
        return real_load(path, *args, **kwargs)

    def prepare_data(*args: Any, **kwargs: Any) -> Prepared:
        result.prepared.append(real_prepare(*args, **kwargs))
        return result.prepared[-1]

    def pair_loss(step: siamface.step.Step, batch: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        result.batch_sources.append(step.images is result.prepared[-1].train_images)
        result.batch_max_index = max(result.batch_max_index, int(batch[:, :2].max()))
        return real_loss(step, batch, *args, **kwargs)

    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        torch.set_num_threads(1)  # as in every module of these tests (see one_thread): bitwise-equal reruns
        mp.setattr(siamface.preprocess, "load_image", load_image)
        mp.setattr(siamface.training, "prepare_data", prepare_data)
        mp.setattr(siamface.step.Step, "pair_loss", pair_loss)
        result.meta = siamface.training.train(run, out)
    torch.set_num_threads(threads)
    return result


def tiny_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> TinyRun:
    """Train the session's tiny AT&T model once (cached across test modules)."""
    if "att" not in _CACHE:
        out = tmp_path_factory.mktemp("tiny_att_run")
        _CACHE["att"] = _train_with_spies(att_run(data_root), out)
    return _CACHE["att"]


def one_thread() -> Iterator[None]:
    """One intra-op thread while a test module runs, restored afterwards.

    On a shared 2-core machine (a training benchmark beside the tests) two spinning OpenMP threads make
    the small forward passes of these tests 20-80x slower (0.7 s instead of 0.01 s per batch of a small
    ResNet); the results do not depend on the thread count.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk announcing width x height, then garbage: decodable only as a header."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = b"IDAT" + b"\0" * 64  # not a zlib stream: decoding it would fail as corrupt, not as too large
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
            + struct.pack(">I", 64) + idat + struct.pack(">I", zlib.crc32(idat)))
