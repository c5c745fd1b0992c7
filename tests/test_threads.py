"""The thread policy (siamface.threads): every convolution of detection and embedding runs on the configured
number of torch threads, in whichever thread calls; processes siamface owns wait passively."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from siamface import threads
from siamface.verify import Verifier

REPO = Path(__file__).resolve().parents[1]


def _threads_seen_by_convolutions(monkeypatch: pytest.MonkeyPatch, photo: Path) -> set[int]:
    """torch's thread count inside every conv2d of one verify, run in a fresh thread that starts at 2."""
    seen: set[int] = set()
    conv = torch.nn.modules.conv.F.conv2d

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        seen.add(torch.get_num_threads())
        return conv(*args, **kwargs)

    monkeypatch.setattr(torch.nn.modules.conv.F, "conv2d", spy)
    verifier = Verifier()  # the shipped model: MMOD detection and dlib's ResNet

    def work() -> None:
        torch.set_num_threads(2)  # what a new worker thread may start with
        verifier.verify(photo, photo)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    return seen


def test_every_convolution_runs_on_the_configured_threads(monkeypatch: pytest.MonkeyPatch, data_root: Path) -> None:
    photo = data_root / "lfw" / "deepfunneled" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv(threads.ENV, raising=False)
        assert _threads_seen_by_convolutions(monkeypatch, photo) == {1}
        threads.set_threads(2)
        assert _threads_seen_by_convolutions(monkeypatch, photo) == {2}
    finally:
        threads.set_threads(None)
        torch.set_num_threads(before)


def test_threads_from_the_environment_and_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.threads() == 3
    threads.set_threads(2)
    assert threads.threads() == 2  # set_threads wins
    with threads.using(4):  # training's count for its validation passes, restored after
        assert threads.threads() == 4
    assert threads.threads() == 2
    threads.set_threads(None)
    monkeypatch.setenv(threads.ENV, "many")
    with pytest.raises(ValueError, match=threads.ENV):
        threads.threads()
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads"):
            threads.set_threads(bad)  # type: ignore[arg-type]


def test_the_command_sets_passive_waits_before_torch_is_imported() -> None:
    """The CLI module imports no torch; main() sets OMP_WAIT_POLICY (the user's own wins) and leaves the
    thread count to torch (training's)."""
    code = ("import os, sys\n"
            "from siamface.cli import main\n"
            "assert 'torch' not in sys.modules, 'siamface.cli imported torch'\n"
            "main(['models'])\n"
            "print(os.environ['OMP_WAIT_POLICY'], os.environ.get('OMP_NUM_THREADS'))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_") and k != threads.ENV}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "PASSIVE None"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "ACTIVE None"
