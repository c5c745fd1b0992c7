"""Face detection and alignment settings: `AlignConfig` lives in siamface.config (it is part of a model's
preprocessing); this module names the presets."""

from __future__ import annotations

from ..config import (  # noqa: F401 (the names this package has always offered)
    ALIGNMENTS,
    DETECTORS,
    EYE_CASCADES,
    EYE_MODES,
    FACE_CASCADES,
    SELECTS,
    AlignConfig,
)

DEFAULT_CONFIG = AlignConfig()
# dlib's pipeline (face_recognition's, for dlib's face descriptor): MMOD boxes, 5 landmarks, 150x150 chips
DLIB_CHIP = AlignConfig(detector="mmod", alignment="dlib_chip", eyes="landmarks")
