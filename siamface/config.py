"""Frozen configuration dataclasses, saved as JSON beside every checkpoint.

A checkpoint's JSON holds one dict per config below, so `load_model(path)` rebuilds the network, its
preprocessing and its calibrated threshold without any flag (STYLE.md 4-5). CLI flags map onto these
fields one to one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
PATH_FIELDS = ("root", "val_root", "pairs_file", "val_pairs_file")  # DataConfig fields that name files


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build `cls` from a dict, ignoring unknown keys (newer files) and restoring tuples."""
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for key, value in data.items():
        if key in names:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


_NUMERIC = {"int": numbers.Integral, "float": numbers.Real, "tuple[int, ...]": numbers.Integral,
            "tuple[float, ...]": numbers.Real}
Range = tuple[Callable[[Any], bool], str]


def check_numbers(cfg: Any, section: str, ranges: dict[str, Range]) -> None:
    """Every int and float field of a config (and each element of a tuple of them): the right type, finite,
    and in its range; ValueError naming the field and its flag otherwise (before any data is read)."""
    for f in dataclasses.fields(cfg):
        kind = _NUMERIC.get(str(f.type))
        if kind is None:
            continue
        value = getattr(cfg, f.name)
        many = str(f.type).startswith("tuple")
        where = f"{section}.{f.name} (--{f.name.replace('_', '-')})"
        if many and not isinstance(value, tuple):
            raise ValueError(f"{where} must be a list of numbers, got {value!r}")
        for v in value if many else (value,):
            if isinstance(v, bool) or not isinstance(v, kind) or not math.isfinite(v):
                what = "an integer" if kind is numbers.Integral else "a finite number"
                raise ValueError(f"{where} must be {what}, got {v!r}")
            if f.name in ranges and not ranges[f.name][0](v):
                raise ValueError(f"{where} must be {ranges[f.name][1]}, got {v!r}")


def _at_least(low: float) -> Range:
    return (lambda v: v >= low), f">= {low:g}"


_POSITIVE: Range = (lambda v: v > 0), "> 0"
_FRACTION: Range = (lambda v: 0 <= v < 1), "in [0, 1)"


# ---- face detection and alignment: part of a model's preprocessing ----------------------------------------

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


def _align_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"AlignConfig.{name} must be one of {list(allowed)}, got {value!r}")


def _align_number(name: str, value: Any, lo: float, hi: float, lo_open: bool = True, hi_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"AlignConfig.{name} must be a finite number, got {value!r}")
    too_low = value <= lo if lo_open else value < lo
    too_high = value >= hi if hi_open else value > hi
    if too_low or too_high:
        lb, hb = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ValueError(f"AlignConfig.{name} must be in {lb}{lo}, {hi}{hb}, got {value!r}")
    return float(value)


def _align_integer(name: str, value: Any, lo: int) -> int:
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
        _align_choice("detector", self.detector, DETECTORS)
        _align_choice("select", self.select, SELECTS)
        _align_choice("eyes", self.eyes, EYE_MODES)
        _align_choice("face_cascade", self.face_cascade, FACE_CASCADES)
        _align_choice("eye_cascade", self.eye_cascade, EYE_CASCADES)
        _align_choice("on_missing", self.on_missing, ("error", "center"))
        _align_choice("alignment", self.alignment, ALIGNMENTS)
        checked = {
            "eye_y": _align_number("eye_y", self.eye_y, 0.0, 1.0),
            "eye_distance": _align_number("eye_distance", self.eye_distance, 0.0, 1.0),
            "scale_factor": _align_number("scale_factor", self.scale_factor, 1.0, 2.0, hi_open=False),
            "eye_scale_factor": _align_number("eye_scale_factor", self.eye_scale_factor, 1.0, 2.0, hi_open=False),
            "min_size": _align_number("min_size", self.min_size, 0.0, 1.0, hi_open=False),
            "min_neighbors": _align_integer("min_neighbors", self.min_neighbors, 0),
            "eye_min_neighbors": _align_integer("eye_min_neighbors", self.eye_min_neighbors, 0),
            "max_side": _align_integer("max_side", self.max_side, 0),
            "fallback_box": _align_number("fallback_box", self.fallback_box, 0.0, 1.0, hi_open=False),
            "chip_padding": _align_number("chip_padding", self.chip_padding, 0.0, 2.0, lo_open=False),
            "upsample": _align_integer("upsample", self.upsample, 0),
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



@dataclass(frozen=True)
class PreprocessConfig:
    """How an image becomes the model's input tensor; it travels with the weights.

    size/channels: the square input the network expects. crop: the centred square, as a fraction of the
    shorter side, taken before resizing. invert: map x -> 1 - x (Omniglot strokes become 1 on 0).
    mean/std: x -> (x - mean) / std after scaling to [0, 1]. align: how faces are found and aligned
    (`AlignConfig`; a dict is taken as its fields) or None when inputs are already face crops.
    """

    size: int = 105
    channels: int = 1
    crop: float = 1.0
    invert: bool = False
    mean: float = 0.0
    std: float = 1.0
    align: AlignConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.align, dict):  # model.json and run configs store it as a dict
            object.__setattr__(self, "align", AlignConfig.from_dict(self.align))
        elif self.align is not None and not isinstance(self.align, AlignConfig):
            raise ValueError(f"preprocess.align must be an AlignConfig, a dict of its fields or None, "
                             f"got {type(self.align).__name__}")
        check_numbers(self, "preprocess", {"size": _at_least(8), "channels": ((lambda v: v in (1, 3)), "1 or 3"),
                                           "crop": ((lambda v: 0 < v <= 1), "in (0, 1]"), "std": _POSITIVE})

    @property
    def detects(self) -> bool:
        """Faces are detected and aligned (not taken as crops)."""
        return self.align is not None and self.align.detector != "none"


