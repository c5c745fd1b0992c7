"""The PostgreSQL gallery on a real server (tests/_postgres.py): numbered migrations from every earlier version
(each atomic), newer schemas refused, the change counter, a broken connection reopened, deletion that leaves
no byte of the person in the database's files, no password in any message, the CLI with a URL; and two real
`siamface serve` replicas on one database: an enrollment on one is found by the other at once, and SIGKILL of
one replica during a stream of enrollments loses nothing it acknowledged. (The gallery suite itself runs on
both stores: test_gallery.py, test_gallery_durability.py, test_gallery_crops.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from _gallery_data import lfw_view1_verifier, single_face_photos
from _helpers import one_thread
from _postgres import PostgresServer

psycopg = pytest.importorskip("psycopg")

from siamface import gallery_postgres  # noqa: E402
from siamface.cli import main  # noqa: E402
from siamface.errors import SiamfaceError  # noqa: E402
from siamface.gallery import Gallery, model_record  # noqa: E402
from siamface.verify import Verifier  # noqa: E402

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
verifier = pytest.fixture(scope="module")(lfw_view1_verifier)
REPO = Path(__file__).resolve().parents[1]
KEY = "k-" + "5" * 30
AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def photos(data_root: Path) -> dict[str, tuple[Path, ...]]:
    return single_face_photos(data_root / "lfw", 6, 2)


@pytest.fixture
def url(postgres_server: PostgresServer) -> str:
    return postgres_server.new_database()


# ---- schema --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", range(gallery_postgres.SCHEMA_VERSION))
def test_migrates_from_every_earlier_version(url: str, verifier: Verifier, version: int,
                                             photos: dict[str, tuple[Path, ...]]) -> None:
    """A database left at `version` (with a person enrolled when the schema had people) opens at the current
    version with its data intact and usable."""
    emb = verifier.embed([photos["Tony_Blair"][0]])[0].numpy().astype("<f4")
    with psycopg.connect(url, autocommit=True) as conn:
        gallery_postgres.migrate(conn, upto=version)
        assert gallery_postgres.schema_version(conn) == version
        if version >= 1:
            for k, v in model_record(verifier).items():
                conn.execute("INSERT INTO meta VALUES (%s, %s)", (k, v))
            pid = conn.execute("INSERT INTO people (name, created) VALUES ('Old_Timer', 1.7e9) RETURNING id"
                               ).fetchone()[0]
            conn.execute("INSERT INTO enrollments (person_id, embedding, crop, source, sha256, box, landmarks, "
                         "created) VALUES (%s, %s, %s, 'a.jpg', 'abc', %s, '[]', 1.7e9)",
                         (pid, emb.tobytes(), b"\x89PNG not decoded here", '{"x": 1, "y": 2, "w": 3, "h": 4}'))
        if version >= 2:  # a row written by that version has its face report
            face = '{"box": {"x": 1, "y": 2, "w": 3, "h": 4}, "landmarks": []}'
            conn.execute("UPDATE enrollments SET face = %s", (face,))
    with Gallery(url, verifier) as g:
        assert gallery_postgres.schema_version(g._store.conn) == gallery_postgres.SCHEMA_VERSION == 3
        if version >= 1:
            (e,) = g.person("Old_Timer").enrollments
            assert e["box"] == {"x": 1, "y": 2, "w": 3, "h": 4}
            assert e["face"] == {"box": {"x": 1, "y": 2, "w": 3, "h": 4}, "landmarks": []}
            p = g.verify_against("Old_Timer", photos["Tony_Blair"][0]).probability
            assert p == pytest.approx(float(verifier.probability(torch.from_numpy(emb[None]),
                                                                 torch.from_numpy(emb[None]))[0]), abs=1e-5)
        r = g.enroll("New_Comer", [photos["Colin_Powell"][0]]).to_dict()
        assert r["photos"] == 1 and r["enrolled"][0]["id"] >= 1  # identities continue after the old rows


def test_newer_schema_and_a_failing_migration(url: str, postgres_server: PostgresServer, verifier: Verifier,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        gallery_postgres.migrate(conn, upto=1)

        def broken(c: object) -> None:
            conn.execute("ALTER TABLE enrollments ADD COLUMN half_done TEXT")
            raise RuntimeError("migration failed half-way")

        monkeypatch.setattr(gallery_postgres, "MIGRATIONS", [gallery_postgres.MIGRATIONS[0], broken])
        with pytest.raises(RuntimeError, match="half-way"):
            gallery_postgres.migrate(conn, upto=2)
        assert gallery_postgres.schema_version(conn) == 1  # DDL is transactional: nothing of it stayed
        assert conn.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 'enrollments' "
                            "AND column_name = 'half_done'").fetchone()[0] == 0
    monkeypatch.undo()
    future = postgres_server.new_database()
    with psycopg.connect(future, autocommit=True) as conn:
        gallery_postgres.migrate(conn)
        conn.execute("UPDATE schema_version SET version = %s", (gallery_postgres.SCHEMA_VERSION + 1,))
    with pytest.raises(SiamfaceError, match="newer than this siamface reads"):
        Gallery(future, verifier)


def test_no_password_in_messages_and_an_unreachable_server_in_one_line(verifier: Verifier) -> None:
    with pytest.raises(SiamfaceError, match="cannot connect to the gallery database") as e:
        Gallery("postgresql://someone:s3cret-word@127.0.0.1:1/people", verifier)
    assert "s3cret-word" not in str(e.value) and "someone:***@127.0.0.1:1/people" in str(e.value)
    assert "\n" not in str(e.value)
    assert gallery_postgres.redact("postgresql://u@h/db?password=x&sslmode=require") == \
        "postgresql://u@h/db?password=***&sslmode=require"


# ---- the change counter and the connection ----------------------------------------------------------------

def test_every_write_and_only_a_write_bumps_the_version(url: str, verifier: Verifier,
                                                        photos: dict[str, tuple[Path, ...]]) -> None:
    from siamface.errors import DuplicatePersonError

    with Gallery(url, verifier) as g:
        v = g._store.version()
        g.enroll("Ann", [photos["Tony_Blair"][0]])
        assert g._store.version() == v + 1
        with Gallery(url, verifier) as other:  # opening (and checking the model record) writes nothing
            other.identify(photos["Tony_Blair"][1])
            other.people()
        assert g._store.version() == v + 1
        with pytest.raises(DuplicatePersonError):
            g.enroll("Ann", [photos["Tony_Blair"][1]], new=True)
        assert g._store.version() == v + 1  # rolled back
        g.rename("Ann", "Anne")
        g.delete("Anne")
        assert g._store.version() == v + 3


def test_a_connection_the_server_closed_is_opened_again(url: str, verifier: Verifier,
                                                        photos: dict[str, tuple[Path, ...]]) -> None:
    with Gallery(url, verifier) as g:
        g.enroll("Ann", [photos["Tony_Blair"][0]])
        pid = g._store.conn.info.backend_pid
        with psycopg.connect(url, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
        time.sleep(0.2)
        assert g.identify(photos["Tony_Blair"][1]).faces[0].candidates[0].name == "Ann"  # no error, one retry
        assert g._store.conn.info.backend_pid != pid


# ---- deletion ----------------------------------------------------------------------------------------------

def test_delete_leaves_no_byte_of_the_person_in_the_database_files(url: str, postgres_server: PostgresServer,
                                                                   verifier: Verifier,
                                                                   photos: dict[str, tuple[Path, ...]]) -> None:
    """After delete (DELETE, then VACUUM FULL), the name, the crops and the embeddings are in none of the
    database's table and index files (the write-ahead log and backups aside: see gallery_postgres)."""
    secret = "Quintessa_Vandersloot"
    with Gallery(url, verifier) as g:
        g.enroll("Bob", [photos["Colin_Powell"][0]])
        g.enroll(secret, list(photos["Tony_Blair"]))
        rows = g._store.fetchall("SELECT e.crop, e.embedding FROM enrollments e JOIN people p ON p.id = "
                                 "e.person_id WHERE p.name = ?", (secret,))
        # a crop is stored in ~2 KB TOAST chunks: a needle from inside the first chunk
        needles = [secret.encode()] + [bytes(c)[100:164] for c, _ in rows] + [bytes(e)[:64] for _, e in rows]
        before = postgres_server.database_files(url)
        assert all(n in before for n in needles)  # the test can fail: they were in the files
        g.delete(secret)
        after = postgres_server.database_files(url)
        assert [n for n in needles if n in after] == []
        assert [p.name for p in g.people()] == ["Bob"] and b"Bob" in after


