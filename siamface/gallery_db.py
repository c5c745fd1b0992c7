"""The gallery's SQLite file: connection settings and numbered schema migrations.

One file, no server. WAL lets readers (identify) run while a writer enrolls; every write is one
`BEGIN IMMEDIATE` transaction, so an enrollment lands whole or not at all, and concurrent writers from
other processes wait for the lock (busy timeout) instead of failing. `secure_delete` overwrites deleted
rows with zeros, so deleting a person removes their name, crops and embeddings from the file's bytes.

Migrations follow simonw/llm's embeddings store: an ordered list of small functions `mNNN_what(conn)`;
`PRAGMA user_version` records how many were applied, and opening a file applies the rest in one
transaction. Never edit a released migration: append a new one.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from .errors import SiamfaceError

BUSY_TIMEOUT_S = 60.0


def m001_create_tables(conn: sqlite3.Connection) -> None:
    """meta (which model made the embeddings), people, and one row per enrolled photo."""
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL)")
    conn.execute("""
        CREATE TABLE enrollments (
            id INTEGER PRIMARY KEY,
            person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
            embedding BLOB NOT NULL,      -- float32 little-endian, the model's embed_dim values
            crop BLOB NOT NULL,           -- PNG of the aligned face (the source for re-embedding)
            source TEXT NOT NULL,         -- file name given at enrollment
            sha256 TEXT NOT NULL,         -- of the source file's bytes
            box TEXT,                     -- JSON {x, y, w, h, confidence} or null (whole image)
            landmarks TEXT,               -- JSON list of [x, y] points (may be empty)
            created REAL NOT NULL         -- unix time
        )""")
    conn.execute("CREATE INDEX enrollments_person ON enrollments(person_id)")


def m002_face_report(conn: sqlite3.Connection) -> None:
    """The whole face report of each enrollment (eyes and where they came from, how many faces the photo
    held), which v1 did not keep; older rows get what v1 knew: the box and the landmarks."""
    conn.execute("ALTER TABLE enrollments ADD COLUMN face TEXT")
    conn.execute("""UPDATE enrollments SET face = json_object('box', json(coalesce(box, 'null')),
                                                         'landmarks', json(coalesce(landmarks, '[]')))""")


def m003_crops_optional(conn: sqlite3.Connection) -> None:
    """Crops are optional (`--keep-crops none`) or kept as files (`dir`: crop_file names the PNG): `crop`
    becomes nullable. SQLite cannot drop a NOT NULL, so the table is rebuilt (ids kept)."""
    conn.execute("""
        CREATE TABLE enrollments_new (
            id INTEGER PRIMARY KEY,
            person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
            embedding BLOB NOT NULL,
            crop BLOB,                    -- PNG of the aligned face, or NULL: in crop_file, or not kept
            source TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            box TEXT,
            landmarks TEXT,
            created REAL NOT NULL,
            face TEXT,
            crop_file TEXT                -- the PNG's name in the crops folder (--keep-crops dir)
        )""")
    conn.execute("INSERT INTO enrollments_new (id, person_id, embedding, crop, source, sha256, box, landmarks, "
                 "created, face) SELECT id, person_id, embedding, crop, source, sha256, box, landmarks, created, "
                 "face FROM enrollments")
    conn.execute("DROP TABLE enrollments")
    conn.execute("ALTER TABLE enrollments_new RENAME TO enrollments")
    conn.execute("CREATE INDEX enrollments_person ON enrollments(person_id)")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [m001_create_tables, m002_face_report, m003_crops_optional]
SCHEMA_VERSION = len(MIGRATIONS)


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) a gallery file with its settings, migrated to SCHEMA_VERSION.

    Autocommit mode (isolation_level=None): transactions are explicit (`transaction`)."""
    path = Path(path)
    if path.is_dir():
        raise SiamfaceError(f"{path}: is a directory, not a gallery file")
    if not path.parent.is_dir():
        raise SiamfaceError(f"{path}: the folder {path.parent} does not exist")
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as e:
        raise SiamfaceError(f"{path}: cannot open the gallery ({e})") from e
    try:
        _retry_locked(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone())
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=FULL")  # an acknowledged enrollment survives a power cut too
        conn.execute("PRAGMA secure_delete=ON")
        migrate(conn, path)
    except sqlite3.DatabaseError as e:
        conn.close()
        raise SiamfaceError(f"{path}: not a usable gallery database ({e})") from e
    except BaseException:
        conn.close()
        raise
    return conn


def _retry_locked(fn: Callable[[], object], seconds: float = BUSY_TIMEOUT_S) -> object:
    """Switching to WAL needs a moment alone with the file and does not wait on the busy handler."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def check_integrity(path: str | Path) -> None:
    """SQLite's quick_check of a gallery file (its pages and their links, not every index entry); a damaged
    file is refused in one line, before anything reads a half-broken page."""
    try:
        conn = sqlite3.connect(Path(path), timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as e:
        raise SiamfaceError(f"{path}: cannot open the gallery ({e})") from e
    try:
        problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check(3)").fetchall()]
    except sqlite3.DatabaseError as e:
        if "not a database" in str(e):  # another kind of file: not damaged, just not a gallery
            raise SiamfaceError(f"{path}: not a usable gallery database ({e})") from e
        problems = [str(e)]
    finally:
        conn.close()
    if problems != ["ok"]:
        found = " ".join("; ".join(problems).split())[:300]  # one line, whatever SQLite says
        raise SiamfaceError(f"{path}: the gallery file is damaged ({found}); restore it from a backup")


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: Path | str = "gallery", upto: int = SCHEMA_VERSION) -> int:
    """Apply the migrations not yet applied (up to `upto`, for tests) in one transaction; returns the
    version. A file from a newer siamface is refused rather than misread."""
    if schema_version(conn) >= upto:
        return _check_not_newer(conn, path)
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(conn)  # another process may have migrated while we waited
        for number in range(version, upto):
            MIGRATIONS[number](conn)
            conn.execute(f"PRAGMA user_version = {number + 1}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return _check_not_newer(conn, path)


def _check_not_newer(conn: sqlite3.Connection, path: Path | str) -> int:
    version = schema_version(conn)
    if version > SCHEMA_VERSION:
        raise SiamfaceError(f"{path}: gallery schema version {version} is newer than this siamface reads "
                            f"({SCHEMA_VERSION}); upgrade siamface")
    return version
