"""Watch a video (a camera, a file, an RTSP stream): faces followed across frames and named through a gallery.

`watch(source, gallery)` yields events as dicts: "appear" (a new track), "identified" (once per track, after
`votes` answers: the name most of them agree on, or None for unknown, with the mean probability and the
gallery's operating point), "leave" (the face left the frame, was not seen for `max_missed` frames, or the
video ended), and a closing "end" with frames_read, frames_processed and fps (processed frames per wall
second; a processed frame is one on which every track has its box and, once decided, its name: what
`on_frame` receives and `--out` draws), frames_detected, frames_named and time_to_name (seconds from a
track's first detected frame to its name, median and max).

By default (a model that detects faces) faces are tracked (`siamface.watch_flow`): detected every
`detect_every` seconds on a frame reduced as far as `min_face` allows, followed between detections by
optical flow, and embedded only until their name is decided, then re-checked every `recheck` seconds.
`every_frame=True` is the previous way: every frame a whole `Gallery.identify`, its boxes linked by a greedy
IoU tracker (`siamface.watch_tracker`). Either way a name is decided once per track from several answers, so
it never flickers; a decided track whose face is answered otherwise `votes` times in a row is ended and a
new track starts there, so a stranger stepping into a known person's place never inherits the name.

A live source (a camera index, rtsp://, http://) drops frames rather than fall behind: a reader thread keeps
only the newest frame, and a stream that stops is reopened with bounded backoff before it fails. A file is
processed frame by frame unless `realtime=True`, which keeps to the video's clock as a camera would (never
ahead of it, and skipping the frames the processing could not keep up with).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import types
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .errors import NoFaceError, SiamfaceError
from .watch_tracker import Box, IoUTracker, Track, decide, iou, likeness  # noqa: F401 (this module's API too)

LIVE_PREFIXES = ("rtsp://", "rtsps://", "http://", "https://")


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
        if frame.ndim != 3:
            return frame
        from .faces.detect import opencv

        return opencv().cvtColor(frame, opencv().COLOR_BGR2RGB)  # many times faster than a reversed copy

    def __iter__(self) -> Iterator[tuple[int, float, np.ndarray]]:
        return self._live() if self.live else self._file()

    def _file(self) -> Iterator[tuple[int, float, np.ndarray]]:
        start = time.perf_counter()
        while (frame := self._read()) is not None:
            index = self.read_count - 1
            if self.realtime:  # as a camera would: never ahead of the clock, and frames dropped behind it
                late = time.perf_counter() - start - index / self.fps
                if late > 1.0 / self.fps:
                    continue
                if late < 0:
                    time.sleep(-late)
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


def _every_frame(frames: Frames, gallery: Any, *, votes: int, max_missed: int, min_iou: float,
                 fpir: float | None, workers: int, on_frame: Any, counts: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every frame a whole `Gallery.identify` (detection at full resolution, every face embedded), the boxes
    linked to tracks by `IoUTracker`: what watch did before it tracked, and what a model that takes the
    whole frame as the face needs."""
    tracker = IoUTracker(min_iou, max_missed)
    kwargs: dict[str, Any] = {"k": 1} if fpir is None else {"k": 1, "fpir": fpir}
    stamp = {"frame": 0, "time": 0.0}
    point: dict[str, Any] = {"operating_point": None, "threshold": None}
    first: dict[int, float] = {}
    to_name: list[float] = counts.setdefault("to_name", [])

    def named(t: Track) -> dict[str, Any]:
        to_name.append(stamp["time"] - first.get(t.id, stamp["time"]))
        return _identified(t, stamp, point)

    for index, seconds, frame, result in _identify_each(frames, gallery, kwargs, workers):
        counts["processed"] += 1
        stamp = {"frame": index, "time": round(seconds, 3)}
        if "operating_point" in result:  # the gallery's decision (with its FPIR where it reports one)
            point = {"operating_point": result["operating_point"], "threshold": result.get("threshold"),
                     **({"fpir": result["fpir"]} if "fpir" in result else {})}
        faces = result["faces"]
        of_box, new, left = tracker.update([_face_box(f, frame) for f in faces], index)
        for t in new:
            first[t.id] = stamp["time"]
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
                first[t.id] = stamp["time"]
                yield {"event": "appear", "track": t.id, **stamp, "box": list(t.box)}
            cands = face.get("candidates") or [{"probability": 0.0}]
            t.votes.append((face.get("match"), float(cands[0]["probability"])))
            if len(t.votes) >= votes:
                yield named(t)
        for t in left:
            if not t.decided:  # seen on fewer frames than `votes`: decide on what there is
                yield named(t)
            yield {"event": "leave", "track": t.id, **stamp, "name": t.name}
        if on_frame is not None:
            on_frame(frame, list(tracker.tracks))
    for t in tracker.tracks:  # the video ended: every track leaves
        if not t.decided:
            yield named(t)
        yield {"event": "leave", "track": t.id, **stamp, "name": t.name}
    counts["frames_detected"] = counts["frames_named"] = counts["processed"]