# ---- the CLI -------------------------------------------------------------------------------------------------

def test_cli_takes_a_url(url: str, photos: dict[str, tuple[Path, ...]], capsys: pytest.CaptureFixture[str]) -> None:
    ps = photos["Tony_Blair"]
    assert main(["enroll", "Ann", str(ps[0]), "--gallery", url, "--model", "lfw-view1"]) == 0
    capsys.readouterr()
    assert main(["identify", str(ps[1]), "--gallery", url, "--full"]) == 0  # the model found from the record
    assert json.loads(capsys.readouterr().out)["faces"][0]["candidates"][0]["name"] == "Ann"
    assert main(["people", "list", "--gallery", url]) == 0
    assert [p["name"] for p in json.loads(capsys.readouterr().out)] == ["Ann"]


# ---- replicas -------------------------------------------------------------------------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_replicas(url: str, n: int, log: Path) -> list[tuple[subprocess.Popen[bytes], str]]:
    """n `siamface serve` processes on one database, started together; (process, base URL) once all answer."""
    import httpx

    env = {**os.environ, "SIAMFACE_API_KEY": KEY, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = []
    for _ in range(n):
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "siamface", "serve", "--gallery", url, "--model", "lfw-view1",
                                 "--port", str(port), "--log-level", "warning"], env=env, cwd=REPO,
                                stdout=open(log, "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115
        out.append((proc, f"http://127.0.0.1:{port}"))
    deadline = time.monotonic() + 120
    for proc, base in out:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"a replica exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"a replica did not answer within 120 s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
    return out


@pytest.fixture
def replicas(url: str, tmp_path: Path) -> Iterator[list[tuple[subprocess.Popen[bytes], str]]]:
    started = _start_replicas(url, 2, tmp_path / "replicas.log")
    try:
        yield started
    finally:
        for proc, _ in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def _enroll(c: object, base: str, name: str, photo: Path) -> object:
    return c.post(f"{base}/enroll", data={"name": name, "add": "true"}, headers=AUTH,  # type: ignore[attr-defined]
                  files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})


