"""Checkpoints: safetensors + model.json round trips, hash-checked loading, atomic writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _helpers import one_thread, read_meta, write_meta
from torch import nn

from siamface.checkpoint import (
    META,
    WEIGHTS,
    LoadedModel,
    load_model,
    resolve_run,
    save_model,
)
from siamface.config import ModelConfig, PreprocessConfig, to_dict
from siamface.errors import ModelError
from siamface.files import sha256_file
from siamface.models import SiameseNet, create_model, default_preprocess

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def _trained_tiny(seed: int) -> SiameseNet:
    """A tiny model whose weights and batch-norm statistics are not the initial ones."""
    torch.manual_seed(seed)
    net = create_model("tiny")
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x1, x2 = torch.rand(4, 1, 32, 32), torch.rand(4, 1, 32, 32)
    loss = nn.functional.binary_cross_entropy_with_logits(net(x1, x2), torch.tensor([1.0, 0.0, 1.0, 0.0]))
    loss.backward()
    opt.step()
    return net.eval()


def _meta(name: str = "tiny", pre: PreprocessConfig | None = None, **extra: Any) -> dict[str, Any]:
    return {"model": to_dict(ModelConfig(name)), "preprocess": to_dict(pre or default_preprocess(name)), **extra}


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, SiameseNet]:
    run = tmp_path / "run"
    net = _trained_tiny(0)
    save_model(run, net, _meta())
    return run, net


def _outputs(net: SiameseNet) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    x1, x2 = torch.rand(3, 1, 32, 32, generator=g), torch.rand(3, 1, 32, 32, generator=g)
    with torch.no_grad():
        return net.eval()(x1, x2)


# ---- round trip ------------------------------------------------------------------------------------------

def test_round_trip_gives_the_same_outputs(saved: tuple[Path, SiameseNet]) -> None:
    run, net = saved
    lm = load_model(run)
    assert isinstance(lm, LoadedModel)
    assert not lm.model.training  # loaded for inference
    assert lm.path == run
    assert lm.preprocess == default_preprocess("tiny")
    assert torch.equal(_outputs(lm.model), _outputs(net))
    for k, v in net.state_dict().items():  # batch-norm running statistics included
        assert torch.equal(lm.model.state_dict()[k], v), k


def test_model_json_names_the_weights_hash(saved: tuple[Path, SiameseNet]) -> None:
    run, _ = saved
    meta = read_meta(run)
    assert meta["weights_sha256"] == sha256_file(run / WEIGHTS)
    assert len(meta["weights_sha256"]) == 64


def test_resolve_run_accepts_the_folder_or_either_file(saved: tuple[Path, SiameseNet]) -> None:
    run, _ = saved
    assert resolve_run(run) == resolve_run(run / META) == resolve_run(run / WEIGHTS) == run
    assert torch.equal(_outputs(load_model(run / WEIGHTS).model), _outputs(load_model(run).model))


def test_a_shipped_model_resolves_by_name_unless_a_local_folder_has_that_name(
        saved: tuple[Path, SiameseNet], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from siamface.checkpoint import WEIGHTS_DIR, shipped_models

    assert "lfw-view1" in shipped_models()
    monkeypatch.chdir(tmp_path)
    assert resolve_run("lfw-view1") == WEIGHTS_DIR / "lfw-view1"
    run, _ = saved
    (tmp_path / "lfw-view1").symlink_to(run)  # a user's own folder of that name wins
    assert resolve_run("lfw-view1") == Path("lfw-view1")
    with pytest.raises(ModelError, match="no-such-model"):
        resolve_run("no-such-model")


def test_threshold_comes_from_calibration(tmp_path: Path) -> None:
    net = _trained_tiny(0)
    save_model(tmp_path / "a", net, _meta())
    save_model(tmp_path / "b", net, _meta(calibration={"threshold": 0.375, "source": "test"}))
    assert load_model(tmp_path / "a").threshold is None
    assert load_model(tmp_path / "b").threshold == 0.375
    assert load_model(tmp_path / "b").card.calibration.source == "test"


def test_saved_preprocessing_rebuilds_the_input_geometry(tmp_path: Path) -> None:
    pre = PreprocessConfig(size=40, channels=3, mean=0.5, std=0.25)
    torch.manual_seed(0)
    save_model(tmp_path, create_model("tiny", preprocess=pre), _meta("tiny", pre))
    lm = load_model(tmp_path)
    assert lm.preprocess == pre
    assert (lm.model.in_channels, lm.model.input_size) == (3, 40)


# ---- refusing bad checkpoints -----------------------------------------------------------------------------

def test_flipped_byte_is_refused_by_hash(saved: tuple[Path, SiameseNet]) -> None:
    run, net = saved
    data = bytearray((run / WEIGHTS).read_bytes())
    data[-3] ^= 0x40  # inside the last tensor's data: still a valid safetensors file
    (run / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"(?i)sha-?256") as info:
        load_model(run)
    assert str(run / WEIGHTS) in str(info.value)
    # the hash is what caught it: without the check the file loads, with different weights
    tampered = load_model(run, verify_hash=False).model.state_dict()
    assert any(not torch.equal(tampered[k], v) for k, v in net.state_dict().items())


def test_other_weights_are_refused_by_hash(saved: tuple[Path, SiameseNet], tmp_path: Path) -> None:
    run, _ = saved
    save_model(tmp_path / "other", _trained_tiny(1), _meta())
    (run / WEIGHTS).write_bytes((tmp_path / "other" / WEIGHTS).read_bytes())
    with pytest.raises(ModelError, match=r"(?i)sha-?256"):
        load_model(run)


def test_missing_folder_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelError) as info:
        load_model(missing)
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("name", [META, WEIGHTS])
def test_missing_file_names_the_path(saved: tuple[Path, SiameseNet], name: str) -> None:
    run, _ = saved
    (run / name).unlink()
    with pytest.raises(ModelError) as info:
        load_model(run)
    assert str(run / name) in str(info.value)


@pytest.mark.parametrize("edit,expected", [
    ({"name": "conv4", "kwargs": {}}, "missing tower.features.4.0.weight"),  # another architecture: 4 blocks, not 2
    ({"name": "tiny", "kwargs": {"embed_dim": 24}}, "tower.head.fc.weight is (24, 1024) in the model, (16, 1024)"),
])
def test_an_edited_model_json_is_blamed_not_the_weights(saved: tuple[Path, SiameseNet], edit: dict[str, Any],
                                                        expected: str) -> None:
    """Issue 11, fault 9: torch's error was several lines, of which only 'Error(s) in loading state_dict' was
    shown, blaming model.safetensors."""
    run, _ = saved
    meta = read_meta(run)
    meta["model"] = edit  # same weights file, so the hash still matches
    write_meta(run, meta)
    with pytest.raises(ModelError) as info:
        load_model(run)
    msg = str(info.value)
    assert msg.startswith(f"{run / META}: the architecture it describes ({edit['name']} ")
    assert f"does not fit the weights in {WEIGHTS}" in msg and expected in msg and "\n" not in msg


def test_unknown_architecture_is_a_model_error(saved: tuple[Path, SiameseNet]) -> None:
    run, _ = saved
    meta = read_meta(run)
    meta["model"]["name"] = "resnet9000"
    write_meta(run, meta)
    with pytest.raises(ModelError, match="resnet9000"):
        load_model(run)


@pytest.mark.parametrize("text", ["{not json", "[]", '{"model": {"name": "tiny"}}', '{"preprocess": {}}'])
def test_invalid_model_json_is_a_model_error(saved: tuple[Path, SiameseNet], text: str) -> None:
    run, _ = saved
    (run / META).write_text(text)
    with pytest.raises(ModelError) as info:
        load_model(run)
    assert str(run / META) in str(info.value)


def test_model_entry_that_is_not_an_object_is_a_model_error(saved: tuple[Path, SiameseNet]) -> None:
    run, _ = saved
    meta = read_meta(run)
    meta["model"] = "tiny"
    write_meta(run, meta)
    with pytest.raises(ModelError):
        load_model(run)


def test_impossible_geometry_in_model_json_is_a_model_error(saved: tuple[Path, SiameseNet]) -> None:
    run, _ = saved
    meta = read_meta(run)
    meta["model"] = {"name": "koch2015", "kwargs": {}}  # preprocess stays 32x32: too small for Koch's kernels
    write_meta(run, meta)
    with pytest.raises(ModelError, match="model.json"):
        load_model(run)


def test_corrupt_weights_with_their_own_hash_are_a_model_error_naming_the_weights(
        saved: tuple[Path, SiameseNet]) -> None:
    run, _ = saved
    (run / WEIGHTS).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    meta = read_meta(run)
    meta["weights_sha256"] = sha256_file(run / WEIGHTS)  # the hash matches: the file itself is unreadable
    write_meta(run, meta)
    with pytest.raises(ModelError) as info:
        load_model(run)
    assert str(run / WEIGHTS) in str(info.value)
