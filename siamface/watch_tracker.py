"""Following faces between frames for `siamface watch`: box matching (tracking by detection) and optical flow.

`IoUTracker` links each frame's detected boxes to tracks greedily (IoU matching as in Bochinski et al. 2017,
"High-Speed Tracking-by-Detection Without Using Image Information", extended to nearby boxes of similar size
and to each track's motion). `follow` moves a box from one frame to the next by pyramidal Lucas-Kanade
optical flow (Bouguet 2000) of corners inside it, checked forward and backward (Kalal et al. 2010,
"Forward-Backward Error: Automatic Detection of Tracking Failures"): the median motion moves the box and the
median change of the points' distances scales it, as the Median Flow tracker does. `decide` is the vote
that names a track from several frames.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Box = tuple[int, int, int, int]  # x, y, w, h
SIGHTINGS = 6  # a track's velocity is measured over its last this many sightings
FRAMES_PER_SIDE = 8  # how fast a face may move unpredicted: one box side per this many source frames
MAX_SIDES = 2.0  # and never further than this many sides (a face across the frame is another one)
MIN_POINTS = 6  # corners that must survive the forward-backward check for a box to be followed
FB_ERROR = 1.0  # pixels: a corner tracked forward then backward must come back this close
HISTORY = 90  # frames of box history a track keeps (a detection's result may arrive this many frames late)


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
    first_time: float = 0.0  # seconds into the source of its first sighting
    confirmed: int = -1  # the last frame a detection saw it on (flow tracking)
    lost: bool = False  # optical flow could not follow it on the last frame (flow tracking)
    asked: int = -1  # the last frame its face was sent to be named (flow tracking)
    pending: bool = False  # a naming of its face is under way (flow tracking)
    recent: list[tuple[str | None, float]] = field(default_factory=list)  # its last answers once named (flow)
    history: dict[int, FBox] = field(default_factory=dict)  # frame -> box over the last HISTORY frames

    def at(self, frame: int, box: FBox) -> None:
        """Its box on `frame` (flow tracking, in sub-pixels), kept for results about that frame that arrive late."""
        self.box, self.last_frame = rounded(box), frame
        self.history[frame] = box
        for old in [f for f in self.history if f <= frame - HISTORY]:
            del self.history[old]

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




FBox = tuple[float, float, float, float]  # x, y, w, h in continuous pixels (optical flow moves boxes by sub-pixels)


def rounded(box: FBox) -> Box:
    """A box in whole pixels."""
    return (round(box[0]), round(box[1]), max(1, round(box[2])), max(1, round(box[3])))


def follow(prev: np.ndarray, cur: np.ndarray, box: FBox) -> FBox | None:
    """`box` moved from grey frame `prev` to grey frame `cur` by the optical flow of the corners inside it
    (their median motion, their median change of distance for the scale); None when fewer than MIN_POINTS
    corners come back to within FB_ERROR pixels of where they started (the face is gone or blurred)."""
    from .faces.detect import opencv

    cv2 = opencv()
    height, width = prev.shape[:2]
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(width, int(box[0] + box[2])), min(height, int(box[1] + box[3]))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    corners = cv2.goodFeaturesToTrack(prev[y0:y1, x0:x1], maxCorners=64, qualityLevel=0.01,
                                      minDistance=max(2, (x1 - x0) // 16))
    if corners is None or len(corners) < MIN_POINTS:
        return None
    pts = (corners.reshape(-1, 2) + np.array([x0, y0], np.float32)).astype(np.float32)
    lk: dict[str, Any] = {"winSize": (15, 15), "maxLevel": 3,
                          "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)}
    nxt, ok, _ = cv2.calcOpticalFlowPyrLK(prev, cur, pts, None, **lk)
    back, ok_back, _ = cv2.calcOpticalFlowPyrLK(cur, prev, nxt, None, **lk)
    good = (ok.ravel() == 1) & (ok_back.ravel() == 1) & (np.linalg.norm(back - pts, axis=1) < FB_ERROR)
    if good.sum() < MIN_POINTS:
        return None
    a, b = pts[good], nxt[good]
    dx, dy = np.median(b - a, axis=0)
    i, j = np.triu_indices(len(a), 1)
    da, db = np.linalg.norm(a[i] - a[j], axis=1), np.linalg.norm(b[i] - b[j], axis=1)
    scale = float(np.median(db[da > 2] / da[da > 2])) if (da > 2).any() else 1.0
    w, h = box[2] * scale, box[3] * scale
    cx, cy = box[0] + box[2] / 2 + float(dx), box[1] + box[3] / 2 + float(dy)
    return (cx - w / 2, cy - h / 2, w, h)


def follow_through(greys: list[np.ndarray], box: FBox) -> FBox:
    """`box` on the first of `greys` followed to the last, frame by frame (kept where the flow fails)."""
    for prev, cur in zip(greys, greys[1:]):
        box = follow(prev, cur, box) or box
    return box


def match(tracks: list[Track], boxes: list[Box], frame: int, min_likeness: float) -> list[Track | None]:
    """The track of each box detected on `frame` (None: a new face), greedily by `likeness` to the tracks'
    boxes on that frame (tracks with no box there, younger than the detection, take no part)."""
    pairs = sorted(((likeness(rounded(t.history[frame]), b), ti, bi) for ti, t in enumerate(tracks)
                    if frame in t.history for bi, b in enumerate(boxes)), reverse=True)
    of_box: list[Track | None] = [None] * len(boxes)
    used: set[int] = set()
    for score, ti, bi in pairs:
        if score < min_likeness:
            break
        if ti not in used and of_box[bi] is None:
            used.add(ti)
            of_box[bi] = tracks[ti]
    return of_box
