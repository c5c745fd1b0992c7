"""Shared fixtures: real data by path (SIAMFACE_DATA, default ../shared/data), a headless plotting backend, and a
real PostgreSQL server with a fresh gallery location per test (SQLite file or PostgreSQL database)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _postgres import PostgresServer, find_bindir

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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (tests/_postgres.py); skipped only where PostgreSQL's
    binaries are not installed (CI installs them: .ci/run)."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin)")
    server = PostgresServer(bindir).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def gallery_location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """A new gallery's location: a file in the test's folder, or a fresh database on the session's server."""
    if request.param == "sqlite":
        return tmp_path / "g.db"
    return request.getfixturevalue("postgres_server").new_database()
