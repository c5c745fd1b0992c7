"""The page's live mode and the door view end to end in headless Chromium (Debian's /usr/bin/chromium driven
by Playwright), with Chromium's fake camera playing a clip of LFW photos at 640x480: two people enrolled
through the API, two strangers and an empty doorway, 2 s each, looping. The shipped face model serves; the
server runs in this process.

The test knows which photo each frame showed: the clip paints a colour band under each photo, and an ASGI
wrapper around the real app keeps every frame the page uploads (its number, its JPEG, the server's answer and
times). Every answer the page displays is then checked against the photo of the frame it answered: the
enrolled person's name, "unknown" for a stranger, nothing for the empty doorway. Screenshots go to
test-artifacts/web/ (or $SIAMFACE_TEST_ARTIFACTS/web/).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from _helpers import one_thread
from _serve_helpers import REPO, chromium_args, lfw_photos, serve_in_thread, wait_js, write_y4m
from PIL import Image

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
# Skipped on a developer machine without chromium; never in CI (CI=true), where .ci/run installs it.
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists() and not os.environ.get("CI"),
                                 reason="needs Debian's chromium: apt-get install chromium (see DEVELOPERS.md)")]
_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
KEY, DOOR_KEY = "live-test-api-key-0123456789", "live-test-door-key-9876543210"
# The clip: (LFW folder or None for an empty doorway, the name the gallery knows them by or None for a
# stranger, the band's colour). The enrolled are enrolled from their first photo and the clip shows their
# second. The shipped model separates them: p(same) >= 0.9999 for each enrolled person's two photos, <= 0.02
# for the strangers against both.
CLIP = [("Gerhard_Schroeder", "Gerhard Schroeder", (230, 30, 30)), ("Hugo_Chavez", None, (30, 200, 30)),
        ("Colin_Powell", "Colin Powell", (30, 30, 230)), (None, None, (230, 30, 230)),
        ("Donald_Rumsfeld", None, (230, 230, 30))]
SECONDS, FPS, WIDTH, HEIGHT = 2, 5, 640, 480
MAX_FPS = 3  # live.js's default
GREEN, RED = (6, 118, 71), (180, 35, 24)  # the overlay's colours for a name and for unknown (live.js)


def clip_frame(photo: Path | None, band: tuple[int, int, int]) -> np.ndarray:
    """A 640x480 camera frame: the LFW photo (if any) at 400x400 on grey, and the band that names the photo."""
    frame = np.full((HEIGHT, WIDTH, 3), 40, np.uint8)
    if photo is not None:
        frame[10:410, 120:520] = np.asarray(Image.open(photo).convert("RGB").resize((400, 400)))
    frame[430:] = band
    return frame


def shown_in(jpeg: bytes) -> int:
    """Which photo of the clip a frame the page sent shows: the nearest band colour."""
    img = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    assert img.shape == (HEIGHT, WIDTH, 3), img.shape  # the page sends the camera's frame at its size
    band = img[440:470, 20:620].reshape(-1, 3).mean(axis=0)
    return int(np.argmin([np.abs(band - np.array(c)).sum() for *_, c in CLIP]))


@dataclass
class Sent:
    """One frame the page uploaded, as the server received and answered it."""

    path: str
    frame: int
    shows: int
    status: int
    answer: dict[str, Any]
    start: float  # when the server received it (time.monotonic())


class LiveRecorder:
    """An ASGI wrapper that keeps every live frame (POST /identify and /door/identify) with its answer;
    `delay_s` holds each one back that long before the app computes it (a slow server)."""

    def __init__(self) -> None:
        self.app: Any = None
        self.sent: list[Sent] = []
        self.delay_s = 0.0

    def wrap(self, app: Any) -> LiveRecorder:
        self.app = app
        return self

    def frames(self, path: str) -> list[Sent]:
        return sorted((s for s in self.sent if s.path == path), key=lambda s: s.start)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in ("/identify", "/door/identify"):
            await self.app(scope, receive, send)
            return
        body, answer, status, start = [], [], [0], time.monotonic()
        await asyncio.sleep(self.delay_s)

        async def receive_body() -> dict:
            message = await receive()
            body.append(message.get("body", b""))
            return message

        async def send_answer(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body":
                answer.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive_body, send_answer)
        data = b"".join(body)
        number = re.search(rb'filename="live-(\d+)\.jpg"', data)
        if number:  # a frame from the live loop (other tests' uploads are not)
            jpeg = data[data.index(b"\xff\xd8\xff"): data.rindex(b"\xff\xd9") + 2]
            self.sent.append(Sent(scope["path"], int(number.group(1)), shown_in(jpeg), status[0],
                                  json.loads(b"".join(answer)), start))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Iterator[tuple[str, LiveRecorder]]:
    """The real app (shipped model, an API key and a door key) with the clip's enrolled people, recorded."""
    import httpx

    from siamface.serve import Settings

    recorder = LiveRecorder()
    settings = Settings(gallery=tmp_path_factory.mktemp("live") / "people.db", api_key=KEY, door_key=DOOR_KEY)
    with serve_in_thread(settings, recorder.wrap) as url:
        for folder, name, _ in CLIP:
            if name:
                photo = lfw_photos(data_root, folder, 1)[0]
                r = httpx.post(f"{url}/enroll", data={"name": name}, files={"image": (photo.name, photo.read_bytes())},
                               headers={"X-API-Key": KEY}, timeout=60)
                assert r.status_code == 200, r.text
        yield url, recorder


