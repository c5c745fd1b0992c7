"""The door endpoint (POST /door/identify) without a browser: it answers each face's box and the gallery's
decision and nothing else, the door key opens it and no other endpoint, and bad keys or uploads are refused in
one line. The shipped face model serves a gallery of two LFW people (real decisions, not a tiny model's)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _helpers import one_thread
from _serve_helpers import encode, lfw_photos, rgb, side_by_side

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from siamface.cli import main  # noqa: E402
from siamface.serve import Settings, create_app  # noqa: E402
from siamface.serve.security import KeyTooWeakError  # noqa: E402

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
API_KEY, DOOR_KEY = "door-test-api-key-0123456789", "door-test-door-key-987654321"
# Enrolled from their first LFW photo, shown at the door in their second; the stranger is not enrolled. The
# shipped model separates them (p(same) >= 0.9999 for each person's two photos, <= 0.02 across).
ENROLLED = {"Gerhard Schroeder": "Gerhard_Schroeder", "Colin Powell": "Colin_Powell"}
STRANGER = "Hugo_Chavez"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> TestClient:
    settings = Settings(gallery=tmp_path_factory.mktemp("door") / "people.db", api_key=API_KEY, door_key=DOOR_KEY)
    with TestClient(create_app(settings)) as c:
        for name, folder in ENROLLED.items():
            photo = lfw_photos(data_root, folder, 1)[0]
            r = c.post("/enroll", data={"name": name}, files={"image": (photo.name, photo.read_bytes())},
                       headers={"X-API-Key": API_KEY})
            assert r.status_code == 200, r.json()
        yield c


def second_photo(data_root: Path, folder: str) -> bytes:
    return lfw_photos(data_root, folder, 2)[1].read_bytes()


def door(c: TestClient, data: bytes, key: str | None = DOOR_KEY, filename: str = "door.jpg") -> tuple[int, dict]:
    r = c.post("/door/identify", files={"image": (filename, data)}, headers={"X-API-Key": key} if key else {})
    return r.status_code, r.json()


def identify(c: TestClient, data: bytes) -> dict:
    r = c.post("/identify", files={"image": ("door.jpg", data)}, headers={"X-API-Key": API_KEY})
    assert r.status_code == 200, r.json()
    return r.json()


def test_the_door_answers_each_face_and_its_decision_only(client: TestClient, data_root: Path) -> None:
    for name, folder in ENROLLED.items():
        status, body = door(client, second_photo(data_root, folder))
        assert status == 200, body
        full = identify(client, second_photo(data_root, folder))
        box = {k: full["faces"][0]["face"]["box"][k] for k in "xywh"}
        assert body == {"faces": [{"box": box, "match": name}]}
        other = next(n for n in ENROLLED if n != name)
        assert other in json.dumps(full) and other not in json.dumps(body)  # identify names both; the door one
    status, body = door(client, second_photo(data_root, STRANGER))
    assert status == 200 and [f["match"] for f in body["faces"]] == [None]
    assert set(body) == {"faces"} and set(body["faces"][0]) == {"box", "match"}


def test_the_door_decides_every_face_of_a_group_as_identify_does(client: TestClient, data_root: Path) -> None:
    group = encode(side_by_side(rgb(lfw_photos(data_root, STRANGER, 2)[1]),
                                rgb(lfw_photos(data_root, "Colin_Powell", 2)[1])), "PNG")
    status, body = door(client, group)
    full = identify(client, group)
    assert status == 200
    assert [f["match"] for f in body["faces"]] == [f["match"] for f in full["faces"]]
    assert sorted(map(str, (f["match"] for f in body["faces"]))) == ["Colin Powell", "None"]
    assert [f["box"] for f in body["faces"]] == [{k: f["face"]["box"][k] for k in "xywh"} for f in full["faces"]]


def test_the_door_key_opens_the_door_and_nothing_else(client: TestClient, data_root: Path) -> None:
    photo = second_photo(data_root, "Colin_Powell")
    assert door(client, photo, API_KEY)[0] == 200  # the API key opens the door too
    status, body = door(client, photo, None)
    assert status == 401 and body["detail"] == "missing X-API-Key header (this server's gallery needs its door key " \
        "or API key)"
    status, body = door(client, photo, "not-the-door-key-0123456789")
    assert status == 401 and body["detail"] == "wrong door key or API key (X-API-Key)"
    as_door = {"X-API-Key": DOOR_KEY}
    refused = [client.post("/identify", files={"image": ("a.jpg", photo)}, headers=as_door),
               client.get("/people", headers=as_door), client.get("/people/Colin Powell", headers=as_door),
               client.post("/people/Colin Powell/verify", files={"image": ("a.jpg", photo)}, headers=as_door),
               client.post("/enroll", data={"name": "Intruder"}, files={"image": ("a.jpg", photo)}, headers=as_door),
               client.delete("/people/Colin Powell", headers=as_door)]
    assert [r.status_code for r in refused] == [401] * 6
    people = client.get("/people", headers={"X-API-Key": API_KEY}).json()
    assert sorted(p["name"] for p in people) == sorted(ENROLLED)


def test_bad_door_uploads_are_refused_in_one_line(client: TestClient, data_root: Path) -> None:
    status, body = door(client, b"not a photo\n", filename="notes.jpg")
    assert status == 415 and body["detail"].startswith("image (notes.jpg): text; expected a JPEG")
    status, body = door(client, encode(rgb(lfw_photos(data_root, "Colin_Powell", 1)[0])[:8, :8], "PNG"))
    assert status == 422 and "image (door.jpg)" in body["detail"] and "\n" not in body["detail"]


def test_the_door_page_is_served_and_asks_the_door_endpoint_only(client: TestClient) -> None:
    page = client.get("/door")
    assert page.status_code == 200 and "/static/door.js" in page.text and "/static/app.js" not in page.text
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        assert client.get(asset).status_code == 200, asset
    assert "/door/identify" in client.get("/openapi.json").json()["paths"]
    script = client.get("/static/door.js").text
    assert '"/door/identify"' in script and '"/identify"' not in script and "/people" not in script


def test_a_door_key_must_be_strong_and_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(KeyTooWeakError, match=r"the door key \(SIAMFACE_DOOR_KEY\) has 5 characters"):
        Settings(door_key="short")
    with pytest.raises(ValueError, match="SIAMFACE_DOOR_KEY equals the API key"):
        Settings(api_key=API_KEY, door_key=API_KEY)
    monkeypatch.setenv("SIAMFACE_API_KEY", API_KEY)
    monkeypatch.setenv("SIAMFACE_DOOR_KEY", DOOR_KEY)
    assert Settings.from_env().door_key == DOOR_KEY
    monkeypatch.setenv("SIAMFACE_DOOR_KEY", API_KEY)
    assert main(["serve", "--gallery", str(tmp_path / "people.db")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "SIAMFACE_DOOR_KEY equals the API key" in err


def test_without_keys_the_door_is_open_like_identify(tmp_path: Path, data_root: Path) -> None:
    with TestClient(create_app(Settings(gallery=tmp_path / "people.db"))) as c:
        status, body = door(c, second_photo(data_root, "Colin_Powell"), None)
    assert status == 200 and [f["match"] for f in body["faces"]] == [None]  # an empty gallery knows no one
