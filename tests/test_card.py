"""siamface.card: model.json is validated on load; a card that cannot be trusted is refused, naming the field."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from _helpers import TinyRun, copy_run, read_meta, tiny_run, write_meta

from siamface.calibration import RESOLVE_ACCEPTS
from siamface.card import EER, ModelCard, far_name
from siamface.checkpoint import load_model
from siamface.errors import ModelError

tiny = pytest.fixture(scope="module")(tiny_run)


def _edited(tiny: TinyRun, tmp_path: Path, **changes: Any) -> Path:
    run = copy_run(tiny.path, tmp_path / "run")
    meta = read_meta(run)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        d = meta
        for p in parents:
            d = d[p]
        if value is ...:
            del d[leaf]
        else:
            d[leaf] = value
    write_meta(run, meta)
    return run


def test_the_trained_card_has_typed_fields(tiny: TinyRun) -> None:
    card = load_model(tiny.path).card
    assert card.status == "complete" and card.model.name == "tiny" and len(card.weights_sha256) == 64
    assert card.calibration is not None and 0 <= card.threshold <= 1
    assert card.calibration.point().name == EER and card.calibration.point().threshold == card.threshold
    assert set(card.identities("val")) == set(card.calibration.val_identities)
    assert card.seen_identities() == set(card.identities("train")) | set(card.identities("val"))


def test_calibration_stores_the_far_points_the_validation_pairs_resolve(tiny: TinyRun) -> None:
    card = load_model(tiny.path).card
    stored = 0
    for far in (1e-2, 1e-3, 1e-4):
        name = far_name(far)
        if name in card.calibration.points:
            point = card.calibration.point(far)
            ev = point.kinds[0]
            assert point.name == name == f"FAR={far:.0e}" and point.far == far and ev.far <= far
            assert ev.n_impostor * far >= RESOLVE_ACCEPTS and ev.kind == "validation"
            assert point.far_interval[0] <= ev.far <= point.far_interval[1]
            assert point.threshold >= card.calibration.point().threshold  # stricter than the EER point
            stored += 1
        else:
            assert name in card.calibration.raw["unresolved"]
            with pytest.raises(ModelError, match=f"no operating point {name}"):
                card.calibration.point(far)
    assert stored >= 1  # every pair of the validation people: at least FAR 1e-2 is resolved


@pytest.mark.parametrize("value", [math.nan, 7.5, -0.1, "abc", None, True])
def test_a_threshold_that_is_not_a_probability_is_refused_naming_the_file(
        tiny: TinyRun, tmp_path: Path, value: Any) -> None:
    run = _edited(tiny, tmp_path, calibration__threshold=value)
    with pytest.raises(ModelError, match=r"model\.json: calibration\.threshold must be a probability"):
        load_model(run)


def test_a_missing_or_malformed_weights_hash_is_refused(tiny: TinyRun, tmp_path: Path) -> None:
    for value in (..., "", "abc", 12):
        run = _edited(tiny, tmp_path / str(value).strip("."), weights_sha256=value)
        with pytest.raises(ModelError, match="weights_sha256 is missing or not a SHA-256"):
            load_model(run)


def test_an_operating_point_with_a_bad_name_or_threshold_is_refused(tiny: TinyRun, tmp_path: Path) -> None:
    run = _edited(tiny, tmp_path / "a", calibration__operating_points={"FAR=0.5%": {"threshold": 0.5}})
    with pytest.raises(ModelError, match="is not an operating point"):
        load_model(run)
    run = _edited(tiny, tmp_path / "b", calibration__operating_points={"FAR=1e-03": {"threshold": 2.0}})
    with pytest.raises(ModelError, match="FAR=1e-03 must be a probability"):
        load_model(run)


def test_an_old_card_without_operating_points_still_has_its_eer_point(tiny: TinyRun, tmp_path: Path) -> None:
    run = _edited(tiny, tmp_path, calibration__operating_points=...)
    card = ModelCard.read(run)
    assert list(card.calibration.points) == [EER] and card.calibration.point().threshold == card.threshold
