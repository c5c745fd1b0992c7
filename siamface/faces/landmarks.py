"""dlib's 5-point face landmarks in numpy: an ensemble of regression trees (Kazemi & Sullivan, CVPR 2014).

A port of `shape_predictor::operator()` (dlib/image_processing/shape_predictor.h, D. E. King, Boost licence)
run on dlib's CC0 model `shape_predictor_5_face_landmarks.dat` (converted to safetensors by
`siamface.dlib_convert`). Starting from a mean shape placed in the face box, each of the cascades reads the
grey values of its feature pixels (each an anchor landmark plus an offset, carried along by the similarity
between the mean shape and the current one), and every tree of the cascade walks down by comparing pixel
differences with thresholds and adds its leaf's shape increment. Here every face and every tree of a cascade
advance together (one array operation per tree level, no Python loop over faces, trees or split nodes); the
increments are summed tree by tree in float32 as dlib does, so the landmarks equal `dlib.shape_predictor`'s.

Boxes and landmarks use dlib's coordinates: a box is (left, top, right, bottom) with right and bottom
inclusive; pixel (row i, column j) is the point (j, i); landmarks are rounded to whole pixels as dlib's are.
The 5 points: the outer and inner corner of the eye on the image's right, the outer and inner corner of the
eye on the image's left, and the base of the nose.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from siamface.errors import ModelError

WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "dlib" / "shape_predictor_5.safetensors"
KEYS = ("initial_shape", "anchor_idx", "deltas", "split_idx1", "split_idx2", "split_thresh", "leaf_values")

# find_affine_transform from the unit square's (0,0), (1,0), (1,1) to a box's corners uses pinv of this
_UNIT = np.linalg.pinv(np.array([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]))


def _similarity_batch(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Umeyama's similarity (dlib's find_similarity_transform) from src (P, 2) to each dst (N, P, 2): (N, 2, 2)."""
    src = src.astype(np.float64)
    dst = dst.astype(np.float64)
    ms, md = src.mean(axis=0), dst.mean(axis=1, keepdims=True)
    ds, dd = src - ms, dst - md
    sigma = float((ds * ds).sum(axis=1).mean())
    cov = np.einsum("npi,pj->nij", dd, ds) / len(src)
    u, d, vt = np.linalg.svd(cov)
    det = np.linalg.det(cov)
    flip = (det < 0) | ((det == 0) & (np.linalg.det(u) * np.linalg.det(vt) < 0))
    s = np.ones((len(dst), 2))
    s[flip & (d[:, 1] < d[:, 0]), 1] = -1.0
    s[flip & ~(d[:, 1] < d[:, 0]), 0] = -1.0
    r = np.einsum("nij,nj,njk->nik", u, s, vt)
    c = np.ones(len(dst)) if sigma == 0 else (d * s).sum(axis=1) / sigma
    return c[:, None, None] * r


def _round(v: np.ndarray) -> np.ndarray:
    return np.floor(v + 0.5).astype(np.int64)


