"""The gallery's store of record: every SQL statement a gallery runs, behind one interface, on SQLite or PostgreSQL.

A location picks the store: a file path -> `SqliteStore` (one file, embedded, no server: the default), a
`postgresql://` URL -> `gallery_postgres.PostgresStore` (one database that several service replicas share).
Both have the same tables and the same numbered migrations (gallery_db, gallery_postgres). Writes go through
`store.write()`, one transaction (`Transaction`: enrollment, rename, delete, re-embedding, the model record),
so an enrollment lands whole or not at all. Searches read the whole embedding matrix through one chunked
method (`embeddings`) and rebuild it only when `version()`, one cheap round trip, changed.
"""

from __future__ import annotations

import json
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import gallery_db

if TYPE_CHECKING:
    from .photo_faces import Face

CHUNK_ROWS = 4096  # embeddings read per fetch when the matrix is (re)built
URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(location: str | Path) -> bool:
    """A PostgreSQL URL (`postgresql://user@host:5432/db`), not a file path."""
    return isinstance(location, str) and location.startswith(URL_SCHEMES)


def location_of(location: str | Path) -> str | Path:
    """A location as given (a CLI argument, an environment variable): a URL stays a string, a path a Path
    (Path would fold a URL's `//`)."""
    return location if is_url(location) else Path(location)


def gallery_label(location: str | Path) -> str:
    """How answers name a gallery: a file's name, a database's name; never a folder, host or password."""
    if is_url(location):
        from .gallery_postgres import database_name

        return database_name(str(location))
    return Path(location).name


def gallery_where(location: str | Path) -> str:
    """How logs and messages name a gallery: its path, or its URL without the password."""
    if is_url(location):
        from .gallery_postgres import redact

        return redact(str(location))
    return str(location)


def open_store(location: str | Path) -> SqlStore:
    """The store of a location, connected and migrated to the current schema."""
    if is_url(location):
        from .gallery_postgres import PostgresStore

        return PostgresStore(str(location))
    return SqliteStore(Path(location))


def check_integrity(location: str | Path) -> None:
    """Refuse a damaged gallery in one line before it is opened (a file's pages; a server checks its own)."""
    if not is_url(location):
        gallery_db.check_integrity(location)


def blob(embedding: np.ndarray) -> bytes:
    """An embedding as stored: float32 little-endian."""
    return np.asarray(embedding).astype("<f4").tobytes()


