"""Watch a video (a camera, a file, an RTSP stream): faces followed across frames and named through a gallery.

`watch(source, gallery)` yields events as dicts: "appear" (a new track), "identified" (once per track, after
`votes` frames: the name most of its frames agree on, or None for unknown, with the mean probability and the
gallery's operating point), "leave" (the track was not seen for `max_missed` processed frames, or the video
ended), and a closing "end" with frames_read, frames_processed and fps (processed frames per wall second).
Each frame goes through `Gallery.identify` (detection, embedding, the gallery's decision); a greedy tracker
(IoU matching as in Bochinski et al. 2017, "High-Speed Tracking-by-Detection Without Using Image
Information", extended to nearby boxes of similar size and to each track's motion) links its faces to
tracks. A name is decided once per track from several frames, so it never flickers; a decided track whose
face is answered otherwise on `votes` processed frames in a row is ended and a new track starts there, so a
stranger stepping into a known person's place never inherits the name.

A live source (a camera index, rtsp://, http://) drops frames rather than fall behind: a reader thread keeps
only the newest frame, and a stream that stops is reopened with bounded backoff before it fails. A file is
processed frame by frame unless `realtime=True`, which skips the frames the processing could not keep up with.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import types
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import NoFaceError, SiamfaceError

Box = tuple[int, int, int, int]  # x, y, w, h
LIVE_PREFIXES = ("rtsp://", "rtsps://", "http://", "https://")
SIGHTINGS = 6  # a track's velocity is measured over its last this many sightings
FRAMES_PER_SIDE = 8  # how fast a face may move unpredicted: one box side per this many source frames
MAX_SIDES = 2.0  # and never further than this many sides (a face across the frame is another one)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter)


@dataclass
class Track:
    """One face followed across frames, with the gallery's answer on each frame it was seen."""

    id: int
    box: Box
    first_frame: int
    missed: int = 0
    votes: list[tuple[str | None, float]] = field(default_factory=list)
    decided: bool = False
    name: str | None = None
    last_frame: int = -1
    velocity: tuple[float, float] = (0.0, 0.0)  # pixels per source frame, over its recent sightings
    seen_at: list[tuple[int, float, float]] = field(default_factory=list)  # (frame, centre x, centre y)
    disagree: int = 0  # processed frames in a row whose answer differs from the decided name

    def predicted(self, frame: int) -> Box:
        """Where the box should be at `frame` if the face keeps moving as it did (constant velocity): a
        source processed at a few frames a second sees a walking face jump further than a box side."""
        gap = max(0, frame - self.last_frame)
        x, y, w, h = self.box
        return (round(x + self.velocity[0] * gap), round(y + self.velocity[1] * gap), w, h)

    def see(self, box: Box, frame: int) -> None:
        """A sighting; the velocity spans the last SIGHTINGS of them (two frames processed close together
        by parallel workers, or a box jittering by the detector's 8 px stride, would mislead a two-point one)."""
        self.seen_at = [*self.seen_at, (frame, box[0] + box[2] / 2, box[1] + box[3] / 2)][-SIGHTINGS:]
        first, last = self.seen_at[0], self.seen_at[-1]
        if last[0] > first[0]:
            span = last[0] - first[0]
            self.velocity = ((last[1] - first[1]) / span, (last[2] - first[2]) / span)
        self.box, self.last_frame, self.missed = box, frame, 0


def likeness(a: Box, b: Box, gap: int = 1) -> float:
    """How well box b continues box a `gap` source frames later: their IoU, or, for boxes of similar size
    (areas within 2.5x), how close their centres are (1 at the same centre, 0 at a box side, or a side per
    FRAMES_PER_SIDE frames of the gap up to MAX_SIDES, apart): at a few processed frames a second a walking
    face moves further than IoU alone follows."""
    ratio = (a[2] * a[3]) / max(1, b[2] * b[3])
    near = 0.0
    if 0.4 <= ratio <= 2.5:
        reach = max(a[2], a[3], b[2], b[3]) * min(MAX_SIDES, max(1.0, gap / FRAMES_PER_SIDE))
        dist = float(np.hypot(a[0] + a[2] / 2 - b[0] - b[2] / 2, a[1] + a[3] / 2 - b[1] - b[3] / 2))
        near = max(0.0, 1.0 - dist / reach)
    return max(iou(a, b), near)


