"""`siamface watch` on a clip made here: processed fps, time from a face's first frame to its name, wrong names,
flicker and the frames whose face has a box, for tracking and for the every-frame identify, as the machine is
and with both cores made busy (one run, one process).

    python benchmarks/watch_clip.py                  # about 8 minutes: 3 modes x 2 loads on a 60 s clip
    python benchmarks/watch_clip.py --loads idle --modes tracking-live

The clip (written to a temporary folder, never stored): 640x480, 30 fps, `--segments` segments of 2.5 s, each
one photo holding a single face sliding across a grey frame while it grows from 0.8x to 1.2x, each after
0.6 s of empty frames (so segments start on every phase of a detection schedule); the photos are LFW's
(250x250) and AT&T's enlarged 2x (184x224 grey; their faces are under the detector's 80 px at 1x). A seeded
sample of people with at least two photos: the first `--enrolled` are enrolled from their first photo and
appear with their second, the others are strangers; the gallery also holds `--gallery-people` people who
never appear. Each track is matched to the segment its first event falls in.

Modes: `tracking-live` (siamface.watch's tracking with realtime=True: frames delivered at 30 fps as a camera
would, those the processing cannot keep up with dropped), `tracking-file` (every frame processed as fast as it
can be: the throughput), `every-frame-live` (every processed frame a whole Gallery.identify, the previous watch).
Loads: `idle` (the machine as it is: other people's jobs run too; `uptime` recorded before and after) and
`busy` (plus one bounded busy loop per core, `timeout T sh -c 'while :; do :; done'`).

Reported per run: frames read and processed, fps (processed frames per wall second), frames detected on and
named; per segment the seconds (source time) from its first frame to its track's "identified" event
(`seconds_to_name`; median and max over segments); wrong names (an enrolled person named as someone else,
or a stranger named), enrolled people never named (misses), flicker (segments split into more than one
track, or whose tracks got different names); `face_frames_boxed`: of the processed frames showing a face,
the share where a track's box overlaps the true face box (IoU >= 0.3), and `face_frames_named` where that
track is also decided.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from common import command, data_root, machine, write_result

FPS, SEG_S, GAP_S, SIZE = 30.0, 2.5, 0.6, (640, 480)
MODES = ("tracking-live", "tracking-file", "every-frame-live")
Box = tuple[float, float, float, float]
STAMP_BITS = 12


def _rgb(path: Path, att: bool) -> np.ndarray:
    """An LFW photo as it is, an AT&T one enlarged 2x (its faces are under the detector's 80 px)."""
    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return cv2.resize(img, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC) if att else img


def _faces(img: np.ndarray) -> list[Any]:
    from siamface.faces import DLIB_CHIP, detect_faces

    canvas = np.full((img.shape[0] + 100, img.shape[1] + 100, 3), 90, np.uint8)
    canvas[50:50 + img.shape[0], 50:50 + img.shape[1]] = img
    return [(b.x - 50, b.y - 50, b.w, b.h) for b in detect_faces(canvas, DLIB_CHIP)]


def make_clip(path: Path, photos: list[np.ndarray]) -> tuple[list[tuple[int, int]], dict[int, Box]]:
    """Write the clip; returns each segment's (first frame, last frame) and each frame's true face box."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    spans, truth, frame = [], {}, 0
    n_seg, n_gap = int(SEG_S * FPS), int(GAP_S * FPS)
    for img in photos:
        for _ in range(n_gap):  # the gap first: segments start 93 frames apart, on every phase of a detection schedule
            canvas = np.full((SIZE[1], SIZE[0], 3), 90, np.uint8)
            stamp(canvas, frame)
            writer.write(canvas)
            frame += 1
        fx, fy, fw, fh = _faces(img)[0]
        first = frame
        for i in range(n_seg):
            scale = 0.8 + 0.4 * i / (n_seg - 1)
            face = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
            h, w = face.shape[:2]
            x = int(20 + (SIZE[0] - w - 40) * i / (n_seg - 1))
            y = (SIZE[1] - h) // 2
            canvas = np.full((SIZE[1], SIZE[0], 3), 90, np.uint8)
            canvas[y:y + h, x:x + w] = face
            stamp(canvas, frame)
            writer.write(canvas[:, :, ::-1])
            truth[frame] = (x + fx * scale, y + fy * scale, fw * scale, fh * scale)
            frame += 1
        spans.append((first, frame - 1))
    writer.release()
    return spans, truth


def _iou(a: Box, b: Box) -> float:
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return 0.0 if iw <= 0 or ih <= 0 else iw * ih / (a[2] * a[3] + b[2] * b[3] - iw * ih)


def score(events: list[dict[str, Any]], spans: list[tuple[int, int]], truth: list[str | None],
          boxed: dict[str, int]) -> dict[str, Any]:
    tracks_of: list[list[int]] = [[] for _ in spans]
    named: dict[int, dict[str, Any]] = {}
    for e in events:  # a track's identified event (the first: a track is named once)
        if e["event"] == "identified":
            named.setdefault(e["track"], e)
    appear = {e["track"]: e["frame"] for e in events if e["event"] == "appear"}
    for track, frame in appear.items():
        seg = next((k for k, (a, b) in enumerate(spans) if a <= frame <= b + GAP_S * FPS), None)  # a late start too
        if seg is not None:
            tracks_of[seg].append(track)
    rows, wrong, missed, latency = [], 0, 0, []
    for k, (span, who) in enumerate(zip(spans, truth)):
        names = [named[t]["name"] for t in tracks_of[k] if t in named]
        first = min((named[t]["time"] for t in tracks_of[k] if t in named), default=None)
        if first is not None:
            latency.append(first - span[0] / FPS)
        wrong += sum(1 for n in names if n is not None and n != who)
        missed += int(who is not None and who not in names)
        rows.append({"truth": who, "tracks": len(tracks_of[k]), "names": names,
                     "seconds_to_name": None if first is None else round(first - span[0] / FPS, 3)})
    return {"segments": rows, "wrong_names": wrong, "enrolled_missed": missed,
            "flicker_segments_split": sum(1 for r in rows if r["tracks"] > 1),
            "flicker_segments_renamed": sum(1 for r in rows if len(set(r["names"])) > 1),
            "median_seconds_to_name": round(statistics.median(latency), 3) if latency else None,
            "max_seconds_to_name": round(max(latency), 3) if latency else None,
            "face_frames": boxed["face"], "face_frames_boxed": round(boxed["boxed"] / max(1, boxed["face"]), 4),
            "face_frames_named": round(boxed["named"] / max(1, boxed["face"]), 4)}


def stamp(canvas: np.ndarray, frame: int) -> None:
    """Write the frame number into the top-left corner as 12 black or white 8x8 blocks (how the benchmark knows
    which frame a processed frame is: a live watch drops frames)."""
    for bit in range(STAMP_BITS):
        canvas[:8, 8 * bit:8 * bit + 8] = 255 if frame >> bit & 1 else 0


def read_stamp(frame: np.ndarray) -> int:
    return sum(1 << bit for bit in range(STAMP_BITS) if frame[2:6, 8 * bit + 2:8 * bit + 6].mean() > 127)


def run_mode(mode: str, clip: Path, gallery: Any, face_box: dict[int, Box], min_face: int) -> dict[str, Any]:
    """One watch of the clip; its events, and how many processed frames showing a face had a box (and a name)."""
    from siamface.watch import watch

    boxed = {"face": 0, "boxed": 0, "named": 0}

    def on_frame(frame: np.ndarray, tracks: list[Any]) -> None:
        true = face_box.get(read_stamp(frame))
        if true is not None:
            boxed["face"] += 1
            best = max(tracks, key=lambda t: _iou(tuple(t.box), true), default=None)
            if best is not None and _iou(tuple(best.box), true) >= 0.3:
                boxed["boxed"] += 1
                boxed["named"] += int(best.decided)

    t0 = time.perf_counter()
    events = list(watch(str(clip), gallery, on_frame=on_frame, realtime=mode.endswith("live"),
                        every_frame=mode.startswith("every"), min_face=min_face))
    return {"events": events, "boxed": boxed, "wall_s": round(time.perf_counter() - t0, 2)}


def uptime() -> str:
    """The load averages (1, 5, 15 minutes), as `uptime` prints them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def busy(seconds: int) -> list[subprocess.Popen[bytes]]:
    """One bounded busy loop per core (`timeout` ends them even if this process dies)."""
    return [subprocess.Popen(["timeout", str(seconds), "sh", "-c", "while :; do :; done"])
            for _ in range(os.cpu_count() or 1)]


def pick_people(args: argparse.Namespace) -> tuple[list[np.ndarray], list[str | None], list[tuple[str, np.ndarray]]]:
    """(the clip's photos, who each is (None: a stranger), the gallery's (name, photo))."""
    rng = random.Random(args.seed)
    lfw = sorted(d for d in (data_root() / "lfw" / "deepfunneled").iterdir()
                 if d.is_dir() and len(list(d.glob("*.jpg"))) >= 2)
    rng.shuffle(lfw)
    one = lambda d: all(len(_faces(_rgb(f, False))) == 1 for f in sorted(d.glob("*.jpg"))[:2])  # noqa: E731
    n_lfw = args.segments - args.att_segments
    n_lfw_enrolled = args.enrolled - args.att_enrolled
    lfw = list(itertools.islice(filter(one, lfw), args.gallery_people + n_lfw - n_lfw_enrolled))
    att = sorted((data_root() / "att_faces").glob("s*"), key=lambda d: int(d.name[1:]))
    rng.shuffle(att)
    shown: list[tuple[np.ndarray, str | None]] = []
    gallery: list[tuple[str, np.ndarray]] = []
    for d in lfw[:args.gallery_people]:
        gallery.append((d.name, _rgb(sorted(d.glob("*.jpg"))[0], False)))
    for d in lfw[:n_lfw_enrolled]:
        shown.append((_rgb(sorted(d.glob("*.jpg"))[1], False), d.name))
    for d in lfw[args.gallery_people:]:
        shown.append((_rgb(sorted(d.glob("*.jpg"))[1], False), None))
    for i, d in enumerate(att[:args.att_segments]):
        if i < args.att_enrolled:
            gallery.append((f"att-{d.name}", _rgb(d / "1.pgm", True)))
        shown.append((_rgb(d / "2.pgm", True), f"att-{d.name}" if i < args.att_enrolled else None))
    random.Random(args.seed + 1).shuffle(shown)
    return [s[0] for s in shown], [s[1] for s in shown], gallery


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--segments", type=int, default=20)
    p.add_argument("--enrolled", type=int, default=12, help="of the segments, how many show enrolled people")
    p.add_argument("--att-segments", type=int, default=8, help="of the segments, how many show AT&T people")
    p.add_argument("--att-enrolled", type=int, default=5, help="of the AT&T segments, how many are enrolled")
    p.add_argument("--gallery-people", type=int, default=20, help="LFW people enrolled (some never appear)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--loads", nargs="+", choices=("idle", "busy"), default=["idle", "busy"])
    p.add_argument("--min-face", type=int, default=80)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="watch_clip")
    args = p.parse_args()
    from siamface.gallery import Gallery

    photos, truth, people = pick_people(args)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        spans, face_box = make_clip(clip, photos)
        with Gallery(Path(tmp) / "g.db") as g:
            for name, img in people:
                g.enroll(name, [img], select="largest")
            for load in args.loads:
                loops = busy(int(len(args.modes) * (spans[-1][1] / FPS + 30))) if load == "busy" else []
                try:
                    for mode in args.modes:
                        before = uptime()
                        got = run_mode(mode, clip, g, face_box, args.min_face)
                        end = got["events"][-1]
                        closing = {k: v for k, v in end.items() if k not in ("event", "mode")}
                        runs.append({"mode": mode, "load": load, "loadavg_before": before, "loadavg_after": uptime(),
                                     "wall_s": got["wall_s"], **closing, **score(got["events"], spans, truth,
                                                                                  got["boxed"])})
                        print({k: v for k, v in runs[-1].items() if k != "segments"}, flush=True)
                finally:
                    for loop in loops:
                        loop.kill()
    write_result(args.out, {
        "benchmark": "siamface watch on a generated 640x480 30 fps clip of LFW and AT&T photos (enrolled people "
                     "and strangers)", "command": command(), "seed": args.seed, "min_face": args.min_face,
        "clip_s": round((spans[-1][1] + 1) / FPS, 2), "segments": len(spans),
        "enrolled_shown": sum(t is not None for t in truth), "gallery_people": len(people), "runs": runs,
        "machine": machine()})


if __name__ == "__main__":
    main()
