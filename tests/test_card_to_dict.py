"""`ModelCard.to_dict()`: the model.json a card describes, written by the one `save_model`. Every shipped card
reads back as the same card, the untouched fields as they were; training writes through the typed card."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from siamface.card import META, Calibration, ModelCard, Provenance
from siamface.checkpoint import FROM_FACTORY, WEIGHTS_DIR, load_model, save_model, shipped_models
from siamface.config import ModelConfig
from siamface.models import create_model, default_preprocess


@pytest.mark.parametrize("name", shipped_models())
def test_every_shipped_card_round_trips(name: str) -> None:
    raw = json.loads((WEIGHTS_DIR / name / META).read_text())
    card = ModelCard.read(WEIGHTS_DIR / name)
    out = json.loads(json.dumps(card.to_dict()))
    assert ModelCard.from_dict(out, card.path) == card
    assert set(out) - set(raw) <= {"lineage_identities"}  # written by training cards since lineage exists
    for key in raw.keys() - {"data", "train"}:  # configs gain the fields added since (with their defaults)
        assert out[key] == raw[key], key
    assert out["calibration"] == raw["calibration"] if "calibration" in raw else "calibration" not in out


def test_save_model_writes_the_typed_card_and_returns_it(tmp_path: Path) -> None:
    pre = default_preprocess("tiny")
    torch.manual_seed(0)
    model = create_model("tiny", preprocess=pre)
    cal = Calibration.from_dict({"threshold": 0.4, "source": "a test", "val_far": 0.1, "extra": [1, 2]}, "cal")
    made = Provenance("0.1.0", torch.__version__, "a test", 17_721, {"threads": 1}, note="made by a test")
    card = ModelCard(Path("elsewhere"), ModelConfig("tiny"), pre, "", "complete", 3, calibration=cal, provenance=made)
    written = save_model(tmp_path, model, card)
    meta = json.loads((tmp_path / META).read_text())
    assert meta == json.loads(json.dumps(written.to_dict())) and written.path == tmp_path
    assert meta["calibration"] == {"threshold": 0.4, "source": "a test", "val_far": 0.1, "extra": [1, 2]}  # as given
    assert (meta["created_by"], meta["note"], meta["parameters"], meta["epoch"]) == ("a test", "made by a test",
                                                                                    17_721, 3)
    assert "data" not in meta and "warning" not in meta and len(meta["weights_sha256"]) == 64
    assert load_model(tmp_path).card == written


def test_a_factory_tower_is_not_stored(tmp_path: Path) -> None:
    src = load_model("dlib-resnet")
    card = replace(src.card, weights_sha256="", tower_weights=FROM_FACTORY)
    save_model(tmp_path, src.model, card)
    from safetensors.torch import load_file

    assert sorted(load_file(tmp_path / "model.safetensors")) == ["head.fc.bias", "head.fc.weight"]
    assert json.loads((tmp_path / META).read_text())["tower_weights"] == "factory"