@dataclass(frozen=True)
class ModelConfig:
    """A registered architecture name plus keyword overrides for its factory (timm style)."""

    name: str = "koch2015"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    """Where training pairs come from and how identities are split.

    Identity folders (`root/<identity>/<image>`): identities are split by seed into train / val / test
    (n_val, n_test identities). Explicit identity lists (train_ids/val_ids/test_ids) override the split.
    Validation identities may instead come from another folder (`val_root`, e.g. Omniglot's evaluation
    alphabets), optionally only those of some groups (`val_groups`, e.g. the alphabets the official
    one-shot runs do not use). train_drawers / val_drawers keep only Omniglot images by those drawers
    (`<id>_<drawer>.png`; Koch et al. train on 12 drawers and validate on 4 others).
    A pairs file (LFW format or CSV) may replace sampled training pairs (`pairs_file`), and a second one
    may give the validation pairs (`val_pairs_file`).
    """

    root: str = ""
    n_val: int = 5
    n_test: int = 10
    train_ids: tuple[str, ...] = ()
    val_ids: tuple[str, ...] = ()
    test_ids: tuple[str, ...] = ()
    train_drawers: tuple[int, ...] = ()
    val_drawers: tuple[int, ...] = ()
    val_root: str = ""
    val_groups: tuple[str, ...] = ()
    pairs_file: str = ""
    val_pairs_file: str = ""
    within_group: bool = False

    def __post_init__(self) -> None:
        check_numbers(self, "data", {"n_val": _at_least(0), "n_test": _at_least(0), "train_drawers": _at_least(0),
                                     "val_drawers": _at_least(0)})


