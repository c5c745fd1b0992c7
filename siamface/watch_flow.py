"""Watching by tracking: faces detected on a schedule, followed by optical flow between detections, and
embedded only until their track is named (then re-checked at a low rate).

Work per processed frame: the frame in grey, and each track's box moved by optical flow (`follow`, about a
millisecond a face). Every `every` frames a detection (the gallery's detector, on the frame reduced as far
as the smallest face asked for allows) runs on one worker thread, only where the frame changed since the
last detection (`motion_boxes`) and around the tracks, so a still, empty scene costs none; its boxes correct
the tracks they match and start new ones, and a track that a detection looked at and missed leaves once
unseen for more than `max_missed` frames. A track is sent to be named (landmarks, alignment, embedding,
the gallery's search and decision: `FaceNamer.name`) on a second worker on each frame until `votes`
answers name it, then every `recheck` frames, and on every frame while its answers disagree with its name
(`votes` disagreeing answers in a row end it and a new track starts there, named by those answers, so a
stranger stepping into a named person's place never inherits the name).

On a file (not `realtime`) the schedule is fixed by frame numbers and every result is applied on the frame
it was computed for (each detection starts a detection interval ahead, on a frame read in advance; the
naming is waited for), so the events do not depend on the machine's speed. Live (`realtime`), nothing
waits: a detection starts on the newest frame when the detector is free, and results are applied on the
frame being processed when they arrive (a detection's boxes are matched to where the tracks were on its
frame, and a new face is followed from there to the present through the frames kept since).
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .watch_faces import FaceNamer, Named, Region, motion_boxes
from .watch_tracker import HISTORY, Box, FBox, Track, decide, follow, follow_through, match, rounded

FrameItem = tuple[int, float, np.ndarray]


@dataclass
class _Job:
    """Work handed to a worker about one frame (a detection, or the naming of some tracks)."""

    frame: int
    future: Future[Any]
    tracks: list[Track] = field(default_factory=list)  # a naming's track of each face
    rgb: np.ndarray | None = None  # a detection's frame
    regions: list[Region] | None = None  # the parts of the frame a detection looked at (None: all)


def _shifted(box: Box, then: FBox, now: FBox) -> FBox:
    """A box detected on an earlier frame, moved and scaled as its track's box moved since then."""
    s = now[2] / then[2] if then[2] > 0 else 1.0
    cx = box[0] + box[2] / 2 + (now[0] + now[2] / 2) - (then[0] + then[2] / 2)
    cy = box[1] + box[3] / 2 + (now[1] + now[3] / 2) - (then[1] + then[3] / 2)
    return (cx - box[2] * s / 2, cy - box[3] * s / 2, box[2] * s, box[3] * s)


def _within(box: FBox, regions: list[Region] | None) -> bool:
    """Whether a box's centre is in one of a detection's regions (None: the whole frame)."""
    if regions is None:
        return True
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return any(r[0] <= cx < r[2] and r[1] <= cy < r[3] for r in regions)


def _inside(box: FBox, shape: tuple[int, ...]) -> bool:
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return 0 <= cx < shape[1] and 0 <= cy < shape[0]


