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

        self.gallery, self.fpir = gallery, fpir
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

    def detect(self, frame: np.ndarray) -> list[Box]:
        """Face boxes (x, y, w, h) in the frame's pixels, found on the frame reduced by `scale`."""
        from .faces import detect_faces
        from .faces.detect import opencv

        small = frame
        if self.scale < 1.0:
            cv2 = opencv()
            h, w = frame.shape[:2]
            small = cv2.resize(frame, (max(1, round(w * self.scale)), max(1, round(h * self.scale))),
                               interpolation=cv2.INTER_AREA)
        s = self.scale
        return [(round(b.x / s), round(b.y / s), round(b.w / s), round(b.h / s)) for b in detect_faces(small, self.cfg)]

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
