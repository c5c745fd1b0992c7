"""Offline face detection (OpenCV Haar cascades) and eye-based alignment for siamface preprocessing."""

from siamface.faces.align import (
    FaceCrop,
    align_face,
    center_square,
    extract_face,
    eye_targets,
    similarity_matrix,
)
from siamface.faces.config import AlignConfig
from siamface.faces.detect import (
    FaceBox,
    detect_eyes,
    detect_faces,
    estimate_eyes,
    plausible_eyes,
)
from siamface.faces.files import extract_face_array, extract_face_file

__all__ = [
    "AlignConfig",
    "FaceBox",
    "FaceCrop",
    "align_face",
    "center_square",
    "detect_eyes",
    "detect_faces",
    "estimate_eyes",
    "extract_face",
    "extract_face_array",
    "extract_face_file",
    "eye_targets",
    "plausible_eyes",
    "similarity_matrix",
]
