"""A real, throwaway PostgreSQL server for the tests (Debian's postgresql package; never a mock).

`PostgresServer.start()` runs initdb in a temporary folder and starts postgres on a free TCP port of the
loopback interface (trust authentication, loopback only). PostgreSQL refuses to run as root: as root
(CI), the folder is given to the `postgres` user and the server runs as that user (runuser). The server
is started once per test session; each test gets a database of its own (`new_database`). fsync is off: the
tests kill service replicas, never the server, and a server crash is not what they test.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SUPERUSER = "siamface"


def find_bindir() -> Path | None:
    """The folder of initdb, pg_ctl and postgres: on PATH, else Debian's /usr/lib/postgresql/N/bin (newest)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """initdb + pg_ctl start in a temporary folder; `url(db)` connects to database `db` as the superuser."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.folder = Path(tempfile.mkdtemp(prefix="siamface-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        self._names = itertools.count()
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120)

    def start(self) -> PostgresServer:
        if self._as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        (self.folder / "sock").mkdir()
        if self._as_postgres:
            shutil.chown(self.folder / "sock", "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C",
                  "--no-sync")
        options = (f"-p {self.port} -k {self.folder / 'sock'} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c full_page_writes=off -c max_connections=100")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-o", options, "-w",
                  "-t", "60", "start")
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"gallery_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def database_files(self, url: str) -> bytes:
        """Every byte of a database's table files (after a CHECKPOINT wrote its pages out): what a copy of the
        server's disk would hold of it, the write-ahead log aside."""
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
            oid = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
        return b"".join(p.read_bytes() for p in sorted((self.data / "base" / str(oid)).iterdir()) if p.is_file())
