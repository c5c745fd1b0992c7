"""Offline face detection: the Haar cascades that ship with opencv-python or dlib's MMOD CNN detector
(siamface.faces.mmod); Haar eye detection; dlib's 5 face landmarks (siamface.faces.landmarks) for any box.

Coordinates are continuous image coordinates: pixel (row i, column j) covers [j, j+1) x [i, i+1), so a box
(x, y, w, h) has its centre at (x + w/2, y + h/2). Points are (x, y).
"""

from __future__ import annotations

import itertools
import math
import threading
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from siamface.faces.config import DEFAULT_CONFIG, AlignConfig

if TYPE_CHECKING:  # OpenCV is imported where it is used (opencv()): the mmod pipeline needs it only for huge photos
    import cv2

Point = tuple[float, float]

# Eye centres as fractions (x of box width, y of box height) of the haarcascade_frontalface_default box.
# Measured: 2,000 random LFW deep-funneled images (random.seed(0); random.sample of the sorted paths), default
# AlignConfig, detect_faces then detect_eyes on the chosen box: a face in 1,985, both eyes (plausible pair)
# in 1,525; medians of (eye - box corner) / box size over those 1,525: left (0.312, 0.396), right (0.670,
# 0.388); std ~0.03 in x, ~0.02 in y. The y medians differ by a 1.3 degree tilt of the Haar eye boxes on
# these upright (funneled) faces, so the fallback uses their mean for both eyes and keeps the box upright.
LEFT_EYE_FRAC: Point = (0.312, 0.392)
RIGHT_EYE_FRAC: Point = (0.670, 0.392)

# The eye cascade runs on the top EYE_REGION of the face box. Eye boxes (about 0.2 of the face width) centred
# at 0.39 of the box height reach below 0.5, so the "upper half" finds both eyes on only ~41% of LFW faces,
# 0.6 on ~66% (scale 1.1) or ~77% (scale 1.05).
EYE_REGION = 0.6
EYE_MIN, EYE_MAX = 0.1, 0.5  # eye box side as a fraction of the face box width
MAX_EYE_ANGLE = 25.0  # degrees
EYE_DIST_RANGE = (0.25, 0.65)  # distance between eye centres as a fraction of the face box width

# Confidence: detectMultiScale3(outputRejectLevels=True) gives each box the "level weight", the summed
# weak-classifier output of the cascade's last stage (larger = more face-like). On 300 LFW images the boxes
# at the image centre (true faces) had median weight 7.9 (5th percentile 4.3), the others (mostly false
# detections) median 2.7. A logistic map puts 3 at 0.5: confidence = 1 / (1 + exp(-(weight - 3) / 2)),
# so a typical true face scores ~0.92 and a typical false detection ~0.45.
CONF_CENTER, CONF_SCALE = 3.0, 2.0

# The mmod detector runs at full resolution on images up to this many pixels (a 2,048 x 2,048 photo; its
# tiled pyramid is about 3.3x that in float32 RGB: ~170 MB) and downscales larger ones to it, so a 12 Mpx photo
# finds faces from ~135 px and one at the 40 Mpx upload limit from ~250 px; time grows with the pixels.
MMOD_MAX_PIXELS = 2048 * 2048


Landmarks = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class FaceBox:
    """A face box in image pixels (inside the image), the detector's confidence and, once computed, dlib's
    5 landmarks (x, y) in whole pixels (see siamface.faces.landmarks for their order).

    confidence: Haar: a logistic map of the cascade's level weight, in (0, 1); mmod: dlib's detection score
    (> 0, about 1 for a clear frontal face), as dlib.cnn_face_detection_model_v1 reports it.
    """

    x: int
    y: int
    w: int
    h: int
    confidence: float
    landmarks: Landmarks | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict {x, y, w, h, confidence} (and landmarks [[x, y] x 5] when computed)."""
        out: dict[str, Any] = {"x": self.x, "y": self.y, "w": self.w, "h": self.h, "confidence": self.confidence}
        if self.landmarks is not None:
            out["landmarks"] = [list(p) for p in self.landmarks]
        return out

    @property
    def dlib_rect(self) -> tuple[int, int, int, int]:
        """The box as a dlib rectangle (left, top, right, bottom), inclusive."""
        return (self.x, self.y, self.x + self.w - 1, self.y + self.h - 1)

    @property
    def center(self) -> Point:
        """Centre (x, y) of the box."""
        return (self.x + self.w / 2.0, self.y + self.h / 2.0)


_local = threading.local()  # CascadeClassifier objects are not shared between threads
_IMPORT = threading.Lock()


def opencv() -> Any:
    """cv2, imported on first use under a lock: OpenCV's package replaces itself while it loads, so two
    threads importing it at once could see a half-made module (the dlib chip pipeline rarely needs it)."""
    with _IMPORT:
        import cv2

    return cv2


def _cascade(name: str) -> cv2.CascadeClassifier:
    """Load (once per thread) a cascade from cv2.data.haarcascades."""
    cv2 = opencv()  # noqa: F811 - the module itself, imported above for annotations only
    cache: dict[str, Any] = _local.__dict__.setdefault("cascades", {})
    if name not in cache:
        path = cv2.data.haarcascades + name
        clf = cv2.CascadeClassifier(path)
        if clf.empty():
            raise RuntimeError(f"could not load the OpenCV cascade {path}; reinstall opencv-python-headless")
        cache[name] = clf
    return cache[name]


def check_image(image: Any) -> np.ndarray:
    """Return image if it is uint8 HxW, HxWx1 or HxWx3 (RGB) with both sides >= 1; else ValueError."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")  # noqa: TRY004
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got dtype {image.dtype}")
    ok_shape = image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))
    if not ok_shape or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must be HxW (grey) or HxWx3 (RGB), got shape {image.shape}")
    return image


