"""`siamface serve --processes 2`: two real serving processes on one port, each answering, an enrollment made
through one seen by the other (the store's version check), and SIGTERM to the parent stopping both."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _helpers import TinyRun, one_thread, tiny_run
from _serve_helpers import face_tiny_model, free_port, lfw_photos, start_server

pytest.importorskip("fastapi")
import httpx  # noqa: E402

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
KEY = "k-" + "7" * 30
AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> TinyRun:
    return tiny_run(tmp_path_factory, data_root)


def children_of(pid: int) -> dict[int, bytes]:
    """The live child processes of `pid` and their command lines (from /proc)."""
    out = {}
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out[int(d.name)] = (d / "cmdline").read_bytes()
        except OSError:
            continue
    return out


def servers_of(pid: int) -> set[int]:
    """The serving processes of `pid`: its spawned children, not multiprocessing's resource tracker."""
    return {k for k, cmd in children_of(pid).items() if b"spawn_main" in cmd}


def left_alive(pids: set[int], seconds: float = 5.0) -> list[int]:
    """Those of `pids` still running after `seconds` at most (the resource tracker ends once its parent has)."""
    deadline = time.monotonic() + seconds
    while [p for p in pids if alive(p)] and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_two_processes_share_the_port_and_the_gallery_and_stop_together(tiny: TinyRun, data_root: Path,
                                                                        tmp_path: Path) -> None:
    model = face_tiny_model(tiny.path, tmp_path / "face-tiny")
    port, log = free_port(), tmp_path / "serve.log"
    proc = start_server(["--gallery", str(tmp_path / "people.db"), "--model", str(model), "--processes", "2",
                         "--log-level", "warning"], port, {"SIAMFACE_API_KEY": KEY}, log)
    url = f"http://127.0.0.1:{port}"
    try:
        kids = servers_of(proc.pid)
        deadline = time.monotonic() + 60
        while len(kids) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            kids = servers_of(proc.pid)
        pids: set[int] = set()
        while pids != kids and time.monotonic() < deadline:  # each a fresh connection: the kernel spreads them
            r = httpx.get(f"{url}/health", timeout=10)
            if r.status_code == 200:
                pids.add(r.json()["pid"])
        assert len(kids) == 2 and pids == kids, (kids, pids, log.read_text()[-1000:])

        bush = lfw_photos(data_root, "George_W_Bush", 2)
        r = httpx.post(f"{url}/enroll", data={"name": "George W Bush"}, headers=AUTH, timeout=30,
                       files={"image": ("a.jpg", bush[0].read_bytes(), "image/jpeg")})
        assert r.status_code == 200, r.text
        answered: set[int] = set()
        for _ in range(6):
            answered.add(httpx.get(f"{url}/health", timeout=10).json()["pid"])
            r = httpx.post(f"{url}/identify", headers=AUTH, timeout=30,
                           files={"image": ("b.jpg", bush[1].read_bytes(), "image/jpeg")})
            assert r.status_code == 200, r.text
            names = [c["name"] for face in r.json()["faces"] for c in face["candidates"]]
            assert names[:1] == ["George W Bush"], r.json()
        assert httpx.get(f"{url}/people", headers=AUTH, timeout=10).json()
    finally:
        everyone = set(children_of(proc.pid))  # the tracker too
        os.kill(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log.read_text()[-2000:]
    assert kids <= everyone and not left_alive(everyone), "a child process outlived its parent"


def test_a_serving_process_dying_stops_the_parent_with_its_name(tiny: TinyRun, tmp_path: Path) -> None:
    model = face_tiny_model(tiny.path, tmp_path / "face-tiny")
    port, log = free_port(), tmp_path / "serve.log"
    proc = start_server(["--gallery", str(tmp_path / "people.db"), "--model", str(model), "--processes", "2",
                         "--log-level", "warning"], port, log=log)
    try:
        deadline = time.monotonic() + 60
        while len(servers_of(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        everyone, victim = set(children_of(proc.pid)), min(servers_of(proc.pid))
        os.kill(victim, signal.SIGKILL)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    last = log.read_text().strip().splitlines()[-1]
    assert code == 1 and last.startswith("siamface serve: siamface-serve-") and f"pid {victim}) exited with -9" in last
    assert not left_alive(everyone), "a child process outlived its parent"


def test_a_bad_model_fails_in_the_parent_before_listening(tmp_path: Path) -> None:
    port = free_port()
    out = subprocess.run([sys.executable, "-m", "siamface", "serve", "--port", str(port), "--processes", "2",
                          "--gallery", str(tmp_path / "people.db"), "--model", str(tmp_path / "no-such-model")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1 and "no-such-model" in out.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # never bound: nothing listens


def test_the_shared_socket_is_tcp_so_asyncio_sets_nodelay() -> None:
    """With proto 0, asyncio leaves TCP_NODELAY off on accepted connections: 1 client was 7.5 requests/s
    against 10.5 with one process (benchmarks/service_processes.py)."""
    from siamface.cli.serve import _listen

    with _listen("127.0.0.1", 0) as listening, socket.create_connection(listening.getsockname()[:2]):
        conn, _ = listening.accept()
        with conn:
            assert conn.proto == socket.IPPROTO_TCP  # what asyncio's _set_nodelay checks