class IoUTracker:
    """Greedy matching of each frame's boxes to the live tracks, best `likeness` (overlap or nearness, to the
    track's last box or where its motion puts it now) first."""

    def __init__(self, min_iou: float = 0.3, max_missed: int = 5) -> None:
        if not 0.0 < min_iou < 1.0:
            raise ValueError(f"min_iou must be in (0, 1), got {min_iou!r}")
        if isinstance(max_missed, bool) or not isinstance(max_missed, int) or max_missed < 0:
            raise ValueError(f"max_missed must be an integer >= 0, got {max_missed!r}")
        self.min_iou, self.max_missed = min_iou, max_missed
        self.tracks: list[Track] = []
        self._next = 1

    def replace(self, track: Track, frame: int) -> Track:
        """End `track` and start a new one at its box (the face in it turned out to be someone else)."""
        new = Track(self._next, track.box, frame)
        new.see(track.box, frame)
        self._next += 1
        self.tracks = [new if t is track else t for t in self.tracks]
        return new

    def update(self, boxes: list[Box], frame: int) -> tuple[list[Track | None], list[Track], list[Track]]:
        """(the track of each box, in order; the new tracks; the tracks that left)."""
        pairs = sorted(((max(likeness(t.box, b, frame - t.last_frame), likeness(t.predicted(frame), b)), ti, bi)
                        for ti, t in enumerate(self.tracks) for bi, b in enumerate(boxes)), reverse=True)
        of_box: list[Track | None] = [None] * len(boxes)
        used: set[int] = set()
        for overlap, ti, bi in pairs:
            if overlap < self.min_iou:
                break
            if ti in used or of_box[bi] is not None:
                continue
            used.add(ti)
            of_box[bi] = self.tracks[ti]
        new = []
        for bi, box in enumerate(boxes):
            if of_box[bi] is None:
                track = Track(self._next, box, frame)
                track.see(box, frame)
                self._next += 1
                self.tracks.append(track)
                new.append(track)
                of_box[bi] = track
            else:
                of_box[bi].see(box, frame)  # type: ignore[union-attr]
        seen = {id(t) for t in of_box}
        left = []
        for t in self.tracks:
            if id(t) not in seen:
                t.missed += 1
                if t.missed > self.max_missed:
                    left.append(t)
        self.tracks = [t for t in self.tracks if t not in left]
        return of_box, new, left


def decide(votes: list[tuple[str | None, float]]) -> tuple[str | None, float]:
    """The name more than half of the frames agree on (else None: unknown) and its mean probability (for
    unknown: the mean top probability, how close the nearest person came)."""
    counts = Counter(name for name, _ in votes)
    name, n = counts.most_common(1)[0]
    if name is None or 2 * n <= len(votes):
        return None, round(float(np.mean([p for _, p in votes])), 6)
    return name, round(float(np.mean([p for v, p in votes if v == name])), 6)


def open_capture(source: str | int) -> Any:
    """cv2.VideoCapture of a camera index, a file or a URL (tests replace this)."""
    import cv2

    return cv2.VideoCapture(source)