def _intensity(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """dlib's get_pixel_intensity at the given pixels only (the grey value, or (r + g + b) / 3 in integers for
    RGB): the feature pixels of a few faces, never the whole image converted to grey."""
    if image.ndim == 3 and image.shape[2] == 3:
        return (image[rows, cols].astype(np.int32).sum(axis=-1) // 3).astype(np.float32)
    grey = image if image.ndim == 2 else image[:, :, 0]
    return grey[rows, cols].astype(np.float32)


class ShapePredictor:
    """The landmark cascade: `predictor(image, boxes)` -> int64 landmarks (N, P, 2)."""

    def __init__(self, arrays: Mapping[str, np.ndarray], source: str = "<arrays>") -> None:
        missing = [k for k in KEYS if k not in arrays]
        if missing:
            raise ModelError(f"{source}: shape predictor arrays {missing} are missing; expected {list(KEYS)}")
        self.initial_shape = np.asarray(arrays["initial_shape"], np.float32)
        self.anchor_idx = np.asarray(arrays["anchor_idx"], np.int64)
        self.deltas = np.asarray(arrays["deltas"], np.float32)
        self.split_idx1 = np.asarray(arrays["split_idx1"], np.int64)
        self.split_idx2 = np.asarray(arrays["split_idx2"], np.int64)
        self.split_thresh = np.asarray(arrays["split_thresh"], np.float32)
        self.leaf_values = np.asarray(arrays["leaf_values"], np.float32)
        n_parts = self.initial_shape.shape[0]
        c, t, s = self.split_idx1.shape
        f = self.anchor_idx.shape[1]
        ok = (self.initial_shape.shape == (n_parts, 2) and self.anchor_idx.shape == (c, f)
              and self.deltas.shape == (c, f, 2) and self.split_idx2.shape == (c, t, s)
              and self.split_thresh.shape == (c, t, s) and self.leaf_values.shape == (c, t, s + 1, n_parts, 2)
              and (s + 1) & s == 0 and self.anchor_idx.max(initial=0) < n_parts
              and max(self.split_idx1.max(initial=0), self.split_idx2.max(initial=0)) < f)
        if not ok:
            raise ModelError(f"{source}: inconsistent shape predictor array shapes")
        self.depth = int(np.log2(s + 1))
        self.leaf_values = self.leaf_values.reshape(c, t, s + 1, n_parts * 2)

    @classmethod
    def load(cls, path: str | Path | None = None) -> ShapePredictor:
        """Read the converted 5-point model (safetensors; the shipped one by default)."""
        from safetensors.numpy import load_file

        path = Path(path) if path is not None else WEIGHTS
        if not path.is_file():
            raise ModelError(f"{path}: landmark model not found; it ships in siamface/weights/dlib "
                             "(python -m siamface.dlib_convert writes it)")
        try:
            arrays = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - safetensors raises several types for a corrupt file
            raise ModelError(f"{path}: not a readable safetensors file ({e})") from None
        return cls(arrays, str(path))

    @property
    def num_parts(self) -> int:
        return int(self.initial_shape.shape[0])

    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Landmarks (N, P, 2) as whole pixels for the faces in boxes (N, 4): (left, top, right, bottom)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        n = len(boxes)
        if n == 0:
            return np.zeros((0, self.num_parts, 2), np.int64)
        h, w = image.shape[:2]
        # unnormalizing_tform: the unit square onto each box, (N, 2, 3)
        q = np.stack([boxes[:, [0, 2, 2]], boxes[:, [1, 1, 3]]], axis=1)
        to_img = q @ _UNIT
        rows = np.arange(n)[:, None]
        shape = np.repeat(self.initial_shape.reshape(1, -1), n, axis=0)  # (N, 2P) float32
        for c in range(len(self.anchor_idx)):
            tform = _similarity_batch(self.initial_shape, shape.reshape(n, -1, 2)).astype(np.float32)
            d = self.deltas[c]  # (F, 2)
            moved_x = tform[:, 0:1, 0] * d[:, 0] + tform[:, 0:1, 1] * d[:, 1]  # float32, as dlib
            moved_y = tform[:, 1:2, 0] * d[:, 0] + tform[:, 1:2, 1] * d[:, 1]
            anchor = shape.reshape(n, -1, 2)[:, self.anchor_idx[c]]  # (N, F, 2)
            px, py = (moved_x + anchor[:, :, 0]).astype(np.float64), (moved_y + anchor[:, :, 1]).astype(np.float64)
            ix = _round(to_img[:, 0:1, 0] * px + to_img[:, 0:1, 1] * py + to_img[:, 0:1, 2])
            iy = _round(to_img[:, 1:2, 0] * px + to_img[:, 1:2, 1] * py + to_img[:, 1:2, 2])
            inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
            sampled = _intensity(image, np.where(inside, iy, 0), np.where(inside, ix, 0))
            values = np.where(inside, sampled, np.float32(0))
            node = np.zeros((n, self.split_idx1.shape[1]), np.int64)  # (N, T)
            trees = np.arange(node.shape[1])[None, :]
            for _ in range(self.depth):
                diff = values[rows, self.split_idx1[c][trees, node]] - values[rows, self.split_idx2[c][trees, node]]
                node = 2 * node + np.where(diff > self.split_thresh[c][trees, node], 1, 2)
            leaves = self.leaf_values[c][trees, node - self.split_idx1.shape[2]]  # (N, T, 2P)
            # dlib adds the trees' increments one after the other in float32: a sequential running sum
            stacked = np.concatenate([shape[:, None], leaves], axis=1)
            shape = np.cumsum(stacked, axis=1, dtype=np.float32)[:, -1]
        pts = shape.reshape(n, -1, 2).astype(np.float64)
        x = to_img[:, 0:1, 0] * pts[:, :, 0] + to_img[:, 0:1, 1] * pts[:, :, 1] + to_img[:, 0:1, 2]
        y = to_img[:, 1:2, 0] * pts[:, :, 0] + to_img[:, 1:2, 1] * pts[:, :, 1] + to_img[:, 1:2, 2]
        return np.stack([_round(x), _round(y)], axis=2)
