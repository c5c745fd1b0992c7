"""Bounded work per request: a gate that lets `workers` requests compute at once and `queue` more wait
(any more are answered 503 at once), and a deadline checked between the stages of each request (decode
each photo, find each face, embed and score), so a request that timed out stops at its next stage instead
of computing to the end in the background.

Why not kill the work: a request computes in a thread of FastAPI's pool, which Python cannot interrupt; a
process pool could be killed, but every worker would hold its own copy of the model and the gallery
(SQLite, its lock and its matrix) would have to move across processes. Stages are bounded instead: the
photo is analysed at `Limits.max_side` at most, so no stage runs long, and the slot is held until the
thread really stops, so timed-out requests can never pile up beyond `workers`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from siamface.errors import ModelError, SiamfaceError
from siamface.photo_faces import Photo
from siamface.verify import Verdict, Verifier


class BusyError(SiamfaceError):
    """Every worker is computing and the queue is full (HTTP 503, with Retry-After)."""


class RequestTimeoutError(SiamfaceError):
    """The request's time ran out; its work stopped (HTTP 504)."""


def check(deadline: float, stage: str = "") -> None:
    """Raise RequestTimeoutError when the deadline (time.monotonic() seconds) has passed."""
    if time.monotonic() > deadline:
        where = f" before {stage}" if stage else ""
        raise RequestTimeoutError(f"request took longer than its time limit; stopped{where}")


class Gate:
    """`workers` slots to compute in, `light` more for light requests only, `queue` places to wait for one;
    `slot(deadline, light)` takes one."""

    def __init__(self, workers: int, queue: int, light: int = 0) -> None:
        if workers < 1 or queue < 0 or light < 0:
            raise ValueError(f"a gate needs workers >= 1, queue >= 0 and light >= 0, got {workers}, {queue}, {light}")
        self.workers, self.queue, self.light = workers, queue, light
        self._slots = threading.Semaphore(workers)
        self._light_slots = threading.Semaphore(light)
        self._lock = threading.Lock()
        self._admitted = 0  # computing + waiting

    @property
    def admitted(self) -> int:
        """Requests computing or waiting now."""
        with self._lock:
            return self._admitted

    @contextmanager
    def slot(self, deadline: float, light: bool = False) -> Iterator[None]:
        """Compute inside: BusyError at once when `workers + light + queue` requests are in;
        RequestTimeoutError when no worker frees up before the deadline (a light request takes whichever
        worker frees first). The slot is released only when the block ends."""
        with self._lock:
            if self._admitted >= self.workers + self.light + self.queue:
                raise BusyError(f"the server is busy ({self.workers + self.light} requests computing, {self.queue} "
                                "waiting); retry in a moment")
            self._admitted += 1
        try:
            taken = self._acquire(deadline, light)
            try:
                yield
            finally:
                taken.release()
        finally:
            with self._lock:
                self._admitted -= 1

    def _acquire(self, deadline: float, light: bool) -> threading.Semaphore:
        if not (light and self.light):
            if self._slots.acquire(timeout=max(0.0, min(deadline - time.monotonic(), threading.TIMEOUT_MAX))):
                return self._slots
        else:
            while time.monotonic() < deadline:  # either kind of worker: poll both (a light request is short)
                for slots in (self._slots, self._light_slots):
                    if slots.acquire(blocking=False):
                        return slots
                time.sleep(0.005)
        raise RequestTimeoutError("request took longer than its time limit waiting for a free worker")


def verify_photos(v: Verifier, photos: list[Photo], deadline: float) -> Verdict:
    """`Verifier.verify` in stages, with the deadline checked before each: find the face of each photo (a
    NoFaceError names the photo it is about: `Photo.where`), then embed and score both. Face reports are in
    each photo's own pixels (it may have been analysed at reduced size)."""
    from siamface.embed import embed_batches
    from siamface.photo_faces import faces_for

    t0 = time.perf_counter()
    inputs, faces = [], []
    for photo in photos:
        check(deadline, f"finding the face in {photo.where}")
        face = faces_for(photo, v.preprocess)[0]  # errors name photo.where; reports in its own pixels
        inputs.append(face.input)
        faces.append(face.report)
    check(deadline, "embedding")
    emb = embed_batches(v.net, torch.from_numpy(np.stack(inputs)), v.preprocess, device=v.device)
    p = float(v.probability(emb[:1], emb[1:])[0])
    if not math.isfinite(p):
        raise ModelError(f"{v.name}: the model gave a non-finite probability ({p}); its weights are broken")
    return Verdict.of(v.decision, p, v.name, round((time.perf_counter() - t0) * 1000, 2), faces)
