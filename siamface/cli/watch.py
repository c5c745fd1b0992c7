"""`siamface watch`: faces in a video followed and named through a gallery, events as JSON lines (siamface.watch)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import SiamfaceError
from .flags import add_runtime_flag


def _source(text: str) -> str | int:
    return int(text) if text.isdigit() else text


class _Annotator:
    """Writes each processed frame with its tracks' boxes and names to an MP4 file."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self.writer: Any = None

    def __call__(self, frame: Any, tracks: list[Any]) -> None:
        import cv2

        if self.writer is None:
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                          (frame.shape[1], frame.shape[0]))
            if not self.writer.isOpened():
                raise SiamfaceError(f"{self.path}: cannot write the annotated video")
        bgr = frame[:, :, ::-1].copy()
        for t in tracks:
            x, y, w, h = t.box
            colour = (0, 200, 0) if t.name else (0, 0, 220)
            label = (t.name or "unknown") if t.decided else f"track {t.id}"
            cv2.rectangle(bgr, (x, y), (x + w, y + h), colour, 2)
            cv2.putText(bgr, label, (x, max(12, y - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1)
        self.writer.write(bgr)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def cmd_watch(args: argparse.Namespace) -> None:
    from ..watch import watch
    from .gallery import _gallery

    annotate = _Annotator(Path(args.out), args.out_fps) if args.out else None
    events = open(args.events, "w", encoding="utf-8") if args.events else None  # noqa: SIM115 - closed below
    try:
        with _gallery(args, args.model) as g:
            for event in watch(_source(args.source), g, votes=args.votes, max_missed=args.max_missed,
                               fpir=args.fpir, realtime=args.realtime, workers=args.workers, on_frame=annotate,
                               every_frame=True if args.every_frame else None, min_face=args.min_face,
                               detect_every=args.detect_every, recheck=args.recheck):
                line = json.dumps(event)
                print(line, flush=True)
                if events is not None:
                    events.write(line + "\n")
                    events.flush()
    finally:
        if annotate is not None:
            annotate.close()
        if events is not None:
            events.close()


def add_watch_parser(sub: Any) -> None:
    s = sub.add_parser("watch", help="follow and name the faces of a video (camera, file, RTSP): JSON lines")
    s.add_argument("--source", required=True, help="a camera index (0), a video file or an rtsp:// URL")
    s.add_argument("--gallery", default=None, help="the gallery database file (or $SIAMFACE_GALLERY)")
    s.add_argument("--model", default=None, help="run folder or shipped model (default: the one that made the gallery)")
    s.add_argument("--fpir", type=float, default=None, help="the gallery's operating point for identify")
    s.add_argument("--votes", type=int, default=3, help="frames a track is seen on before it is named (default 3)")
    s.add_argument("--max-missed", type=int, default=5, help="frames a track may be unseen by the detector before "
                                                             "it leaves (default 5)")
    s.add_argument("--min-face", type=int, default=80, help="the smallest face to find, in pixels (default 80): "
                                                            "frames are reduced for detection as far as it allows")
    s.add_argument("--detect-every", type=float, default=0.17, help="seconds of video between detections; faces "
                                                                    "are followed by optical flow between them "
                                                                    "(default 0.17: every 5th frame at 30 fps)")
    s.add_argument("--recheck", type=float, default=0.5, help="seconds between re-checks of a named face (default 0.5)")
    s.add_argument("--every-frame", action="store_true", help="no tracking: each frame detected and every face "
                                                              "identified (slow; models without a face detector)")
    s.add_argument("--realtime", action="store_true", help="on a file, keep to the video's clock and drop frames "
                                                           "rather than fall behind, as a live source always does")
    s.add_argument("--workers", type=int, default=None, help="threads: detection and naming on 2 (1: one shared); "
                                                             "with --every-frame, frames identified at once "
                                                             "(default: one per core, at most 4)")
    s.add_argument("--out", default=None, help="write the processed frames with boxes and names (MP4)")
    s.add_argument("--out-fps", type=float, default=30.0, help="frame rate of --out (default 30)")
    s.add_argument("--events", default=None, help="also write the events (JSON lines) to this file")
    add_runtime_flag(s)
    s.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_watch, detect=True)
