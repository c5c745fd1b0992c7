"""Photos -> the faces a gallery stores or looks up: model input, aligned crop PNG, face report, provenance.

The model input of each face is computed exactly as `Verifier.inputs` computes it (same detector, same
alignment, same resizing), so a gallery score equals the verify probability of the same two photos. The
stored crop is that aligned face in colour, at the model's input size (a small PNG): re-embedding it with the
same model gives the same embedding, and another model takes it as a face crop (resized to its input).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image as PILImage

from .config import PreprocessConfig
from .data import decode_image, image_from_array, load_image
from .errors import MultipleFacesError
from .files import sha256_file

if TYPE_CHECKING:
    from .faces import FaceCrop
    from .verify import Verifier

@dataclass
class Photo:
    """A decoded photo (RGB, H x W x 3 uint8) with its name and the SHA-256 of its bytes."""

    rgb: np.ndarray
    source: str  # the file name stored with an enrollment
    sha256: str
    where: str = ""  # how errors name it (the path as given)
    scale: float = 1.0  # rgb pixels per pixel of the original (< 1: decoded at reduced size); reports are unscaled


@dataclass
class Face:
    """One face of a photo, ready to embed and to store."""

    input: np.ndarray  # the model's uint8 (C, S, S) input
    crop_png: bytes
    report: dict[str, Any]  # box, eyes, eyes_source, landmarks, faces_in_photo
    source: str
    sha256: str


def photo_of(image: str | Path | np.ndarray | bytes | Photo, source: str | None = None) -> Photo:
    """Decode a file path, encoded file bytes or an RGB/grey uint8 array; ImageError names the source.
    A `Photo` (already decoded, e.g. at reduced size by the service) is taken as it is."""
    if isinstance(image, Photo):
        return image
    if isinstance(image, (str, Path)):
        rgb = load_image(image, channels=3)
        name = source or Path(image).name
        sha = sha256_file(Path(image))
        return Photo(np.ascontiguousarray(rgb.transpose(1, 2, 0)), name, sha, str(image))
    if isinstance(image, (bytes, bytearray, memoryview)):
        data, name = bytes(image), source or "<upload>"
        return Photo(decode_image(data, name)[0], name, hashlib.sha256(data).hexdigest())
    if isinstance(image, np.ndarray):
        rgb = image_from_array(image, channels=3).transpose(1, 2, 0)
        sha = hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()
        return Photo(np.ascontiguousarray(rgb), source or "<array>", sha)
    raise TypeError(f"a photo must be a path, file bytes or a numpy array, got {type(image).__name__}")


def faces_of(photo: Photo, verifier: Verifier, every: bool = False, enroll: bool = False,
             select: str | None = None) -> list[Face]:
    """The faces of a photo under the verifier's preprocessing: the one it chooses (`select`, else the
    model's rule), exactly as `Verifier.inputs` finds it, or `every` face, the chosen one first.
    enroll=True: MultipleFacesError when the photo holds several faces and `select` does not say which."""
    if select is not None and select not in ("largest", "central"):
        raise ValueError(f"select must be 'largest' or 'central', got {select!r}")
    pre = verifier.preprocess
    if not pre.detects:
        from .preprocess import load_input_with_faces

        x, _ = load_input_with_faces(photo.rgb, pre)
        crop = image_from_array(photo.rgb, channels=3, size=pre.size, crop=pre.crop)
        report = {"box": None, "eyes": None, "eyes_source": "none", "landmarks": [], "faces_in_photo": 1}
        return [Face(x, _png(crop.transpose(1, 2, 0)), report, photo.source, photo.sha256)]
    from .faces import extract_face
    from .faces.multi import extract_all_faces

    cfg = replace(pre.align, select=select) if select else pre.align
    where = photo.where or photo.source
    crops = extract_all_faces(photo.rgb, pre.size, cfg, where) if every else \
        [extract_face(photo.rgb, pre.size, cfg, source=where)]
    if enroll and len(crops[0].faces) > 1 and select is None:
        raise MultipleFacesError(f"{where}: {len(crops[0].faces)} faces found; say which one to enroll "
                                 "(the largest or the central one) or crop the photo")
    return [_face(c, photo, pre) for c in crops]


def _face(c: FaceCrop, photo: Photo, pre: PreprocessConfig) -> Face:
    x = image_from_array(c.image, channels=pre.channels)  # as faces.extract_face_array makes the model input
    d = c.to_dict()
    report = {"box": d["used"], "eyes": d["eyes"], "eyes_source": d["eyes_source"],
              "landmarks": d.get("landmarks") or [], "faces_in_photo": max(1, len(c.faces))}
    if photo.scale != 1.0:  # analysed at reduced size: report in the original photo's pixels
        from .faces.report import rescale_report

        report = rescale_report(report, 1.0 / photo.scale)
    return Face(x, _png(c.image), report, photo.source, photo.sha256)


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(rgb.squeeze() if rgb.shape[-1] == 1 else rgb)).save(buf, "PNG")
    return buf.getvalue()


def png_to_rgb(data: bytes) -> np.ndarray:
    """A stored crop back to RGB (H, W, 3) uint8."""
    with PILImage.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def to_input(rgb: np.ndarray, pre: PreprocessConfig) -> np.ndarray:
    """A stored aligned crop as another model's input: taken as a face crop (no detection), resized."""
    return image_from_array(rgb, channels=pre.channels, size=pre.size, crop=1.0)
