"""siamface watch: the tracker on synthetic boxes, the vote, sources that fail, and a generated clip end to end
(an enrolled person, then a stranger) through the API and the command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

import siamface
from siamface import watch as watch_module
from siamface.cli import main
from siamface.decision import Decision
from siamface.errors import SiamfaceError
from siamface.gallery_results import Candidate, Identification, IdentifiedFace
from siamface.watch import IoUTracker, decide, iou, likeness

LFW = "lfw/deepfunneled"


def test_tracker_keeps_ids_across_frames_and_lets_tracks_go() -> None:
    tr = IoUTracker(min_iou=0.3, max_missed=1)
    of_box, new, left = tr.update([(0, 0, 100, 100), (300, 0, 100, 100)], 0)
    assert [t.id for t in new] == [1, 2] and left == []
    of_box, new, left = tr.update([(310, 5, 100, 100), (10, 5, 100, 100)], 1)  # both moved, order swapped
    assert [t.id for t in of_box] == [2, 1] and new == [] and left == []
    of_box, new, left = tr.update([(12, 5, 100, 100)], 2)  # track 2 unseen once: still alive
    assert [t.id for t in of_box] == [1] and left == []
    of_box, new, left = tr.update([(700, 700, 50, 50)], 3)  # track 2 unseen twice: gone; a far box is new
    assert [t.id for t in left] == [2] and [t.id for t in new] == [3]
    assert sorted(t.id for t in tr.tracks) == [1, 3]
    of_box, new, left = tr.update([(60, 5, 100, 100), (720, 700, 50, 50)], 4)  # moved half a side: IoU 0.33
    assert [t.id for t in of_box] == [1, 3] and new == []
    of_box, new, left = tr.update([(120, 5, 100, 100)], 5)  # IoU 0.25, but a face continuing its path
    assert [t.id for t in of_box] == [1] and new == []
    of_box, new, left = tr.update([(120, 5, 100, 100), (230, 5, 100, 100)], 6)  # a second face beside it
    assert [t.id for t in of_box] == [1, 4] and [t.id for t in new] == [4]
    moving = IoUTracker(max_missed=1)  # 40 px a frame, seen on frames 0, 1 and then every 5th: 2 sides a sighting
    ids = [moving.update([(40 * f, 0, 100, 100)], f)[0][0].id for f in (0, 1, 6, 11, 16)]  # type: ignore[union-attr]
    assert ids == [1, 1, 1, 1, 1]
    paired = IoUTracker(max_missed=1)  # sightings in close pairs (two workers) with the detector's jitter
    frames = [(0, 0), (1, 45), (8, 315), (9, 365), (16, 640), (17, 690), (24, 955)]  # 40 px a frame, +-5
    ids = [paired.update([(x, 0, 100, 100)], f)[0][0].id for f, x in frames]  # type: ignore[union-attr]
    assert ids == [1] * len(frames)
    late = IoUTracker(max_missed=3)  # unseen for 40 frames, then 2.5 sides away: another face, however long the gap
    assert [late.update([(x, 0, 100, 100)], f)[1] != [] for f, x in ((0, 0), (40, 250))] == [True, True]
    still = IoUTracker(max_missed=1)  # without the first short step there is no motion to follow: a new track
    assert [still.update([(200 * k, 0, 100, 100)], 5 * k)[1] != [] for k in range(2)] == [True, True]
    small = (30, 0, 20, 20)  # near, but 25 times smaller: only its overlap counts
    assert likeness((0, 0, 100, 100), small) == iou((0, 0, 100, 100), small) < 0.3
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    with pytest.raises(ValueError, match="min_iou"):
        IoUTracker(min_iou=0)


def test_the_vote_needs_a_majority_for_a_name() -> None:
    assert decide([("ann", 0.9), ("ann", 0.7), (None, 0.2)]) == ("ann", 0.8)
    assert decide([("ann", 0.9), ("bob", 0.8), (None, 0.1)])[0] is None  # no majority: unknown
    assert decide([(None, 0.2), (None, 0.4)]) == (None, 0.3)


DECISION = Decision(0.5, "EER", "a fake gallery's threshold")


class _FakeGallery:
    path = Path("fake.db")

    def __init__(self, people: int = 1) -> None:
        self._people = [{"name": "ann"}] * people

    def people(self) -> list[dict[str, Any]]:
        return self._people

    def identify(self, image: np.ndarray, **kw: Any) -> Identification:
        return Identification((), DECISION, "fake", "max", len(self._people), 0.0)


class _StoppingCapture:
    """A live stream that gives `n` frames and then fails for good."""

    opened = 0

    def __init__(self, n: int) -> None:
        self.n = n
        _StoppingCapture.opened += 1

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return True

    def get(self, prop: int) -> float:
        return 25.0

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.n <= 0:
            return False, None
        self.n -= 1
        return True, np.zeros((48, 64, 3), np.uint8)

    def release(self) -> None:
        pass


def test_sources_that_cannot_be_used_fail_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SiamfaceError, match="nope.mp4: no such video file"):
        list(siamface.watch(str(tmp_path / "nope.mp4"), _FakeGallery()))
    with pytest.raises(SiamfaceError, match="fake.db: the gallery is empty"):
        list(siamface.watch(str(tmp_path / "nope.mp4"), _FakeGallery(people=0)))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(SiamfaceError, match="bad.mp4: cannot open the video source"):
        list(siamface.watch(str(bad), _FakeGallery()))
    first = [True]

    def stopping(source: Any) -> _StoppingCapture:
        n, first[0] = (3 if first[0] else 0), False
        return _StoppingCapture(n)

    monkeypatch.setattr(watch_module, "open_capture", stopping)
    _StoppingCapture.opened = 0
    events: list[dict[str, Any]] = []
    with pytest.raises(SiamfaceError, match="rtsp://cam/1: the stream stopped \\(2 reconnections failed\\)"):
        for e in siamface.watch("rtsp://cam/1", _FakeGallery(), retries=2, backoff_s=0.01):
            events.append(e)
    assert _StoppingCapture.opened == 3  # the first open and two reconnections
    assert events == []  # frames without faces give no events


class _ScriptedGallery(_FakeGallery):
    """Answers each frame with one face at a fixed box, matched to the next name of a script."""

    def __init__(self, script: list[str | None]) -> None:
        super().__init__()
        self.script = list(script)

    def identify(self, image: np.ndarray, **kw: Any) -> Identification:
        name = self.script.pop(0)
        face = IdentifiedFace({"box": {"x": 10, "y": 10, "w": 40, "h": 40}}, name,
                              (Candidate(name or "ann", 0.9 if name else 0.2),))
        return Identification((face,), DECISION, "fake", "max", 1, 0.0)


def test_a_face_answered_otherwise_after_its_name_is_a_new_track(tmp_path: Path) -> None:
    """Someone stepping into a named person's place: after `votes` disagreeing frames the track ends and a
    new one is named on its own; one odd frame changes nothing."""
    clip = tmp_path / "still.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    for _ in range(9):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    script = ["ann", "ann", "ann", None, "ann", None, None, None, None]
    events = list(siamface.watch(str(clip), _ScriptedGallery(script), votes=2, workers=1))
    got = [(e["event"], e.get("track"), e.get("frame"), e.get("name")) for e in events[:-1]]
    assert got == [("appear", 1, 0, None), ("identified", 1, 1, "ann"), ("leave", 1, 6, "ann"),
                   ("appear", 2, 6, None), ("identified", 2, 7, None), ("leave", 2, 8, None)], got


def _clip(data_root: Path, path: Path) -> list[str]:
    """6 frames of Aaron Peirsol moving right, 2 empty frames, 6 frames of a stranger: 640x480 at 10 fps."""
    bg = np.full((480, 640, 3), 90, np.uint8)
    plan = [("Aaron_Peirsol/Aaron_Peirsol_0002.jpg", 6), (None, 2), ("Angelina_Jolie/Angelina_Jolie_0001.jpg", 6)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (640, 480))
    who = []
    for photo, n in plan:
        img = None if photo is None else cv2.imread(str(data_root / LFW / photo))
        for i in range(n):
            frame = bg.copy()
            if img is not None:
                x = 100 + 8 * i
                frame[100:350, x:x + 250] = img
            writer.write(frame)
            who.append(photo)
    writer.release()
    return who


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("watch")
    db = tmp / "people.db"
    with siamface.Gallery(db) as g:
        g.enroll("Aaron_Peirsol", [data_root / LFW / "Aaron_Peirsol/Aaron_Peirsol_0001.jpg"])
        g.enroll("Abdullah_Gul", [data_root / LFW / "Abdullah_Gul/Abdullah_Gul_0001.jpg"])
    clip = tmp / "door.mp4"
    _clip(data_root, clip)
    return db, clip


def test_watch_names_the_enrolled_person_and_calls_the_stranger_unknown(enrolled: tuple[Path, Path]) -> None:
    db, clip = enrolled
    with siamface.Gallery(db) as g:
        events = list(siamface.watch(str(clip), g, votes=3, max_missed=1, workers=3))
        one_at_a_time = list(siamface.watch(str(clip), g, votes=3, max_missed=1, workers=1))
    assert events[:-1] == one_at_a_time[:-1]  # frames identified in parallel, events in frame order
    kinds = [(e["event"], e.get("track")) for e in events]
    assert kinds == [("appear", 1), ("identified", 1), ("leave", 1), ("appear", 2), ("identified", 2),
                     ("leave", 2), ("end", None)], kinds
    named = {e["track"]: e for e in events if e["event"] == "identified"}
    assert named[1]["name"] == "Aaron_Peirsol" and named[1]["frame"] == 2 and named[1]["time"] == pytest.approx(0.2)
    assert named[2]["name"] is None and named[2]["probability"] < named[1]["probability"]
    assert events[0]["frame"] == 0 and events[3]["frame"] == 8
    assert events[-1]["frames_read"] == 14 and events[-1]["frames_processed"] == 14 and events[-1]["fps"] > 0


def test_the_command_prints_and_writes_the_same_json_lines(enrolled: tuple[Path, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    db, clip = enrolled
    log, out = tmp_path / "events.jsonl", tmp_path / "annotated.mp4"
    assert main(["watch", "--source", str(clip), "--gallery", str(db), "--events", str(log), "--out", str(out),
                 "--max-missed", "1"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == [json.loads(line) for line in log.read_text().splitlines()]
    assert printed[-1]["event"] == "end" and printed[-1]["frames_processed"] == 14
    assert [e["name"] for e in printed if e["event"] == "identified"] == ["Aaron_Peirsol", None]
    assert cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FRAME_COUNT) == 14
    assert main(["watch", "--source", str(tmp_path / "none.mp4"), "--gallery", str(db)]) == 2
    assert "none.mp4: no such video file" in capsys.readouterr().err
