"""Multi-process training: `torchrun --nproc_per_node=2 -m siamface train` with gloo on CPU takes the steps one
process takes with the same global batch, rank 0 alone writes the run folder, and a killed run resumes.

The tiny model on AT&T (3 epochs of 4 batches of 64 pairs, distortions on). Tolerance: every weight, buffer and
optimiser tensor within 1e-5 of the one-process run, the logged losses within 1e-5 and the logits of real
faces within 1e-4, except two tensors that float rounding alone moves: the bias of the linear layer just
before the embedding's batch norm has a zero gradient in exact arithmetic (the norm subtracts it again), so
AdamW turns rounding noise into steps of the learning rate's size (measured 1.3e-3 apart after 3 epochs),
and the norm's running mean follows it; neither changes what the network computes in training. AdamW's
first moments (at most 1e-2) agree within 1e-4 (measured 4e-5): one step's gradients agree to 6e-6 of their
size, and twelve steps let those differences grow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import att_dir, att_run, one_thread, read_log, run_file, weights

import siamface
from siamface.checkpoint import load_model
from siamface.distributed import GlobalBatchNorm, Shard, globalize_batch_norm
from siamface.preprocess import load_input, normalize
from siamface.training import train

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
ROOT = Path(siamface.__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
       "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
CANCELLED = {"tower.head.fc.bias", "tower.head.bn.running_mean"}  # see the module docstring
EPOCHS = 3


def _torchrun(config: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "siamface",
           "train", "--config", str(config), "--out", str(out), *extra]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _end(proc: subprocess.Popen[str]) -> None:
    """Never leave a launcher behind (a failed assertion, a timeout): SIGTERM reaches its ranks too."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str = "") -> None:
    assert a.keys() == b.keys()
    for k in a:
        if k.removeprefix(prefix) not in CANCELLED:
            atol = 1e-4 if k.startswith("opt.") else 1e-5  # AdamW's moments: see the module docstring
            torch.testing.assert_close(a[k].float(), b[k].float(), rtol=0, atol=atol, msg=k)


def test_two_gloo_processes_take_one_process_steps_and_resume(data_root: Path, tmp_path: Path) -> None:
    run = att_run(data_root, epochs=EPOCHS, pairs_per_epoch=256, batch_size=64, threads=1)
    one = tmp_path / "one"
    train(run, one)
    config = tmp_path / "run.json"
    config.write_text(json.dumps(run.to_dict()))

    two = tmp_path / "two"  # killed once its first epoch is saved, then resumed: the same end
    proc = _torchrun(config, two)
    try:
        deadline = time.monotonic() + 120
        while not (two / "state.json").is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)  # torchrun passes it to both ranks
        proc.communicate(timeout=60)
    finally:
        _end(proc)
    killed_at = json.loads((two / "state.json").read_text())["epoch"]
    assert 1 <= killed_at < EPOCHS, "the run finished before it could be killed"
    done = _torchrun(config, two, "--resume")
    try:
        stdout, stderr = done.communicate(timeout=180)
    finally:
        _end(done)
    assert done.returncode == 0, stderr[-2000:]
    assert json.loads(stdout)["status"] == "complete"  # rank 0 alone prints: one JSON document

    _close(weights(one / "model.safetensors"), weights(two / "model.safetensors"))
    _close(weights(run_file(one, "state.safetensors")), weights(run_file(two, "state.safetensors")), "model.")
    rows_one, rows_two = read_log(one), read_log(two)
    assert [r["epoch"] for r in rows_two] == list(range(1, EPOCHS + 1))  # rank 0 alone logs, once per epoch
    np.testing.assert_allclose([r["loss"] for r in rows_two], [r["loss"] for r in rows_one], rtol=1e-5)
    meta_one, meta_two = (json.loads((d / "model.json").read_text()) for d in (one, two))
    assert meta_two["machine"]["processes"] == 2 and meta_two["epoch"] == meta_one["epoch"]
    assert not [p.name for p in two.iterdir() if p.name.endswith(".tmp")]

    a, b = load_model(one), load_model(two)
    faces = sorted(att_dir(data_root).glob("s1*/1.pgm"))  # real faces, 11 people
    x = normalize(torch.from_numpy(np.stack([load_input(p, a.preprocess) for p in faces])), a.preprocess)
    with torch.no_grad():
        ea, eb = a.model.embed(x), b.model.embed(x)
        torch.testing.assert_close(b.model.score(eb, eb.roll(1, 0)), a.model.score(ea, ea.roll(1, 0)), rtol=0,
                                   atol=1e-4)


def test_global_batch_norm_keeps_the_checkpoint_layout_and_one_process_math() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                              torch.nn.LazyLinear(3), torch.nn.BatchNorm1d(3))
    x = torch.randn(6, 1, 8, 8)
    want = net(x)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert globalize_batch_norm(net) == 2 and isinstance(net[1], GlobalBatchNorm)
    assert net.state_dict().keys() == before.keys()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
    torch.testing.assert_close(net(x), want)  # one process: plain batch norm
    assert Shard(0, 2).bounds(5) == (0, 2) and Shard(1, 2).bounds(5) == (2, 5) and Shard().bounds(5) == (0, 5)
