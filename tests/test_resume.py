"""siamface.resume: training state, and a run killed at any instant resumes (or restarts) to the same model.

The kill is injected at every rename a run performs (before and after each one) in a forked child that dies
with os._exit, as a SIGKILL would leave it: no cleanup handler runs, temp files stay behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from _helpers import att_run, one_thread, read_log

import siamface.files
from siamface.errors import ModelError, SiamfaceError
from siamface.models import create_model
from siamface.resume import TrainState, load_state, save_state
from siamface.training import train

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def _run(data_root: Path) -> Any:
    return att_run(data_root, epochs=2, pairs_per_epoch=128, val_tasks=20, val_pairs=100)


def test_damaged_training_state_is_a_model_error_naming_the_file(tmp_path: Path, data_root: Path) -> None:
    torch.manual_seed(0)
    model = create_model("tiny")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    save_state(tmp_path, model, opt, TrainState(epoch=1), _run(data_root))
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["best"] == "-inf"  # JSON has no infinities: stored as text, read back as a float
    assert load_state(tmp_path, model, opt).best == float("-inf")
    path = tmp_path / state["tensors"]
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelError, match="state"):
        load_state(tmp_path, model, opt)


def test_resume_of_a_folder_that_does_not_exist_is_refused(tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(SiamfaceError, match="nothing to resume"):
        train(_run(data_root), tmp_path / "nowhere", resume=True)
    assert not (tmp_path / "nowhere").exists()


def _renames(data_root: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, dict[str, Any]]:
    """How many renames an uninterrupted run makes, and its model.json."""
    calls = []
    real = os.replace

    def counting(src: Any, dst: Any) -> None:
        calls.append(str(dst))
        real(src, dst)

    monkeypatch.setattr(siamface.files.os, "replace", counting)
    meta = train(_run(data_root), out)
    monkeypatch.undo()
    return len(calls), meta


def _killed_at(data_root: Path, out: Path, k: int, after: bool) -> None:
    """Run in a forked child that dies at the k-th rename (before or after it)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        real, seen = os.replace, [0]

        def dying(src: Any, dst: Any) -> None:
            seen[0] += 1
            if seen[0] == k + 1 and not after:
                os._exit(137)
            real(src, dst)
            if seen[0] == k + 1:
                os._exit(137)

        siamface.files.os.replace = dying  # type: ignore[assignment]
        try:
            train(_run(data_root), out)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 137, "the child was meant to die at that rename"


@pytest.mark.slow
def test_a_run_killed_at_every_rename_resumes_to_the_uninterrupted_model(
        data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n, reference = _renames(data_root, tmp_path / "reference", monkeypatch)
    assert n >= 8  # per epoch: best weights + card, state tensors + JSON, curves; then the final card
    points = [(k, after) for k in range(n) for after in (False, True)]
    for k, after in points:
        out = tmp_path / f"kill-{k}-{int(after)}"
        _killed_at(data_root, out, k, after)
        meta = train(_run(data_root), out, resume=True)
        where = f"killed {'after' if after else 'before'} rename {k + 1} of {n}"
        assert meta["val"] == reference["val"], where
        assert meta["calibration"] == reference["calibration"], where
        assert [r["epoch"] for r in read_log(out)] == [1, 2], where
        assert not list(out.glob(".*.tmp")), f"{where}: orphan temp files left"
