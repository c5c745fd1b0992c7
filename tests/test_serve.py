"""The HTTP service without a gallery: /verify answers, every bad input's status and message, the API key,
limits, the timeout, metrics, the page, and inference off the event loop. FastAPI's TestClient, tiny model."""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _helpers import TinyRun, one_thread, tiny_run
from _serve_helpers import encode, face_tiny_model, free_port, lfw_photos, rgb, side_by_side
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from siamface.serve import Limits, Settings, create_app  # noqa: E402
from siamface.verify import Verifier  # noqa: E402

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
KEY = "correct horse battery staple"


@pytest.fixture(scope="module")
def face_model(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    tiny: TinyRun = tiny_run(tmp_path_factory, data_root)
    return face_tiny_model(tiny.path, tmp_path_factory.mktemp("serve") / "face-tiny")


@pytest.fixture(scope="module")
def client(face_model: Path) -> TestClient:
    with TestClient(create_app(Settings(model=str(face_model), api_key=KEY))) as c:
        yield c


@pytest.fixture(scope="module")
def photos(data_root: Path) -> dict[str, np.ndarray]:
    bush, powell = lfw_photos(data_root, "George_W_Bush"), lfw_photos(data_root, "Colin_Powell", 1)
    return {"a": rgb(bush[0]), "b": rgb(bush[1]), "other": rgb(powell[0])}


def post_verify(client: TestClient, a: bytes, b: bytes, name_a: str = "a.jpg") -> tuple[int, dict]:
    r = client.post("/verify", files={"image_a": (name_a, a, "image/jpeg"), "image_b": ("b.jpg", b, "image/jpeg")})
    return r.status_code, r.json()


def jpeg(arr: np.ndarray) -> bytes:
    return encode(arr, "JPEG", quality=95)


def test_verify_answers_like_the_library(client: TestClient, face_model: Path, photos: dict) -> None:
    status, body = post_verify(client, jpeg(photos["a"]), jpeg(photos["other"]))
    assert status == 200
    decoded = [np.asarray(Image.open(io.BytesIO(jpeg(photos[k]))).convert("RGB")) for k in ("a", "other")]
    expected = Verifier(face_model).verify(*decoded).to_dict()
    assert body["probability"] == pytest.approx(expected["probability"], abs=1e-6)
    assert body["same"] == (body["probability"] >= body["threshold"]) == expected["same"]
    assert (body["threshold"], body["threshold_source"]) == (expected["threshold"], expected["threshold_source"])
    assert body["model"] == face_model.name and body["elapsed_ms"] > 0  # never the absolute path
    assert len(body["faces"]) == 2
    for face in body["faces"]:
        box = face["box"]
        assert box in face["faces"] and 0 < box["w"] <= 250 and 0 < box["h"] <= 250
        (lx, ly), (rx, ry) = face["eyes"]
        assert box["x"] <= lx < rx <= box["x"] + box["w"] and box["y"] <= min(ly, ry) <= box["y"] + box["h"]


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
def test_lossless_formats_give_the_probability_of_the_same_pixels(client: TestClient, photos: dict, fmt: str) -> None:
    reference = post_verify(client, encode(photos["a"], "PNG"), encode(photos["other"], "PNG"))[1]
    kw = {"lossless": True} if fmt == "WEBP" else {}
    # the name says JPEG: content decides
    status, body = post_verify(client, encode(photos["a"], fmt, **kw), encode(photos["other"], "PNG"), "photo.jpg")
    assert status == 200, body
    assert body["probability"] == pytest.approx(reference["probability"], abs=1e-6)


def test_grey_16_bit_rgba_and_palette_images_are_converted(client: TestClient, photos: dict) -> None:
    grey = np.asarray(Image.fromarray(photos["a"]).convert("L"))
    other = encode(photos["other"], "PNG")
    reference = post_verify(client, encode(grey, "PNG"), other)[1]
    as_pgm = post_verify(client, encode(grey, "PPM"), other)
    sixteen = post_verify(client, encode(Image.fromarray(grey.astype(np.uint16) * 257), "PNG"), other)
    assert as_pgm[0] == sixteen[0] == 200
    assert as_pgm[1]["probability"] == sixteen[1]["probability"] == pytest.approx(reference["probability"], abs=1e-6)
    rgba = np.dstack([photos["a"], np.full(photos["a"].shape[:2], 255, np.uint8)])
    status, body = post_verify(client, encode(rgba, "PNG"), other)
    assert status == 200
    rgb_only = post_verify(client, encode(photos["a"], "PNG"), other)[1]
    assert body["probability"] == pytest.approx(rgb_only["probability"], abs=1e-6)
    status, body = post_verify(client, encode(Image.fromarray(photos["a"]).convert("P"), "PNG"), other)
    assert status == 200 and body["faces"][0]["box"] is not None


def png_header(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height, then one small IDAT chunk (a few bytes of rows)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")


@pytest.mark.parametrize("case, status, message", [
    ("truncated JPEG", 400, r"image_a \(a\.jpg\): corrupt or truncated JPEG image"),
    ("text named .jpg", 415, r"image_a \(a\.jpg\): text; expected a JPEG, PNG, WebP, PGM, BMP or TIFF image"),
    ("empty file", 415, r"image_a \(a\.jpg\): empty"),
    ("PNG claiming 30000x30000", 413, r"image_a \(a\.jpg\): .*900000000 pixels.*40 Mpx"),
    ("PNG claiming 8000x6000", 413, r"image_a \(a\.jpg\): 8000x6000 is 48\.0 Mpx, above the 40 Mpx limit"),
    ("PNG claiming 5000x4000", 413, r"image_a \(a\.jpg\): 5000x4000 is 20\.0 Mpx; a PNG image is decoded whole, "
                                    r"so 16 Mpx is its limit \(a JPEG may have up to 40 Mpx"),
    ("1x1 image", 422, r"image_a \(a\.jpg\): 1x1 pixels is too small to hold a face"),
    ("no face", 422, r"^image_a \(a\.jpg\): no face found in the image \(200x200; Haar cascade"),
])
def test_bad_image_gets_its_status_and_a_clear_message(client: TestClient, photos: dict, case: str, status: int,
                                                       message: str) -> None:
    good = jpeg(photos["a"])
    data = {
        "truncated JPEG": good[: len(good) // 2],
        "text named .jpg": b"these are not the pixels you are looking for\n",
        "empty file": b"",
        "PNG claiming 30000x30000": png_header(30000, 30000),
        "PNG claiming 8000x6000": png_header(8000, 6000),
        "PNG claiming 5000x4000": png_header(5000, 4000),
        "1x1 image": encode(np.zeros((1, 1, 3), np.uint8), "PNG"),
        "no face": encode(np.tile(np.linspace(0, 255, 200, dtype=np.uint8), (200, 1)), "PNG"),
    }[case]
    got, body = post_verify(client, data, good)
    assert got == status, body
    assert post_verify(client, good, data, "b.jpg")[0] == status  # either image
    assert re.search(message, body["detail"]), body["detail"]
    assert "\n" not in body["detail"]


def test_several_faces_are_all_reported_and_the_largest_is_used(client: TestClient, photos: dict) -> None:
    status, body = post_verify(client, jpeg(side_by_side(photos["a"], photos["other"])), jpeg(photos["b"]))
    assert status == 200
    report = body["faces"][0]
    assert len(report["faces"]) >= 2
    assert report["box"]["w"] * report["box"]["h"] == max(f["w"] * f["h"] for f in report["faces"])


def test_missing_field_names_it(client: TestClient, photos: dict) -> None:
    r = client.post("/verify", files={"image_a": ("a.jpg", jpeg(photos["a"]), "image/jpeg")})
    assert r.status_code == 422
    assert r.json()["detail"] == "invalid request: image_b: Field required"


def test_a_20_mb_upload_is_refused_naming_the_file(client: TestClient, photos: dict) -> None:
    big = jpeg(photos["a"]) + b"\0" * (20 * 1024 * 1024)
    status, body = post_verify(client, big, jpeg(photos["b"]))
    assert status == 413
    assert body["detail"] == "image_a (a.jpg): larger than the 10,485,760-byte limit for one image"


def test_a_body_above_two_uploads_is_refused_from_its_length(face_model: Path, photos: dict) -> None:
    limits = Limits(max_upload_bytes=1000)
    with TestClient(create_app(Settings(model=str(face_model), limits=limits))) as c:
        status, body = post_verify(c, jpeg(photos["a"]) + bytes(limits.max_request_bytes), jpeg(photos["b"]))
    assert status == 413
    assert re.fullmatch(r"request body of [\d,]+ bytes is above the 1,050,576-byte limit \(1,000 bytes per image\)",
                        body["detail"]), body["detail"]


def test_a_streamed_body_without_length_is_cut_off_at_the_limit(face_model: Path) -> None:
    limits = Limits(max_upload_bytes=1000)

    def body():  # noqa: ANN202 (chunked: no Content-Length to check up front)
        yield (b'--XX\r\nContent-Disposition: form-data; name="image_a"; filename="a.jpg"\r\n'
               b"Content-Type: image/jpeg\r\n\r\n")
        for _ in range(200):
            yield b"\xff" * 10_000
        yield b"\r\n--XX--\r\n"

    with TestClient(create_app(Settings(model=str(face_model), limits=limits))) as c:
        r = c.post("/verify", content=body(), headers={"content-type": "multipart/form-data; boundary=XX"})
    assert r.status_code == 413
    assert r.json()["detail"] == "request body is above the 1,050,576-byte limit (1,000 bytes per image)"


def test_write_endpoints_need_the_key(client: TestClient, face_model: Path, photos: dict) -> None:
    files = {"image": ("a.jpg", jpeg(photos["a"]), "image/jpeg")}
    missing = client.post("/enroll", data={"name": "x"}, files=files)
    wrong = client.post("/enroll", data={"name": "x"}, files=files, headers={"X-API-Key": KEY + "!"})
    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert missing.json()["detail"].startswith("missing X-API-Key header")
    assert wrong.json()["detail"] == "wrong API key (X-API-Key)"
    assert client.delete("/people/x", headers={"X-API-Key": "nope"}).status_code == 401
    with TestClient(create_app(Settings(model=str(face_model)))) as read_only:
        r = read_only.post("/enroll", data={"name": "x"}, files=files, headers={"X-API-Key": KEY})
        assert r.status_code == 403 and r.json()["detail"].startswith("read-only mode")
        assert read_only.get("/health").json()["read_only"] is True
        assert read_only.delete("/people/x").status_code == 403


def test_settings_take_the_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIAMFACE_API_KEY", KEY)
    assert Settings.from_env().api_key == KEY
    monkeypatch.setenv("SIAMFACE_API_KEY", "")
    assert Settings.from_env().api_key is None
    monkeypatch.delenv("SIAMFACE_API_KEY")
    assert Settings.from_env().api_key is None


@pytest.fixture
def slow_stage(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Finding a face (the real function) waits for `release` and counts its calls."""
    import siamface.photo_faces

    real, state = siamface.photo_faces.faces_for, {"calls": 0}
    state.update(release=threading.Event(), started=threading.Event())

    def slow(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        state["calls"] += 1
        state["started"].set()
        state["release"].wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(siamface.photo_faces, "faces_for", slow)
    return state


def wait_until(condition, seconds: float = 10.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def test_inference_runs_off_the_event_loop(face_model: Path, photos: dict, slow_stage: dict) -> None:
    with TestClient(create_app(Settings(model=str(face_model)))) as c:
        result: dict = {}
        worker = threading.Thread(target=lambda: result.update(r=post_verify(c, jpeg(photos["a"]), jpeg(photos["b"]))))
        worker.start()
        assert slow_stage["started"].wait(10)
        t0 = time.perf_counter()
        assert c.get("/health").status_code == 200  # answered while /verify is still computing
        health_s = time.perf_counter() - t0
        slow_stage["release"].set()
        worker.join(10)
    assert result["r"][0] == 200 and health_s < 5


def test_a_slow_request_gets_504_and_stops_computing(face_model: Path, photos: dict, slow_stage: dict) -> None:
    app = create_app(Settings(model=str(face_model), limits=Limits(timeout_s=0.3)))
    with TestClient(app) as c:
        status, body = post_verify(c, jpeg(photos["a"]), jpeg(photos["b"]))  # held in image_a's face search
        slow_stage["release"].set()
        assert wait_until(lambda: app.state.gate.admitted == 0)  # the worker thread has stopped
    assert status == 504 and body["detail"] == "request took longer than the 0.3 s limit"
    assert slow_stage["calls"] <= 1  # image_b's face was never searched for: the work stopped at its next stage


def test_requests_beyond_the_workers_and_the_queue_get_503(face_model: Path, photos: dict, slow_stage: dict) -> None:
    app = create_app(Settings(model=str(face_model), limits=Limits(workers=1, queue=1, light_workers=0)))
    a, b = jpeg(photos["a"]), jpeg(photos["b"])
    with TestClient(app) as c:
        results: list = []
        threads = [threading.Thread(target=lambda: results.append(post_verify(c, a, b))) for _ in range(2)]
        for t in threads:
            t.start()
        assert wait_until(lambda: app.state.gate.admitted == 2)  # one computing, one queued
        r = c.post("/verify", files={"image_a": ("a.jpg", a, "image/jpeg"), "image_b": ("b.jpg", b, "image/jpeg")})
        slow_stage["release"].set()
        for t in threads:
            t.join(20)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json() == {"detail": "the server is busy (1 requests computing, 1 waiting); retry in a moment",
                        "error": "BusyError"}
    assert [status for status, _ in results] == [200, 200]


def test_a_request_that_waits_for_a_worker_past_its_deadline_gets_a_whole_504(face_model: Path, photos: dict,
                                                                              slow_stage: dict) -> None:
    app = create_app(Settings(model=str(face_model), limits=Limits(workers=1, queue=1, light_workers=0,
                                                                   timeout_s=1.0)))
    a, b = jpeg(photos["a"]), jpeg(photos["b"])
    with TestClient(app) as c:
        first = threading.Thread(target=lambda: post_verify(c, a, b))
        first.start()
        assert slow_stage["started"].wait(10)
        r = c.post("/verify", files={"image_a": ("a.jpg", a, "image/jpeg"), "image_b": ("b.jpg", b, "image/jpeg")})
        slow_stage["release"].set()
        first.join(20)
    # the worker's wait and the request's deadline end together: the answer is never cut between its start
    # and its body
    assert r.status_code == 504 and r.json()["detail"].startswith("request took longer than")


def test_an_ordinary_verify_is_not_held_up_by_large_photos(face_model: Path, photos: dict,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import siamface.photo_faces

    real, release = siamface.photo_faces.faces_for, threading.Event()

    def slow_when_large(photo, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if photo.rgb.shape[0] > 600:  # only the large photos' face search waits
            release.wait(20)
        return real(photo, *args, **kwargs)

    monkeypatch.setattr(siamface.photo_faces, "faces_for", slow_when_large)
    big = jpeg(np.asarray(Image.fromarray(photos["a"]).resize((1500, 1500), Image.BILINEAR)))  # 2.3 Mpx: heavy
    app = create_app(Settings(model=str(face_model), limits=Limits(workers=1, queue=2, timeout_s=8)))
    with TestClient(app) as c:
        heavy: list = []
        threads = [threading.Thread(target=lambda: heavy.append(post_verify(c, big, jpeg(photos["b"]))[0]))
                   for _ in range(2)]
        for t in threads:
            t.start()
        assert wait_until(lambda: app.state.gate.admitted == 2)  # one computing (held), one queued
        t0 = time.perf_counter()
        status, body = post_verify(c, jpeg(photos["a"]), jpeg(photos["b"]))  # two 250 px photos: light
        light_s = time.perf_counter() - t0
        release.set()
        for t in threads:
            t.join(20)
    assert status == 200 and light_s < 5, (status, body, light_s)  # served by the light worker meanwhile
    assert heavy == [200, 200]


def test_a_large_jpeg_is_analysed_at_reduced_size_and_reported_in_its_own_pixels(face_model: Path,
                                                                                  photos: dict) -> None:
    from siamface.serve.limits import decode_photo

    big = jpeg(np.asarray(Image.fromarray(photos["a"]).resize((1500, 1500), Image.BILINEAR)))
    photo = decode_photo(big, "image_a (big.jpg)", Limits(max_side=500))
    assert photo.rgb.shape == (500, 500, 3) and photo.scale == pytest.approx(1 / 3)
    with TestClient(create_app(Settings(model=str(face_model), limits=Limits(max_side=500)))) as c:
        status, body = post_verify(c, big, jpeg(photos["b"]))
        small = post_verify(c, jpeg(photos["a"]), jpeg(photos["b"]))[1]
    assert status == 200
    got, ref = body["faces"][0]["box"], small["faces"][0]["box"]
    for key in ("x", "y", "w", "h"):  # the face of the 250 px photo, 6 times larger
        assert got[key] == pytest.approx(6 * ref[key], rel=0.15, abs=12), (key, got, ref)


def parse_metrics(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def test_metrics_count_requests_by_route_and_status(face_model: Path, photos: dict) -> None:
    with TestClient(create_app(Settings(model=str(face_model)))) as c:
        for _ in range(3):
            assert c.get("/health").status_code == 200
        post_verify(c, jpeg(photos["a"]), jpeg(photos["b"]))
        post_verify(c, b"not an image", jpeg(photos["b"]))
        c.get("/nowhere/at/all")
        r = c.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    m = parse_metrics(r.text)
    assert m['siamface_requests_total{method="GET",route="/health",status="200"}'] == 3
    assert m['siamface_requests_total{method="POST",route="/verify",status="200"}'] == 1
    assert m['siamface_requests_total{method="POST",route="/verify",status="415"}'] == 1
    assert m['siamface_requests_total{method="GET",route="other",status="404"}'] == 1
    buckets = [v for k, v in m.items() if k.startswith('siamface_request_duration_seconds_bucket{route="/verify"')]
    assert buckets == sorted(buckets) and buckets[-1] == 2  # cumulative, +Inf holds every request
    assert m['siamface_request_duration_seconds_count{route="/verify"}'] == 2
    assert m['siamface_request_duration_seconds_sum{route="/verify"}'] > 0


def test_page_docs_and_health(client: TestClient, face_model: Path) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "<title>siamface</title>" in page.text
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        assert client.get(asset).status_code == 200, asset
    schema = client.get("/openapi.json").json()
    paths = {"/verify", "/identify", "/enroll", "/people", "/people/{name}", "/health", "/metrics"}
    assert paths <= set(schema["paths"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert assets and all(a.startswith("/") for a in assets), assets  # served here: /docs works offline
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    health = client.get("/health").json()
    assert health["model"] == face_model.name and health["read_only"] is False and health["gallery"] is None
    assert health["limits"]["max_pixels"] == 40_000_000


def test_every_answer_carries_the_security_headers(client: TestClient) -> None:
    for path in ("/", "/health", "/docs", "/static/app.js", "/no-such-page"):
        h = client.get(path).headers
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff", path
        assert "frame-ancestors 'none'" in h["content-security-policy"] and "script-src 'self';" in \
            h["content-security-policy"], path


def test_hosts_outside_the_allowed_ones_are_refused(face_model: Path) -> None:
    settings = Settings(model=str(face_model), allowed_hosts=("127.0.0.1", "localhost", "::1"))
    with TestClient(create_app(settings), base_url="http://localhost:8000") as c:
        assert c.get("/health").status_code == 200
        assert c.get("/health", headers={"host": "[::1]:8000"}).status_code == 200
        r = c.get("/health", headers={"host": "attacker.example:8000"})
    assert r.status_code == 400 and r.json()["error"] == "HostNotAllowed"
    assert r.json()["detail"].startswith("host 'attacker.example' is not served here")


def test_metrics_do_not_grow_with_made_up_methods(face_model: Path) -> None:
    with TestClient(create_app(Settings(model=str(face_model)))) as c:
        for i in range(5):
            c.request(f"BREW{i}", "/health")
        text = c.get("/metrics").text
    assert "BREW" not in text
    assert parse_metrics(text)['siamface_requests_total{method="other",route="other",status="405"}'] == 5


def test_a_short_api_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from siamface.serve.security import KeyTooWeakError

    with pytest.raises(KeyTooWeakError, match="the API key has 6 characters; use at least 16"):
        Settings(api_key="secret")
    monkeypatch.setenv("SIAMFACE_API_KEY", "secret")
    with pytest.raises(KeyTooWeakError):
        Settings.from_env()


def test_wrong_keys_are_throttled_per_client(face_model: Path, photos: dict) -> None:
    files = {"image": ("a.jpg", jpeg(photos["a"]), "image/jpeg")}
    with TestClient(create_app(Settings(model=str(face_model), api_key=KEY))) as c:
        codes = [c.delete("/people/x", headers={"X-API-Key": f"guess {i}"}).status_code for i in range(12)]
        right = c.post("/enroll", data={"name": "x"}, files=files, headers={"X-API-Key": KEY})
    assert codes == [401] * 10 + [429] * 2
    assert right.status_code == 429 and int(right.headers["retry-after"]) > 0  # until the window passes
    assert right.json()["detail"].startswith("too many wrong API keys from this client; retry in")


def test_an_unexpected_error_is_one_line_of_json(face_model: Path, photos: dict,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import siamface.photo_faces

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(siamface.photo_faces, "faces_for", broken)
    with TestClient(create_app(Settings(model=str(face_model))), raise_server_exceptions=False) as c:
        status, body = post_verify(c, jpeg(photos["a"]), jpeg(photos["b"]))
    assert status == 500 and body == {"detail": "internal error (RuntimeError: something broke)",
                                      "error": "RuntimeError"}


def test_serve_without_the_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    import importlib

    import siamface.serve
    from siamface.cli import main

    def no_fastapi(name: str, *args: object) -> object:
        if name == "fastapi":
            raise ImportError("No module named 'fastapi'")
        return importlib.import_module(name, *args)

    monkeypatch.setattr(siamface.serve, "import_module", no_fastapi)
    assert main(["serve", "--gallery", str(tmp_path / "people.db")]) == 2
    assert capsys.readouterr().err == ("siamface: error: siamface serve needs fastapi: in the siamface checkout, "
                                       "pip install -e '.[serve]' (or .venv/bin/pip after scripts/setup.sh)\n")
    assert not (tmp_path / "people.db").exists()


@contextmanager
def _served(face_model: Path, **config: Any) -> Iterator[int]:
    """The app under a real uvicorn server (siamface.serve.server's configuration) in a thread; yields its port."""
    import uvicorn

    from siamface.serve.server import server_config

    port = free_port()
    srv = uvicorn.Server(server_config(create_app(Settings(model=str(face_model))), "127.0.0.1", port,
                                       log_level="warning", **config))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    assert wait_until(lambda: srv.started)
    try:
        yield port
    finally:
        srv.should_exit = True
        thread.join(10)


def test_a_client_sending_its_headers_a_byte_at_a_time_is_cut_off(face_model: Path) -> None:
    import socket

    with _served(face_model, header_timeout_s=1.0) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            t0, closed = time.monotonic(), False
            for byte in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
                try:
                    s.sendall(bytes([byte]))
                except OSError:
                    closed = True
                    break
                s.settimeout(0.1)
                try:
                    if s.recv(1) == b"":
                        closed = True
                        break
                except TimeoutError:
                    pass
            elapsed = time.monotonic() - t0
        assert closed and elapsed < 5  # closed about 1 s in, not after all 140 bytes (14 s)
        import httpx

        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200  # others still served


def test_connections_beyond_the_cap_are_answered_503_in_json(face_model: Path) -> None:
    import json
    import socket

    with _served(face_model, max_connections=2) as port:
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 503") and b"content-type: application/json" in head
        assert json.loads(body)["detail"].startswith("the server has 2 connections open, its limit")
        for s in idle:
            s.close()
        import httpx

        assert wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200)
