"""A numpy reader of dlib's serialization format (dlib/serialize.h, dlib/dnn/*.h, shape_predictor.h).

Reads the three public face models (ResNet descriptor, 5-point shape predictor, MMOD detector) without dlib:
it only decodes numbers, strings and float32 arrays and never executes anything from the file. Anything
unexpected (a truncated file, a flipped byte in the structure, a file of another kind) raises
`DlibFormatError` naming the file and the byte offset where parsing failed.

Encoding (serialize.h): an integer is one control byte (low 4 bits: number of magnitude bytes, 1 to 8; bit
0x80: negative; the reader also refuses the reserved bits 0x70, which dlib ignores for integers and which
its own writer never sets) then the magnitude little-endian; a float or double is an integer mantissa then an integer
exponent (value = m * 2^e, float_details.h); a string is a length then its bytes; a bool is the byte '0' or
'1'. A dnn tensor is version 2, (num_samples, k, nr, nc), then raw little-endian float32; an alias tensor is
version 1 and four sizes (a view into the layer's params, no data).

A network (dnn/core.h) is written from the outside in: the loss layer's wrapper version, the loss details,
then one version per layer/tag/skip wrapper down to the input layer, then each layer's record from the input
towards the output (its details, three bools and three bookkeeping tensors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DlibFormatError

_MAX_NAME = 64  # longest layer/loss/input type name accepted


class _Reader:
    """A cursor over the bytes of one file; every read checks bounds and raises with the offset."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.name = name
        self.pos = 0

    def fail(self, problem: str, at: int | None = None) -> DlibFormatError:
        offset = self.pos if at is None else at
        return DlibFormatError(f"{self.name}: not a valid dlib model file: {problem} at byte offset {offset}")

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > self.remaining():
            raise self.fail(f"truncated: {what} needs {n} bytes, {self.remaining()} left")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self, what: str = "integer") -> int:
        start = self.pos
        if start >= len(self.data):
            raise self.fail(f"truncated: expected {what}, got end of file")
        control = self.data[start]
        n = control & 0x0F
        if control & 0x70 or not 0 < n <= 8:  # dlib writes 1 to 8 magnitude bytes (zero is 01 00)
            raise self.fail(f"bad integer control byte 0x{control:02x} for {what}", start)
        if start + 1 + n > len(self.data):
            raise self.fail(f"truncated: {what} needs {n} bytes, {len(self.data) - start - 1} left", start)
        value = int.from_bytes(self.data[start + 1 : start + 1 + n], "little")
        self.pos = start + 1 + n
        return -value if control & 0x80 else value

    def size(self, what: str, limit: int | None = None) -> int:
        start = self.pos
        value = self.int(what)
        if value < 0 or (limit is not None and value > limit):
            raise self.fail(f"{what} {value} out of range", start)
        return value

    def ints(self, count: int, what: str) -> list[int]:
        """`count` consecutive integers (a tight loop: the shape predictor holds about 3 million)."""
        data, pos, out = self.data, self.pos, [0] * count
        try:
            for i in range(count):
                control = data[pos]
                n = control & 0x0F
                if control & 0x70 or not 0 < n <= 8:
                    raise IndexError
                value = int.from_bytes(data[pos + 1 : pos + 1 + n], "little")
                out[i] = -value if control & 0x80 else value
                pos += 1 + n
            if pos > len(data):
                raise IndexError
        except IndexError:
            for _ in range(count):  # decode again with every check, to report the exact offset
                self.int(what)
            raise self.fail(f"cannot decode {what}") from None
        self.pos = pos
        return out

    def float(self, what: str = "float") -> float:
        start = self.pos
        mantissa, exponent = self.int(what), self.int(what)
        if exponent >= 32000:  # float_details' is_inf / is_ninf / is_nan
            special = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
            if exponent not in special:
                raise self.fail(f"bad exponent {exponent} for {what}", start)
            return special[exponent]
        if not -32768 <= exponent < 32768 or abs(mantissa) >= 1 << 63:
            raise self.fail(f"bad float encoding for {what}", start)
        try:
            return math.ldexp(mantissa, exponent)
        except OverflowError:
            raise self.fail(f"{what} overflows", start) from None

    def floats(self, count: int, what: str) -> list[float]:
        return [self.float(what) for _ in range(count)]

    def string(self, what: str = "string", limit: int = 1 << 20) -> str:
        start = self.pos
        n = self.size(f"{what} length", limit)
        raw = self.take(n, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not ASCII text", start) from None

    def name_string(self, what: str) -> str:
        start = self.pos
        text = self.string(what, _MAX_NAME)
        if not text or not all(c.isalnum() or c == "_" for c in text):
            raise self.fail(f"{what} {text!r} is not a type name", start)
        return text

    def bool(self, what: str = "bool") -> bool:
        start = self.pos
        ch = self.take(1, what)
        if ch not in (b"0", b"1"):
            raise self.fail(f"{what} is byte 0x{ch[0]:02x}, expected '0' or '1'", start)
        return ch == b"1"

    def tensor(self, what: str = "tensor") -> np.ndarray:
        start = self.pos
        version = self.int(f"{what} version")
        if version != 2:
            raise self.fail(f"{what}: tensor version {version}, expected 2", start)
        dims = [self.size(f"{what} size") for _ in range(4)]
        count = math.prod(dims)
        raw = self.take(4 * count, f"{what} data ({count} float32)")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def alias(self, what: str = "alias tensor") -> tuple[int, int, int, int]:
        start = self.pos
        version = self.int(f"{what} version")
        if version != 1:
            raise self.fail(f"{what}: alias tensor version {version}, expected 1", start)
        n, k, nr, nc = (self.size(f"{what} size") for _ in range(4))
        return n, k, nr, nc

    def peek_input_name(self) -> bool:
        """Whether a string naming an input layer ('input...') starts here."""
        save = self.pos
        try:
            n = self.int()
            return 0 < n <= _MAX_NAME and self.data[self.pos : self.pos + 5] == b"input"
        except DlibFormatError:
            return False
        finally:
            self.pos = save


# ---- networks --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    """One serialized object: its type name, the byte offset where it starts, and its decoded fields."""

    kind: str
    offset: int
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DlibNet:
    """A dlib dnn file: the loss, the wrapper versions (outside in), the input layer, and the computational
    layers from the input towards the output."""

    loss: Record
    wrappers: tuple[int, ...]
    input: Record
    layers: tuple[Record, ...]

    def kinds(self) -> list[str]:
        return [r.kind for r in self.layers]


def _multipliers(r: _Reader, kind: str) -> dict[str, float]:
    names = ("learning_rate_multiplier", "weight_decay_multiplier", "bias_learning_rate_multiplier",
             "bias_weight_decay_multiplier")
    return {n: r.float(f"{kind} {n}") for n in names}


def _con(r: _Reader, kind: str) -> dict[str, Any]:
    f: dict[str, Any] = {"params": r.tensor(f"{kind} params")}
    for key in ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x"):
        f[key] = r.size(f"{kind} {key}", 1 << 20)
    f["filters"], f["biases"] = r.alias(f"{kind} filters"), r.alias(f"{kind} biases")
    f.update(_multipliers(r, kind))
    return f


def _affine(r: _Reader, kind: str) -> dict[str, Any]:
    return {"params": r.tensor(f"{kind} params"), "gamma": r.alias(f"{kind} gamma"),
            "beta": r.alias(f"{kind} beta"), "mode": r.int(f"{kind} mode")}


def _pool(r: _Reader, kind: str) -> dict[str, Any]:
    keys = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
    return {key: r.size(f"{kind} {key}", 1 << 20) for key in keys}


def _fc(r: _Reader, kind: str) -> dict[str, Any]:
    f: dict[str, Any] = {"num_outputs": r.size(f"{kind} num_outputs", 1 << 24),
                         "num_inputs": r.size(f"{kind} num_inputs", 1 << 24),
                         "params": r.tensor(f"{kind} params"),
                         "weights": r.alias(f"{kind} weights"), "biases": r.alias(f"{kind} biases"),
                         "bias_mode": r.int(f"{kind} bias mode")}
    f.update(_multipliers(r, kind))
    return f


def _bn(r: _Reader, kind: str) -> dict[str, Any]:
    f: dict[str, Any] = {"params": r.tensor(f"{kind} params"), "gamma": r.alias(f"{kind} gamma"),
                         "beta": r.alias(f"{kind} beta")}
    for key in ("means", "invstds", "running_means", "running_variances"):
        f[key] = r.tensor(f"{kind} {key}")
    f["num_updates"] = r.size(f"{kind} num_updates")
    f["running_stats_window_size"] = r.size(f"{kind} running_stats_window_size")
    f.update(_multipliers(r, kind))
    f["eps"] = r.float(f"{kind} eps")
    return f


_LAYERS = {
    "con_4": _con, "affine_": _affine, "relu_": lambda r, k: {}, "add_prev_": lambda r, k: {},
    "max_pool_2": _pool, "avg_pool_2": _pool, "fc_2": _fc, "bn_con2": _bn,
}


def _box_overlap(r: _Reader, what: str) -> dict[str, float]:
    return {"iou_thresh": r.float(f"{what} iou"), "percent_covered_thresh": r.float(f"{what} percent covered")}


def _mmod_options(r: _Reader) -> dict[str, Any]:
    start = r.pos
    version = r.int("mmod_options version")
    if not 1 <= version <= 4:
        raise r.fail(f"mmod_options version {version}, expected 1 to 4", start)
    f: dict[str, Any] = {"version": version}
    if version == 1:
        f["detector_windows"] = [{"width": r.size("detector width"), "height": r.size("detector height"),
                                  "label": ""}]
    else:
        windows = []
        for _ in range(r.size("detector window count", 1 << 16)):
            at = r.pos
            wv = r.int("detector window version")
            if wv not in (1, 2):
                raise r.fail(f"detector window version {wv}, expected 1 or 2", at)
            w, h = r.size("detector width"), r.size("detector height")
            windows.append({"width": w, "height": h, "label": r.string("detector label") if wv == 2 else ""})
        f["detector_windows"] = windows
    for key in ("loss_per_false_alarm", "loss_per_missed_target", "truth_match_iou_threshold"):
        f[key] = r.float(key)
    f["overlaps_nms"], f["overlaps_ignore"] = _box_overlap(r, "overlaps_nms"), _box_overlap(r, "overlaps_ignore")
    f["assume_image_pyramid"] = True
    if version >= 3:  # a uint8_t, written as one raw byte
        f["assume_image_pyramid"] = bool(r.take(1, "assume_image_pyramid")[0])
    if version >= 4:
        f["use_bounding_box_regression"] = r.bool("use_bounding_box_regression")
        f["bbr_lambda"] = r.float("bbr_lambda")
    return f


def _loss(r: _Reader) -> Record:
    start = r.pos
    kind = r.name_string("loss layer type")
    if kind == "loss_metric_2":
        return Record(kind, start, {"margin": r.float("margin"), "distance_threshold": r.float("dist_thresh")})
    if kind in ("loss_metric_", "loss_binary_log_", "loss_multiclass_log_"):
        return Record(kind, start, {})
    if kind == "loss_mmod_":
        return Record(kind, start, _mmod_options(r))
    raise r.fail(f"unsupported loss layer {kind!r}", start)


def _input(r: _Reader) -> Record:
    start = r.pos
    kind = r.name_string("input layer type")
    if kind not in ("input_rgb_image", "input_rgb_image_sized", "input_rgb_image_pyramid"):
        raise r.fail(f"unsupported input layer {kind!r}", start)
    f: dict[str, Any] = {"avg_red": r.float("avg_red"), "avg_green": r.float("avg_green"),
                         "avg_blue": r.float("avg_blue")}
    if kind == "input_rgb_image_sized":
        f["nr"], f["nc"] = r.size("input rows", 1 << 16), r.size("input columns", 1 << 16)
    return Record(kind, start, f)


def _layer(r: _Reader, bottom_version: int | None) -> Record:
    start = r.pos
    kind = r.name_string("layer type")
    if kind not in _LAYERS:
        raise r.fail(f"unsupported layer type {kind!r}", start)
    fields = _LAYERS[kind](r, kind)
    for what in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
        r.bool(f"{kind} {what}")
    for what in ("x_grad", "cached_output", "params_grad"):
        r.tensor(f"{kind} {what}")
    if bottom_version == 3:
        fields["sample_expansion_factor"] = r.size("sample_expansion_factor")
    return Record(kind, start, fields)


def parse_net(data: bytes, name: str) -> DlibNet:
    """Decode a dlib dnn file held in memory (see the module docstring for the layout)."""
    r = _Reader(data, name)
    start = r.pos
    if (v := r.int("loss wrapper version")) != 1:
        raise r.fail(f"loss wrapper version {v}, expected 1", start)
    loss = _loss(r)
    wrappers: list[int] = []
    while not r.peek_input_name():
        at = r.pos
        v = r.int("layer wrapper version")
        if v not in (1, 2, 3) or len(wrappers) > 100_000:
            raise r.fail(f"layer wrapper version {v}, expected 1, 2 or 3", at)
        wrappers.append(v)
    if not wrappers or wrappers[-1] not in (2, 3):
        raise r.fail("the input layer is not wrapped by a computational layer")
    bottom = wrappers[-1]
    # tags and skips are version 1; computational add_layers are version 2 (3 for the one on the input)
    if any(v not in (1, 2) for v in wrappers[:-1]):
        raise r.fail("unsupported layer wrapper versions (dlib files older than 2017?)")
    n_layers = sum(v != 1 for v in wrappers)
    inp = _input(r)
    layers = [_layer(r, bottom)]
    while len(layers) < n_layers:
        layers.append(_layer(r, None))
    if r.remaining():
        raise r.fail(f"{r.remaining()} unexpected bytes after the last layer")
    return DlibNet(loss, tuple(wrappers), inp, tuple(layers))


def read_net(path: str | Path) -> DlibNet:
    """Read a dlib dnn model file (the face descriptor or the MMOD detector)."""
    return parse_net(_read_bytes(path), Path(path).name)


# ---- the shape predictor ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShapePredictorData:
    """An ensemble of regression trees (Kazemi & Sullivan 2014) as arrays; see `siamface.dlib_convert` for
    the meaning of each. C cascades, T trees per cascade, S = 2^d - 1 splits and L = 2^d leaves per tree,
    F feature pixels per cascade, P landmarks."""

    initial_shape: np.ndarray  # (P, 2) float32, x then y
    split_idx1: np.ndarray  # (C, T, S) int32
    split_idx2: np.ndarray  # (C, T, S) int32
    split_thresh: np.ndarray  # (C, T, S) float32
    leaf_values: np.ndarray  # (C, T, L, P, 2) float32
    anchor_idx: np.ndarray  # (C, F) int32
    deltas: np.ndarray  # (C, F, 2) float32


def _column(r: _Reader, what: str, expect: int | None = None) -> list[float]:
    """A dlib matrix<float,0,1>: rows and columns (negative in the current format), then its values."""
    at = r.pos
    nr, nc = abs(r.int(f"{what} rows")), abs(r.int(f"{what} columns"))
    if nc != 1 or nr > 1 << 16 or (expect is not None and nr != expect):
        raise r.fail(f"{what}: a {nr}x{nc} matrix, expected a column of {expect or 'some'} values", at)
    return r.floats(nr, what)


def parse_shape_predictor(data: bytes, name: str) -> ShapePredictorData:
    """Decode a dlib shape_predictor file held in memory (shape_predictor.h's serialize)."""
    r = _Reader(data, name)
    if (v := r.int("shape_predictor version")) != 1:
        raise r.fail(f"shape_predictor version {v}, expected 1", 0)
    initial = _column(r, "initial_shape")
    if not initial or len(initial) % 2:
        raise r.fail("initial_shape has an odd or zero length")
    n_values = len(initial)
    n_cascades = r.size("cascade count", 1 << 10)
    splits: list[int] = []  # per split: idx1, idx2, threshold mantissa, threshold exponent
    leaves: list[int] = []  # per leaf: rows, columns, then mantissa and exponent of each value
    shape: tuple[int, int] | None = None  # (trees, splits) of the first cascade, required of all
    for _ in range(n_cascades):
        at = r.pos
        n_trees = r.size("tree count", 1 << 16)
        if shape is not None and n_trees != shape[0]:
            raise r.fail("cascades with different numbers of trees are not supported", at)
        for _ in range(n_trees):
            at_tree = r.pos
            n_splits = r.size("split count", 1 << 12)
            if shape is None:
                shape = (n_trees, n_splits)
            elif n_splits != shape[1]:
                raise r.fail("trees of different depths are not supported", at_tree)
            splits += r.ints(4 * n_splits, "tree splits")
            n_leaves = r.size("leaf count", 1 << 13)
            if n_leaves != n_splits + 1 or n_leaves & (n_leaves - 1):
                raise r.fail(f"a tree with {n_splits} splits and {n_leaves} leaves is not a full binary tree",
                             at_tree)
            at_leaves = r.pos
            run = r.ints(n_leaves * (2 + 2 * n_values), "tree leaf values")
            if any(abs(v) != n_values for v in run[:: 2 + 2 * n_values]) or \
                    any(abs(v) != 1 for v in run[1 :: 2 + 2 * n_values]):
                raise r.fail(f"a leaf is not a column of {n_values} values", at_leaves)
            leaves += run
        if shape is None:
            shape = (0, 0)
    try:
        split_arr = np.array(splits, np.int64).reshape(-1, 4)
        leaf_arr = np.array(leaves, np.int64).reshape(-1, 2 + 2 * n_values)[:, 2:].reshape(-1, 2)
    except OverflowError:
        raise r.fail("a tree holds an integer beyond 64 bits") from None
    idx1, idx2 = split_arr[:, 0], split_arr[:, 1]
    if len(split_arr) and min(idx1.min(), idx2.min()) < 0:
        raise r.fail("a split refers to a negative feature pixel index")
    thresh = _floats_of(r, split_arr[:, 2], split_arr[:, 3], "split thresholds")
    leaf_values = _floats_of(r, leaf_arr[:, 0], leaf_arr[:, 1], "leaf values")
    anchors = _nested(r, n_cascades, "anchor_idx", lambda: r.size("anchor index", n_values // 2 - 1))
    deltas = _nested(r, n_cascades, "deltas", lambda: (r.float("delta x"), r.float("delta y")))
    if r.remaining():
        raise r.fail(f"{r.remaining()} unexpected bytes after the shape predictor")
    n_trees, n_splits = shape or (0, 0)
    n_feat = len(anchors[0]) if anchors else 0
    if any(len(a) != n_feat for a in anchors) or any(len(d) != n_feat for d in deltas):
        raise r.fail("cascades with different numbers of feature pixels are not supported")
    i1, i2 = idx1, idx2
    if len(i1) and max(i1.max(), i2.max()) >= n_feat:
        raise r.fail(f"a split refers to a feature pixel beyond the {n_feat} of its cascade")
    cts = (n_cascades, n_trees, n_splits)
    return ShapePredictorData(
        initial_shape=np.array(initial, np.float32).reshape(-1, 2),
        split_idx1=i1.astype(np.int32).reshape(cts), split_idx2=i2.astype(np.int32).reshape(cts),
        split_thresh=thresh.reshape(cts),
        leaf_values=leaf_values.reshape(n_cascades, n_trees, n_splits + 1, n_values // 2, 2),
        anchor_idx=np.array(anchors, np.int32).reshape(n_cascades, n_feat),
        deltas=np.array(deltas, np.float32).reshape(n_cascades, n_feat, 2),
    )


def _floats_of(r: _Reader, mantissa: np.ndarray, exponent: np.ndarray, what: str) -> np.ndarray:
    """float32 values m * 2^e of float_details pairs (finite ones only: these models hold no inf or nan)."""
    if len(mantissa) and (np.abs(exponent).max() >= 32000 or np.abs(mantissa).max() >= 1 << 24):
        raise r.fail(f"{what}: not float32 values (non-finite, or a mantissa wider than 24 bits)")
    return np.ldexp(mantissa.astype(np.float64), exponent).astype(np.float32)


def _nested(r: _Reader, outer: int, what: str, item: Any) -> list[list[Any]]:
    at = r.pos
    if (n := r.size(f"{what} length")) != outer:
        raise r.fail(f"{what} has {n} cascades, expected {outer}", at)
    return [[item() for _ in range(r.size(f"{what} inner length", 1 << 20))] for _ in range(outer)]


def read_shape_predictor(path: str | Path) -> ShapePredictorData:
    """Read a dlib shape_predictor file (e.g. shape_predictor_5_face_landmarks.dat)."""
    return parse_shape_predictor(_read_bytes(path), Path(path).name)


def _read_bytes(path: str | Path) -> bytes:
    p = Path(path)
    try:
        return p.read_bytes()
    except OSError as e:
        raise DlibFormatError(f"{p}: cannot read dlib model file: {e.strerror or e}") from None