def _counted(frames: Frames, counts: dict[str, Any]) -> Iterator[tuple[int, float, np.ndarray]]:
    for item in frames:
        counts["processed"] += 1
        yield item


def _check_int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return value


def _frames_of(seconds: float, fps: float) -> int:
    """Source frames in `seconds` (at least 1)."""
    return max(1, int(seconds * fps + 0.5))


def watch(source: str | int, gallery: Any, *, votes: int = 3, max_missed: int = 5, min_iou: float = 0.3,
          fpir: float | None = None, realtime: bool = False, retries: int = 3, backoff_s: float = 0.5,
          workers: int | None = None, on_frame: Any = None, every_frame: bool | None = None,
          min_face: int = 80, detect_every: float = 0.17, recheck: float = 0.5) -> Iterator[dict[str, Any]]:
    """Events of the faces in a video named through `gallery` (a siamface Gallery); see the module doc.

    fpir: the gallery's operating point (None: its default); on_frame(frame_rgb, tracks) is called after each
    processed frame (`siamface watch --out` draws with it). Tracking (the default for a model that detects
    faces; siamface.watch_flow): min_face, the smallest face in pixels to find (sets how far frames are
    reduced for detection); detect_every, seconds of source between detections; recheck, seconds between
    re-checks of a named track; workers: 1 runs detection and naming on one thread, 2 or more on two.
    every_frame=True: each frame is a whole `Gallery.identify` instead, `workers` frames at once (None: one
    per core, at most 4); max_missed counts processed frames there, and frames in tracking."""
    _check_int("votes", votes, 1)
    IoUTracker(min_iou, max_missed)  # checks both
    workers = _check_int("workers", min(4, os.cpu_count() or 1) if workers is None else workers, 1)
    for name, value in (("detect_every", detect_every), ("recheck", recheck)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    if not gallery.people():
        raise SiamfaceError(f"{gallery.path}: the gallery is empty (enroll someone first)")
    from .watch_faces import FaceNamer

    tracked = not every_frame and FaceNamer.tracks(gallery)
    if every_frame is False and not tracked:
        raise SiamfaceError(f"{gallery.path}: its model takes the whole frame as the face (no face detector), so "
                            "faces cannot be tracked; watch every frame instead")
    namer = FaceNamer(gallery, fpir, min_face) if tracked else None
    frames = Frames(source, realtime, retries, backoff_s)
    counts: dict[str, Any] = {"processed": 0}
    t0 = time.perf_counter()
    try:
        if namer is not None:
            from .watch_flow import FlowWatch

            flow = FlowWatch(namer, votes=votes, max_missed=max_missed, min_iou=min_iou,
                             every=_frames_of(detect_every, frames.fps), recheck=_frames_of(recheck, frames.fps),
                             realtime=frames.realtime, workers=workers)
            yield from flow.run(_counted(frames, counts), on_frame)
            counts.update(flow.stats())
        else:
            yield from _every_frame(frames, gallery, votes=votes, max_missed=max_missed, min_iou=min_iou, fpir=fpir,
                                    workers=workers, on_frame=on_frame, counts=counts)
            tn = counts.pop("to_name")
            counts.update(tracks_named=len(tn), time_to_name={
                "median": round(float(np.median(tn)), 3) if tn else None, "max": round(max(tn), 3) if tn else None})
    finally:
        frames.close()
    wall = time.perf_counter() - t0
    processed = counts.pop("processed")
    yield {"event": "end", "frames_read": frames.read_count, "frames_processed": processed,
           "fps": round(processed / wall, 2) if wall > 0 else 0.0, "mode": "tracking" if namer else "every frame",
           **counts}


class _CallableModule(types.ModuleType):
    """`siamface.watch(source, gallery)` works whether `siamface.watch` names this module or the function."""

    def __call__(self, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        return watch(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