class Transaction:
    """One write transaction (`with store.write() as tx`); `wrote` tells the store whether it changed anything
    (a read-only check of the model record does not bump the gallery's version)."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self.wrote = False
        self.files: list[Any] = []  # files the gallery wrote for this transaction (removed if it rolls back)

    def _read(self, sql: str, params: Iterable[Any] = ()) -> Any:
        return self._store._execute(sql, params)

    def _write(self, sql: str, params: Iterable[Any] = ()) -> Any:
        self.wrote = True
        return self._store._execute(sql, params)

    def execute(self, sql: str, params: Iterable[Any] = ()) -> Any:
        """Any statement in this transaction (`?` placeholders): for checks and repairs."""
        return self._write(sql, params)

    def meta(self) -> dict[str, str]:
        return dict(self._read("SELECT key, value FROM meta").fetchall())

    def set_meta(self, items: Iterable[tuple[str, str]]) -> None:
        for key, value in items:
            self._write("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = "
                        "excluded.value", (key, value))

    def clear_model(self, keep: Iterable[str]) -> None:
        """Forget the model record (re-embedding writes the new one), keeping the keys in `keep`."""
        kept = list(keep)
        marks = ", ".join("?" * len(kept)) or "''"
        self._write(f"DELETE FROM meta WHERE key NOT IN ({marks})", kept)

    def person_id(self, name: str) -> int | None:
        row = self._read("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def names(self) -> Iterator[str]:
        return (n for (n,) in self._read("SELECT name FROM people").fetchall())

    def add_person(self, name: str, now: float) -> int:
        return int(self._write("INSERT INTO people (name, created) VALUES (?, ?) RETURNING id", (name, now))
                   .fetchone()[0])

    def add_enrollment(self, person_id: int, face: Face, embedding: np.ndarray, now: float,
                       crop: bytes | None, crop_file: str | None) -> int:
        """One enrolled photo: its embedding, its crop (in the row, or the name of its file, or neither)."""
        report = face.report
        return int(self._write(
            "INSERT INTO enrollments (person_id, embedding, crop, crop_file, source, sha256, box, landmarks, created, "
            "face) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (person_id, blob(embedding), crop, crop_file, face.source, face.sha256, json.dumps(report["box"]),
             json.dumps(report["landmarks"]), now, json.dumps(report))).fetchone()[0])

    def photos(self, person_id: int) -> int:
        return int(self._read("SELECT count(*) FROM enrollments WHERE person_id = ?", (person_id,)).fetchone()[0])

    def rename(self, old: str, new: str) -> bool:
        return self._write("UPDATE people SET name = ? WHERE name = ?", (new, old)).rowcount > 0

    def delete_person(self, name: str) -> list[str] | None:
        """Delete the person and (cascading) their enrollments; the crop files they had, None if no such person."""
        pid = self.person_id(name)
        if pid is None:
            return None
        files = [f for (f,) in self._read("SELECT crop_file FROM enrollments WHERE person_id = ? AND crop_file IS "
                                          "NOT NULL", (pid,)).fetchall()]
        self._write("DELETE FROM people WHERE id = ?", (pid,))
        return files

    def crops(self) -> list[tuple[int, bytes | None, str | None]]:
        """Every enrollment's id, crop and crop file, by id (for re-embedding)."""
        return [(int(i), None if c is None else bytes(c), f)
                for i, c, f in self._read("SELECT id, crop, crop_file FROM enrollments ORDER BY id").fetchall()]

    def set_embeddings(self, updates: Iterable[tuple[int, np.ndarray]]) -> None:
        for i, e in updates:
            self._write("UPDATE enrollments SET embedding = ? WHERE id = ?", (blob(e), i))


