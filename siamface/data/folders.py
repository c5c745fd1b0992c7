"""Image folders where the parent directory names the identity.

Layouts this covers: AT&T ``s1/1.pgm`` (identity "s1"), LFW ``deepfunneled/Aaron_Eckhart/x.jpg`` with
root = deepfunneled (identity "Aaron_Eckhart"), and Omniglot ``Latin/character01/0683_01.png``
(identity "Latin/character01", group "Latin": the alphabet).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from siamface.errors import DataError

SOURCE_TREE = Path(__file__).resolve().parents[2]  # the repository, for a source checkout


def data_root() -> Path:
    """Where the real datasets live: $SIAMFACE_DATA, else `shared/data` beside the source checkout."""
    return Path(os.environ.get("SIAMFACE_DATA") or SOURCE_TREE.parent / "shared" / "data").resolve()

__all__ = [
    "IMAGE_EXTS",
    "ImageRecord",
    "data_root",
    "filter_identities",
    "group_array",
    "identities",
    "label_array",
    "omniglot_drawer",
    "scan_folder",
]

IMAGE_EXTS = (".pgm", ".png", ".jpg", ".jpeg", ".webp", ".bmp")
_DRAWER = re.compile(r"^\d+_(\d+)$")


@dataclass(frozen=True)
class ImageRecord:
    """One image: its path, its identity (parent dir relative to the root) and its group ("" if none)."""

    path: Path
    identity: str
    group: str


def _record(path: Path, root: Path) -> ImageRecord | None:
    parts = path.relative_to(root).parts[:-1]
    if not parts or any(p.startswith(".") for p in parts):
        return None  # files directly in root have no identity; hidden dirs are never data
    return ImageRecord(path=path, identity="/".join(parts), group=parts[0] if len(parts) >= 2 else "")


def scan_folder(root: str | PathLike[str], exts: Sequence[str] = IMAGE_EXTS) -> list[ImageRecord]:
    """List every image below root (extension matched case-insensitively), sorted by path.

    Files directly in root and anything inside hidden directories are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist or is not a directory")
    wanted = {e.lower() if e.startswith(".") else "." + e.lower() for e in exts}
    records = []
    for path in root.rglob("*"):
        if path.suffix.lower() in wanted and not path.name.startswith(".") and path.is_file():
            rec = _record(path, root)
            if rec is not None:
                records.append(rec)
    if not records:
        raise DataError(f"{root}: no images with extensions {sorted(wanted)} in any sub-folder")
    return sorted(records, key=lambda r: r.path)


def identities(records: Iterable[ImageRecord]) -> list[str]:
    """Sorted unique identities."""
    return sorted({r.identity for r in records})


def filter_identities(records: Iterable[ImageRecord], keep: Iterable[str]) -> list[ImageRecord]:
    """Records whose identity is in keep (order preserved; unknown names in keep are ignored)."""
    keep_set = {keep} if isinstance(keep, str) else set(keep)
    return [r for r in records if r.identity in keep_set]


def label_array(records: Sequence[ImageRecord]) -> tuple[np.ndarray, list[str]]:
    """int64 label per record and the identity names (sorted): names[labels[k]] == records[k].identity."""
    names = identities(records)
    lookup = {n: i for i, n in enumerate(names)}
    return np.array([lookup[r.identity] for r in records], dtype=np.int64), names


def group_array(records: Sequence[ImageRecord]) -> np.ndarray:
    """int64 group id per record, numbered in sorted order of the group names."""
    lookup = {g: i for i, g in enumerate(sorted({r.group for r in records}))}
    return np.array([lookup[r.group] for r in records], dtype=np.int64)


def omniglot_drawer(path: str | PathLike[str]) -> int:
    """Drawer number of an Omniglot file ``<id>_<drawer>.png`` (e.g. "0709_17.png" -> 17)."""
    match = _DRAWER.match(Path(path).stem)
    if match is None:
        raise DataError(f"{path}: not an Omniglot image name of the form <id>_<drawer>.png")
    return int(match.group(1))