def to_gray(image: np.ndarray) -> np.ndarray:
    """Grey uint8 HxW view or copy of a checked image."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    cv2 = opencv()
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def _confidence(weight: float) -> float:
    return float(1.0 / (1.0 + math.exp(-(float(weight) - CONF_CENTER) / CONF_SCALE)))


def _dlib_models() -> tuple[Any, Any]:
    """The MMOD detector and the 5-point predictor, loaded once per thread from the shipped weights."""
    if "dlib" not in _local.__dict__:
        from siamface.faces.landmarks import ShapePredictor
        from siamface.faces.mmod import MMODDetector

        _local.dlib = (MMODDetector.load(), ShapePredictor.load())
    return _local.dlib


def with_landmarks(image: np.ndarray, faces: list[FaceBox]) -> list[FaceBox]:
    """The faces with dlib's 5 landmarks predicted from each box (boxes that have them are kept)."""
    todo = [i for i, f in enumerate(faces) if f.landmarks is None]
    if not todo:
        return faces
    points = _dlib_models()[1](check_image(image), np.array([faces[i].dlib_rect for i in todo]))
    out = list(faces)
    for i, pts in zip(todo, points):
        out[i] = replace(faces[i], landmarks=tuple((int(x), int(y)) for x, y in pts))
    return out


def mmod_scale(height: int, width: int, upsample: int = 0) -> float:
    """The factor an image is resized by before the mmod detector: 1 (full resolution) up to MMOD_MAX_PIXELS
    (times 4^-upsample, the detector's own doubling), less above, so that the smallest face found is
    80 / 2^upsample pixels at full resolution and grows as sqrt(pixels / MMOD_MAX_PIXELS) above."""
    budget = MMOD_MAX_PIXELS / 4**upsample
    return 1.0 if height * width <= budget else math.sqrt(budget / (height * width))


def _detect_mmod(image: np.ndarray, cfg: AlignConfig) -> list[FaceBox]:
    """dlib's CNN detector (cfg.upsample), boxes clipped to the image; landmarks from dlib's own boxes.

    cfg.max_side does not apply (it shrank every photo to 1,024 px, losing faces under ~160 px in a 2 Mpx
    photo): the detector sees the full resolution up to a pixel budget (mmod_scale)."""
    height, width = image.shape[:2]
    scale, small = mmod_scale(height, width, cfg.upsample), image
    if scale != 1.0:
        cv2 = opencv()
        small = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
    detector, predictor = _dlib_models()
    found = detector([small], upsample=cfg.upsample)[0]
    if not found:
        return []
    rects = np.array([d.rect for d in found], np.float64)
    if scale != 1.0:  # back to the full image: box corners and the inclusive right/bottom edges
        rects[:, :2] = np.round(rects[:, :2] / scale)
        rects[:, 2:] = np.round((rects[:, 2:] + 1) / scale) - 1
    points = predictor(image, rects)
    boxes = []
    for (left, top, right, bottom), det, pts in zip(rects.astype(int).tolist(), found, points):
        x0, y0, x1, y1 = max(0, left), max(0, top), min(width - 1, right), min(height - 1, bottom)
        if x1 >= x0 and y1 >= y0:
            boxes.append(FaceBox(x0, y0, x1 - x0 + 1, y1 - y0 + 1, float(det.confidence),
                                 tuple((int(x), int(y)) for x, y in pts)))
    return boxes


def _order(boxes: list[FaceBox], select: str, width: int, height: int) -> list[FaceBox]:
    if select == "largest":
        return sorted(boxes, key=lambda b: (-b.w * b.h, -b.confidence))
    cx, cy = width / 2.0, height / 2.0
    return sorted(boxes, key=lambda b: (math.hypot(b.center[0] - cx, b.center[1] - cy), -b.w * b.h))


