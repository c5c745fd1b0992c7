"""The service's gallery endpoints (enroll, identify, people, verify-against) against the library, their
errors (404, 409, 422, 400), a gallery made by another model, and SIGKILL during a burst of enrollments."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _helpers import TinyRun, att_dir, one_thread, tiny_run
from _serve_helpers import encode, face_tiny_model, free_port, lfw_photos, rgb, side_by_side, start_server

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from siamface.cli import main  # noqa: E402
from siamface.gallery import Gallery  # noqa: E402
from siamface.serve import Settings, create_app  # noqa: E402
from siamface.verify import Verifier  # noqa: E402

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
KEY = "k-" + "7" * 30
AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> TinyRun:
    return tiny_run(tmp_path_factory, data_root)


@pytest.fixture(scope="module")
def face_model(tmp_path_factory: pytest.TempPathFactory, tiny: TinyRun) -> Path:
    return face_tiny_model(tiny.path, tmp_path_factory.mktemp("serve_gallery") / "face-tiny")


@pytest.fixture(scope="module")
def photos(data_root: Path) -> dict[str, bytes]:
    bush, blair = lfw_photos(data_root, "George_W_Bush"), lfw_photos(data_root, "Tony_Blair", 1)
    return {"bush1": bush[0].read_bytes(), "bush2": bush[1].read_bytes(), "blair": blair[0].read_bytes(),
            "both": encode(side_by_side(rgb(bush[0]), rgb(blair[0])), "PNG"),
            "blank": encode(np.full((120, 120, 3), 200, np.uint8), "PNG")}


@pytest.fixture
def client(face_model: Path, tmp_path: Path) -> TestClient:
    settings = Settings(gallery=tmp_path / "people.db", model=str(face_model), api_key=KEY)
    with TestClient(create_app(settings), headers=AUTH) as c:  # with a key, every gallery endpoint needs it
        yield c


def enroll(c: TestClient, name: str, data: bytes, filename: str = "photo.jpg", **form: str) -> httpx.Response:
    return c.post("/enroll", data={"name": name, **form}, files={"image": (filename, data, "image/jpeg")},
                  headers=AUTH)


def without_time(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k != "elapsed_ms"}


def public(answer: dict, model: Path) -> dict:
    """A library answer as the service gives it: the model by its name, no path in the texts."""
    out = {k: v.replace(str(model), model.name) if isinstance(v, str) else v for k, v in without_time(answer).items()}
    return {**out, "model": model.name}


def test_enroll_identify_and_people_answer_like_the_library(client: TestClient, photos: dict, face_model: Path,
                                                            tmp_path: Path) -> None:
    r = enroll(client, "George W Bush", photos["bush1"], "bush.jpg")
    assert r.status_code == 200, r.json()
    body = r.json()
    assert body["name"] == "George W Bush" and body["photos"] == 1 and len(body["enrolled"]) == 1
    import hashlib

    row = body["enrolled"][0]
    assert row["source"] == "bush.jpg" and row["sha256"] == hashlib.sha256(photos["bush1"]).hexdigest()
    assert row["face"]["box"]["w"] > 0 and len(row["face"]["eyes"]) == 2
    assert enroll(client, "Tony Blair", photos["blair"]).status_code == 200
    people = client.get("/people").json()
    assert [p["name"] for p in people] == ["George W Bush", "Tony Blair"] and all(p["photos"] == 1 for p in people)
    detail = client.get("/people/George W Bush").json()
    assert detail["photos"] == 1 and detail["enrollments"][0]["sha256"] == row["sha256"]
    answer = client.post("/identify", files={"image": ("probe.jpg", photos["bush2"], "image/jpeg")}, data={"k": "2"})
    assert answer.status_code == 200
    with Gallery(tmp_path / "people.db", Verifier(face_model)) as g:
        expected = g.identify(photos["bush2"], k=2).to_dict()
        against = g.verify_against("Tony Blair", photos["bush2"]).to_dict()
    assert without_time(answer.json()) == public(expected, face_model)  # the model by name, no path
    assert {c["name"] for c in answer.json()["faces"][0]["candidates"]} == {"Tony Blair", "George W Bush"}
    r = client.post("/people/Tony Blair/verify", files={"image": ("probe.jpg", photos["bush2"], "image/jpeg")})
    assert r.status_code == 200 and without_time(r.json()) == public(against, face_model)
    assert client.get("/health").json()["people"] == 2


def test_identify_decides_at_the_fpir_asked_for(client: TestClient, photos: dict, face_model: Path,
                                                tmp_path: Path) -> None:
    enroll(client, "George W Bush", photos["bush1"])
    enroll(client, "Tony Blair", photos["blair"])
    files = {"image": ("probe.jpg", photos["bush2"], "image/jpeg")}
    default = client.post("/identify", files=files).json()
    strict = client.post("/identify", files=files, data={"fpir": "0.001"}).json()
    lax = client.post("/identify", files=files, data={"fpir": "0.2"}).json()
    with Gallery(tmp_path / "people.db", Verifier(face_model)) as g:
        for fpir, answer in ((None, default), (0.001, strict), (0.2, lax)):
            d = g.decision(fpir=fpir)
            assert answer["threshold"] == d.threshold and answer["fpir"] == d.fpir
            assert answer["operating_point"] == d.operating_point
            assert answer["calibration"] == d.calibration.replace(str(face_model), face_model.name)  # no paths
    assert default["operating_point"].startswith("FPIR=")
    assert strict["threshold"] >= default["threshold"] >= lax["threshold"]
    for bad in ("0", "1.5", "abc"):
        r = client.post("/identify", files=files, data={"fpir": bad})
        assert r.status_code == 422 and "fpir" in r.json()["detail"]


def test_identify_reports_every_face(client: TestClient, photos: dict) -> None:
    enroll(client, "Tony Blair", photos["blair"])
    r = client.post("/identify", files={"image": ("two.png", photos["both"], "image/png")})
    assert r.status_code == 200
    faces = r.json()["faces"]
    assert len(faces) >= 2 and all(f["candidates"][0]["name"] == "Tony Blair" for f in faces)
    assert all(f["match"] in (None, "Tony Blair") for f in faces)


def test_duplicate_name_is_409_unless_adding(client: TestClient, photos: dict) -> None:
    assert enroll(client, "Bush", photos["bush1"]).status_code == 200
    r = enroll(client, "Bush", photos["bush2"])
    assert r.status_code == 409
    assert r.json()["detail"] == "'Bush' is already enrolled in people.db"  # the file's name, not its path
    r = enroll(client, "Bush", photos["bush2"], add="true")
    assert r.status_code == 200 and r.json()["photos"] == 2


def test_unknown_person_is_404(client: TestClient, photos: dict) -> None:
    where = "people.db"  # the gallery's name: answers never show its absolute path
    for r in (client.get("/people/Nobody"), client.delete("/people/Nobody", headers=AUTH),
              client.post("/people/Nobody/verify", files={"image": ("p.jpg", photos["bush1"], "image/jpeg")})):
        assert r.status_code == 404
        assert r.json() == {"detail": f"no person named 'Nobody' in {where}", "error": "PersonNotFoundError"}


@pytest.mark.parametrize("case, status, message", [
    ("several faces", 422, r"^two\.png: \d faces found; say which one to enroll"),
    ("zero faces", 422, r"^two\.png: no face found in the image \(120x120; Haar"),
    ("truncated JPEG", 400, r"^image \(two\.png\): corrupt or truncated JPEG image \(image file is truncated"),
    ("text named .jpg", 415, r"^image \(two\.png\): text; expected a JPEG, PNG, WebP, PGM, BMP or TIFF image"),
    ("bad name", 422, r"a person's name must not hold control or invisible characters"),
])
def test_bad_enrollment_gets_its_status_and_message(client: TestClient, photos: dict, case: str, status: int,
                                                    message: str) -> None:
    import re

    name, data = {
        "several faces": ("Two", photos["both"]), "zero faces": ("Blank", photos["blank"]),
        "truncated JPEG": ("Half", photos["bush1"][: len(photos["bush1"]) // 2]),
        "text named .jpg": ("Text", b"hello\n"), "bad name": ("tab\there", photos["bush1"]),
    }[case]
    r = enroll(client, name, data, "two.png")
    assert r.status_code == status, r.json()
    assert re.search(message, r.json()["detail"]), r.json()["detail"]
    assert client.get("/people").json() == []  # nothing half-enrolled
    assert "--" not in r.json()["detail"]  # no command-line flags in the service's answers


def test_several_faces_enroll_with_select(client: TestClient, photos: dict) -> None:
    r = enroll(client, "Largest", photos["both"], select="largest")
    assert r.status_code == 200 and r.json()["enrolled"][0]["face"]["faces_in_photo"] >= 2


def test_delete_removes_the_person(client: TestClient, photos: dict) -> None:
    enroll(client, "Bush", photos["bush1"])
    r = client.delete("/people/Bush", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"name": "Bush", "deleted": True}
    assert client.get("/people").json() == [] and client.get("/people/Bush").status_code == 404


def test_a_gallery_of_another_model_is_refused_in_one_line(face_model: Path, tiny: TinyRun, photos: dict,
                                                           tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    db = tmp_path / "people.db"
    with Gallery(db, Verifier(face_model)) as g:
        g.enroll("Bush", [photos["bush1"]])
    assert main(["serve", "--gallery", str(db), "--model", str(tiny.path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"siamface: error: {db}: its embeddings were made by model") and "\n" not in err
    assert "siamface people reembed" in err


def test_sigkill_during_a_burst_of_enrollments_keeps_every_acknowledged_one(tiny: TinyRun, data_root: Path,
                                                                            tmp_path: Path) -> None:
    """A real `siamface serve` process is killed with SIGKILL while 4 clients enroll; after a restart the
    database passes integrity_check and holds every enrollment that was answered 200."""
    db, port = tmp_path / "people.db", free_port()
    images = sorted(att_dir(data_root).glob("s*/1.pgm"))
    args, env = ["--gallery", str(db), "--model", str(tiny.path)], {"SIAMFACE_API_KEY": KEY}
    proc = start_server(args, port, env, tmp_path / "serve.log")
    acked: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def client(worker: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            for i in range(1000):
                if stop.is_set():
                    return
                name = f"w{worker}-{i}"
                try:
                    r = c.post("/enroll", data={"name": name}, headers=AUTH,
                               files={"image": ("p.pgm", images[i % len(images)].read_bytes(), "image/x-pgm")})
                except httpx.HTTPError:
                    return  # the server is gone
                (acked if r.status_code == 200 else failures).append(name if r.status_code == 200 else r.text)

    workers = [threading.Thread(target=client, args=(w,)) for w in range(4)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 60
    while len(acked) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    stop.set()
    for w in workers:
        w.join(15)
    assert len(acked) >= 40 and not failures, failures[:3]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    proc = start_server(args, port, env, tmp_path / "serve.log")
    try:
        people = httpx.get(f"http://127.0.0.1:{port}/people", headers=AUTH, timeout=10).json()
    finally:
        proc.kill()
        proc.wait(10)
    stored = {p["name"]: p["photos"] for p in people}
    missing = [n for n in acked if stored.get(n) != 1]
    assert not missing, f"acknowledged but lost: {missing}"


def test_gallery_dependency_can_be_overridden(face_model: Path, tmp_path: Path, photos: dict) -> None:
    from siamface.serve.app import get_gallery

    app = create_app(Settings(model=str(face_model), api_key=KEY))
    with TestClient(app, headers=AUTH) as c:
        r = c.get("/people")
        assert r.status_code == 503 and r.json()["detail"].startswith("this server has no gallery")
        with Gallery(tmp_path / "other.db", c.app.state.resources.verifier) as g:
            g.enroll("Bush", [photos["bush1"]])
            app.dependency_overrides[get_gallery] = lambda: g
            assert [p["name"] for p in c.get("/people").json()] == ["Bush"]


def test_identify_a_photo_without_a_face_names_the_upload(client: TestClient, photos: dict) -> None:
    r = client.post("/identify", files={"image": ("wall.png", photos["blank"], "image/png")})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("wall.png: no face found in the image (120x120; Haar cascade")


def test_with_a_key_every_gallery_endpoint_needs_it(client: TestClient, photos: dict) -> None:
    assert enroll(client, "Bush", photos["bush1"]).status_code == 200
    files = {"image": ("p.jpg", photos["bush2"], "image/jpeg")}
    anonymous = TestClient(client.app)  # the same running app, no key
    calls = [("GET", "/people", {}), ("GET", "/people/Bush", {}), ("POST", "/identify", {"files": files}),
             ("POST", "/people/Bush/verify", {"files": files})]
    for method, path, kw in calls:
        r = anonymous.request(method, path, **kw)
        assert r.status_code == 401, (path, r.json())
        assert r.json()["detail"].startswith("missing X-API-Key header")
    for path in ("/", "/health", "/static/app.js", "/static/style.css"):  # the page and health stay open
        assert anonymous.get(path).status_code == 200, path
    assert anonymous.get("/health").json()["key_required"] is True


def test_a_name_with_a_slash_is_refused_and_an_old_one_is_reachable(client: TestClient, photos: dict) -> None:
    for bad in ("AC/DC", "..", "."):
        r = enroll(client, bad, photos["bush1"])
        assert r.status_code == 422 and "cannot contain '/' or be '.' or '..'" in r.json()["detail"], r.json()
    assert enroll(client, "ACDC", photos["bush1"]).status_code == 200
    gallery = client.app.state.resources.gallery
    with gallery._transaction() as tx:  # a name enrolled before the check existed
        tx.execute("UPDATE people SET name = 'AC/DC'")
    files = {"image": ("p.jpg", photos["bush2"], "image/jpeg")}
    assert client.get("/people/AC%2FDC").json()["name"] == "AC/DC"
    assert client.post("/people/AC%2FDC/verify", files=files).json()["name"] == "AC/DC"
    assert client.delete("/people/AC%2FDC").json() == {"name": "AC/DC", "deleted": True}
    assert client.get("/people").json() == []


@pytest.mark.parametrize("name, message", [
    ("\u0410lice", "must not mix Cyrillic and Latin letters"),  # a Cyrillic A
    ("ALICE", "looks like the enrolled 'Alice'"),
    ("evil\u202eevil", "control or invisible characters"),  # right-to-left override
    ("Al\u200bice", "control or invisible characters"),  # zero-width space
])
def test_names_that_impersonate_another_are_refused(client: TestClient, photos: dict, name: str, message: str) -> None:
    assert enroll(client, "Alice", photos["bush1"]).status_code == 200
    r = enroll(client, name, photos["bush2"])
    assert r.status_code == 422 and message in r.json()["detail"], r.json()
    assert [p["name"] for p in client.get("/people").json()] == ["Alice"]


def test_names_are_stored_in_one_unicode_form(client: TestClient, photos: dict) -> None:
    assert enroll(client, "Rene\u0301e", photos["bush1"]).json()["name"] == "Ren\u00e9e"  # NFD in, NFC stored
    r = enroll(client, "Ren\u00e9e", photos["bush2"])
    assert r.status_code == 409  # the same name, however it was typed


def damage(db: Path) -> None:
    """Overwrite every page but the first (the header) with garbage, as a failing disk would."""
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    for start in range(page, len(data), page):
        data[start + 8 : start + page - 8] = bytes(range(256)) * ((page - 16) // 256) + bytes((page - 16) % 256)
    db.write_bytes(bytes(data))


def enrolled_gallery(db: Path, face_model: Path, photos: dict, n: int = 6) -> None:
    with Gallery(db, Verifier(face_model)) as g:
        for i in range(n):
            g.enroll(f"p{i}", [photos["bush1" if i % 2 else "blair"]])
        g._store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def test_a_damaged_gallery_is_refused_at_start_in_one_line(face_model: Path, photos: dict, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    db = tmp_path / "people.db"
    enrolled_gallery(db, face_model, photos)
    damage(db)
    assert main(["serve", "--gallery", str(db), "--model", str(face_model)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"siamface: error: {db}: the gallery file is damaged (") and err.count("\n") == 1, err


def test_a_gallery_damaged_while_serving_answers_one_line_of_json(face_model: Path, photos: dict,
                                                                  tmp_path: Path) -> None:
    from siamface.serve.app import get_gallery

    db = tmp_path / "people.db"
    enrolled_gallery(db, face_model, photos)
    damage(db)
    app = create_app(Settings(model=str(face_model)))
    with TestClient(app, raise_server_exceptions=False) as c, Gallery(db, check_model=False) as g:
        app.dependency_overrides[get_gallery] = lambda: g  # opened without the start-up check
        r = c.get("/people")
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert r.json()["detail"].startswith("the gallery file cannot be read (") and "\n" not in r.json()["detail"]


def test_serve_opens_a_gallery_with_the_model_that_built_it(face_model: Path, photos: dict, tmp_path: Path) -> None:
    from siamface.serve import open_resources

    db = tmp_path / "people.db"
    with Gallery(db, Verifier(face_model)) as g:
        g.enroll("Bush", [photos["bush1"]])
    res = open_resources(Settings(gallery=db))  # no model given: not the shipped one, the gallery's own
    try:
        assert res.verifier.name == str(face_model) and [p.name for p in res.gallery.people()] == ["Bush"]
    finally:
        res.close()
