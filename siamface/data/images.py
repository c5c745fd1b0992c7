"""Decode image files (or in-memory arrays) into uint8 (C, H, W) arrays of a fixed size.

One code path serves files and arrays, so training, evaluation and serving see identical pixels.
Conventions:

* ``channels=1`` is Pillow's "L" conversion (ITU-R 601-2 luma); ``channels=3`` is "RGB". Alpha is dropped.
  1-bit images (Omniglot) become 0 (black) / 255 (white): strokes stay dark on a white background.
  16-bit and float grey images are scaled from 0..65535 (or 0..1 for float) to 0..255.
* JPEG EXIF orientation is applied (phone photos are often stored rotated).
* With ``size``, the centred square of side ``crop * min(H, W)`` is resized to ``size x size`` with
  Pillow's BILINEAR filter. Pillow widens the bilinear (triangle) kernel when it downscales, so the
  result is antialiased (area-aware) rather than the aliased point-sampled bilinear of OpenCV; it is
  also exact (no ``reducing_gap`` shortcut), so results do not depend on the input size's factors.
"""

from __future__ import annotations

import io
from os import PathLike
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from siamface.errors import ImageError

__all__ = ["image_from_array", "load_image"]

RESAMPLE = Image.Resampling.BILINEAR
_MODES = {1: "L", 3: "RGB"}


def _check_args(channels: int, size: int | None, crop: float) -> None:
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be a positive int or None, got {size!r}")
    if not isinstance(crop, (int, float)) or not 0.0 < float(crop) <= 1.0:
        raise ValueError(f"crop must be a fraction in (0, 1], got {crop!r}")


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer or float grey images to 8 bits (Pillow's own conversion clips instead)."""
    arr = np.asarray(img, dtype=np.float64)
    top = 1.0 if img.mode == "F" and arr.size and arr.max() <= 1.0 else 65535.0
    return Image.fromarray(np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8))


def _convert(img: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to "L" or "RGB"."""
    if img.mode.startswith("I") or img.mode == "F":
        img = _high_depth_to_l(img)
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # avoids Pillow's warning for palette images with transparency
    return img if img.mode == _MODES[channels] else img.convert(_MODES[channels])


def _crop_resize(img: Image.Image, size: int | None, crop: float) -> Image.Image:
    """Centred square crop of side crop*min(W, H), resized to size x size."""
    if size is None:
        return img
    w, h = img.size
    side = max(1, round(crop * min(w, h)))
    left, top = (w - side) // 2, (h - side) // 2
    box = (left, top, left + side, top + side)
    if side == size:  # pure crop: no resampling at all
        return img if box == (0, 0, w, h) else img.crop(box)
    return img.resize((size, size), resample=RESAMPLE, box=box)


def _to_chw(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _finish(img: Image.Image, channels: int, size: int | None, crop: float) -> np.ndarray:
    return _to_chw(_crop_resize(_convert(img, channels), size, crop))


def load_image(
    path: str | PathLike[str], channels: int = 1, size: int | None = None, crop: float = 1.0
) -> np.ndarray:
    """Decode an image file to a uint8 array (channels, H, W); H = W = size when size is given.

    Raises ImageError (naming the path) for a missing, empty, unreadable, corrupt or non-image file.
    """
    _check_args(channels, size, crop)
    p = Path(path)
    if not p.exists():
        raise ImageError(f"{p}: no such file")
    if p.is_dir():
        raise ImageError(f"{p}: is a directory, not an image file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ImageError(f"{p}: cannot read file ({e.strerror or e})") from e
    if not data:
        raise ImageError(f"{p}: empty file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # full decode here, so truncated data fails now rather than later
            img = ImageOps.exif_transpose(im)
            return _finish(img, channels, size, crop)
    except UnidentifiedImageError as e:
        raise ImageError(f"{p}: not a recognised image format") from e
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise ImageError(f"{p}: corrupt or truncated image ({e})") from e


def image_from_array(
    arr: np.ndarray, channels: int = 1, size: int | None = None, crop: float = 1.0
) -> np.ndarray:
    """Convert an in-memory uint8 image (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA like load_image.

    Colour arrays must be in RGB order (convert OpenCV's BGR first).
    """
    _check_args(channels, size, crop)
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(arr).__name__}")
    if arr.dtype != np.uint8:
        raise TypeError(f"expected a uint8 array, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))) or 0 in arr.shape:
        raise ValueError(
            f"expected an array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {arr.shape}"
        )
    # uint8 (H, W) / (H, W, 3) / (H, W, 4) arrays map to Pillow's "L" / "RGB" / "RGBA"
    return _finish(Image.fromarray(np.ascontiguousarray(arr)), channels, size, crop)
