"""Gallery durability with real processes: SIGKILL in the middle of an enrollment transaction, and several
processes enrolling into one (new) gallery at once; on a SQLite file and on a PostgreSQL database."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _gallery_data import single_face_photos

from siamface.gallery_store import open_store

REPO = Path(__file__).resolve().parents[1]

# A child process: enroll each (name, photos) job and acknowledge it on stdout once enroll() returned.
# With a delay, every inserted row is announced and followed by a pause, so the parent can kill the
# process while a transaction is open (rows written, not committed).
CHILD = r"""
import json, sys, time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
import torch
torch.set_num_threads(1)
from siamface.gallery import Gallery

args = json.loads(sys.argv[1])
if args["delay"]:
    real = Gallery._insert_enrollment
    def slow(self, tx, person_id, face, emb, now):
        row = real(self, tx, person_id, face, emb, now)
        print("inserted", row, flush=True)
        time.sleep(args["delay"])
        return row
    Gallery._insert_enrollment = slow
print("ready", flush=True)
while args["barrier"] and not Path(args["barrier"]).exists():
    time.sleep(0.01)
with Gallery(args["db"]) as g:
    for name, photos in args["jobs"]:
        g.enroll(name, photos)
        print("ack", name, flush=True)
"""


def _start(tmp_path: Path, db: str | Path, jobs: list[tuple[str, list[str]]], delay: float = 0.0,
           barrier: Path | None = None) -> subprocess.Popen[str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    arg = json.dumps({"db": str(db), "jobs": jobs, "delay": delay, "barrier": str(barrier) if barrier else None})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(script), arg], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=REPO)


def _photo_pool(data_root: Path) -> list[str]:
    return [str(p) for ps in single_face_photos(data_root / "lfw", 8, 3).values() for p in ps]


def _counts(db: str | Path) -> dict[str, int]:
    """Photos per person; a SQLite file's pages and foreign keys checked first."""
    if isinstance(db, Path):
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        finally:
            conn.close()
    store = open_store(db)
    try:
        return dict(store.fetchall("SELECT p.name, count(e.id) FROM people p LEFT JOIN enrollments e "
                                   "ON e.person_id = p.id GROUP BY p.id, p.name"))
    finally:
        store.close()


def test_sigkill_during_enrollment_leaves_every_acknowledged_enrollment(tmp_path: Path, data_root: Path,
                                                                        gallery_location: str | Path) -> None:
    pool = _photo_pool(data_root)
    db = gallery_location
    rng = random.Random(0)
    acked: list[str] = []
    killed_in_transaction: list[str] = []
    for round_ in range(3):
        jobs = [(f"r{round_}_p{i:02d}", [pool[(3 * i + j) % len(pool)] for j in range(3)]) for i in range(20)]
        child = _start(tmp_path, db, jobs, delay=0.05)
        assert child.stdout is not None
        inserted_since_ack = 0
        target_acks = 2 + round_
        for line in child.stdout:
            word, *value = line.split()
            if word == "ack":
                acked.append(value[0])
                inserted_since_ack = 0
            elif word == "inserted":
                inserted_since_ack += 1
            # round 0 and 1: kill while the next enrollment has 2 of its 3 rows written; round 2: anywhere
            if round_ < 2 and len(acked) >= target_acks and inserted_since_ack == 2:
                killed_in_transaction.append(jobs[len([a for a in acked if a.startswith(f"r{round_}")])][0])
                break
            if round_ == 2 and len([a for a in acked if a.startswith("r2")]) >= target_acks:
                time.sleep(rng.uniform(0.0, 0.3))
                break
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
    counts = _counts(db)
    assert all(counts.get(name) == 3 for name in acked)  # every acknowledged enrollment, whole
    assert set(counts.values()) == {3}  # nothing half-written
    assert not set(killed_in_transaction) & set(counts)  # the interrupted ones rolled back
    assert len(killed_in_transaction) == 2


def test_concurrent_processes_enrolling_lose_nothing(tmp_path: Path, data_root: Path,
                                                    gallery_location: str | Path) -> None:
    pool = _photo_pool(data_root)
    db = gallery_location  # a new file or an empty database: the processes also race to create and migrate it
    barrier = tmp_path / "go"
    n_procs, per_proc = 3, 6
    children = []
    for k in range(n_procs):
        jobs = [(f"proc{k}_p{i}", [pool[(k * per_proc + i) % len(pool)]]) for i in range(per_proc)]
        children.append(_start(tmp_path, db, jobs, barrier=barrier))
    for c in children:  # every child imported torch and siamface: start them together
        assert c.stdout is not None and c.stdout.readline().strip() == "ready"
    barrier.touch()
    for c in children:
        out, err = c.communicate(timeout=300)
        assert c.returncode == 0, err
        assert out.count("ack ") == per_proc
    counts = _counts(db)
    assert counts == {f"proc{k}_p{i}": 1 for k in range(n_procs) for i in range(per_proc)}


@pytest.fixture(autouse=True)
def _reap_children(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Kill (by their own pid) the child processes a failing test left running."""
    started: list[subprocess.Popen[str]] = []
    real = subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[str]:
        started.append(real(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", popen)
    yield
    for child in started:
        if child.poll() is None:
            child.kill()
            child.wait()