class Frames:
    """Frames of a source as (index, seconds into the source, RGB frame); live sources keep only the newest."""

    def __init__(self, source: str | int, realtime: bool = False, retries: int = 3, backoff_s: float = 0.5) -> None:
        self.source, self.retries, self.backoff_s = source, retries, backoff_s
        self.live = isinstance(source, int) or str(source).startswith(LIVE_PREFIXES)
        if not self.live and not Path(str(source)).is_file():
            raise SiamfaceError(f"{source}: no such video file")
        self.cap = self._open()
        fps = float(self.cap.get(5) or 0.0)  # cv2.CAP_PROP_FPS
        self.fps = fps if 0 < fps < 1000 else 30.0
        self.realtime = realtime or self.live
        self.read_count = 0

    def _open(self) -> Any:
        cap = open_capture(self.source)
        if not cap.isOpened():
            raise SiamfaceError(f"{self.source}: cannot open the video source")
        return cap

    def _read(self) -> np.ndarray | None:
        """The next frame; a live source that fails is reopened up to `retries` times (backoff doubling)."""
        ok, frame = self.cap.read()
        delay = self.backoff_s
        for _ in range(self.retries if self.live else 0):
            if ok:
                break
            time.sleep(delay)
            delay *= 2
            self.cap.release()
            try:
                self.cap = self._open()
            except SiamfaceError:
                continue
            ok, frame = self.cap.read()
        if not ok:
            if self.live:
                raise SiamfaceError(f"{self.source}: the stream stopped ({self.retries} reconnections failed)")
            return None
        self.read_count += 1
        return frame[:, :, ::-1].copy() if frame.ndim == 3 else frame  # BGR -> RGB

    def __iter__(self) -> Iterator[tuple[int, float, np.ndarray]]:
        return self._live() if self.live else self._file()

    def _file(self) -> Iterator[tuple[int, float, np.ndarray]]:
        start = time.perf_counter()
        while (frame := self._read()) is not None:
            index = self.read_count - 1
            if self.realtime and index / self.fps < time.perf_counter() - start - 1.0 / self.fps:
                continue  # behind real time: drop this frame
            yield index, index / self.fps, frame

    def _live(self) -> Iterator[tuple[int, float, np.ndarray]]:
        latest: list[Any] = [None]
        error: list[BaseException] = []
        done = threading.Event()
        have = threading.Condition()
        start = time.perf_counter()

        def reader() -> None:
            try:
                while not done.is_set():
                    frame = self._read()
                    with have:
                        latest[0] = (self.read_count - 1, time.perf_counter() - start, frame)
                        have.notify()
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                error.append(e)
                with have:
                    have.notify()

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        try:
            while True:
                with have:
                    while latest[0] is None and not error:
                        have.wait()
                    item, latest[0] = latest[0], None
                if item is None:
                    raise error[0]
                yield item
        finally:
            done.set()

    def close(self) -> None:
        self.cap.release()


def _face_box(face: dict[str, Any], frame: np.ndarray) -> Box:
    b = face["face"].get("box")
    if b is None:  # a model without face detection: the whole frame is the face
        return (0, 0, frame.shape[1], frame.shape[0])
    return (int(b["x"]), int(b["y"]), int(b["w"]), int(b["h"]))


def _identified(t: Track, stamp: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    t.decided = True
    t.name, prob = decide(t.votes)
    return {"event": "identified", "track": t.id, **stamp, "name": t.name, "probability": prob,
            "frames": len(t.votes), **point}


def _identify_each(frames: Frames, gallery: Any, kwargs: dict[str, Any],
                   workers: int) -> Iterator[tuple[int, float, np.ndarray, dict[str, Any]]]:
    """(index, seconds, frame, gallery.identify's answer) in frame order, up to `workers` frames in flight at
    once (each call on the thread policy's one torch thread: parallelism across frames, not within one)."""

    def identify(frame: np.ndarray) -> dict[str, Any]:
        try:
            return gallery.identify(frame, **kwargs).to_dict()
        except NoFaceError:
            return {"faces": []}

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="siamface-watch") as pool:
        pending: deque[tuple[int, float, np.ndarray, Future[dict[str, Any]]]] = deque()
        try:
            for index, seconds, frame in frames:
                pending.append((index, seconds, frame, pool.submit(identify, frame)))
                if len(pending) >= workers:
                    i, s, f, fut = pending.popleft()
                    yield i, s, f, fut.result()
            while pending:
                i, s, f, fut = pending.popleft()
                yield i, s, f, fut.result()
        finally:
            for *_, fut in pending:
                fut.cancel()


