"""Face detection and alignment settings: part of a model's preprocessing config (JSON-serialisable)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

DETECTORS = ("haar", "mmod", "none")
SELECTS = ("largest", "central")
EYE_MODES = ("detect", "estimate", "landmarks")
ALIGNMENTS = ("eyes", "dlib_chip")
FACE_CASCADES = (
    "haarcascade_frontalface_default.xml",
    "haarcascade_frontalface_alt.xml",
    "haarcascade_frontalface_alt2.xml",
)
EYE_CASCADES = ("haarcascade_eye.xml", "haarcascade_eye_tree_eyeglasses.xml")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"AlignConfig.{name} must be one of {list(allowed)}, got {value!r}")


def _number(name: str, value: Any, lo: float, hi: float, lo_open: bool = True, hi_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"AlignConfig.{name} must be a finite number, got {value!r}")
    too_low = value <= lo if lo_open else value < lo
    too_high = value >= hi if hi_open else value > hi
    if too_low or too_high:
        lb, hb = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ValueError(f"AlignConfig.{name} must be in {lb}{lo}, {hi}{hb}, got {value!r}")
    return float(value)


def _integer(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"AlignConfig.{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class AlignConfig:
    """How faces are found, chosen and aligned.

    detector: "haar" (OpenCV Haar cascade), "mmod" (dlib's CNN face detector, siamface.faces.mmod) or "none"
    (input already is a face crop: centre square + resize).
    select: which face is used when there are several: "largest" box or the most "central" one.
    eye_y: fraction of the output height where both eyes go; eye_distance: fraction of the output width
    between the eye centres (smaller = more margin around the face).
    eyes: "detect" (Haar eye cascade, falling back to fixed fractions of the face box), "estimate" (always
    the fallback: faster and deterministic given the box) or "landmarks" (the mean of each eye's two corners
    among dlib's 5 landmarks).
    alignment: "eyes" (the similarity that puts the eyes at eye_y / eye_distance) or "dlib_chip" (dlib's face
    chip from the 5 landmarks, `get_face_chip_details` with chip_padding: what dlib's face descriptor expects).
    upsample: how many times the image is doubled before the mmod detector runs (finds faces down to about
    80 / 2^upsample pixels, at about 4^upsample the cost; face_recognition uses 1).
    scale_factor / min_neighbors / min_size: face cascade settings (Haar only); min_size is the smallest face
    side as a fraction of the image's shorter side. eye_scale_factor / eye_min_neighbors: the same for the eye cascade.
    max_side: images whose longer side exceeds it are downscaled for the Haar detector (0 = never); the mmod
    detector ignores it and runs at full resolution up to a pixel budget (siamface.faces.detect.mmod_scale);
    landmarks and alignment always use the full image.
    on_missing: "error" (NoFaceError: verify, the service) or "center": a centred square of fallback_box of
    the shorter side stands in for the face (datasets of tight crops where the cascade sometimes misses,
    e.g. AT&T). Protocol evaluation always falls back, since it may not drop pairs.
    """

    detector: str = "haar"
    select: str = "largest"
    eye_y: float = 0.38
    eye_distance: float = 0.36
    eyes: str = "detect"
    face_cascade: str = "haarcascade_frontalface_default.xml"
    eye_cascade: str = "haarcascade_eye.xml"
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: float = 0.2
    eye_scale_factor: float = 1.05
    eye_min_neighbors: int = 3
    max_side: int = 1024
    on_missing: str = "error"
    fallback_box: float = 0.5
    alignment: str = "eyes"
    chip_padding: float = 0.25
    upsample: int = 0

    def __post_init__(self) -> None:
        _choice("detector", self.detector, DETECTORS)
        _choice("select", self.select, SELECTS)
        _choice("eyes", self.eyes, EYE_MODES)
        _choice("face_cascade", self.face_cascade, FACE_CASCADES)
        _choice("eye_cascade", self.eye_cascade, EYE_CASCADES)
        _choice("on_missing", self.on_missing, ("error", "center"))
        _choice("alignment", self.alignment, ALIGNMENTS)
        checked = {
            "eye_y": _number("eye_y", self.eye_y, 0.0, 1.0),
            "eye_distance": _number("eye_distance", self.eye_distance, 0.0, 1.0),
            "scale_factor": _number("scale_factor", self.scale_factor, 1.0, 2.0, hi_open=False),
            "eye_scale_factor": _number("eye_scale_factor", self.eye_scale_factor, 1.0, 2.0, hi_open=False),
            "min_size": _number("min_size", self.min_size, 0.0, 1.0, hi_open=False),
            "min_neighbors": _integer("min_neighbors", self.min_neighbors, 0),
            "eye_min_neighbors": _integer("eye_min_neighbors", self.eye_min_neighbors, 0),
            "max_side": _integer("max_side", self.max_side, 0),
            "fallback_box": _number("fallback_box", self.fallback_box, 0.0, 1.0, hi_open=False),
            "chip_padding": _number("chip_padding", self.chip_padding, 0.0, 2.0, lo_open=False),
            "upsample": _integer("upsample", self.upsample, 0),
        }
        if checked["upsample"] > 3:
            raise ValueError(f"AlignConfig.upsample must be at most 3, got {self.upsample!r}")
        if 0 < checked["max_side"] < 32:
            raise ValueError(f"AlignConfig.max_side must be 0 (no limit) or >= 32, got {self.max_side!r}")
        for name, value in checked.items():  # normalise e.g. JSON ints to floats
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlignConfig:
        """Inverse of to_dict; missing keys take defaults, unknown keys raise ValueError."""
        if not isinstance(data, dict):
            raise ValueError(f"AlignConfig.from_dict needs a dict, got {type(data).__name__}")  # noqa: TRY004
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown AlignConfig keys {unknown}; expected some of {sorted(known)}")
        return cls(**data)


DEFAULT_CONFIG = AlignConfig()
# dlib's pipeline (face_recognition's, for dlib's face descriptor): MMOD boxes, 5 landmarks, 150x150 chips
DLIB_CHIP = AlignConfig(detector="mmod", alignment="dlib_chip", eyes="landmarks")
