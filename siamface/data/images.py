"""Decode image files (or in-memory arrays) into uint8 (C, H, W) arrays of a fixed size.

One code path serves files and arrays, so training, evaluation and serving see identical pixels.
Conventions:

* ``channels=1`` is Pillow's "L" conversion (ITU-R 601-2 luma); ``channels=3`` is "RGB". Alpha is dropped.
  1-bit images (Omniglot) become 0 (black) / 255 (white): strokes stay dark on a white background.
  16-bit and float grey images are scaled from 0..65535 (or 0..1 for float) to 0..255.
* JPEG EXIF orientation is applied (phone photos are often stored rotated).
* Only regular files are read (a FIFO or ``/dev/zero`` is refused, never opened for reading), at most
  ``MAX_FILE_BYTES`` of them; the pixel count is read from the header and refused above ``MAX_PIXELS``
  before anything is decoded (`check_image_header`, which the service uses on uploaded bytes too).
  Pillow's warnings (``DecompressionBombWarning``, corrupt EXIF) never reach the user: the limits above
  are the policy.
* With ``size``, the centred square of side ``crop * min(H, W)`` is resized to ``size x size`` with
  Pillow's BILINEAR filter. Pillow widens the bilinear (triangle) kernel when it downscales, so the
  result is antialiased (area-aware) rather than the aliased point-sampled bilinear of OpenCV; it is
  also exact (no ``reducing_gap`` shortcut), so results do not depend on the input size's factors.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from siamface.errors import ImageError

__all__ = ["MAX_FILE_BYTES", "MAX_PIXELS", "check_image_header", "image_from_array", "load_image",
           "read_image_bytes"]

MAX_FILE_BYTES = 50_000_000  # bytes read from one image file at most (a phone photo is 2-10 MB)
MAX_PIXELS = 40_000_000  # width x height at most (a 40 Mpx photo decodes to 120 MB of RGB)
RESAMPLE = Image.Resampling.BILINEAR
_MODES = {1: "L", 3: "RGB"}


def _check_args(channels: int, size: int | None, crop: float) -> None:
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be a positive int or None, got {size!r}")
    if not isinstance(crop, (int, float)) or not 0.0 < float(crop) <= 1.0:
        raise ValueError(f"crop must be a fraction in (0, 1], got {crop!r}")


_FILE_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
_QUIET = threading.Lock()  # warnings.catch_warnings swaps process-wide state: one thread at a time


@contextmanager
def _quiet() -> Iterator[None]:
    """No library warning escapes (they are recorded and dropped); our own limits say what is refused."""
    with _QUIET, warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        yield


def _file_error(p: Path, e: OSError) -> ImageError:
    if e.errno == errno.ENOENT:
        return ImageError(f"{p}: no such file", reason="missing")
    if e.errno == errno.ELOOP:
        return ImageError(f"{p}: symlink loop (following its links never reaches a file)", reason="unreadable")
    if e.errno == errno.EISDIR:
        return ImageError(f"{p}: is a directory, not an image file", reason="not a regular file")
    return ImageError(f"{p}: cannot read file ({e.strerror or e})", reason="unreadable")


def _open_regular(p: Path) -> IO[bytes]:
    """Open `p` for reading only if it is (a symlink to) a regular file. O_NONBLOCK: opening a FIFO
    must not wait for a writer; the kind is then checked on the open descriptor (no race with a swap)."""
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise _file_error(p, e) from e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise ImageError(f"{p}: is a directory, not an image file", reason="not a regular file")
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "a special file")
        raise ImageError(f"{p}: {kind}, not a regular file; only image files are read", reason="not a regular file")
    return os.fdopen(fd, "rb")


def read_image_bytes(path: str | PathLike[str], max_bytes: int | None = None) -> bytes:
    """The bytes of an image file: a regular file (after symlinks) of at most `max_bytes`
    (default MAX_FILE_BYTES), else ImageError naming the file and the problem. Never reads past the cap."""
    p = Path(path)
    cap = MAX_FILE_BYTES if max_bytes is None else max_bytes
    try:
        with _open_regular(p) as f:
            data = f.read(cap + 1)
    except OSError as e:
        raise _file_error(p, e) from e
    if len(data) > cap:
        raise ImageError(f"{p}: file too large (over {cap / 1e6:g} MB, the limit for one image)", reason="too large")
    if not data:
        raise ImageError(f"{p}: empty file", reason="unreadable")
    return data


def _open_checked(data: bytes, name: str, max_pixels: int | None) -> Image.Image:
    """Image.open (header only) and the pixel-count check, inside _quiet(); errors name `name`."""
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as e:
        raise ImageError(f"{name}: not a recognised image format", reason="unreadable") from e
    except Image.DecompressionBombError as e:  # Pillow's own limit (2x MAX_IMAGE_PIXELS) is above ours
        raise ImageError(f"{name}: image too large ({e}); the limit is {limit / 1e6:g} Mpx",
                         reason="too large") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{name}: corrupt or truncated image ({e})", reason="unreadable") from e
    w, h = im.size
    if w * h > limit:
        im.close()
        raise ImageError(f"{name}: image too large ({w}x{h} = {w * h / 1e6:.1f} Mpx; the limit is "
                         f"{limit / 1e6:g} Mpx)", reason="too large")
    return im


def check_image_header(source: str | PathLike[str] | bytes, max_pixels: int | None = None,
                       max_bytes: int | None = None) -> tuple[int, int, str]:
    """(width, height, format) from an image's header, without decoding its pixels; ImageError when the
    file is not a regular file, over `max_bytes` (default MAX_FILE_BYTES), not an image, or over `max_pixels`
    (default MAX_PIXELS). For the service: call it on uploaded bytes before decoding them."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), "uploaded image"
        cap = MAX_FILE_BYTES if max_bytes is None else max_bytes
        if len(data) > cap:
            raise ImageError(f"{name}: too large (over {cap / 1e6:g} MB, the limit for one image)", reason="too large")
    else:
        data, name = read_image_bytes(source, max_bytes), str(source)
    with _quiet(), _open_checked(data, name, max_pixels) as im:
        return im.size[0], im.size[1], str(im.format)


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
    path: str | PathLike[str], channels: int = 1, size: int | None = None, crop: float = 1.0,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode an image file to a uint8 array (channels, H, W); H = W = size when size is given.

    Raises ImageError (naming the path) for a missing, empty, unreadable, corrupt or non-image file, one that
    is not a regular file, over MAX_FILE_BYTES, or over `max_pixels` (default MAX_PIXELS) by its header.
    """
    _check_args(channels, size, crop)
    data = read_image_bytes(path)
    name = str(path)
    with _quiet():
        try:
            with _open_checked(data, name, max_pixels) as im:
                im.load()  # full decode here, so truncated data fails now rather than later
                img = ImageOps.exif_transpose(im)
                return _finish(img, channels, size, crop)
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
            if isinstance(e, ImageError):
                raise
            raise ImageError(f"{name}: corrupt or truncated image ({e})", reason="unreadable") from e


def decode_image(data: bytes, name: str, channels: int = 3, max_side: int | None = None,
                 max_pixels: int | None = None) -> tuple[np.ndarray, float]:
    """Encoded image bytes (an upload, a request body) -> (uint8 (H, W, channels) pixels, scale), with EXIF
    orientation and the file decoder's conversions (16-bit, palette, alpha): the one decoder of bytes that
    the gallery and the service share with `load_image`. A photo longer than `max_side` comes back reduced
    (a JPEG decoded at reduced size by libjpeg's DCT scaling, far cheaper; others resized); `scale` is the
    pixels' size over the original's (1.0 when not reduced). ImageError names `name`."""
    if not data:
        raise ImageError(f"{name}: empty file", reason="empty")
    fmt = ""
    with _quiet():
        try:
            with _open_checked(data, name, max_pixels) as im:
                fmt, original = f"{im.format} " if im.format else "", max(im.size)
                if max_side and im.format == "JPEG" and original > max_side:
                    f = max_side / original
                    im.draft(im.mode, (max(1, int(im.size[0] * f)), max(1, int(im.size[1] * f))))
                im.load()
                px = np.asarray(_convert(ImageOps.exif_transpose(im), channels), dtype=np.uint8)
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
            if isinstance(e, ImageError):
                raise
            raise ImageError(f"{name}: corrupt or truncated {fmt}image ({e})", reason="unreadable") from e
    if max_side and max(px.shape[:2]) > max_side:
        import cv2

        f = max_side / max(px.shape[:2])
        px = cv2.resize(px, (max(1, round(px.shape[1] * f)), max(1, round(px.shape[0] * f))),
                        interpolation=cv2.INTER_AREA)
    px = np.ascontiguousarray(px if px.ndim == 3 else px[:, :, None])
    scale = max(px.shape[:2]) / original
    return px, 1.0 if abs(scale - 1.0) < 1e-9 else scale


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
