"""Photos -> their faces: the one road from a photo to the model's input, for verify, the gallery, the
service and watch.

`photo_of` decodes a path, file bytes or an array once (a `Photo`: pixels, name, SHA-256); `faces_for`
finds, chooses and aligns its faces under a model's preprocessing: each `Face` holds the model's input, the
aligned crop and the face report (siamface.faces.report, one shape everywhere). A gallery stores the crop in
colour at the model's input size (a small PNG): re-embedding it with the same model gives the same
embedding, and another model takes it as a face crop (resized to its input).
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
    from .config import AlignConfig
    from .faces import FaceCrop

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
    aligned: np.ndarray  # the aligned face, RGB (S, S, 3) (or grey), what a gallery keeps as its crop
    report: dict[str, Any]  # the face report (siamface.faces.report), in the original photo's pixels
    source: str
    sha256: str

    @property
    def crop_png(self) -> bytes:
        """The aligned face as a PNG (encoded on demand: verify never needs it)."""
        return _png(self.aligned)


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


def faces_for(photo: Photo, pre: PreprocessConfig, select: str | None = None, every: bool = False,
              boxes: list[tuple[int, int, int, int]] | None = None) -> list[Face]:
    """The faces of a photo under a model's preprocessing: the one it chooses (`select`: "largest" or
    "central", else the model's rule), or `every` face found, the chosen one first, or the faces at given
    `boxes` (x, y, w, h: a tracker's, found earlier), aligned as detected ones are. A model that takes whole
    images gets the photo as one face (cropped and resized as its preprocessing says). NoFaceError names
    the photo when no face is found."""
    if select is not None and select not in ("largest", "central"):
        raise ValueError(f"select must be 'largest' or 'central', got {select!r}")
    if not pre.detects:
        from .faces.report import face_report
        from .preprocess import load_input_with_faces

        x, _ = load_input_with_faces(photo.rgb, pre)
        crop = image_from_array(photo.rgb, channels=3, size=pre.size, crop=pre.crop).transpose(1, 2, 0)
        return [Face(x, crop, face_report(None), photo.source, photo.sha256)]
    from .faces import extract_face
    from .faces.multi import extract_all_faces

    cfg = replace(pre.align, select=select) if select else pre.align
    if boxes is not None:
        return [_face(_at_box(photo.rgb, b, pre.size, cfg), photo, pre) for b in boxes]
    where = photo.where or photo.source
    crops = extract_all_faces(photo.rgb, pre.size, cfg, where) if every else \
        [extract_face(photo.rgb, pre.size, cfg, source=where)]
    return [_face(c, photo, pre) for c in crops]


def _at_box(rgb: np.ndarray, b: tuple[int, int, int, int], size: int, cfg: AlignConfig) -> FaceCrop:
    """The face at a known box, with its landmarks, aligned by the recipe as a detected face is."""
    from .faces import FaceBox, FaceCrop
    from .faces.align import align_box
    from .faces.detect import with_landmarks

    box = with_landmarks(rgb, [FaceBox(*b, 1.0)])[0]
    image, eyes, source = align_box(rgb, box, size, cfg)
    return FaceCrop(image, faces=[box], used=box, eyes_source=source, eyes=eyes)


def one_face_to_enroll(faces: list[Face], where: str, select: str | None) -> Face:
    """The face an enrollment keeps: MultipleFacesError when the photo holds several and `select` does not
    say which (a gallery must not learn the wrong person)."""
    if select is None and faces[0].report["faces_in_photo"] > 1:
        raise MultipleFacesError(f"{where}: {faces[0].report['faces_in_photo']} faces found; say which one to "
                                 "enroll (the largest or the central one) or crop the photo")
    return faces[0]


def _face(c: FaceCrop, photo: Photo, pre: PreprocessConfig) -> Face:
    x = image_from_array(c.image, channels=pre.channels)  # as faces.extract_face_array makes the model input
    report = c.to_dict()
    if photo.scale != 1.0:  # analysed at reduced size: report in the original photo's pixels
        from .faces.report import rescale_report

        report = rescale_report(report, 1.0 / photo.scale)
    return Face(x, c.image, report, photo.source, photo.sha256)


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
