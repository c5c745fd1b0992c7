"""The model card: `model.json` read into typed, validated dataclasses.

A run folder's `model.json` records how the model was made (configs, identity split, lineage), what it
scored on validation, and its calibrated operating points. Everything that reads a model reads it through
`ModelCard`, which refuses a card that cannot be trusted (no weights hash, a threshold that is not a
probability, configs that do not parse), naming the file and the field.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import metrics
from .calibration import EER, STANDARD_FARS, OperatingPoint, PairScores, Points, calibrate_sets, far_name  # noqa: F401
from .config import DataConfig, ModelConfig, PreprocessConfig, TrainConfig, from_dict, to_dict
from .errors import ModelError

META = "model.json"


def _probability(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise ModelError(f"{where} must be a probability in [0, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Calibration:
    """Operating points chosen on identities never trained on, with their provenance and evidence.

    `default` names the point decisions use when none is asked for (older models: the EER point);
    `threshold` is its threshold. `curve` holds (FAR, threshold) pairs down to the lowest FAR the
    calibration resolved (open-set decisions derive their FPIR thresholds from it); `identities` are the
    people calibrated on (never to be evaluated on)."""

    threshold: float
    source: str
    rule: str = ""
    n_pairs: int = 0
    val_identities: tuple[str, ...] = ()
    points: dict[str, OperatingPoint] = field(default_factory=dict)
    default: str = EER
    curve: tuple[tuple[float, float], ...] = ()
    identities: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def point(self, far: float | None = None) -> OperatingPoint:
        """The default point (far=None) or the calibrated point at that false-accept rate."""
        name = self.default if far is None else far_name(far)
        if name not in self.points:
            have = ", ".join(self.points) or "none"
            raise ModelError(f"no operating point {name} was calibrated for this model (available: {have})")
        return self.points[name]

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Calibration:
        if not isinstance(d, dict):
            raise ModelError(f"{where} must be an object, got {type(d).__name__}")
        source = str(d.get("source") or "calibrated at the end of training (no provenance recorded)")
        stored = d.get("operating_points") or {}
        if not isinstance(stored, dict):
            raise ModelError(f"{where}.operating_points must be an object")
        points: dict[str, OperatingPoint] = {}
        top = _probability(d.get("threshold"), f"{where}.threshold")
        if EER not in stored and d.get("default", EER) == EER:  # older cards: the EER point at the top level only
            points[EER] = OperatingPoint(EER, top, float(d.get("val_far", math.nan)),
                                         float(d.get("val_frr", math.nan)), source)
        for name, p in stored.items():
            if not isinstance(p, dict) or not re.fullmatch(r"EER|FAR=\d(\.\d+)?e[+-]\d+", name):
                raise ModelError(f"{where}.operating_points: {name!r} is not an operating point")
            _probability(p.get("threshold"), f"{where}.operating_points.{name}")
            try:
                points[name] = OperatingPoint.from_dict(name, p, source)
            except (KeyError, TypeError, ValueError) as e:
                raise ModelError(f"{where}.operating_points.{name}: {e}") from e
        default = str(d.get("default", EER))
        if default not in points:
            raise ModelError(f"{where}.default names {default!r}, which is not among its operating points")
        if points[default].threshold != top:
            raise ModelError(f"{where}.threshold ({top}) differs from its default point {default}'s "
                             f"({points[default].threshold})")
        curve = d.get("far_curve") or []
        try:
            curve_t = tuple((float(f), _probability(t, f"{where}.far_curve")) for f, t in curve)
        except (TypeError, ValueError) as e:
            raise ModelError(f"{where}.far_curve must be a list of [far, threshold] pairs ({e})") from e
        return cls(points[default].threshold, source, str(d.get("rule", "")), int(d.get("n_pairs", 0)),
                   tuple(d.get("val_identities", ())), points, default, curve_t,
                   tuple(d.get("identities", ())), d)


def calibration_record(points: Points, default: str = EER, identities: list[str] | tuple[str, ...] = (),
                       **extra: Any) -> dict[str, Any]:
    """The `calibration` section of model.json for a calibration's points (validated on the way out)."""
    if default not in points.points:
        default = EER if EER in points.points else next(iter(points.points))
    d = points.points[default]
    cal = {"threshold": d.threshold, "default": default, "source": d.source, "rule": points.rule,
           "calibrated_on": points.what, "kinds": list(points.kinds), "unresolved": list(points.unresolved),
           "operating_points": {n: p.to_dict() for n, p in points.points.items()},
           "far_curve": [[f, t] for f, t in points.curve], "identities": list(identities), **extra}
    Calibration.from_dict(cal, "calibration")  # what verify will read back must validate
    return cal


