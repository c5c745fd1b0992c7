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
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """A YUV4MPEG2 clip (4:2:0, BT.601 limited range) of RGB uint8 frames with even sides."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb_frame in frames:
            r, g, b = (rgb_frame[..., i].astype(np.float64) for i in range(3))
            y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
            u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
            v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
            sub = [c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)) for c in (u, v)]
            f.write(b"FRAME\n")
            for plane in (y, *sub):
                f.write(np.clip(np.rint(plane), 0, 255).astype(np.uint8).tobytes())
    return path


def even(img: np.ndarray) -> np.ndarray:
    """The image cropped to even sides (4:2:0 needs them)."""
    return img[: img.shape[0] // 2 * 2, : img.shape[1] // 2 * 2]


def chromium_args(clip: Path) -> list[str]:
    """Debian's chromium, headless in a container, with the fake camera playing `clip` (no permission prompt)."""
    return ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={clip}"]


def wait_js(page, expression: str, seconds: float) -> None:  # noqa: ANN001
    """Poll an expression with page.evaluate (the page's CSP forbids the eval that wait_for_function uses)."""
    deadline = time.monotonic() + seconds
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.05)


@contextmanager
def serve_in_thread(settings: Any, wrap: Any = None) -> Iterator[str]:
    """The app of `settings` (inside the ASGI wrapper `wrap`, if any) under uvicorn in a thread on a free
    loopback port; yields its URL."""
    import uvicorn

    from siamface.serve import create_app

    app = create_app(settings) if wrap is None else wrap(create_app(settings))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{srv.config.port}"
    finally:
        srv.should_exit = True
        thread.join(10)


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
