"""Shared fixtures: real data by path (SIAMFACE_DATA, default ../shared/data) and a headless plotting backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from siamface.data import data_root as _data_root

DATA = _data_root()


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Root of the real datasets (att_faces, lfw, omniglot); skips the test where it is absent."""
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA} (set SIAMFACE_DATA)")
    return DATA


@pytest.fixture(autouse=True)
def _headless_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPLBACKEND", "Agg")
