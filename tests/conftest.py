"""Shared fixtures: real data by path (SIAMFACE_DATA, default ../shared/data) and a sandboxed home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SIAMFACE_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Root of the real datasets (att_faces, lfw, omniglot); skips the test where it is absent."""
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA} (set SIAMFACE_DATA)")
    return DATA


@pytest.fixture(autouse=True)
def _sandbox_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep any user or cache directory a test touches inside its tmp_path."""
    monkeypatch.setenv("SIAMFACE_HOME", str(tmp_path / "siamface_home"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
