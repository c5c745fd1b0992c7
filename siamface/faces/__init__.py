"""Offline face detection (OpenCV Haar cascades or dlib's MMOD CNN), dlib's 5 landmarks, and alignment (by the
eyes, or dlib's face chip) for siamface preprocessing."""

from siamface.faces.align import (
    FaceCrop,
    align_face,
    center_square,
    extract_face,
    eye_targets,
    similarity_matrix,
)
from siamface.faces.chip import face_chip
from siamface.faces.config import DLIB_CHIP, AlignConfig
from siamface.faces.detect import (
    FaceBox,
    detect_eyes,
    detect_faces,
    estimate_eyes,
    landmark_eyes,
    plausible_eyes,
    with_landmarks,
)
from siamface.faces.files import extract_face_array, extract_face_file

__all__ = [
    "DLIB_CHIP",
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
    "face_chip",
    "landmark_eyes",
    "plausible_eyes",
    "similarity_matrix",
    "with_landmarks",
]