@pytest.fixture(scope="module")
def page(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    frames = [clip_frame(folder and lfw_photos(data_root, folder, 2)[1], band) for folder, _, band in CLIP]
    clip = write_y4m(tmp_path_factory.mktemp("camera") / "door.y4m",
                     [f for f in frames for _ in range(SECONDS * FPS)], fps=FPS)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=chromium_args(clip))
        pg = browser.new_context(viewport={"width": 900, "height": 1400}).new_page()
        pg.paths, pg.finished = [], []  # the path of every request the page makes; the requests answered
        pg.on("request", lambda r: pg.paths.append(urlsplit(r.url).path))
        pg.on("requestfinished", lambda r: pg.finished.append(r))
        yield pg
        browser.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    out = Path(os.environ.get("SIAMFACE_TEST_ARTIFACTS", REPO / "test-artifacts")) / "web"
    out.mkdir(parents=True, exist_ok=True)
    return out


# What the admin page shows: the frame answered, the decisions listed, and the overlay's pixels in the
# colours of a name and of unknown.
ADMIN_STATE = """() => {
  const out = document.getElementById("identify-live-result"), c = document.getElementById("identify-live-overlay");
  if (!out.dataset.frame) return null;
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data, near = (i, [r, g, b]) =>
    d[i + 3] === 255 && Math.abs(d[i] - r) + Math.abs(d[i + 1] - g) + Math.abs(d[i + 2] - b) < 30;
  let green = 0, red = 0;
  for (let i = 0; i < d.length; i += 4) { green += near(i, GREEN); red += near(i, RED); }
  return { frame: Number(out.dataset.frame), labels: [...out.querySelectorAll(".match, .unknown")].map(
    (e) => e.textContent), green, red };
}""".replace("GREEN", str(list(GREEN))).replace("RED", str(list(RED)))
DOOR_STATE = """() => {
  const b = document.getElementById("door-banner");
  if (!b.dataset.frame) return null;
  return { frame: Number(b.dataset.frame), labels: [...b.querySelectorAll(".decision")].map((e) => e.textContent),
           banner: b.className };
}"""

# Headless Chromium never hides a page: the test sets the state a hidden tab reports and sends its event.
VISIBILITY = """(state) => {
  Object.defineProperty(document, "visibilityState", { value: state, configurable: true });
  document.dispatchEvent(new Event("visibilitychange"));
}"""


def expected(shows: int) -> list[str]:
    """The decisions a frame of this photo must get: the name, "unknown", or none for the empty doorway."""
    folder, name, _ = CLIP[shows]
    return [name or "unknown"] if folder else []


def decisions(sent: Sent) -> list[str]:
    """The server's decisions for a frame (a photo without a face is answered 422 NoFaceError: none)."""
    if sent.status == 422 and sent.answer["error"] == "NoFaceError":
        return []
    assert sent.status == 200, sent.answer
    return [f["match"] or "unknown" for f in sent.answer["faces"]]