_TRAIN_RANGES: dict[str, Range] = {
    "epochs": _at_least(1), "batch_size": _at_least(1), "pairs_per_epoch": _at_least(1),
    "classes_per_batch": _at_least(1), "images_per_class": _at_least(1), "lr": _POSITIVE,
    "weight_decay": _at_least(0), "warmup_epochs": _at_least(0), "momentum_start": _FRACTION,
    "momentum_end": _FRACTION, "momentum_epochs": _at_least(0), "lr_decay": ((lambda v: 0 < v <= 1), "in (0, 1]"),
    "layer_lr": _POSITIVE, "layer_momentum": _FRACTION, "layer_l2": _at_least(0), "label_smoothing": _FRACTION,
    "id_loss": _at_least(0), "id_margin": _FRACTION, "id_scale": _POSITIVE, "distortions_per_pair": _at_least(0),
    "patience": _at_least(1), "max_minutes": _at_least(0), "val_way": _at_least(2), "val_tasks": _at_least(1),
    "val_pairs": _at_least(2), "seed": _at_least(0), "threads": _at_least(0),
}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and schedule. regime 'koch' is the paper's SGD; 'adamw' is a modern default.

    pairing 'sampled': each step scores batch_size balanced pairs (the paper). 'all': each step embeds a
    class-balanced batch (classes_per_batch x images_per_class) and scores all its pairs (losses.py).
    An epoch is ceil(pairs_per_epoch / batch_size) steps either way. class_rotations: each class of a batch
    is turned by a random multiple of 90 degrees as a whole, a new character shape each time (the class
    augmentation of Santoro et al. 2016 and Vinyals et al. 2016; for characters, never for faces).
    init: a trained run folder whose weights start this run (fine-tuning); max_minutes: stop after the
    epoch that crosses this training time (0: no limit). id_loss: weight of an identity loss on the tower
    (CosFace with id_margin and id_scale, losses.py) added to the pair loss; 0 turns it off. It needs
    pairing='all' (identity-labelled batches) and regime 'adamw'. freeze: 'none', 'all' (the tower is fixed
    and only the Siamese head trains, on descriptors computed once per image) or a tower stage: every tower
    parameter before it stays fixed (freeze.py).
    """

    regime: str = "adamw"
    epochs: int = 30
    batch_size: int = 128
    pairs_per_epoch: int = 10_000
    fixed_pairs: bool = False
    pairing: str = "sampled"
    classes_per_batch: int = 32
    images_per_class: int = 4
    class_rotations: bool = False
    lr: float = 1e-3
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    momentum_start: float = 0.5
    momentum_end: float = 0.9
    momentum_epochs: int = 30
    lr_decay: float = 0.99
    layer_lr: tuple[float, ...] = ()
    layer_momentum: tuple[float, ...] = ()
    layer_l2: tuple[float, ...] = ()
    select: str = "oneshot"
    label_smoothing: float = 0.0
    id_loss: float = 0.0
    id_margin: float = 0.35
    id_scale: float = 16.0
    distortions: bool = True
    flip: bool = False
    distortions_per_pair: int = 0
    patience: int = 20
    max_minutes: float = 0.0
    init: str = ""
    freeze: str = "none"
    val_way: int = 5
    val_tasks: int = 320
    val_pairs: int = 2_000
    seed: int = 0
    device: str = "cpu"
    bf16: bool = True
    channels_last: bool = True
    compile: bool = False
    threads: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        check_numbers(self, "train", _TRAIN_RANGES)
        if self.regime not in ("koch", "adamw"):
            raise ValueError(f"train.regime must be 'koch' or 'adamw', got {self.regime!r}")
        if not (self.device == "cpu" or self.device == "mps" or self.device.startswith("cuda")):
            raise ValueError(f"train.device must be cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.pairing not in ("sampled", "all"):
            raise ValueError(f"train.pairing must be 'sampled' or 'all', got {self.pairing!r}")
        if self.pairing == "all" and min(self.classes_per_batch, self.images_per_class) < 2:
            raise ValueError("train.classes_per_batch and train.images_per_class must be >= 2 with pairing='all' "
                             f"(same and different pairs in every batch), got {self.classes_per_batch} and "
                             f"{self.images_per_class}")
        if self.class_rotations and self.pairing != "all":
            raise ValueError("train.class_rotations needs pairing='all' (a class is rotated as a whole)")
        if self.distortions_per_pair and (not self.fixed_pairs or self.flip or self.pairing != "sampled"):
            raise ValueError("train.distortions_per_pair needs fixed_pairs, sampled pairing and no flip "
                             "(the paper distorts a fixed set of pairs)")
        if self.id_loss and (self.pairing != "all" or self.regime != "adamw" or self.class_rotations):
            raise ValueError("train.id_loss needs pairing='all' and regime='adamw', without class_rotations "
                             "(a rotated class is not its identity)")
        if self.select not in ("oneshot", "auc", "eer"):
            raise ValueError(f"train.select must be oneshot, auc or eer, got {self.select!r}")
        if not self.freeze:
            raise ValueError("train.freeze must be 'none', 'all' or the name of a tower stage, got ''")
        if self.freeze == "all" and (self.distortions or self.class_rotations or self.distortions_per_pair):
            error = ValueError("train.freeze='all' computes each image's descriptor once, so images cannot be "
                               "distorted anew each epoch: turn distortions off (flipping still mirrors faces)")
            error.option = "distortions"  # type: ignore[attr-defined] (the CLI names its flag)
            raise error


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; saved in model.json and state.json, read by `train --config`."""

    model: ModelConfig
    preprocess: PreprocessConfig
    data: DataConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {k: to_dict(getattr(self, k)) for k in ("model", "preprocess", "data", "train")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return cls(from_dict(ModelConfig, d["model"]), from_dict(PreprocessConfig, d["preprocess"]),
                   from_dict(DataConfig, d["data"]), from_dict(TrainConfig, d["train"]))

    @classmethod
    def read(cls, path: str | Path, data_root: Path) -> RunConfig:
        """A run config file (`siamface train --config`, `configs/`): the four sections of model.json; other
        keys ("about") are ignored. Relative data paths are taken relative to `data_root`."""
        d = json.loads(Path(path).read_text())
        d["data"] = {k: (str(data_root / v) if k in PATH_FIELDS and v and not Path(v).is_absolute() else v)
                     for k, v in d.get("data", {}).items()}
        return cls.from_dict({k: d.get(k, {}) for k in ("model", "preprocess", "data", "train")})

    def replace_train(self, **changes: Any) -> RunConfig:
        """A copy with TrainConfig fields changed."""
        return dataclasses.replace(self, train=dataclasses.replace(self.train, **changes))