def detect_faces(image: np.ndarray, cfg: AlignConfig = DEFAULT_CONFIG) -> list[FaceBox]:
    """All faces found by the configured detector, chosen one first (cfg.select), boxes clipped to the image.

    The mmod detector also gives each face its 5 landmarks (predicted from dlib's unclipped box)."""
    if cfg.detector not in ("haar", "mmod"):
        raise ValueError(f"detect_faces needs a detector; AlignConfig.detector is {cfg.detector!r}")
    if cfg.detector == "mmod":
        image = check_image(image)
        return _order(_detect_mmod(image, cfg), cfg.select, image.shape[1], image.shape[0])
    cv2 = opencv()
    gray = to_gray(check_image(image))
    height, width = gray.shape
    scale = 1.0
    if cfg.max_side and max(height, width) > cfg.max_side:
        scale = cfg.max_side / max(height, width)
        gray = cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))),
                          interpolation=cv2.INTER_AREA)
    side = max(1, round(cfg.min_size * min(gray.shape)))
    rects, _levels, weights = _cascade(cfg.face_cascade).detectMultiScale3(
        gray, scaleFactor=cfg.scale_factor, minNeighbors=cfg.min_neighbors, minSize=(side, side),
        outputRejectLevels=True)
    boxes = []
    for (x, y, w, h), weight in zip(np.reshape(rects, (-1, 4)), np.ravel(weights)):
        x0, y0 = max(0, round(x / scale)), max(0, round(y / scale))
        x1, y1 = min(width, round((x + w) / scale)), min(height, round((y + h) / scale))
        if x1 > x0 and y1 > y0:
            boxes.append(FaceBox(x0, y0, x1 - x0, y1 - y0, _confidence(weight)))
    return _order(boxes, cfg.select, width, height)


def landmark_eyes(landmarks: Landmarks) -> tuple[Point, Point]:
    """Eye centres (left-in-image, right-in-image): the mean of each eye's two corners among dlib's 5 points
    (points 0-1: the eye on the image's right, 2-3: the eye on the image's left)."""
    p = np.asarray(landmarks, np.float64) + 0.5  # whole-pixel landmarks -> continuous coordinates
    return (float(p[2:4, 0].mean()), float(p[2:4, 1].mean())), (float(p[0:2, 0].mean()), float(p[0:2, 1].mean()))


def estimate_eyes(box: FaceBox) -> tuple[Point, Point]:
    """Fallback eye centres (left-in-image, right-in-image) at fixed fractions of a Haar face box."""
    left = (box.x + LEFT_EYE_FRAC[0] * box.w, box.y + LEFT_EYE_FRAC[1] * box.h)
    right = (box.x + RIGHT_EYE_FRAC[0] * box.w, box.y + RIGHT_EYE_FRAC[1] * box.h)
    return left, right


def plausible_eyes(left: Point, right: Point, box: FaceBox) -> bool:
    """True when the pair is roughly level, apart by 0.25-0.65 box widths and on both sides of the centre."""
    dx, dy = right[0] - left[0], right[1] - left[1]
    dist = math.hypot(dx, dy)
    mid = box.x + box.w / 2.0
    return (left[0] < mid < right[0]
            and EYE_DIST_RANGE[0] * box.w <= dist <= EYE_DIST_RANGE[1] * box.w
            and abs(math.degrees(math.atan2(dy, dx))) < MAX_EYE_ANGLE)


def detect_eyes(image: np.ndarray, box: FaceBox,
                cfg: AlignConfig = DEFAULT_CONFIG) -> tuple[Point, Point] | None:
    """Eye centres (left-in-image, right-in-image) from the Haar eye cascade in the face box, or None.

    Among the plausible pairs (see plausible_eyes) the one closest to estimate_eyes(box) wins.
    """
    gray = to_gray(check_image(image))
    x0, y0 = max(0, box.x), max(0, box.y)
    x1 = min(gray.shape[1], box.x + box.w)
    y1 = min(gray.shape[0], box.y + round(box.h * EYE_REGION))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    lo, hi = max(1, int(box.w * EYE_MIN)), max(2, int(box.w * EYE_MAX))
    rects = _cascade(cfg.eye_cascade).detectMultiScale(
        gray[y0:y1, x0:x1], scaleFactor=cfg.eye_scale_factor, minNeighbors=cfg.eye_min_neighbors,
        minSize=(lo, lo), maxSize=(hi, hi))
    centres = [(x0 + ex + ew / 2.0, y0 + ey + eh / 2.0) for ex, ey, ew, eh in np.reshape(rects, (-1, 4))]
    prior_l, prior_r = estimate_eyes(box)
    best: tuple[float, Point, Point] | None = None
    for a, b in itertools.combinations(centres, 2):
        left, right = (a, b) if a[0] <= b[0] else (b, a)
        if not plausible_eyes(left, right, box):
            continue
        cost = math.dist(left, prior_l) + math.dist(right, prior_r)
        if best is None or cost < best[0]:
            best = (cost, left, right)
    return None if best is None else (best[1], best[2])