def _identify(c: object, base: str, photo: Path) -> list[str]:
    r = c.post(f"{base}/identify", data={"k": "10"}, headers=AUTH,  # type: ignore[attr-defined]
               files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})
    assert r.status_code == 200, r.text
    return [c["name"] for c in r.json()["faces"][0]["candidates"]]


def test_two_replicas_enroll_on_one_and_identify_on_the_other_within_a_second(
        replicas: list[tuple[subprocess.Popen[bytes], str]], photos: dict[str, tuple[Path, ...]]) -> None:
    import httpx

    (_, a), (_, b) = replicas
    names = list(photos)
    with httpx.Client(timeout=30) as c:
        for name in names[:3]:
            assert _enroll(c, a, name, photos[name][0]).status_code == 200
        assert sorted(_identify(c, b, photos[names[0]][1])) == sorted(names[:3])  # b built its matrix
        new = names[3]
        r = _enroll(c, a, new, photos[new][0])
        acknowledged = time.monotonic()
        assert r.status_code == 200, r.text
        found = _identify(c, b, photos[new][1])  # the other photo of the new person, on the other replica
        elapsed = time.monotonic() - acknowledged
        assert found[0] == new and elapsed < 1.0, (found, elapsed)
        assert c.delete(f"{a}/people/{names[0]}", headers=AUTH).status_code == 200
        assert names[0] not in _identify(c, b, photos[names[0]][1])  # a deletion on a is seen by b at once
        r = _enroll(c, b, new, photos[new][1])  # and b writes to the same people
        assert r.status_code == 200 and r.json()["photos"] == 2
        assert {p["name"]: p["photos"] for p in c.get(f"{a}/people", headers=AUTH).json()} == \
            {names[1]: 1, names[2]: 1, new: 2}


