"""dlib's image pyramids in numpy, as its MMOD face detector builds them.

Ports of dlib's bilinear `resize_image` (dlib/image_transforms/interpolation.h: the 4-lane float32 SIMD loop
and its scalar tail), `pyramid_up` with `pyramid_down<2>`, and the tiled pyramid of
`input_rgb_image_pyramid<pyramid_down<6>>` (dlib/image_transforms/image_pyramid.h,
`compute_tiled_image_pyramid_details`; dlib/dnn/input.h), with their coordinate maps. D. E. King, Boost
licence. Keeping dlib's float32 arithmetic and sample positions makes the detector's input equal dlib's, so
the port's boxes match dlib's (tests compare with dlib-bin).

Rectangles are dlib's: (left, top, right, bottom), inclusive.
"""

from __future__ import annotations

import math

import numpy as np

PYRAMID_PADDING = 10  # input_rgb_image_pyramid's defaults (files written before dlib 19.8 store none)
PYRAMID_OUTER_PADDING = 11
MIN_LEVEL_HEIGHT = 5

IntRect = tuple[int, int, int, int]


def _x_positions(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Column sample positions of dlib's resize loop: (left, right, lr_frac as float32 or float64, n_simd).

    The first n_simd columns come from 4 float32 lanes advanced by 4*x_scale (left = truncation); the rest
    from a double accumulator (left = floor, right clamped to the image).
    """
    xs = (n_in - 1) / max(n_out - 1, 1)
    n_iter = -(-n_out // 4) + 1
    start = np.array([-4 * xs + j * xs for j in range(4)], np.float32)
    steps = np.full((n_iter, 4), np.float32(4 * xs), np.float32)
    lanes = np.cumsum(np.concatenate([start[None], steps]), axis=0, dtype=np.float32)[1:]  # (n_iter, 4)
    left = lanes.astype(np.int64)
    past = np.nonzero(left[:, 3] + 1 >= n_in)[0]  # the SIMD loop stops before the first such iteration
    n_simd = min(4 * int(past[0]) if len(past) else 4 * n_iter, n_out)
    simd_x = lanes.reshape(-1)[:n_simd]
    simd_left = simd_x.astype(np.int64)
    simd_frac = simd_x - simd_left.astype(np.float32)
    tail = np.cumsum(np.concatenate([[-xs + n_simd * xs], np.full(n_out - n_simd, xs)]))[1:]
    tail_left = np.floor(tail).astype(np.int64)
    left_all = np.concatenate([simd_left, tail_left])
    right_all = np.concatenate([simd_left + 1, np.minimum(tail_left + 1, n_in - 1)])
    frac_all = np.concatenate([simd_frac.astype(np.float64), tail - tail_left])
    return left_all, right_all, frac_all, n_simd


def _y_positions(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ys = (n_in - 1) / max(n_out - 1, 1)
    y = np.cumsum(np.concatenate([[-ys], np.full(n_out, ys)]))[1:]
    top = np.floor(y).astype(np.int64)
    return top, np.minimum(top + 1, n_in - 1), y - top


def _resize(src: np.ndarray, n_rows: int, n_cols: int, to_uint8: bool) -> np.ndarray:
    """dlib's bilinear resize_image of a (C, H, W) float32 stack (or uint8 RGB planes, truncated back)."""
    c, h, w = src.shape
    if n_rows == 0 or n_cols == 0 or h == 0 or w == 0:
        return np.zeros((c, n_rows, n_cols), np.uint8 if to_uint8 else np.float32)
    left, right, frac, n_simd = _x_positions(w, n_cols)
    top, bottom, tb = _y_positions(h, n_rows)
    # np.take gathers several times faster than fancy indexing; the arithmetic is unchanged (bit for bit)
    x = src.astype(np.float32, copy=False)
    rows_t, rows_b = np.take(x, top, axis=1), np.take(x, bottom, axis=1)  # (C, n_rows, W)
    # the SIMD columns: float32 weights, the four products summed left to right in float32
    s = slice(0, n_simd)
    lr = frac[s].astype(np.float32)[None, :]
    inv_lr = np.float32(1) - lr
    tbf, inv_tb = tb.astype(np.float32)[:, None], (1 - tb).astype(np.float32)[:, None]
    acc = np.take(rows_t, left[s], axis=2)
    acc *= inv_tb * inv_lr
    for rows, idx, weight in ((rows_t, right[s], inv_tb * lr), (rows_b, left[s], tbf * inv_lr),
                              (rows_b, right[s], tbf * lr)):
        part = np.take(rows, idx, axis=2)
        part *= weight
        acc += part
    # the scalar tail: double arithmetic, except that float images blend each row in float32 first
    t = slice(n_simd, n_cols)
    tl, tr = np.take(rows_t, left[t], axis=2), np.take(rows_t, right[t], axis=2)
    bl, br = np.take(rows_b, left[t], axis=2), np.take(rows_b, right[t], axis=2)
    if to_uint8:
        lr_d = frac[t][None, None, :]
        top_mix = (1 - lr_d) * tl + lr_d * tr
        bot_mix = (1 - lr_d) * bl + lr_d * br
    else:
        lr_t = frac[t].astype(np.float32)[None, None, :]
        top_mix = ((np.float32(1) - lr_t) * tl + lr_t * tr).astype(np.float64)
        bot_mix = ((np.float32(1) - lr_t) * bl + lr_t * br).astype(np.float64)
    tail = (1 - tb)[None, :, None] * top_mix + tb[None, :, None] * bot_mix
    if to_uint8:
        res = np.empty((c, n_rows, n_cols), np.uint8)
        res[:, :, s] = acc.astype(np.int32).astype(np.uint8)
        res[:, :, t] = np.clip(tail, 0, 255).astype(np.uint8)
        return res
    out = np.empty((c, n_rows, n_cols), np.float32)
    out[:, :, s] = acc
    out[:, :, t] = tail.astype(np.float32)
    return out


def resize_float(planes: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    """dlib's resize_image for float32 images, on each plane of a (C, H, W) array."""
    return _resize(planes, n_rows, n_cols, to_uint8=False)


def resize_rgb(image: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    """dlib's resize_image for uint8 RGB (H, W, 3) images (values truncated)."""
    return _resize(np.ascontiguousarray(image.transpose(2, 0, 1)), n_rows, n_cols, to_uint8=True).transpose(1, 2, 0)


def pyramid_up2(image: np.ndarray) -> np.ndarray:
    """dlib's pyramid_up with pyramid_down<2>: an RGB image doubled to (2H + 1, 2W + 2)."""
    h, w = image.shape[:2]
    return resize_rgb(image, 2 * h + 1, 2 * w + 2)


def rect_down2(rect: tuple[float, float, float, float], levels: int) -> tuple[float, float, float, float]:
    """pyramid_down<2>::rect_down applied `levels` times (p -> p/2 - (1.25, 0.75))."""
    x0, y0, x1, y1 = rect
    for _ in range(levels):
        x0, y0, x1, y1 = x0 / 2.0 - 1.25, y0 / 2.0 - 0.75, x1 / 2.0 - 1.25, y1 / 2.0 - 0.75
    return x0, y0, x1, y1


def round_rect(rect: tuple[float, float, float, float]) -> IntRect:
    """drectangle -> rectangle: floor(v + 0.5) on each side."""
    return tuple(int(math.floor(v + 0.5)) for v in rect)  # type: ignore[return-value]


def tiled_pyramid_layout(nr: int, nc: int, scale_n: int = 6, padding: int = PYRAMID_PADDING,
                         outer_padding: int = PYRAMID_OUTER_PADDING) -> tuple[list[IntRect], int, int]:
    """compute_tiled_image_pyramid_details for pyramid_down<N>: each level's rectangle and the canvas size."""
    if nr * nc == 0:
        return [], 0, 0
    rate = (scale_n - 1.0) / scale_n
    sizes = [(nr, nc)]
    while True:
        nr, nc = math.floor(rate * nr), math.floor(rate * nc)
        if nr * nc == 0 or nr < MIN_LEVEL_HEIGHT:
            break
        sizes.append((nr, nc))
    total_height = sum(h + padding for h, _ in sizes) - padding * 2
    height, prev_width = 0, 0
    h0, w0 = sizes[0]
    for h, w in sizes:
        if w <= w0 - prev_width - padding and (height - h0) * 2 >= total_height - h0:
            break
        height += h + padding
        prev_width = w
    height -= padding
    canvas_nr, canvas_nc = height + outer_padding * 2, w0 + outer_padding * 2
    rects: list[IntRect] = []
    y, i = outer_padding, 0
    while y < height + outer_padding and i < len(sizes):
        h, w = sizes[i]
        rects.append((outer_padding, y, outer_padding + w - 1, y + h - 1))
        y += h + padding
        i += 1
    y -= padding
    while i < len(sizes):
        h, w = sizes[i]
        x1, y1 = outer_padding + w0 - 1, y - 1
        rect = (x1 - (w - 1), y1 - (h - 1), x1, y1)
        first = rects[0]
        if max(first[0], rect[0]) <= min(first[2], rect[2]) and max(first[1], rect[1]) <= min(first[3], rect[3]):
            break  # the last column would overlap the full-size image
        rects.append(rect)
        y -= h + padding
        i += 1
    return rects, canvas_nr, canvas_nc


def tiled_pyramid(image: np.ndarray, means: tuple[float, float, float], scale_n: int = 6,
                  padding: int = PYRAMID_PADDING, outer_padding: int = PYRAMID_OUTER_PADDING,
                  ) -> tuple[np.ndarray, list[IntRect]]:
    """input_rgb_image_pyramid::to_tensor for one RGB uint8 image: the (3, NR, NC) float32 canvas."""
    h, w = image.shape[:2]
    rects, canvas_nr, canvas_nc = tiled_pyramid_layout(h, w, scale_n, padding, outer_padding)
    canvas = np.zeros((3, canvas_nr, canvas_nc), np.float32)
    if not rects:
        return canvas, rects
    x0, y0, x1, y1 = rects[0]
    mean = np.asarray(means, np.float32)[:, None, None]
    canvas[:, y0:y1 + 1, x0:x1 + 1] = ((image.transpose(2, 0, 1).astype(np.float32) - mean) / 256.0)
    for prev, cur in zip(rects, rects[1:]):
        src = canvas[:, prev[1]:prev[3] + 1, prev[0]:prev[2] + 1]
        canvas[:, cur[1]:cur[3] + 1, cur[0]:cur[2] + 1] = resize_float(src, cur[3] - cur[1] + 1, cur[2] - cur[0] + 1)
    return canvas, rects


def nearest_rect(rects: list[IntRect], x: int, y: int) -> int:
    """dlib's nearest_rect: the first rectangle holding the point, else the closest one."""
    best, best_dist = 0, math.inf
    for i, (x0, y0, x1, y1) in enumerate(rects):
        if x0 <= x <= x1 and y0 <= y <= y1:
            return i
        dist = math.hypot(min(max(x, x0), x1) - x, min(max(y, y0), y1) - y)
        if dist < best_dist:
            best, best_dist = i, dist
    return best


def tiled_to_image(rects: list[IntRect], rect: tuple[float, float, float, float], scale_n: int = 6,
                   ) -> tuple[float, float, float, float]:
    """tiled_pyramid_to_image: a rectangle on the canvas back to the full-size image's coordinates."""
    cx, cy = (rect[0] + rect[2]) / 2.0, (rect[1] + rect[3]) / 2.0
    level = nearest_rect(rects, math.floor(cx + 0.5), math.floor(cy + 0.5))
    ox, oy = rects[level][0], rects[level][1]
    x0, y0, x1, y1 = rect[0] - ox, rect[1] - oy, rect[2] - ox, rect[3] - oy
    ratio = scale_n / (scale_n - 1.0)
    for _ in range(level):
        x0, y0, x1, y1 = x0 * ratio + 0.3, y0 * ratio + 0.3, x1 * ratio + 0.3, y1 * ratio + 0.3
    return x0, y0, x1, y1
