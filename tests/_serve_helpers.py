"""Helpers for the service tests: a tiny face-detecting model, LFW photos, encoded uploads, a live server.

`face_tiny_model` is the session's tiny AT&T model with the shipped face model's Haar alignment in its
model.json: it detects and aligns faces like the real service (so NoFace / several faces are real), at the
cost of a 32x32 forward pass. Its probabilities mean nothing; the tests check plumbing, not accuracy.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from siamface.checkpoint import WEIGHTS_DIR

REPO = Path(__file__).resolve().parents[1]

LFW_VIEW1 = WEIGHTS_DIR / "lfw-view1"  # the Haar-aligned model these tests are written for


def face_tiny_model(tiny_path: Path, dst: Path) -> Path:
    """A copy of the tiny run whose preprocessing detects and aligns faces (the shipped model's settings)."""
    import shutil

    shutil.copytree(tiny_path, dst)
    meta = json.loads((dst / "model.json").read_text())
    meta["preprocess"]["align"] = json.loads((LFW_VIEW1 / "model.json").read_text())["preprocess"]["align"]
    (dst / "model.json").write_text(json.dumps(meta, indent=2))
    return dst


def lfw_photos(data_root: Path, person: str, n: int = 2) -> list[Path]:
    photos = sorted((data_root / "lfw" / "deepfunneled" / person).glob("*.jpg"))[:n]
    assert len(photos) == n, f"LFW should hold {n} photos of {person}"
    return photos


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def encode(arr_or_image: np.ndarray | Image.Image, fmt: str, **kw: object) -> bytes:
    im = arr_or_image if isinstance(arr_or_image, Image.Image) else Image.fromarray(arr_or_image)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def side_by_side(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two photos in one: a photo with two faces."""
    return np.concatenate([a, b], axis=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(args: list[str], port: int, env: dict[str, str] | None = None, log: Path | None = None,
                 timeout: float = 120.0) -> subprocess.Popen:
    """`siamface serve ... --port PORT` as a real process; returns once /health answers."""
    import httpx

    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen([sys.executable, "-m", "siamface", "serve", "--port", str(port), *args],
                            env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"siamface serve exited with {proc.returncode}" +
                               (f"; log: {log.read_text()[-2000:]}" if log else ""))
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"siamface serve did not answer on port {port} within {timeout} s")
