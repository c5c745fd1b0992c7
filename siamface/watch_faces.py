"""Detection and naming of given face boxes for `siamface watch`, with a gallery's model and decision.

`Gallery.identify` detects, aligns, embeds and searches a whole photo at once. A tracker needs the parts
apart: detection alone (on a frame reduced as far as the smallest face asked for allows, and only in the
regions of it that changed, `motion_boxes`), and naming of face boxes it already follows (landmarks, the
model's alignment, embedding, the gallery's search and decision), exactly as `identify` does them for a
detected box.
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


def motion_boxes(before: np.ndarray, after: np.ndarray, min_side: int = 8) -> list[Region]:
    """The boxes around the patches of pixels that changed between two grey frames (sampled every
    MOTION_STEP pixels), each at least `min_side` pixels both ways: isolated changes (compression noise) and
    thin ones (a clock's digits, a scan line) are not a face moving."""
    from .faces.detect import opencv

    cv2 = opencv()
    s = MOTION_STEP
    changed = (cv2.absdiff(before[::s, ::s], after[::s, ::s]) > MOTION_LEVEL).astype(np.uint8)
    changed = cv2.erode(changed, np.ones((2, 2), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    n, _, stats, _ = cv2.connectedComponentsWithStats(changed, connectivity=8)
    boxes = []
    for x, y, w, h, _area in stats[1:n].tolist():
        # the 2x2 erosion keeps a pixel whose left and upper neighbours changed too: a step back on those sides
        box = (max(0, x - 1) * s, max(0, y - 1) * s, (x + w) * s, (y + h) * s)
        if box[2] - box[0] >= min_side and box[3] - box[1] >= min_side:
            boxes.append(box)
    return boxes


def _merged(boxes: list[Region]) -> list[Region]:
    """Overlapping boxes joined until none overlap."""
    out = list(boxes)
    joined = True
    while joined:
        joined = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    out[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del out[j]
                    joined = True
                    break
            if joined:
                break
    return out


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
        self.gallery, self.fpir, self.min_face = gallery, fpir, min_face
        self.verifier = gallery.verifier
        self.pre = self.verifier.preprocess
        self.cfg = self.pre.align
        self.scale = detect_scale(min_face, self.cfg.upsample) if self.cfg.detector == "mmod" else 1.0

    @staticmethod
    def tracks(gallery: Any) -> bool:
        """Whether a gallery's model finds faces (a model that takes the whole frame as the face cannot be
        tracked face by face: each frame is identified whole)."""
        pre = getattr(getattr(gallery, "verifier", None), "preprocess", None)
        return bool(pre is not None and pre.detects)

    def regions(self, parts: list[Region], shape: tuple[int, ...]) -> list[Region] | None:
        """Where to detect around `parts`: each widened by half the smallest face (a face at its edge stays
        whole), kept inside the frame, overlapping ones joined; None (the whole frame) when they cover most
        of it."""
        margin = max(32, round(self.min_face / 2))
        height, width = shape[:2]
        boxes = _merged([(max(0, p[0] - margin), max(0, p[1] - margin), min(width, p[2] + margin),
                          min(height, p[3] + margin)) for p in parts])
        boxes = [b for b in boxes if b[2] > b[0] and b[3] > b[1]]
        if sum((b[2] - b[0]) * (b[3] - b[1]) for b in boxes) > WHOLE * height * width:
            return None
        return boxes

    def detect(self, frame: np.ndarray, regions: list[Region] | None = None) -> list[Box]:
        """Face boxes (x, y, w, h) in the frame's pixels, found in each of `regions` (None: the whole frame),
        reduced by `scale`."""
        if regions is None:
            return self._detect(frame, 0, 0)
        return [b for r in regions for b in self._detect(frame[r[1]:r[3], r[0]:r[2]], r[0], r[1])]

    def _detect(self, image: np.ndarray, ox: int, oy: int) -> list[Box]:
        from .faces import detect_faces
        from .faces.detect import opencv

        small = image
        if self.scale < 1.0:
            cv2 = opencv()
            h, w = image.shape[:2]
            small = cv2.resize(image, (max(1, round(w * self.scale)), max(1, round(h * self.scale))),
                               interpolation=cv2.INTER_AREA)
        s = self.scale
        return [(ox + round(b.x / s), oy + round(b.y / s), round(b.w / s), round(b.h / s))
                for b in detect_faces(np.ascontiguousarray(small), self.cfg)]

    @torch.no_grad()
    def name(self, faces: list[tuple[np.ndarray, Box]]) -> list[Named]:
        """Each (frame, box)'s face aligned as the model's preprocessing says (dlib's landmarks and chip for
        the shipped model), embedded in one batch and searched in the gallery; decided at its FPIR point."""
        from .embed import embed_batches
        from .photo_faces import Photo, faces_for

        if not faces:
            return []
        inputs = [faces_for(Photo(frame, "frame", ""), self.pre, boxes=[b])[0].input for frame, b in faces]
        emb = embed_batches(self.verifier.net, torch.from_numpy(np.stack(inputs)), self.pre,
                            device=self.verifier.device)
        answers, decision, _ = self.gallery._search(emb, 1, self.fpir)  # the gallery's exact top-1 and decision
        fields = decision.fields()
        point = {"operating_point": fields.get("operating_point"), "threshold": fields.get("threshold"),
                 **({"fpir": fields["fpir"]} if fields.get("fpir") is not None else {})}
        return [Named(match, cands[0].probability if cands else 0.0, point) for match, cands in answers]
