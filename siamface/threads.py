"""One thread policy for the library, the CLI, the service and `watch`: one intra-op thread per worker.

Each inference call (detection, embedding) runs on `threads()` torch threads, 1 unless `set_threads(n)` or
SIAMFACE_THREADS says otherwise; parallelism comes from serving requests (or frames) on several workers, not
from splitting one small forward pass over cores. On a busy 2-core machine torch's default (a thread per
core, OpenMP threads that spin while they wait) made a photo 5-15x slower than one thread, since the spinning
threads fight every other process for the cores; one thread per call never waits for a sibling.

torch sets OpenMP's thread count per OS thread, so `apply()` runs at the start of every inference call, in
the calling thread (a service's worker thread starts with OpenMP's default). Processes that siamface owns
(the `siamface` command, the service) also call `process_defaults()` before torch is imported: passive
OpenMP waits, so that no idle OpenMP thread spins. Training keeps its own count (`TrainConfig.threads`, else
torch's), its validation passes included (`using`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

ENV = "SIAMFACE_THREADS"
_chosen: int | None = None
_cv2_threads: int | None = None


def _from_env() -> int:
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return 1
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{ENV} must be a whole number of threads >= 1, got {raw!r}")
    return int(raw)


def threads() -> int:
    """Torch threads per inference call: set_threads(n), else SIAMFACE_THREADS, else 1."""
    return _chosen if _chosen is not None else _from_env()


def set_threads(n: int | None) -> None:
    """Use n torch threads per inference call from now on (None: back to SIAMFACE_THREADS or 1)."""
    global _chosen
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"threads must be an integer >= 1, got {n!r}")
    _chosen = n


def apply() -> int:
    """Give the calling thread the policy's torch thread count (cheap when it already has it); returns it."""
    import torch

    global _cv2_threads
    n = threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    # OpenCV's pool (resizes, Haar) is process-wide: set once per count, once cv2 is (fully) imported
    set_cv2 = getattr(sys.modules.get("cv2"), "setNumThreads", None)
    if set_cv2 is not None and _cv2_threads != n:
        set_cv2(n)
        _cv2_threads = n
    return n


@contextmanager
def using(n: int) -> Iterator[None]:
    """The policy's count is n inside the block (training keeps its own threads for its validation passes)."""
    global _chosen
    before = _chosen
    set_threads(n)
    try:
        yield
    finally:
        _chosen = before


def process_defaults() -> None:
    """For a process siamface owns, before torch is imported: OpenMP threads wait passively instead of
    spinning (the user's own OMP_WAIT_POLICY wins). The thread count is left to torch, so that training keeps
    a thread per core; inference calls take the policy's count through apply()."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
