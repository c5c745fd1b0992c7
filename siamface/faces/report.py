"""The face report: how the face of a photo was found, in one shape for every answer (verify, enroll,
identify, the service, watch) and every stored enrollment.

    {"box": the face used {x, y, w, h, confidence[, landmarks]} or None (the whole image was the input),
     "faces": every face found (boxes), "faces_in_photo": how many (1 for a whole image),
     "eyes": [[x, y], [x, y]] or None, "eyes_source": "detected" | "estimated" | "landmarks" | "fallback" |
     "none", "landmarks": the used face's points (may be empty)}

A very large photo is decoded smaller (a JPEG at 1/2, 1/4 or 1/8 scale by its decoder, anything else
resized) before detection; its boxes, eyes and landmarks are then in the reduced image's pixels, and
`rescale_report` maps them back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from .align import FaceCrop


class FaceReport(TypedDict):
    box: dict[str, Any] | None
    faces: list[dict[str, Any]]
    faces_in_photo: int
    eyes: list[list[float]] | None
    eyes_source: str
    landmarks: list[list[float]]


def face_report(crop: FaceCrop | None) -> FaceReport:
    """The report of an aligned face (None: the whole image is the model's input, nothing was detected)."""
    if crop is None:
        return {"box": None, "faces": [], "faces_in_photo": 1, "eyes": None, "eyes_source": "none", "landmarks": []}
    used = None if crop.used is None else crop.used.to_dict()
    points = [] if crop.used is None or crop.used.landmarks is None else [list(p) for p in crop.used.landmarks]
    return {"box": used, "faces": [f.to_dict() for f in crop.faces], "faces_in_photo": max(1, len(crop.faces)),
            "eyes": None if crop.eyes is None else [list(map(float, p)) for p in crop.eyes],
            "eyes_source": crop.eyes_source,
            "landmarks": points}


_BOX_KEYS = ("x", "y", "w", "h")
_POINT_KEYS = ("eyes", "landmarks")


def rescale_report(report: Any, factor: float) -> Any:
    """A copy of a face report (dicts and lists of them) with every box side and corner and every point
    multiplied by `factor` (box values stay whole pixels); everything else is kept as it is."""
    if factor == 1.0:
        return report
    if isinstance(report, list):
        return [rescale_report(r, factor) for r in report]
    if not isinstance(report, dict):
        return report
    out: dict[str, Any] = {}
    for key, value in report.items():
        if key in _BOX_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = round(value * factor) if isinstance(value, int) else value * factor
        elif key in _POINT_KEYS and isinstance(value, list):
            out[key] = [_point(p, factor) for p in value]
        else:
            out[key] = rescale_report(value, factor)
    return out


def _point(p: Any, factor: float) -> Any:
    if isinstance(p, (list, tuple)) and len(p) == 2:
        return [type(v)(round(v * factor)) if isinstance(v, int) else v * factor for v in p]
    return p