def watch(page: Any, state: str, recorder: LiveRecorder, path: str, seconds: float = 60) -> dict[int, dict]:
    """Poll what the page displays until it has displayed an answer for every photo of the clip."""
    shown: dict[int, dict] = {}
    deadline = time.monotonic() + seconds
    while True:
        now = page.evaluate(state)
        if now:
            shown.setdefault(now["frame"], now)
        shows = {s.frame: s.shows for s in recorder.frames(path)}
        if {shows[f] for f in shown if f in shows} == set(range(len(CLIP))):
            return shown
        assert time.monotonic() < deadline, f"the page displayed {len(shown)} answers, of photos " \
            f"{sorted({shows[f] for f in shown if f in shows})} of {len(CLIP)}, in {seconds} s"
        time.sleep(0.1)


def sent_times(page: Any, path: str, since: int = 0) -> list[tuple[float, float]]:
    """When the browser sent each answered request to `path` (from the page's `since`-th answered request on)
    and when it had the whole answer, in seconds, by the browser's own clock."""
    times = []
    for r in page.finished[since:]:
        if urlsplit(r.url).path == path:
            t = r.timing
            times.append((t["startTime"] / 1000, (t["startTime"] + t["responseEnd"]) / 1000))
    return sorted(times)


def check_pace(times: list[tuple[float, float]], max_fps: float = MAX_FPS) -> None:
    """One frame in flight at most, and at most max_fps frames a second: on average (the page schedules each
    frame 1/max_fps after the previous one at least) and between any two (25% slack for the frames' capture)."""
    assert len(times) >= 4 and all(answered > sent for sent, answered in times), times  # the timing is recorded
    for (a_sent, a_answered), (b_sent, _) in zip(times, times[1:]):
        assert b_sent >= a_answered - 0.005, "a frame was sent before the previous one was answered"
        assert b_sent - a_sent >= 0.75 / max_fps, f"two frames {b_sent - a_sent:.3f} s apart"
    mean = (times[-1][0] - times[0][0]) / (len(times) - 1)
    assert mean >= 0.95 / max_fps, f"{1 / mean:.2f} frames a second"


def check_stopped(page: Any, path: str, box: str) -> None:
    """The camera is released, its box hidden, and no frame is sent any more."""
    wait_js(page, f"window.liveTracks.every((t) => t.readyState === 'ended') && "
                  f"document.querySelector('{box}').hidden", 10)
    n = page.paths.count(path)
    time.sleep(1.5)
    assert page.paths.count(path) == n


def test_live_mode_names_the_enrolled_and_says_unknown_for_strangers(live: tuple[str, LiveRecorder], page: Any,
                                                                     artifacts: Path) -> None:
    url, recorder = live
    page.goto(url)
    page.wait_for_selector("#status:not(:has-text('connecting'))")
    page.fill("#api-key", KEY)
    page.click("#identify-live")
    shown = watch(page, ADMIN_STATE, recorder, "/identify")
    page.screenshot(path=str(artifacts / "live-1-admin.png"), full_page=True)
    video, overlay = (page.evaluate(f"JSON.stringify(document.getElementById('{i}').getBoundingClientRect())")
                      for i in ("identify-live-video", "identify-live-overlay"))
    assert video == overlay  # the boxes are drawn over the video at its size
    page.evaluate("window.liveTracks = document.getElementById('identify-live-video').srcObject.getTracks()")
    page.click("#identify-live")  # Stop live
    check_stopped(page, "/identify", "#identify .live")
    check_pace(sent_times(page, "/identify"))

    sent = recorder.frames("/identify")
    shows = {s.frame: s.shows for s in sent}
    for frame, now in shown.items():
        assert now["labels"] == expected(shows[frame]), (frame, now, CLIP[shows[frame]][0])
        labels = expected(shows[frame])
        assert (now["green"] > 0, now["red"] > 0) == ("unknown" not in labels and labels != [], "unknown" in labels)
    for s in sent:  # the server's decisions behind them, with candidates (the admin view's tools)
        assert decisions(s) == expected(s.shows)
        assert s.status == 422 or s.answer["faces"][0]["candidates"]