def test_sigkill_of_a_replica_during_enrollments_loses_nothing_it_acknowledged(
        replicas: list[tuple[subprocess.Popen[bytes], str]], photos: dict[str, tuple[Path, ...]]) -> None:
    """Clients enroll through both replicas; replica a is killed with SIGKILL mid-stream. Every enrollment a
    answered 200 is in the database, the transaction it had open is rolled back by the server (b's writers,
    queued on the same lock, go on), and b answers from the whole gallery."""
    import httpx

    (proc_a, a), (_, b) = replicas
    pool = [p for ps in photos.values() for p in ps]
    acked: dict[str, list[str]] = {a: [], b: []}
    errors: list[str] = []
    stop = threading.Event()

    def client(base: str, worker: int) -> None:
        with httpx.Client(timeout=30) as c:
            for i in range(10_000):
                if stop.is_set():
                    return
                name = f"{'a' if base == a else 'b'}{worker}-{i}"
                try:
                    r = _enroll(c, base, name, pool[(worker + i) % len(pool)])
                except httpx.HTTPError:
                    return  # the replica is gone
                if r.status_code == 200:
                    acked[base].append(name)
                else:
                    errors.append(r.text)

    threads = [threading.Thread(target=client, args=(base, w)) for base in (a, b) for w in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 90
    while len(acked[a]) < 15 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc_a.pid, signal.SIGKILL)
    at_kill = len(acked[b])
    while len(acked[b]) < at_kill + 5 and time.monotonic() < deadline:  # b goes on writing
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acked[a]) >= 15 and len(acked[b]) >= at_kill + 5 and not errors, errors[:3]
    with httpx.Client(timeout=30) as c:
        stored = {p["name"]: p["photos"] for p in c.get(f"{b}/people", headers=AUTH).json()}
        lost = [n for n in acked[a] + acked[b] if stored.get(n) != 1]
        assert not lost, f"acknowledged but lost: {lost}"
        assert set(stored.values()) == {1}  # nothing half-written, nothing twice
        assert len(_identify(c, b, pool[0])) == 10  # b searches the whole gallery (k = 10)
    assert len(stored) >= len(acked[a]) + len(acked[b])


def test_matrix_reads_in_chunks_into_one_array(url: str, verifier: Verifier,
                                               photos: dict[str, tuple[Path, ...]],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The matrix comes through chunks smaller than the gallery (here 3 rows) into the same rows a plain read
    gives, in enrollment order, each row with its person."""
    from siamface import gallery_store

    monkeypatch.setattr(gallery_store, "CHUNK_ROWS", 3)
    with Gallery(url, verifier) as g:
        people = ["bob", "Carl", "anna", "Émile"]
        for name in people:
            g.enroll(name, list(photos["Tony_Blair"]))
        names, person, emb = g._store.embeddings(verifier.loaded.model.embed_dim)
        assert names == people and [names[i] for i in person] == [n for n in people for _ in range(2)]
        assert emb.dtype == np.float32 and emb.shape == (8, verifier.loaded.model.embed_dim)
        plain = g._store.fetchall("SELECT embedding FROM enrollments ORDER BY id")
        assert np.array_equal(emb, np.stack([np.frombuffer(bytes(r[0]), "<f4") for r in plain]))


def test_the_service_answers_503_once_when_the_database_connection_broke(url: str,
                                                                        photos: dict[str, tuple[Path, ...]]) -> None:
    """A write that finds its connection closed by the server answers 503 in one line (never a traceback);
    the next request works on a new connection."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from siamface.serve import Settings, create_app

    photo = photos["Tony_Blair"][0]
    with TestClient(create_app(Settings(gallery=url, model="lfw-view1", api_key=KEY)), headers=AUTH,
                    raise_server_exceptions=False) as c:
        assert _enroll(c, "", "Ann", photo).status_code == 200
        database = url.rsplit("/", 1)[1]
        assert c.get("/health").json()["gallery"] == database  # the database's name: no host, no user
        assert c.get("/people/Nobody").json()["detail"] == f"no person named 'Nobody' in {database}"
        pid = c.app.state.resources.gallery._store.conn.info.backend_pid
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(0.2)
        r = _enroll(c, "", "Bob", photos["Colin_Powell"][0])
        assert r.status_code == 503 and r.json()["detail"].startswith("the gallery database cannot be used now")
        assert "\n" not in r.json()["detail"] and "127.0.0.1" not in r.json()["detail"]
        assert _enroll(c, "", "Bob", photos["Colin_Powell"][0]).status_code == 200
        assert [p["name"] for p in c.get("/people").json()] == ["Ann", "Bob"]
