"""Progress bars only on a terminal (issue 11, fault 11): a log file gets no carriage-return updates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import siamface.progress
from siamface.data import ImageStore, store
from siamface.training import _progress


def _images(tmp_path: Path, n: int) -> list[Path]:
    paths = []
    for k in range(n):
        paths.append(tmp_path / f"{k}.png")
        Image.fromarray(np.full((8, 8), k, dtype=np.uint8)).save(paths[-1])
    return paths


@pytest.mark.parametrize("terminal", [False, True])
def test_decoding_shows_a_bar_only_on_a_terminal(terminal: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(store, "PROGRESS_MIN", 2)  # bars start above this many images
    monkeypatch.setattr(siamface.progress, "on_terminal", lambda: terminal)
    ImageStore.from_paths(_images(tmp_path, 5), 1, 8, progress=True)
    err = capsys.readouterr().err
    assert ("\r" in err) is terminal and ("decoding images" in err) is terminal


def test_under_pytest_stderr_is_not_a_terminal() -> None:
    assert siamface.progress.on_terminal() is False


def test_training_steps_get_a_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = range(3)
    assert _progress(steps, True, "epoch 1/1") is steps  # not a terminal: the plain iterable
    monkeypatch.setattr("siamface.training.on_terminal", lambda: True)
    bar = _progress(steps, True, "epoch 1/1")
    assert bar is not steps and list(bar) == [0, 1, 2]
    assert _progress(steps, False, "epoch 1/1") is steps  # progress=False wins everywhere
