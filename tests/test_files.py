"""siamface.files: atomic writes, the run-folder lock, orphan clean-up and the --out check."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import siamface.files as files
from siamface.errors import SiamfaceError
from siamface.files import (
    FolderLock,
    atomic_save_tensors,
    atomic_write_json,
    check_output_folder,
    remove_orphans,
    sha256_file,
)


def test_atomic_write_json_writes_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    atomic_write_json(target, {"a": 1, "b": [1, 2]})
    atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_atomic_write_json_keeps_the_old_file_when_serialising_fails(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.json"
    atomic_write_json(target, {"old": True})
    before = target.read_bytes()

    def boom(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("serialisation failed")

    monkeypatch.setattr(files.json, "dumps", boom)
    with pytest.raises(RuntimeError, match="serialisation failed"):
        atomic_write_json(target, {"new": True})
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_atomic_write_json_keeps_the_old_file_when_the_rename_fails(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.json"
    atomic_write_json(target, {"old": True})
    before = target.read_bytes()
    seen: list[str] = []

    def boom(src: Any, dst: Any) -> None:
        seen.append(str(src))
        assert Path(src).read_text() == '{\n  "new": true\n}\n'  # the new content was fully written first
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(target, {"new": True})
    monkeypatch.undo()
    assert seen and Path(seen[0]).parent == tmp_path
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_atomic_save_tensors_returns_the_file_hash_and_cleans_up(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "t.safetensors"
    digest = atomic_save_tensors(target, {"w": torch.arange(6.0).reshape(2, 3)})
    assert digest == sha256_file(target)
    before = target.read_bytes()

    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files, "save_file", boom)
    with pytest.raises(OSError):
        atomic_save_tensors(target, {"w": torch.zeros(2)})
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]


def test_atomic_writes_get_the_usual_permissions(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~umask




def test_atomic_write_json_refuses_nan_instead_of_writing_invalid_json(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "x.json", {"p": float("nan")})
    assert list(tmp_path.iterdir()) == []


# ---- the folder lock -----------------------------------------------------------------------------------

def test_a_second_lock_on_a_folder_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    with FolderLock(tmp_path / "run"):
        code = ("import sys; from pathlib import Path; from siamface.files import FolderLock; "
                "FolderLock(Path(sys.argv[1])).acquire()")
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode != 0
        assert f"pid {os.getpid()}" in proc.stderr and "holds this folder" in proc.stderr
    FolderLock(tmp_path / "run").acquire().release()  # released on exit: free again


def test_a_lock_dies_with_its_process(tmp_path: Path) -> None:
    code = ("import os, sys; from pathlib import Path; from siamface.files import FolderLock; "
            "FolderLock(Path(sys.argv[1])).acquire(); os._exit(9)")  # killed while holding it
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], timeout=60)
    with FolderLock(tmp_path):
        pass


# ---- orphans and the --out check -----------------------------------------------------------------------

def test_remove_orphans_deletes_only_our_temp_files(tmp_path: Path) -> None:
    (tmp_path / ".model.json.abc123.tmp").write_text("half")
    (tmp_path / "notes.tmp").write_text("a user's file")
    (tmp_path / "model.json").write_text("{}")
    assert remove_orphans(tmp_path) == [".model.json.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "notes.tmp"]


def test_check_output_folder_refuses_a_file_and_an_unwritable_folder(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SiamfaceError, match="afile: exists and is not a folder"):
        check_output_folder(tmp_path / "afile")
    assert check_output_folder(tmp_path / "new" / "run").is_dir()

    def full(path: Path) -> Any:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(files, "_temp_beside", full)  # a full disk (root ignores read-only modes)
    with pytest.raises(SiamfaceError, match="output folder .*run2: cannot write there \\(No space left on device\\)"):
        check_output_folder(tmp_path / "run2")
