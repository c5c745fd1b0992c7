"""Where a gallery keeps the aligned face crops it re-embeds from: `--keep-crops db | dir | none`.

db (the default): the PNG in the enrollment's row. dir: one PNG file per enrollment in a folder (beside a
gallery file, `<file>.crops`, or a given folder: the one every replica of a PostgreSQL gallery mounts), named
by a random token the row records, written atomically before the row commits and deleted with the person.
none: no crop at all (a million people's crops take ~30 GB); such a gallery cannot be re-embedded.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from .errors import SiamfaceError
from .files import TMP_SUFFIX, atomic_write_bytes

KEEP_CROPS = ("db", "dir", "none")
ORPHAN_AGE_S = 3600.0  # a file no row names, this old, is left from a crash (never from a running enrollment)


def check_keep_crops(keep: str) -> str:
    if keep not in KEEP_CROPS:
        raise ValueError(f"keep_crops must be one of {KEEP_CROPS}, got {keep!r}")
    return keep


class CropFolder:
    """The PNG files of `--keep-crops dir`: `<token>.png`, the token stored in the row (`crop_file`)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def write(self, png: bytes) -> str:
        """Store a crop under a new random name (never reused, so a crashed enrollment's file harms no one)."""
        if self.folder.exists() and not self.folder.is_dir():
            raise SiamfaceError(f"{self.folder}: the crops folder is a file, not a folder")
        name = f"{secrets.token_hex(16)}.png"
        atomic_write_bytes(self.folder / name, png)
        return name

    def read(self, name: str) -> bytes:
        try:
            return (self.folder / _plain(name)).read_bytes()
        except OSError as e:
            raise SiamfaceError(f"{self.folder / name}: the stored face crop cannot be read ({e.strerror})") from e

    def delete(self, names: list[str]) -> None:
        for name in names:
            (self.folder / _plain(name)).unlink(missing_ok=True)

    def sweep(self, known: set[str], now: float | None = None) -> int:
        """Delete files no row names that are older than ORPHAN_AGE_S (left by an enrollment killed between
        writing its crop and committing its row); returns how many."""
        if not self.folder.is_dir():
            return 0
        now = time.time() if now is None else now
        gone = 0
        for entry in os.scandir(self.folder):
            orphan = entry.name.endswith(".png") and entry.name not in known or entry.name.endswith(TMP_SUFFIX)
            if orphan and entry.is_file() and now - entry.stat().st_mtime > ORPHAN_AGE_S:
                Path(entry.path).unlink(missing_ok=True)
                gone += 1
        return gone


def _plain(name: str) -> str:
    if Path(name).name != name or not name.endswith(".png"):  # the row names a file in the folder, nothing else
        raise SiamfaceError(f"{name!r}: not a crop file name")
    return name
