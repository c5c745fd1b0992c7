"""Which model a gallery belongs to: its identity (the head's weights file and the tower's tensors) and
finding it again from the file (`Gallery.open`), for the CLI and the service alike.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import gallery_store
from .errors import ModelError

if TYPE_CHECKING:
    from .gallery import Gallery
    from .models import SiameseNet


def tower_sha256(model: SiameseNet) -> str:
    """SHA-256 of the tower's tensors (names, dtypes, shapes, bytes, in name order): the same for the same
    tower whether its weights came from the run's file or from its factory (a frozen pretrained tower)."""
    h = hashlib.sha256()
    for name, t in sorted(model.tower.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def stored_model(path: str | Path) -> str | None:
    """The model a gallery records (a shipped model's name or a run folder), None for a new one."""
    store = gallery_store.open_store(path)
    try:
        return store.meta().get("model")
    finally:
        store.close()


def open_gallery(cls: type[Gallery], path: str | Path, model: str | Path | None = None, *, aggregate: str = "max",
                 keep_crops: str | None = None, crops_dir: str | Path | None = None,
                 **verifier_options: Any) -> Gallery:
    """`Gallery.open`: check the file, find its model (unless given), build the verifier, open."""
    from .checkpoint import resolve_run
    from .verify import Verifier

    path = gallery_store.location_of(path)
    exists = gallery_store.is_url(path) or Path(path).is_file()
    if isinstance(path, Path) and path.exists():
        gallery_store.check_integrity(path)
    if model is None and exists:
        stored = stored_model(path)
        try:
            model = resolve_run(stored) if stored else None
        except ModelError:
            model = None  # moved or deleted: the shipped model (refused below if it is not the same one)
    return cls(path, Verifier(model, **verifier_options), aggregate=aggregate, keep_crops=keep_crops,
               crops_dir=crops_dir)
