"""`siamface watch` on a clip made here: processed fps, time from a face's first frame to its name, wrong names
and flicker, on the machine as it is (one run).

    python benchmarks/watch_clip.py                       # 24 s clip, real time, about 1 minute
    python benchmarks/watch_clip.py --every-frame         # every frame processed (slower than real time)

The clip (written to a temporary folder, never stored): 640x480, 30 fps, `--segments` segments of 2.5 s, each
one LFW photo holding a single face (250x250) sliding across a grey frame while it grows from 0.8x to 1.2x,
separated by 0.5 s
of empty frames. A seeded sample of LFW people with at least two photos: the first `--enrolled` are enrolled
with their first photo and appear in the clip with their second; the others appear as strangers (never
enrolled). Each track is matched to the segment its frames fall in. Reported: frames read and processed, fps
(processed frames per wall second), per segment the seconds (source time) from its first frame to the track's
"identified" event, wrong names (an enrolled person named as someone else, or a stranger named), unknowns
among enrolled people (misses), and flicker (segments split into more than one track).
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from common import command, data_root, machine, write_result

FPS, SEG_S, GAP_S, SIZE = 30.0, 2.5, 0.5, (640, 480)


def one_face(person: Path) -> bool:
    """Whether the person's first two photos each hold exactly one face: a second face in a photo would be a
    second track of its segment (a real person, not a split)."""
    from siamface.faces import DLIB_CHIP, detect_faces

    photos = sorted(person.glob("*.jpg"))[:2]
    return all(len(detect_faces(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB), DLIB_CHIP)) == 1 for f in photos)


def make_clip(path: Path, photos: list[Path]) -> list[tuple[int, int]]:
    """Write the clip; returns each segment's (first frame, last frame)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    spans, frame = [], 0
    n_seg, n_gap = int(SEG_S * FPS), int(GAP_S * FPS)
    for photo in photos:
        img = cv2.imread(str(photo))
        first = frame
        for i in range(n_seg):
            scale = 0.8 + 0.4 * i / (n_seg - 1)
            face = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
            h, w = face.shape[:2]
            x = int(20 + (SIZE[0] - w - 40) * i / (n_seg - 1))
            y = (SIZE[1] - h) // 2
            canvas = np.full((SIZE[1], SIZE[0], 3), 90, np.uint8)
            canvas[y:y + h, x:x + w] = face
            writer.write(canvas)
            frame += 1
        spans.append((first, frame - 1))
        for _ in range(n_gap):
            writer.write(np.full((SIZE[1], SIZE[0], 3), 90, np.uint8))
            frame += 1
    writer.release()
    return spans


def score(events: list[dict[str, Any]], spans: list[tuple[int, int]], truth: list[str | None]) -> dict[str, Any]:
    tracks_of: list[list[int]] = [[] for _ in spans]
    named: dict[int, dict[str, Any]] = {e["track"]: e for e in events if e["event"] == "identified"}
    appear = {e["track"]: e["frame"] for e in events if e["event"] == "appear"}
    for track, frame in appear.items():
        seg = next((k for k, (a, b) in enumerate(spans) if a <= frame <= b), None)
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
            "median_seconds_to_name": round(statistics.median(latency), 3) if latency else None,
            "max_seconds_to_name": round(max(latency), 3) if latency else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--segments", type=int, default=8)
    p.add_argument("--enrolled", type=int, default=5, help="of the segments, how many show enrolled people")
    p.add_argument("--gallery-people", type=int, default=20, help="people enrolled in all (the rest never appear)")
    p.add_argument("--every-frame", action="store_true", help="process every frame instead of keeping real time")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from siamface.gallery import Gallery
    from siamface.watch import watch

    root = data_root() / "lfw" / "deepfunneled"
    people = sorted(d for d in root.iterdir() if d.is_dir() and len(list(d.glob("*.jpg"))) >= 2)
    random.Random(args.seed).shuffle(people)
    pick = list(itertools.islice(filter(one_face, people), args.gallery_people + args.segments - args.enrolled))
    enrolled, strangers = pick[:args.gallery_people], pick[args.gallery_people:]
    shown = enrolled[:args.enrolled] + strangers
    random.Random(args.seed + 1).shuffle(shown)
    truth = [d.name if d in enrolled else None for d in shown]
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        spans = make_clip(clip, [sorted(d.glob("*.jpg"))[1] for d in shown])
        with Gallery(Path(tmp) / "g.db") as g:
            for d in enrolled:
                g.enroll(d.name, [sorted(d.glob("*.jpg"))[0]], select="largest")
            events = list(watch(str(clip), g, realtime=not args.every_frame))
    end = events[-1]
    write_result("watch_clip_every_frame" if args.every_frame else "watch_clip", {
        "benchmark": "siamface watch on a generated 640x480 30 fps clip of LFW photos (enrolled people and strangers)",
        "command": command(), "seed": args.seed, "realtime": not args.every_frame,
        "clip_s": round(spans[-1][1] / FPS + GAP_S, 2), "frames_read": end["frames_read"],
        "frames_processed": end["frames_processed"], "fps": end["fps"], **score(events, spans, truth),
        "machine": machine()})


if __name__ == "__main__":
    main()
