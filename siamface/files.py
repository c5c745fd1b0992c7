"""Files that are never half-written, folders that one process owns, and OS errors as one line.

Every checkpoint, training state, report, plot and gallery export goes through `atomic_write_bytes` (a
temporary file in the same folder, fsync, rename), so a crash leaves the old file or the new one, never a
mix. A run folder is owned by one process at a time (`FolderLock`, an `flock` that the kernel releases
when the process dies, so a killed run never leaves a stale lock behind).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import SiamfaceError

if TYPE_CHECKING:  # torch is imported where tensors are saved: the CLI starts without it
    import torch

TMP_SUFFIX = ".tmp"
LOCK = ".lock"


def _publish(tmp: str, path: Path) -> None:
    """Give the temp file the usual permissions (mkstemp makes 0600), then rename it over `path`."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def _temp_beside(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """JSON with NaN and infinities refused (they are not JSON), written atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def save_file(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str] | None = None) -> None:
    """safetensors.torch.save_file, imported on first use (torch with it)."""
    from safetensors.torch import save_file as save

    save(tensors, path, metadata=metadata)


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """Save tensors as safetensors atomically; returns the file's SHA-256."""
    fd, tmp = _temp_beside(path)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        digest = sha256_file(Path(tmp))
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def remove_orphans(folder: Path) -> list[str]:
    """Delete temporary files a killed writer left behind (only ours: `.<name>.<random>.tmp`)."""
    removed = []
    for p in folder.glob(f".*{TMP_SUFFIX}"):
        p.unlink(missing_ok=True)
        removed.append(p.name)
    return removed


class FolderLock:
    """An exclusive lock on a folder for the life of this object (`with FolderLock(out): ...`).

    A second process asking for the same folder fails at once, naming the holder's PID and command.
    """

    def __init__(self, folder: Path, what: str = "run") -> None:
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise SiamfaceError(f"{self.folder}: another {self.what} holds this folder ({holder}); "
                                    "wait for it or choose another folder") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {' '.join(_cmdline())}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _cmdline() -> list[str]:
    try:
        return [a.decode(errors="replace") for a in Path("/proc/self/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return ["python"]


def check_output_folder(folder: Path, flag: str = "output folder", create: bool = True) -> Path:
    """Fail before any work when `folder` cannot become a writable folder (an existing file, a read-only
    or full disk, ...), with one line naming it (`flag`: what the folder is, e.g. "output folder"; the CLI
    adds its flag from the error's option). create=False leaves nothing behind: the check writes into the
    nearest existing folder instead, so a refused run leaves no empty folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SiamfaceError(f"{flag} {folder}: exists and is not a folder", option="out")
    probe = folder
    while not create and not probe.exists():
        probe = probe.parent
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        if not probe.is_dir():
            raise SiamfaceError(f"{flag} {folder}: {probe} is not a folder", option="out")
        fd, tmp = _temp_beside(probe / ".write-check")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise SiamfaceError(f"{flag} {folder}: cannot write there ({os_reason(e)})", option="out") from e
    return folder


def os_reason(e: OSError) -> str:
    """The errno text of an OS error ('Permission denied', 'No space left on device')."""
    return e.strerror or str(e)
