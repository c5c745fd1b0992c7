"""Embedding with onnxruntime instead of torch: `Verifier(..., runtime="onnx")`, `--runtime onnx`.

`OnnxTower` stands in for the verifier's network: `embed(x)` runs the model's tower (exported by
siamface.export, its inference copy where it has one) in onnxruntime and returns a torch tensor, so
`embed_batches`, the gallery and the service use it unchanged. The Siamese head stays in torch (129 numbers:
nothing to gain), so decisions differ from torch's only by the tower's float rounding (<= 1e-4, tested).

The exported tower is cached by the SHA-256 of the tower's own tensors (the head and the threshold do not
change it) in `$SIAMFACE_CACHE/onnx/` (default `~/.cache/siamface/onnx/`): the first use exports it (seconds),
later ones load it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from . import __version__
from . import threads as thread_policy
from .checkpoint import LoadedModel
from .errors import SiamfaceError
from .files import atomic_write_bytes

RUNTIMES = ("torch", "onnx")


def cache_dir() -> Path:
    """Where exported towers are kept: $SIAMFACE_CACHE/onnx, else ~/.cache/siamface/onnx."""
    root = os.environ.get("SIAMFACE_CACHE") or Path.home() / ".cache" / "siamface"
    return Path(root) / "onnx"


def tower_key(loaded: LoadedModel) -> str:
    """SHA-256 of the tower's tensors, input shape and the exporting versions: an export's cache key."""
    h = hashlib.sha256(f"{__version__} {torch.__version__} {loaded.model.in_channels} "
                       f"{loaded.model.input_size}".encode())
    for name, t in loaded.model.tower.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class OnnxTower:
    """The verifier's `net` on onnxruntime: `embed` (N, C, S, S) normalised float -> (N, D) float32."""

    def __init__(self, model_file: str | Path | bytes, embed_dim: int, threads: int = 0) -> None:
        from .export import session

        self.session = session(model_file, threads)
        self.embed_dim = embed_dim

    def eval(self) -> OnnxTower:
        return self

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"images": np.ascontiguousarray(x.detach().float().cpu().numpy())})[0]
        return torch.from_numpy(out)

    __call__ = embed


def onnx_tower(loaded: LoadedModel, runtime: str = "onnx", threads: int | None = None) -> OnnxTower:
    """The model's tower on onnxruntime (exported on first use, then cached); `runtime` is checked here so
    the verifier's caller gets one clear error for an unknown one. threads: onnxruntime's intra-op threads
    (default: the thread policy's count, siamface.threads, so `--threads` means the same for both runtimes)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    from .export import require_onnx, tower_onnx

    require_onnx()
    path = cache_dir() / f"{tower_key(loaded)}.onnx"
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, tower_onnx(loaded.model))
        except OSError as e:
            raise SiamfaceError(f"{path}: cannot write the ONNX tower cache ({e.strerror}); set SIAMFACE_CACHE "
                                "to a writable folder") from None
    return OnnxTower(path, loaded.model.embed_dim, thread_policy.threads() if threads is None else threads)
