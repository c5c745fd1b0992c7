"""Every face of a photo, each aligned like `extract_face` aligns the chosen one (identify reports them all)."""

from __future__ import annotations

import numpy as np

from siamface.faces.align import FaceCrop, align_box, center_square, extract_face
from siamface.faces.config import DEFAULT_CONFIG, AlignConfig
from siamface.faces.detect import check_image, detect_faces, with_landmarks


def extract_all_faces(image: np.ndarray, size: int, cfg: AlignConfig = DEFAULT_CONFIG,
                      source: str | None = None) -> list[FaceCrop]:
    """One aligned FaceCrop per detected face, in the detector's order (the one `cfg.select` picks first);
    each crop's `used` is its own box and `faces` lists them all. detector "none": the whole image, once.
    NoFaceError (naming `source`) when there is no face, as `extract_face` raises it."""
    image = check_image(image)
    if cfg.detector == "none":
        return [FaceCrop(image=center_square(image, size))]
    faces = detect_faces(image, cfg)
    if not faces:
        return [extract_face(image, size, cfg, source=source)]  # raises NoFaceError, or falls back
    faces = with_landmarks(image, faces)
    crops = []
    for box in faces:
        aligned, eyes, eyes_source = align_box(image, box, size, cfg)
        crops.append(FaceCrop(image=aligned, faces=faces, used=box, eyes_source=eyes_source, eyes=eyes))
    return crops