def watch(source: str | int, gallery: Any, *, votes: int = 3, max_missed: int = 5, min_iou: float = 0.3,
          fpir: float | None = None, realtime: bool = False, retries: int = 3, backoff_s: float = 0.5,
          workers: int | None = None, on_frame: Any = None) -> Iterator[dict[str, Any]]:
    """Events of the faces in a video named through `gallery` (a siamface Gallery); see the module doc.

    fpir: the gallery's operating point for identify (None: its default); workers: frames identified at once
    (None: one per core, at most 4); on_frame(frame_rgb, tracks) is called after each processed frame
    (`siamface watch --out` draws with it)."""
    if isinstance(votes, bool) or not isinstance(votes, int) or votes < 1:
        raise ValueError(f"votes must be an integer >= 1, got {votes!r}")
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if not gallery.people():
        raise SiamfaceError(f"{gallery.path}: the gallery is empty (enroll someone first)")
    frames = Frames(source, realtime, retries, backoff_s)
    tracker = IoUTracker(min_iou, max_missed)
    kwargs: dict[str, Any] = {"k": 1} if fpir is None else {"k": 1, "fpir": fpir}
    processed, t0, stamp = 0, time.perf_counter(), {"frame": 0, "time": 0.0}
    point: dict[str, Any] = {"operating_point": None, "threshold": None}
    try:
        for index, seconds, frame, result in _identify_each(frames, gallery, kwargs, workers):
            processed += 1
            stamp = {"frame": index, "time": round(seconds, 3)}
            if "operating_point" in result:  # the gallery's decision (with its FPIR where it reports one)
                point = {"operating_point": result["operating_point"], "threshold": result.get("threshold"),
                         **({"fpir": result["fpir"]} if "fpir" in result else {})}
            faces = result["faces"]
            of_box, new, left = tracker.update([_face_box(f, frame) for f in faces], index)
            for t in new:
                yield {"event": "appear", "track": t.id, **stamp, "box": list(t.box)}
            for bi, face in enumerate(faces):
                t = of_box[bi]
                if t is None:
                    continue
                if t.decided:  # a decided track whose face keeps disagreeing is someone else: a new track
                    t.disagree = t.disagree + 1 if face.get("match") != t.name else 0
                    if t.disagree < votes:
                        continue
                    yield {"event": "leave", "track": t.id, **stamp, "name": t.name}
                    t = tracker.replace(t, index)
                    yield {"event": "appear", "track": t.id, **stamp, "box": list(t.box)}
                cands = face.get("candidates") or [{"probability": 0.0}]
                t.votes.append((face.get("match"), float(cands[0]["probability"])))
                if len(t.votes) >= votes:
                    yield _identified(t, stamp, point)
            for t in left:
                if not t.decided:  # seen on fewer frames than `votes`: decide on what there is
                    yield _identified(t, stamp, point)
                yield {"event": "leave", "track": t.id, **stamp, "name": t.name}
            if on_frame is not None:
                on_frame(frame, list(tracker.tracks))
    finally:
        frames.close()
    for t in tracker.tracks:  # the video ended: every track leaves
        if not t.decided:
            yield _identified(t, stamp, point)
        yield {"event": "leave", "track": t.id, **stamp, "name": t.name}
    wall = time.perf_counter() - t0
    yield {"event": "end", "frames_read": frames.read_count, "frames_processed": processed,
           "fps": round(processed / wall, 2) if wall > 0 else 0.0}


class _CallableModule(types.ModuleType):
    """`siamface.watch(source, gallery)` works whether `siamface.watch` names this module or the function."""

    def __call__(self, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        return watch(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
