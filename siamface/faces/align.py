"""Face alignment (eye-based similarity, or dlib's face chip from 5 landmarks) and the one-call extract_face
(detect -> choose -> landmarks -> eyes -> align)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from siamface.errors import NoFaceError
from siamface.faces.chip import face_chip
from siamface.faces.config import DEFAULT_CONFIG, AlignConfig
from siamface.faces.detect import (
    FaceBox,
    Point,
    check_image,
    detect_eyes,
    detect_faces,
    estimate_eyes,
    landmark_eyes,
    opencv,
    with_landmarks,
)


def _check_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2:
        raise ValueError(f"size must be an integer >= 2, got {size!r}")
    return int(size)


def eye_targets(size: int, cfg: AlignConfig) -> tuple[Point, Point]:
    """Where the left and right eye land in a size x size output (continuous coordinates)."""
    half = cfg.eye_distance * size / 2.0
    y = cfg.eye_y * size
    return (size / 2.0 - half, y), (size / 2.0 + half, y)


def similarity_matrix(left_eye: Point, right_eye: Point, size: int, cfg: AlignConfig) -> np.ndarray:
    """2x3 similarity (rotation, uniform scale, translation) mapping the eyes onto eye_targets.

    Works in continuous coordinates (pixel j spans [j, j+1)); align_face converts it for cv2.warpAffine.
    """
    size = _check_size(size)
    src = np.asarray([left_eye, right_eye], dtype=np.float64)
    if src.shape != (2, 2) or not np.all(np.isfinite(src)):
        raise ValueError(f"eyes must be two finite (x, y) points, got {left_eye!r}, {right_eye!r}")
    dst = np.asarray(eye_targets(size, cfg), dtype=np.float64)
    vs, vd = src[1] - src[0], dst[1] - dst[0]
    norm = float(vs @ vs)
    if norm < 1e-12:
        raise ValueError(f"the two eye points coincide: {left_eye!r}")
    # complex-number form: z -> a*z + t with a = vd / vs
    a = complex(*vd) / complex(*vs)
    rot = np.array([[a.real, -a.imag], [a.imag, a.real]])
    t = dst[0] - rot @ src[0]
    return np.hstack([rot, t[:, None]])


def align_face(image: np.ndarray, left_eye: Point, right_eye: Point, size: int,
               cfg: AlignConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Warp so the eyes are level at (cfg.eye_y, cfg.eye_distance) in a size x size uint8 output.

    left_eye is the eye on the image's left. The border is replicated; the channel count is kept.
    """
    cv2 = opencv()  # on first use: the dlib chip pipeline never needs OpenCV

    image = check_image(image)
    size = _check_size(size)
    m = similarity_matrix(left_eye, right_eye, size, cfg)
    src = image
    scale = math.hypot(m[0, 0], m[1, 0])
    if scale < 0.5:  # strong downscaling: shrink with INTER_AREA first so the warp does not alias
        h, w = image.shape[:2]
        nw, nh = max(1, round(w * scale * 2.0)), max(1, round(h * scale * 2.0))
        src = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        m = m.copy()
        m[:, :2] = m[:, :2] @ np.diag([w / nw, h / nh])  # small-image coords -> original coords first
    # continuous -> pixel-index coordinates (centre of pixel j at j): p_idx = p_cont - 0.5 on both sides
    m_pix = m.copy()
    m_pix[:, 2] += m[:, :2] @ np.array([0.5, 0.5]) - 0.5
    out = cv2.warpAffine(src, m_pix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if image.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out


def center_square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop of the whole image resized to size x size (for detector "none")."""
    cv2 = opencv()  # on first use: the dlib chip pipeline never needs OpenCV

    image = check_image(image)
    size = _check_size(size)
    h, w = image.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    crop = image[y0:y0 + s, x0:x0 + s]
    interp = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
    out = cv2.resize(crop, (size, size), interpolation=interp)
    if image.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out


@dataclass
class FaceCrop:
    """An aligned face and how it was found: every face box (with its 5 landmarks), the one used and where
    the eyes came from ("detected", "estimated", "landmarks", "fallback" or "none")."""

    image: np.ndarray
    faces: list[FaceBox] = field(default_factory=list)
    used: FaceBox | None = None
    eyes_source: str = "none"
    eyes: tuple[Point, Point] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The face report (siamface.faces.report: one shape everywhere), without the image."""
        from .report import face_report

        return face_report(self)


def central_box(image: np.ndarray, fraction: float = 0.5) -> FaceBox:
    """A stand-in face box for evaluation images where the detector finds none: a centred square of
    `fraction` of the shorter side (about a detected face's size on LFW's 250 px deep-funneled images)."""
    h, w = image.shape[:2]
    side = int(round(fraction * min(h, w)))
    return FaceBox((w - side) // 2, (h - side) // 2, side, side, 0.0)


def _detector_words(cfg: AlignConfig) -> str:
    if cfg.detector == "mmod":
        return f"dlib's MMOD detector, upsample={cfg.upsample}"
    return f"Haar cascade {cfg.face_cascade}, min_size={cfg.min_size} of the shorter side"


def align_box(image: np.ndarray, box: FaceBox, size: int, cfg: AlignConfig, fallback: bool = False) -> tuple[
        np.ndarray, tuple[Point, Point], str]:
    """(aligned image, eyes, eyes_source) for one face box and cfg's recipe (landmarks are predicted when the
    recipe needs them and the box has none); `fallback`: a stand-in box, whose eyes are never detected."""
    if box.landmarks is None and (cfg.alignment == "dlib_chip" or cfg.eyes == "landmarks"):
        box = with_landmarks(image, [box])[0]
    if cfg.alignment == "dlib_chip":
        return face_chip(image, np.asarray(box.landmarks), size, cfg.chip_padding), \
            landmark_eyes(box.landmarks), "landmarks"
    if cfg.eyes == "landmarks":
        eyes, source = landmark_eyes(box.landmarks), "landmarks"
    elif fallback:
        eyes, source = estimate_eyes(box), "fallback"
    else:
        eyes = detect_eyes(image, box, cfg) if cfg.eyes == "detect" else None
        source = "detected"
        if eyes is None:
            eyes, source = estimate_eyes(box), "estimated"
    return align_face(image, eyes[0], eyes[1], size, cfg), eyes, source


def extract_face(image: np.ndarray, size: int, cfg: AlignConfig = DEFAULT_CONFIG,
                 source: str | None = None, fallback: bool = False) -> FaceCrop:
    """Detect, choose (cfg.select), predict dlib's 5 landmarks of every face, and align to size x size:
    by the eyes (detected, estimated or from the landmarks) or as dlib's face chip (cfg.alignment).

    With cfg.detector == "none" the whole image is centre-cropped and resized (used=None).
    Raises NoFaceError (naming source when given) when no face is found, unless `fallback` (protocol
    evaluation, where no pair may be dropped) or cfg.on_missing == "center": then a central box stands in
    (eyes_source "fallback", or "landmarks" when the recipe uses them). ValueError for bad arguments.
    """
    image = check_image(image)
    size = _check_size(size)
    if cfg.detector == "none":
        return FaceCrop(image=center_square(image, size))
    faces = detect_faces(image, cfg)
    if not faces and (fallback or cfg.on_missing == "center"):
        box = with_landmarks(image, [central_box(image, cfg.fallback_box)])[0]
        out, eyes, eyes_source = align_box(image, box, size, cfg, fallback=True)
        return FaceCrop(image=out, faces=[], used=box, eyes_source=eyes_source, eyes=eyes)
    if not faces:
        where = f"{source}: " if source else ""
        raise NoFaceError(
            f"{where}no face found in the image ({image.shape[1]}x{image.shape[0]}; {_detector_words(cfg)}): "
            "expected an upright frontal face (images that already are face crops need no detection)")
    faces = with_landmarks(image, faces)
    out, eyes, eyes_source = align_box(image, faces[0], size, cfg)
    return FaceCrop(image=out, faces=faces, used=faces[0], eyes_source=eyes_source, eyes=eyes)