class SqlStore(ABC):
    """What a gallery asks of its database. `where` names it in messages (a path, or a URL without its
    password); `label` is its short name; `crops_dir` the default folder of `--keep-crops dir` (None: it
    must be given)."""

    where: str
    label: str
    crops_dir: Path | None = None
    _by_name = "p.name"  # the ORDER BY of names (PostgreSQL: byte order, as SQLite's, not the locale's)

    @abstractmethod
    def _execute(self, sql: str, params: Iterable[Any] = ()) -> Any:
        """Run one statement (`?` placeholders) on the connection; a cursor."""

    @abstractmethod
    def write(self) -> AbstractContextManager[Transaction]:
        """One write transaction, committed when the block ends, rolled back on any error."""

    @abstractmethod
    def _snapshot(self) -> AbstractContextManager[None]:
        """A read transaction: its statements see one state of the database."""

    @abstractmethod
    def _stream(self, sql: str) -> Any:
        """A cursor for a large result, fetched in chunks (inside `_snapshot`)."""

    @abstractmethod
    def version(self) -> Hashable:
        """Changes whenever any connection commits a write: the in-memory matrix is current while it is equal."""

    @abstractmethod
    def bumped(self, before: Hashable) -> Hashable:
        """The version after one writing transaction of ours that began at `before` (and no one else's)."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def after_delete(self) -> None:
        """What the backend does after a deletion commits so no copy of the rows stays behind."""

    def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Any read (`?` placeholders): for tests and checks."""
        return [tuple(r) for r in self._execute(sql, params).fetchall()]

    # ---- reads -------------------------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        return dict(self._execute("SELECT key, value FROM meta").fetchall())

    def has_model(self) -> bool:
        return self._execute("SELECT 1 FROM meta WHERE key = 'weights_sha256'").fetchone() is not None

    def embeddings(self, dim: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Every stored embedding, in enrollment order: (everyone's name, the person of each row as an index
        into those names, a float32 (N, dim) matrix), one consistent snapshot. The matrix is filled chunk by
        chunk into one preallocated array, and no join or sort is asked of the database (a million rows
        stream in their stored order)."""
        with self._snapshot():
            names: list[str] = []
            parts = [np.zeros(0, np.int64)]
            cur = self._execute("SELECT id, name FROM people ORDER BY id")
            while rows := cur.fetchmany(CHUNK_ROWS):  # no list of a million (id, name) tuples at once
                parts.append(np.fromiter((r[0] for r in rows), np.int64, len(rows)))
                names += [r[1] for r in rows]
            ids = np.concatenate(parts)
            n = int(self._execute("SELECT count(*) FROM enrollments").fetchone()[0])
            out = np.empty((n, dim), np.float32)
            person = np.empty(n, np.int64)
            cur = self._stream("SELECT person_id, embedding FROM enrollments ORDER BY id")
            i = 0
            while rows := cur.fetchmany(CHUNK_ROWS):
                k = len(rows)
                person[i:i + k] = np.searchsorted(ids, np.fromiter((r[0] for r in rows), np.int64, k))
                out[i:i + k] = np.frombuffer(b"".join(r[1] for r in rows), "<f4").reshape(k, dim)
                i += k
            cur.close()
        return names, person[:i], out[:i]

    def person_embeddings(self, name: str, dim: int) -> np.ndarray:
        """A person's embeddings, (k, dim) float32 (k = 0: no such person)."""
        rows = self._execute("SELECT e.embedding FROM enrollments e JOIN people p ON p.id = e.person_id "
                             "WHERE p.name = ? ORDER BY e.id", (name,)).fetchall()
        return np.frombuffer(b"".join(bytes(r[0]) for r in rows), "<f4").reshape(len(rows), dim).astype(np.float32)

    def people(self) -> list[tuple[str, int, float]]:
        """(name, photos, created) of everyone, by name."""
        return [(n, int(c), float(t)) for n, c, t in self._execute(
            f"SELECT p.name, count(e.id), p.created FROM people p LEFT JOIN enrollments e ON e.person_id = p.id "
            f"GROUP BY p.id, p.name, p.created ORDER BY {self._by_name}").fetchall()]

    def person(self, name: str) -> tuple[float, list[tuple[Any, ...]]] | None:
        """A person's creation time and enrollments (id, source, sha256, box, landmarks, face, created)."""
        with self._snapshot():
            row = self._execute("SELECT id, created FROM people WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            rows = self._execute("SELECT id, source, sha256, box, landmarks, face, created FROM enrollments "
                                 "WHERE person_id = ? ORDER BY id", (row[0],)).fetchall()
        return float(row[1]), [tuple(r) for r in rows]

    def crop(self, enrollment_id: int) -> tuple[bytes | None, str | None] | None:
        """An enrollment's crop and crop file (None: no such enrollment)."""
        row = self._execute("SELECT crop, crop_file FROM enrollments WHERE id = ?", (int(enrollment_id),)).fetchone()
        return None if row is None else (None if row[0] is None else bytes(row[0]), row[1])

    def crop_files(self) -> set[str]:
        return {f for (f,) in self._execute("SELECT crop_file FROM enrollments WHERE crop_file IS NOT NULL")}


class SqliteStore(SqlStore):
    """One SQLite file (gallery_db: WAL, secure_delete, BEGIN IMMEDIATE writes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        self.label = path.name
        self.crops_dir = path.with_name(path.name + ".crops")
        self._writes = 0  # our own commits: PRAGMA data_version only counts other connections'
        self.conn = gallery_db.connect(path)

    def _execute(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, tuple(params))

    @contextmanager
    def write(self) -> Iterator[Transaction]:
        """BEGIN IMMEDIATE takes the write lock at once: concurrent writers queue on the busy timeout instead of
        deadlocking."""
        self.conn.execute("BEGIN IMMEDIATE")
        tx = Transaction(self)
        try:
            yield tx
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:  # SQLite may have rolled back itself (disk full, I/O error)
                self.conn.execute("ROLLBACK")
            raise
        self._writes += tx.wrote

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    def _stream(self, sql: str) -> sqlite3.Cursor:
        return self.conn.execute(sql)  # SQLite steps through the result as it is fetched

    def version(self) -> Hashable:
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0]), self._writes

    def bumped(self, before: Hashable) -> Hashable:
        data_version, writes = before  # type: ignore[misc]
        return data_version, writes + 1

    def after_delete(self) -> None:
        """secure_delete zeroed the rows; a WAL checkpoint leaves no copy in the write-ahead log."""
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

    def close(self) -> None:
        self.conn.close()
