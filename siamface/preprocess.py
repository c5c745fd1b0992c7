"""Images -> model input, defined once by the model's `PreprocessConfig` (no train/serve skew).

Files are decoded to uint8 (C, H, W) at the model's size; batches become float tensors scaled to [0, 1],
optionally inverted, then normalised. Training, evaluation, verify and the service all go through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import PreprocessConfig
from .data import load_image


def load_input(path: str | Path, pre: PreprocessConfig, fallback: bool = False) -> np.ndarray:
    """Decode one file to the model's uint8 (C, size, size) input. Face alignment, when configured,
    happens here too, so every caller aligns the same way."""
    return load_input_with_faces(path, pre, fallback)[0]


def normalize(batch: torch.Tensor, pre: PreprocessConfig, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 or [0, 1] float (N, C, H, W) -> the network's normalised float input."""
    x = batch.to(dtype) / 255.0 if batch.dtype == torch.uint8 else batch.to(dtype)
    if pre.invert:
        x = 1.0 - x
    return (x - pre.mean) / pre.std


def load_input_with_faces(
    image: str | Path | np.ndarray, pre: PreprocessConfig, fallback: bool = False
) -> tuple[np.ndarray, dict[str, Any]]:
    """Like `load_input` for a path or an RGB/grey array, also returning the face report (its whole-image
    form when the model takes whole images). `fallback`: a central box stands in where no face is found
    (evaluation)."""
    from .faces.report import face_report

    if pre.detects:
        from .faces import extract_face_array, extract_face_file

        arr, crop = extract_face_file(image, pre, fallback) if not isinstance(image, np.ndarray) else \
            extract_face_array(image, pre, fallback=fallback)
        return arr, crop.to_dict()
    if isinstance(image, np.ndarray):
        from .data import image_from_array

        return image_from_array(image, channels=pre.channels, size=pre.size, crop=pre.crop), face_report(None)
    return load_image(image, channels=pre.channels, size=pre.size, crop=pre.crop), face_report(None)
