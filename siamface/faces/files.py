"""Files -> aligned model inputs: the one place where preprocessing meets face detection."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from siamface.data.images import image_from_array, load_image
from siamface.faces.align import FaceCrop, extract_face
from siamface.faces.config import AlignConfig

if TYPE_CHECKING:
    from siamface.config import PreprocessConfig


def extract_face_array(
    image: np.ndarray, pre: PreprocessConfig, source: str | None = None, fallback: bool = False
) -> tuple[np.ndarray, FaceCrop]:
    """An RGB (H, W, 3) or grey (H, W) uint8 photo -> (the model's uint8 (C, S, S) input, the FaceCrop)."""
    cfg = pre.align or AlignConfig(detector="none")
    crop = extract_face(image, pre.size, cfg, source=source, fallback=fallback)
    return image_from_array(crop.image, channels=pre.channels), crop


def extract_face_file(path: str | Path, pre: PreprocessConfig, fallback: bool = False) -> tuple[np.ndarray, FaceCrop]:
    """Decode a photo of any size (ImageError names the file), detect, align, convert to the model's input."""
    rgb = load_image(path, channels=3).transpose(1, 2, 0)
    return extract_face_array(np.ascontiguousarray(rgb), pre, source=str(path), fallback=fallback)
