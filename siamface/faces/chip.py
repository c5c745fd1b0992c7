"""dlib's face chips in numpy: the 150x150 crop dlib's face descriptor was trained on.

A port of `get_face_chip_details` and `extract_image_chip` (dlib/image_transforms/interpolation.h,
D. E. King, Boost licence): a least-squares similarity (Umeyama 1991) maps dlib's 5-point mean face onto the
landmarks; the chip rectangle is centred on the mapped chip centre; faces much larger than the chip are first
reduced with dlib's `pyramid_down<2>` (separable [1 4 6 4 1] filter, integer arithmetic); each chip pixel then
samples the image bilinearly (pixels outside the image are 0) and is truncated to uint8. Every step keeps
dlib's arithmetic so the chips equal `dlib.get_face_chip`'s (tested on real LFW images).

Coordinates are dlib's: pixel (row i, column j) is the point (j, i).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# dlib's 5-point mean face in the unit square, in the 5-point predictor's part order (get_face_chip_details).
TEMPLATE_5 = np.array([
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
])
CHIP_SIZE = 150
CHIP_PADDING = 0.25

Rect = tuple[float, float, float, float]  # dlib drectangle: (left, top, right, bottom), inclusive


@dataclass(frozen=True)
class ChipDetails:
    """dlib's `chip_details`: the rectangle (before rotation), its angle (radians) and the chip's size."""

    rect: Rect
    angle: float
    rows: int
    cols: int


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dlib's `find_similarity_transform` (Umeyama's least squares): (M 2x2, t) with dst ~ M @ src + t."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mean_src, mean_dst = src.mean(axis=0), dst.mean(axis=0)
    ds, dd = src - mean_src, dst - mean_dst
    sigma_src = float((ds * ds).sum(axis=1).mean())
    cov = dd.T @ ds / len(src)
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    det = np.linalg.det(cov)
    if det < 0 or (det == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        s[1 if d[1] < d[0] else 0, 1 if d[1] < d[0] else 0] = -1.0
    r = u @ s @ vt
    c = 1.0 if sigma_src == 0 else float(np.trace(np.diag(d) @ s)) / sigma_src
    return c * r, mean_dst - c * r @ mean_src


def face_chip_details(landmarks: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> ChipDetails:
    """dlib's `get_face_chip_details` for 5 landmarks (x, y) in the predictor's order."""
    pts = np.asarray(landmarks, np.float64)
    if pts.shape != (5, 2) or not np.all(np.isfinite(pts)):
        raise ValueError(f"landmarks must be 5 finite (x, y) points, got shape {pts.shape}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    padding = float(np.float32(padding))  # dlib's Python binding takes the padding as a C float
    if not padding >= 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    chip_pts = (padding + TEMPLATE_5) / (2 * padding + 1) * size
    m, t = similarity_transform(chip_pts, pts)
    px, py = m @ np.array([1.0, 0.0])
    angle, scale = math.atan2(py, px), math.hypot(px, py)
    cx, cy = m @ np.array([size / 2.0, size / 2.0]) + t
    w, h = size * scale - 1, size * scale - 1  # dlib's centered_drect subtracts 1
    return ChipDetails((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), angle, int(size), int(size))


def _area(rect: Rect) -> float:
    x0, y0, x1, y1 = rect
    return 0.0 if (y0 > y1 or x0 > x1) else (x1 - x0 + 1) * (y1 - y0 + 1)


def _rect_down(rect: Rect) -> Rect:
    """pyramid_down<2>::rect_down: p -> p/2 - (1.25, 0.75) on both corners."""
    x0, y0, x1, y1 = rect
    return (x0 / 2.0 - 1.25, y0 / 2.0 - 0.75, x1 / 2.0 - 1.25, y1 / 2.0 - 0.75)


def _rotate(center: tuple[float, float], p: tuple[float, float], angle: float) -> tuple[float, float]:
    ca, sa = math.cos(angle), math.sin(angle)
    x, y = p[0] - center[0], p[1] - center[1]
    return ca * x - sa * y + center[0], sa * x + ca * y + center[1]


def _corners(rect: Rect) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = rect
    return [(x0, y0), (x1, y0), (x0, y1), (x1, y1)]  # tl, tr, bl, br


def pyramid_down2(image: np.ndarray) -> np.ndarray:
    """dlib's `pyramid_down<2>`: 5x5 binomial filter, every other pixel, integer division by 256.

    Output size ((H - 3) // 2, (W - 3) // 2); empty when a side is <= 8.
    """
    h, w = image.shape[:2]
    if h <= 8 or w <= 8:
        return np.zeros((0, 0) + image.shape[2:], np.uint8)
    x = image.astype(np.int32)
    nc = (w - 3) // 2
    cols = [x[:, k:k + 2 * nc:2] for k in range(5)]
    tmp = cols[0] + 4 * cols[1] + 6 * cols[2] + 4 * cols[3] + cols[4]
    nr = (h - 3) // 2
    rows = [tmp[k:k + 2 * nr:2] for k in range(5)]
    return ((rows[0] + 4 * rows[1] + 6 * rows[2] + 4 * rows[3] + rows[4]) // 256).astype(np.uint8)


def _round_rect(rect: Rect) -> tuple[int, int, int, int]:
    """drectangle -> rectangle: each side rounded with floor(x + 0.5)."""
    return tuple(int(math.floor(v + 0.5)) for v in rect)  # type: ignore[return-value]


def _bilinear(src: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """dlib's interpolate_bilinear at float positions: 0 where a neighbour is outside, truncated to uint8."""
    h, w = src.shape[:2]
    left, top = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    inside = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
    lr, tb = xs - left, ys - top
    li, ti = np.where(inside, left, 0), np.where(inside, top, 0)
    img = src.astype(np.float64)
    if img.ndim == 3:
        lr, tb, inside = lr[..., None], tb[..., None], inside[..., None]
    tl, tr = img[ti, li], img[ti, li + 1]
    bl, br = img[ti + 1, li], img[ti + 1, li + 1]
    val = (1 - tb) * ((1 - lr) * tl + lr * tr) + tb * ((1 - lr) * bl + lr * br)
    return np.where(inside, np.clip(val, 0, 255), 0).astype(np.uint8)


def _basic_chip(image: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    """dlib's basic_extract_image_chip: a plain copy of an integer rectangle, zeros outside the image."""
    left, top, right, bottom = rect
    out = np.zeros((bottom - top + 1, right - left + 1) + image.shape[2:], np.uint8)
    h, w = image.shape[:2]
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(right, w - 1), min(bottom, h - 1)
    if x1 >= x0 and y1 >= y0:
        out[y0 - top:y1 - top + 1, x0 - left:x1 - left + 1] = image[y0:y1 + 1, x0:x1 + 1]
    return out


def extract_image_chip(image: np.ndarray, details: ChipDetails) -> np.ndarray:
    """dlib's `extract_image_chip`: a uint8 (rows, cols[, C]) chip of an HxW or HxWxC uint8 image."""
    rect, angle, rows, cols = details.rect, details.angle, details.rows, details.cols
    if angle == 0 and rows == rect[3] - rect[1] + 1 and cols == rect[2] - rect[0] + 1:
        return _basic_chip(image, _round_rect(rect))
    size = rows * cols
    depth, grow, down = 0, 2.0, _rect_down(rect)
    while _area(down) > size:
        down, depth, grow = _rect_down(down), depth + 1, grow * 2 + 2
    center = ((rect[0] + rect[2]) / 2.0, (rect[1] + rect[3]) / 2.0)
    rotated = np.array([_rotate(center, p, angle) for p in _corners(rect)])
    h, w = image.shape[:2]
    grown = (max(rotated[:, 0].min() - grow, 0.0), max(rotated[:, 1].min() - grow, 0.0),
             min(rotated[:, 0].max() + grow, w - 1.0), min(rotated[:, 1].max() + grow, h - 1.0))
    chip_shape = (rows, cols) + image.shape[2:]
    if grown[0] > grown[2] or grown[1] > grown[3]:
        return np.zeros(chip_shape, np.uint8)  # the chip lies entirely outside the image
    bl, bt, br, bb = _round_rect(grown)
    src = image[bt:bb + 1, bl:br + 1]
    rect = (rect[0] - bl, rect[1] - bt, rect[2] - bl, rect[3] - bt)
    while _area(_rect_down(rect)) > size:
        src, rect = pyramid_down2(src), _rect_down(rect)
    center = ((rect[0] + rect[2]) / 2.0, (rect[1] + rect[3]) / 2.0)
    tl, tr, bot, _ = (_rotate(center, p, angle) for p in _corners(rect))
    # find_affine_transform from the chip's corners (0,0), (cols-1,0), (0,rows-1) to the rotated rectangle's
    p_mat = np.array([[0.0, cols - 1.0, 0.0], [0.0, 0.0, rows - 1.0], [1.0, 1.0, 1.0]])
    q_mat = np.array([[tl[0], tr[0], bot[0]], [tl[1], tr[1], bot[1]]])
    a = q_mat @ np.linalg.pinv(p_mat)
    rr, cc = np.mgrid[0:rows, 0:cols].astype(np.float64)
    xs = a[0, 0] * cc + a[0, 1] * rr + a[0, 2]
    ys = a[1, 0] * cc + a[1, 1] * rr + a[1, 2]
    if src.size == 0:
        return np.zeros(chip_shape, np.uint8)
    return _bilinear(src, xs, ys)


def face_chip(image: np.ndarray, landmarks: np.ndarray, size: int = CHIP_SIZE,
              padding: float = CHIP_PADDING) -> np.ndarray:
    """`dlib.get_face_chip`: the aligned size x size chip of the face with these 5 landmarks."""
    return extract_image_chip(image, face_chip_details(landmarks, size, padding))
