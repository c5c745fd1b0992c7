"""Detection and naming of given face boxes for `siamface watch`, with a gallery's model and decision.

`Gallery.identify` detects, aligns, embeds and searches a whole photo at once. A tracker needs the parts
apart: detection alone (on a frame reduced as far as the smallest face asked for allows), and naming of face
boxes it already follows (landmarks, the model's alignment, embedding, the gallery's search and decision),
exactly as `identify` does them for a detected box.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .watch_tracker import Box

MMOD_SMALLEST = 80  # pixels: the smallest face box dlib's MMOD detector finds at full scale (its 80x80 window)
MOTION_LEVEL = 25  # grey levels: a pixel that changed more than this since the last detection has moved
MOTION_STEP = 4  # motion is looked for on every 4th pixel of every 4th row
WHOLE = 0.6  # a region of more than this share of the frame is detected as the whole frame
Region = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 excluded)


def motion_box(before: np.ndarray, after: np.ndarray) -> Region | None:
    """The box around the pixels that changed between two grey frames (sampled every MOTION_STEP pixels;
    isolated changes, as compression noise makes, are ignored); None when nothing changed."""
    from .faces.detect import opencv

    cv2 = opencv()
    s = MOTION_STEP
    changed = (cv2.absdiff(before[::s, ::s], after[::s, ::s]) > MOTION_LEVEL).astype(np.uint8)
    changed = cv2.erode(changed, np.ones((2, 2), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    ys, xs = np.nonzero(changed)
    if len(xs) == 0:
        return None
    # the 2x2 erosion keeps a pixel whose left and upper neighbours changed too: a step back on those sides
    return (max(0, int(xs.min()) - 1) * s, max(0, int(ys.min()) - 1) * s, (int(xs.max()) + 1) * s,
            (int(ys.max()) + 1) * s)


def detect_scale(min_face: int, upsample: int = 0) -> float:
    """The factor a frame is reduced by before MMOD detection so that faces of `min_face` pixels are still
    found: MMOD finds faces from MMOD_SMALLEST / 2^upsample pixels, so frames are never enlarged."""
    if isinstance(min_face, bool) or not isinstance(min_face, int) or min_face < 1:
        raise ValueError(f"min_face must be a whole number of pixels >= 1, got {min_face!r}")
    return min(1.0, MMOD_SMALLEST / 2**upsample / min_face)


@dataclass(frozen=True)
class Named:
    """The gallery's answer for one face box: the match (None: unknown), the top probability, the decision."""

    match: str | None
    probability: float
    point: dict[str, Any]


class FaceNamer:
    """`detect(frame)` -> face boxes; `name([(frame, box), ...])` -> one `Named` per face, through `gallery`
    (a siamface Gallery whose model detects faces) at its FPIR point `fpir` (None: its default)."""

    def __init__(self, gallery: Any, fpir: float | None = None, min_face: int = MMOD_SMALLEST) -> None:
        from .faces import AlignConfig

        self.gallery, self.fpir, self.min_face = gallery, fpir, min_face
        self.verifier = gallery.verifier
        self.pre = self.verifier.preprocess
        self.cfg = AlignConfig.from_dict(self.pre.align)
        self.scale = detect_scale(min_face, self.cfg.upsample) if self.cfg.detector == "mmod" else 1.0

    @staticmethod
    def tracks(gallery: Any) -> bool:
        """Whether a gallery's model finds faces (a model that takes the whole frame as the face cannot be
        tracked face by face: each frame is identified whole)."""
        v = getattr(gallery, "verifier", None)
        align = getattr(getattr(v, "preprocess", None), "align", None) or {}
        return align.get("detector", "none") in ("mmod", "haar")

    def region(self, parts: list[Region], shape: tuple[int, ...]) -> Region | None:
        """The box around `parts`, widened by half the smallest face (a face at its edge stays whole) and
        kept inside the frame; None (the whole frame) when that is most of it."""
        margin = max(32, round(self.min_face / 2))
        x0, y0 = max(0, min(p[0] for p in parts) - margin), max(0, min(p[1] for p in parts) - margin)
        x1, y1 = min(shape[1], max(p[2] for p in parts) + margin), min(shape[0], max(p[3] for p in parts) + margin)
        if x1 <= x0 or y1 <= y0 or (x1 - x0) * (y1 - y0) > WHOLE * shape[0] * shape[1]:
            return None
        return (x0, y0, x1, y1)

    def detect(self, frame: np.ndarray, region: Region | None = None) -> list[Box]:
        """Face boxes (x, y, w, h) in the frame's pixels, found in `region` (None: all of it) reduced by
        `scale`."""
        from .faces import detect_faces
        from .faces.detect import opencv

        ox, oy = (0, 0) if region is None else region[:2]
        small = frame if region is None else frame[region[1]:region[3], region[0]:region[2]]
        if self.scale < 1.0:
            cv2 = opencv()
            h, w = small.shape[:2]
            small = cv2.resize(small, (max(1, round(w * self.scale)), max(1, round(h * self.scale))),
                               interpolation=cv2.INTER_AREA)
        s = self.scale
        return [(ox + round(b.x / s), oy + round(b.y / s), round(b.w / s), round(b.h / s))
                for b in detect_faces(np.ascontiguousarray(small), self.cfg)]

    @torch.no_grad()
    def name(self, faces: list[tuple[np.ndarray, Box]]) -> list[Named]:
        """Each (frame, box)'s face aligned as the model's preprocessing says (dlib's landmarks and chip for
        the shipped model), embedded in one batch and searched in the gallery; decided at its FPIR point."""
        from .data import image_from_array
        from .embed import embed_batches
        from .faces import FaceBox
        from .faces.align import align_box

        if not faces:
            return []
        inputs = [image_from_array(align_box(frame, FaceBox(*b, 1.0), self.pre.size, self.cfg)[0],
                                   channels=self.pre.channels) for frame, b in faces]
        emb = embed_batches(self.verifier.net, torch.from_numpy(np.stack(inputs)), self.pre,
                            device=self.verifier.device)
        scores, names = self.gallery._person_scores(emb)
        decision = self.gallery.decision(fpir=self.fpir)
        fields = decision.fields()
        point = {"operating_point": fields.get("operating_point"), "threshold": fields.get("threshold"),
                 **({"fpir": fields["fpir"]} if fields.get("fpir") is not None else {})}
        out = []
        for row in scores:
            if len(names) == 0:
                out.append(Named(None, 0.0, point))
                continue
            best = min(range(len(names)), key=lambda j: (-row[j], names[j]))
            p = float(row[best])
            out.append(Named(names[best] if decision.accepts(p) else None, round(p, 10), point))
        return out