class FlowWatch:
    """One watch by tracking (see the module doc); `run(frames)` yields the events of `siamface.watch`."""

    def __init__(self, namer: FaceNamer, *, votes: int, max_missed: int, min_iou: float, every: int,
                 recheck: int, realtime: bool, workers: int) -> None:
        self.namer, self.votes, self.max_missed, self.min_iou = namer, votes, max_missed, min_iou
        self.every, self.recheck, self.realtime, self.workers = every, recheck, realtime, workers
        self.tracks: list[Track] = []
        self.greys: dict[int, np.ndarray] = {}
        self.seconds: dict[int, float] = {}
        self.point: dict[str, Any] = {"operating_point": None, "threshold": None}
        self.detected = self.named = 0
        self.to_name: list[float] = []
        self._next = 1
        self._seeds: dict[int, tuple[np.ndarray, Box]] = {}  # a late-started track's face on its detected frame

    # ---- the frame loop ------------------------------------------------------------------------------

    def run(self, frames: Iterable[FrameItem], on_frame: Any = None) -> Iterator[dict[str, Any]]:
        detector = ThreadPoolExecutor(1, thread_name_prefix="siamface-detect")
        namer = detector if self.workers < 2 else ThreadPoolExecutor(1, thread_name_prefix="siamface-name")
        self._detector, self._namer = detector, namer
        self._ahead: dict[int, _Job] = {}
        self._read: dict[int, np.ndarray] = {}  # frames read ahead (a file)
        self._ref: np.ndarray | None = None  # the grey frame of the last detection: what changed since
        detecting: _Job | None = None
        naming: _Job | None = None
        last_detect, stamp, prev = -(10**9), {"frame": 0, "time": 0.0}, None
        try:
            for index, seconds, rgb in (frames if self.realtime else self._read_ahead(frames)):
                stamp = {"frame": index, "time": round(seconds, 3)}
                grey = self._grey(index, seconds, rgb)
                self._flow(prev, index)
                prev = index
                if self.realtime:
                    if detecting is not None and detecting.future.done():
                        yield from self._detected(detecting, index, stamp)
                        detecting = None
                    if detecting is None and index - last_detect >= self.every:
                        detecting, last_detect = self._detect(index, rgb, grey, index), index
                    if naming is not None and naming.future.done():
                        yield from self._answered(naming, index, stamp)
                        naming = None
                    if naming is None:
                        naming = self._ask(index, rgb)
                else:
                    job = self._ahead.pop(index, None)
                    if job is not None:
                        yield from self._detected(job, index, stamp)
                    if index % self.every == 0 and index + self.every in self._read:  # the next one, now
                        ahead = self._read[index + self.every]
                        job = self._detect(index + self.every, ahead, self._grey_of(ahead), index)
                        if job is not None:
                            self._ahead[job.frame] = job
                    asked = self._ask(index, rgb)
                    if asked is not None:
                        yield from self._answered(asked, index, stamp)
                yield from self._leave(index, grey.shape, stamp)
                if on_frame is not None:
                    on_frame(rgb, list(self.tracks))
        finally:
            for job in [detecting, naming, *self._ahead.values()]:
                if job is not None:
                    job.future.cancel()
            detector.shutdown(wait=True, cancel_futures=True)
            namer.shutdown(wait=True, cancel_futures=True)
        for t in self.tracks:  # the video ended: every track leaves
            yield from self._goodbye(t, stamp)
        self.tracks = []

    def stats(self) -> dict[str, Any]:
        """The closing line's counts: frames detected on, naming passes, seconds from a track's first
        detected frame to its name (median and max over the tracks named)."""
        tn = self.to_name
        return {"frames_detected": self.detected, "frames_named": self.named, "tracks_named": len(tn),
                "time_to_name": {"median": round(statistics.median(tn), 3) if tn else None,
                                 "max": round(max(tn), 3) if tn else None}}

    def _read_ahead(self, frames: Iterable[FrameItem]) -> Iterator[FrameItem]:
        """A file's frames, read a detection interval in advance: the detection of frames 0, every,
        2 every, ... is started on the frame `every` before (frame 0's at once) and runs while those frames
        are followed."""
        buffer: deque[FrameItem] = deque()
        for item in frames:
            if item[0] == 0:
                self._ahead[0] = self._detect(0, item[2], self._grey_of(item[2]), None)  # type: ignore[assignment]
            buffer.append(item)
            self._read[item[0]] = item[2]
            if len(buffer) > self.every:
                out = buffer.popleft()
                self._read.pop(out[0], None)
                yield out
        while buffer:
            out = buffer.popleft()
            self._read.pop(out[0], None)
            yield out

    def _detect(self, frame: int, rgb: np.ndarray, grey: np.ndarray, now: int | None) -> _Job | None:
        """Start a detection of `frame` where it changed since the last detection and around the tracks
        (their boxes on frame `now`, widened by a box side each way); None when nothing changed and no one
        is followed (an empty, still scene costs no detection)."""
        if self._ref is None:  # the first detection: everywhere
            parts = [(0, 0, grey.shape[1], grey.shape[0])]
        else:
            parts = motion_boxes(self._ref, grey, max(8, self.namer.min_face // 4))
        for t in self.tracks:
            box = t.history.get(now) if now is not None else None
            if box is not None:
                parts.append((int(box[0] - box[2]), int(box[1] - box[3]), int(box[0] + 2 * box[2]),
                              int(box[1] + 2 * box[3])))
        if not parts:
            return None
        self._ref = grey
        regions = self.namer.regions(parts, grey.shape)
        return _Job(frame, self._detector.submit(self.namer.detect, rgb, regions), rgb=rgb, regions=regions)

    def _grey_of(self, rgb: np.ndarray) -> np.ndarray:
        from .faces.detect import opencv

        cv2 = opencv()
        return rgb if rgb.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)

    def _grey(self, index: int, seconds: float, rgb: np.ndarray) -> np.ndarray:
        grey = self._grey_of(rgb)
        self.greys[index], self.seconds[index] = grey, seconds
        for old in [f for f in self.greys if f <= index - HISTORY]:
            del self.greys[old], self.seconds[old]
        return grey

    def _flow(self, prev: int | None, index: int) -> None:
        """Each track's box moved from the previous processed frame to this one (kept where flow fails)."""
        for t in self.tracks:
            then = t.history.get(prev) if prev is not None else None
            if then is None:
                continue
            now = follow(self.greys[prev], self.greys[index], then)  # type: ignore[index]
            t.lost = now is None
            t.at(index, then if now is None else now)

    # ---- detections ----------------------------------------------------------------------------------

    def _detected(self, job: _Job, index: int, stamp: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """A detection of frame `job.frame` applied on frame `index`: matched tracks corrected, missed ones
        ended once unseen for more than max_missed frames, new faces started (followed from the detection's
        frame to this one)."""
        boxes: list[Box] = job.future.result()
        k = job.frame
        self.detected += 1
        of_box = match(self.tracks, boxes, k, self.min_iou)
        seen = {id(t) for t in of_box}
        missed = [t for t in self.tracks if id(t) not in seen and k in t.history and _within(t.history[k], job.regions)
                  and k - t.confirmed > self.max_missed]
        for t in missed:  # unseen by the detections of more than max_missed frames: gone
            self.tracks.remove(t)
            yield from self._goodbye(t, stamp)
        for box, t in zip(boxes, of_box):
            if t is not None:
                t.confirmed = k
                t.at(index, box if k == index else _shifted(box, t.history[k], t.history[index]))
                t.lost = t.lost and k != index
                continue
            kept = [f for f in sorted(self.greys) if f >= k]
            start: FBox = box
            now = follow_through([self.greys[f] for f in kept], start) if kept and kept[0] == k else start
            t = Track(self._next, rounded(now), index, first_time=self.seconds.get(k, stamp["time"]), confirmed=k)
            self._next += 1
            t.history[k] = start
            t.at(index, now)
            if k != index and job.rgb is not None:  # its first answer can come from the detected frame too
                self._seeds[t.id] = (job.rgb, box)
            self.tracks.append(t)
            yield {"event": "appear", "track": t.id, **stamp, "box": list(t.box)}

    def _leave(self, index: int, shape: tuple[int, ...], stamp: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Tracks whose box left the frame (its centre outside)."""
        gone = [t for t in self.tracks if not _inside(t.history.get(index, t.box), shape)]
        for t in gone:
            self.tracks.remove(t)
            yield from self._goodbye(t, stamp)

    def _goodbye(self, t: Track, stamp: dict[str, Any]) -> Iterator[dict[str, Any]]:
        self._seeds.pop(t.id, None)
        if not t.decided and t.votes:  # seen on fewer frames than `votes`: decide on what there is
            yield self._identified(t, stamp)
        yield {"event": "leave", "track": t.id, **stamp, "name": t.name}

    # ---- naming --------------------------------------------------------------------------------------

    def _wants(self, t: Track, index: int) -> bool:
        if t.lost or t.pending:
            return False
        return not t.decided or t.disagree > 0 or index - t.asked >= self.recheck

    def _ask(self, index: int, rgb: np.ndarray) -> _Job | None:
        """Send the faces of the tracks that need an answer on this frame to be named (one batch)."""
        ask = [t for t in self.tracks if self._wants(t, index)]
        if not ask:
            return None
        faces, of = [], []
        for t in ask:
            t.asked, t.pending = index, True
            seed = self._seeds.pop(t.id, None)
            if seed is not None:  # a track started late (live): its detected frame is one more answer
                faces.append(seed)
                of.append(t)
            faces.append((rgb, t.box))
            of.append(t)
        return _Job(index, self._namer.submit(self.namer.name, faces), of)

    def _answered(self, job: _Job, index: int, stamp: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Each answer is a vote of its track (the tracks that left meanwhile are skipped)."""
        answers: list[Named] = job.future.result()
        self.named += 1
        for t, named in zip(job.tracks, answers):
            t.pending = False
            self.point = named.point
            if t not in self.tracks:
                self._seeds.pop(t.id, None)
                continue
            if t.decided:  # a decided track whose face keeps disagreeing is someone else: a new track, whose
                t.disagree = t.disagree + 1 if named.match != t.name else 0  # votes are those disagreeing answers
                if t.disagree == 1:
                    t.first_time = self.seconds.get(job.frame, stamp["time"])  # when the other face was first seen
                t.recent = [*t.recent, (named.match, named.probability)][-self.votes:]
                if t.disagree < self.votes:
                    continue
                yield {"event": "leave", "track": t.id, **stamp, "name": t.name}
                old, t = t, self._replace(t, index, stamp)
                yield {"event": "appear", "track": t.id, **stamp, "box": list(t.box)}
                t.votes = list(old.recent)
                yield self._identified(t, stamp)
                continue
            t.votes.append((named.match, named.probability))
            if len(t.votes) >= self.votes:
                yield self._identified(t, stamp)

    def _replace(self, old: Track, index: int, stamp: dict[str, Any]) -> Track:
        new = Track(self._next, old.box, index, first_time=old.first_time, confirmed=old.confirmed)
        self._next += 1
        new.at(index, old.history[index])
        self.tracks = [new if t is old else t for t in self.tracks]
        return new

    def _identified(self, t: Track, stamp: dict[str, Any]) -> dict[str, Any]:
        t.decided = True
        t.name, prob = decide(t.votes)
        self.to_name.append(stamp["time"] - t.first_time)
        return {"event": "identified", "track": t.id, **stamp, "name": t.name, "probability": prob,
                "frames": len(t.votes), **self.point}