@dataclass(frozen=True)
class Lineage:
    """Where a fine-tuned model started, and every identity its ancestors trained or selected on."""

    init: str = ""
    init_weights_sha256: str = ""
    identities: tuple[str, ...] = ()


@dataclass(frozen=True)
class Provenance:
    """Who made the weights and how long it took: versions, the command, the parameter count, the machine."""

    siamface_version: str = ""
    torch_version: str = ""
    created_by: str = ""
    parameters: int = 0
    machine: dict[str, Any] = field(default_factory=dict)
    epochs_run: int = 0
    train_seconds: float = 0.0
    note: str = ""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Provenance:
        return cls(str(raw.get("siamface_version", "")), str(raw.get("torch_version", "")),
                   str(raw.get("created_by", "")), int(raw.get("parameters", 0)), dict(raw.get("machine") or {}),
                   int(raw.get("epochs_run", 0)), float(raw.get("train_seconds", 0.0)), str(raw.get("note", "")))


@dataclass(frozen=True)
class ModelCard:
    """A validated `model.json`. `raw` keeps the whole JSON for fields that only reports print."""

    path: Path
    model: ModelConfig
    preprocess: PreprocessConfig
    weights_sha256: str
    status: str = "complete"
    epoch: int = 0
    data: DataConfig | None = None
    train: TrainConfig | None = None
    split: dict[str, tuple[str, ...]] = field(default_factory=dict)
    lineage: Lineage = Lineage()
    val: dict[str, Any] = field(default_factory=dict)
    calibration: Calibration | None = None
    warning: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    provenance: Provenance = Provenance()
    tower_weights: str = ""  # "factory": the tower is rebuilt by its factory, only the head is stored

    @property
    def file(self) -> Path:
        return self.path / META

    @property
    def threshold(self) -> float | None:
        return self.calibration.threshold if self.calibration else None

    def identities(self, split: str) -> tuple[str, ...]:
        return self.split.get(split, ())

    def seen_identities(self) -> set[str]:
        """Identities this model (or a model it was fine-tuned from) trained or selected on: evaluation
        refuses every one of them."""
        cal = set(self.calibration.identities) if self.calibration else set()
        return set(self.identities("train")) | set(self.identities("val")) | set(self.lineage.identities) | cal

    @classmethod
    def read(cls, folder: Path) -> ModelCard:
        """Parse and validate `folder/model.json`; ModelError naming the file and the field otherwise."""
        path = folder / META
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelError(f"{path}: not a readable model description ({e})") from e
        return cls.from_dict(raw, folder)

    @classmethod
    def from_dict(cls, raw: Any, folder: Path) -> ModelCard:
        where = str(folder / META)
        if not isinstance(raw, dict):
            raise ModelError(f"{where}: expected a JSON object")
        try:
            model = from_dict(ModelConfig, raw["model"])
            pre = from_dict(PreprocessConfig, raw["preprocess"])
            data = from_dict(DataConfig, raw["data"]) if isinstance(raw.get("data"), dict) else None
            train = from_dict(TrainConfig, raw["train"]) if isinstance(raw.get("train"), dict) else None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ModelError(f"{where}: not a valid siamface model description ({e})") from e
        if not isinstance(model.kwargs, dict):
            raise ModelError(f"{where}: model.kwargs must be an object, got {type(model.kwargs).__name__}")
        digest = raw.get("weights_sha256")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ModelError(f"{where}: weights_sha256 is missing or not a SHA-256; the weights cannot be "
                             "checked, so they are not loaded")
        split = raw.get("split") or {}
        if not isinstance(split, dict) or any(not isinstance(v, list) for v in split.values()):
            raise ModelError(f"{where}: split must map train/val/test to lists of identities")
        cal = raw.get("calibration")
        lineage = Lineage(str(train.init) if train else "", str(raw.get("init_weights_sha256", "")),
                          tuple(raw.get("lineage_identities", ())))
        return cls(folder, model, pre, digest, str(raw.get("status", "complete")), int(raw.get("epoch", 0)),
                   data, train, {k: tuple(v) for k, v in split.items()}, lineage, dict(raw.get("val") or {}),
                   Calibration.from_dict(cal, f"{where}: calibration") if cal is not None else None,
                   str(raw.get("warning", "")), raw, Provenance.from_dict(raw), str(raw.get("tower_weights", "")))

    def to_dict(self) -> dict[str, Any]:
        """The model.json of this card (from_dict's inverse), in its usual key order. An optional field is
        written when it is set or when the card was read with it; the calibration is written as it was given;
        keys of `raw` that no field holds (a report's own) are kept. The weights hash only once it is known."""
        p = self.provenance
        out: dict[str, Any] = {}
        has = self.raw.keys()

        def put(key: str, value: Any, unset: Any) -> None:
            if value != unset or key in has:
                out[key] = value

        put("siamface_version", p.siamface_version, "")
        put("torch_version", p.torch_version, "")
        put("created_by", p.created_by, "")
        out.update(model=to_dict(self.model), preprocess=to_dict(self.preprocess))
        put("data", to_dict(self.data) if self.data else None, None)
        put("train", to_dict(self.train) if self.train else None, None)
        put("split", {k: list(v) for k, v in self.split.items()}, {})
        put("parameters", p.parameters, 0)
        put("machine", p.machine, {})
        put("init_weights_sha256", self.lineage.init_weights_sha256, "")
        if self.train is not None or self.lineage.identities or "lineage_identities" in has:
            out["lineage_identities"] = list(self.lineage.identities)
        put("tower_weights", self.tower_weights, "")
        out["status"] = self.status
        put("note", p.note, "")
        put("epoch", self.epoch, 0)
        put("epochs_run", p.epochs_run, 0)
        put("train_seconds", p.train_seconds, 0.0)
        put("val", self.val, {})
        if self.calibration is not None:
            out["calibration"] = self.calibration.raw
        put("warning", self.warning, "")
        out.update({k: v for k, v in self.raw.items() if k not in out and k != "weights_sha256"})
        if self.weights_sha256:
            out["weights_sha256"] = self.weights_sha256
        return out


def calibrate(pairs: PairScores, split_val: tuple[str, ...], seed: int) -> dict[str, Any]:
    """Operating points on validation pairs (EER and each FAR they resolve), with the evidence behind each."""
    ids = ", ".join(split_val[:8]) + (" ..." if len(split_val) > 8 else "")
    what = f"{len(split_val)} validation identities never used for training ({ids}); seed {seed}"
    points = calibrate_sets([replace(pairs, kind=pairs.kind or "validation")], what, seed=seed)
    eer = points.points.get(EER)
    acc = metrics.accuracy_at(pairs.same.astype(int), pairs.scores, eer.threshold) if eer is not None else None
    return calibration_record(points, EER, n_pairs=int(len(pairs.scores)), val_identities=list(split_val),
                              val_accuracy_at_threshold=acc)