def test_live_mode_slows_down_for_a_slow_server(live: tuple[str, LiveRecorder], page: Any) -> None:
    url, recorder = live
    page.goto(url)
    page.fill("#api-key", KEY)
    recorder.delay_s = 1.0
    try:
        first = len(page.finished)
        page.click("#identify-live")
        deadline = time.monotonic() + 30
        while len(sent_times(page, "/identify", first)) < 4:
            assert time.monotonic() < deadline, "fewer than 4 frames answered in 30 s"
            page.wait_for_timeout(100)  # lets Playwright deliver the page's events
        page.click("#identify-live")
    finally:
        recorder.delay_s = 0.0
    times = sent_times(page, "/identify", first)
    check_pace(times)
    for (a_sent, a_answered), (b_sent, _) in zip(times, times[1:]):  # an answer that took t: a pause of t / 4
        assert b_sent - a_sent >= 1.25 * (a_answered - a_sent) - 0.05, (a_sent, a_answered, b_sent)


def test_the_door_view_shows_the_decision_only(live: tuple[str, LiveRecorder], page: Any, artifacts: Path) -> None:
    url, recorder = live
    page.paths.clear()
    page.goto(f"{url}/door#key={DOOR_KEY}&start=1")  # a kiosk's address: the door key, and start the camera
    shown = watch(page, DOOR_STATE, recorder, "/door/identify")
    page.screenshot(path=str(artifacts / "live-2-door.png"), full_page=True)
    assert page.url == f"{url}/door"  # the key left the address bar
    assert page.evaluate("localStorage.getItem('siamface-door-key')") == DOOR_KEY

    check_pace(sent_times(page, "/door/identify"))
    sent = recorder.frames("/door/identify")
    shows = {s.frame: s.shows for s in sent}
    for frame, now in shown.items():
        labels = expected(shows[frame])
        assert now["labels"] == labels, (frame, now, CLIP[shows[frame]][0])
        assert now["banner"] == "banner " + ("none" if not labels else "unknown" if "unknown" in labels else "known")
    for s in sent:  # what reached the door: boxes and decisions, no candidates or scores
        assert decisions(s) == expected(s.shows)
        if s.status == 200:
            assert set(s.answer) == {"faces"} and [set(f) for f in s.answer["faces"]] == [{"box", "match"}], s.answer
    asked = {p for p in page.paths if not p.startswith("/static/")}
    assert asked <= {"/door", "/door/identify", "/favicon.ico"}, asked  # never /identify or /people

    # the page hidden (as a browser reports it): the camera stops; shown again: it resumes
    page.evaluate("window.liveTracks = document.getElementById('door-video').srcObject.getTracks()")
    page.evaluate(VISIBILITY, "hidden")
    check_stopped(page, "/door/identify", ".live")
    assert page.inner_text("#door-banner") == "Camera off"
    last = max(s.frame for s in recorder.frames("/door/identify"))
    page.evaluate(VISIBILITY, "visible")
    wait_js(page, f"Number(document.getElementById('door-banner').dataset.frame) > {last}", 30)


def test_the_door_keeps_to_the_frame_rate_of_its_address(live: tuple[str, LiveRecorder], page: Any) -> None:
    url, _ = live
    page.goto("about:blank")  # from /door, a new fragment alone would not load the page again
    page.goto(f"{url}/door#key={DOOR_KEY}&start=1&fps=1.5")  # slower than the server answers (about 0.2 s)
    first = len(page.finished)
    deadline = time.monotonic() + 30
    while len(sent_times(page, "/door/identify", first)) < 5:
        assert time.monotonic() < deadline, "fewer than 5 frames answered in 30 s"
        page.wait_for_timeout(100)
    page.click("#door-start")  # Stop camera
    check_pace(sent_times(page, "/door/identify", first), max_fps=1.5)


def test_the_door_stops_at_a_refused_key(live: tuple[str, LiveRecorder], page: Any) -> None:
    url, _ = live
    page.goto(f"{url}/door")
    page.fill("#door-key", "not-the-door-key-0123456789")
    page.paths.clear()
    page.click("#door-start")
    page.wait_for_selector("#door-error:has-text('wrong door key or API key')", timeout=30_000)
    wait_js(page, "document.querySelector('.live').hidden", 10)
    time.sleep(1.5)
    assert page.paths.count("/door/identify") == 1  # one refusal, not a stream of them (the key's throttle)
    assert page.inner_text("#door-banner") == "Camera off"
