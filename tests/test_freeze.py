"""siamface.freeze: --freeze all trains the Siamese head alone on descriptors computed once per image, and a
checkpoint of a frozen pretrained tower stores only the head; --freeze STAGE keeps the stages before it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _helpers import att_run, one_thread, weights

import siamface.freeze
from siamface.checkpoint import load_model
from siamface.config import ModelConfig, TrainConfig
from siamface.errors import SiamfaceError
from siamface.freeze import freeze_tower, stages
from siamface.models import create_model, default_preprocess
from siamface.training import train

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def test_freeze_all_leaves_only_the_head_trainable_and_a_stage_keeps_what_comes_before() -> None:
    model = create_model("resface64")
    assert freeze_tower(model, "none") == 0 and all(p.requires_grad for p in model.parameters())
    names = stages(model)
    cut = names[len(names) // 2]
    freeze_tower(model, cut)
    tower = [(n, p.requires_grad) for n, p in model.tower.named_parameters()]
    first = next(i for i, (n, _) in enumerate(tower) if n.startswith(cut + "."))
    assert not any(g for _, g in tower[:first]) and all(g for _, g in tower[first:])
    freeze_tower(model, "all")
    assert not any(p.requires_grad for p in model.tower.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    with pytest.raises(SiamfaceError, match=f"no such stage; use none, all or one of {names[0]}"):
        freeze_tower(create_model("resface64"), "no_such_stage")


def test_freeze_all_needs_no_distortions() -> None:
    with pytest.raises(ValueError, match="turn distortions off") as e:
        TrainConfig(freeze="all")
    from siamface.cli import with_hint

    assert with_hint(e.value).endswith("(--no-distortions)")  # the library names no flag; the CLI adds it
    TrainConfig(freeze="all", distortions=False, flip=True)


def _count_embedded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that receives the number of images of every tower pass of siamface.freeze."""
    rows: list[int] = []
    real = siamface.freeze.embed_batches

    def counting(model: object, images: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        rows.append(len(images))
        return real(model, images, *args, **kwargs)

    monkeypatch.setattr(siamface.freeze, "embed_batches", counting)
    return rows


def _frozen_run(data_root: Path, **train: object) -> object:
    return att_run(data_root, **{"freeze": "all", "distortions": False, "flip": True, "epochs": 3, **train})


def test_a_frozen_tower_is_embedded_once_per_image_and_never_changes(data_root: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    run = _frozen_run(data_root)
    torch.manual_seed(run.train.seed)
    start = create_model("tiny").tower.state_dict()  # what train() builds from the same seed
    rows = _count_embedded(monkeypatch)
    meta = train(run, tmp_path / "run")
    n_train = meta["split"]["train"]
    assert sum(rows) == 2 * 10 * len(n_train) + 10 * len(meta["split"]["val"])  # train images and mirrors, val: once
    trained = load_model(tmp_path / "run").model
    for k, v in start.items():
        assert torch.equal(trained.tower.state_dict()[k], v), k  # weights and batch-norm statistics
    assert meta["calibration"]["threshold"] is not None


def test_a_frozen_pretrained_tower_is_not_stored_and_loads_back(data_root: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    run = _frozen_run(data_root, epochs=1, batch_size=32, val_pairs=100, val_tasks=20)
    run = replace(run, model=ModelConfig("dlib_resnet"), preprocess=default_preprocess("dlib_resnet"))
    meta = train(run, tmp_path / "twin")
    assert meta["tower_weights"] == "factory"
    stored = weights(tmp_path / "twin" / "model.safetensors")
    assert sorted(stored) == ["head.fc.bias", "head.fc.weight"]  # 129 numbers, not 5.6 M
    lm = load_model(tmp_path / "twin")
    shipped = create_model("dlib_resnet").tower.state_dict()
    assert all(torch.equal(lm.model.tower.state_dict()[k], v) for k, v in shipped.items())
    assert torch.equal(lm.model.head.fc.weight, stored["head.fc.weight"])
    states = list((tmp_path / "twin").glob("state*.safetensors"))
    assert states and all(p.stat().st_size < 100_000 for p in states)  # no copy of the 22 MB tower either
    again = train(run, tmp_path / "twin", resume=True)  # the state still resumes: the factory gives the tower
    assert again["calibration"] == meta["calibration"]


def test_kept_descriptors_embed_each_image_once_across_runs(data_root: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(siamface.freeze, "_MEMO", None)
    siamface.freeze.keep_descriptors()
    rows = _count_embedded(monkeypatch)
    init = tmp_path / "init"
    meta = train(_frozen_run(data_root, epochs=1, flip=False), init)  # trains a tiny head on a random tower
    first = sum(rows)
    assert first == 10 * (len(meta["split"]["train"]) + len(meta["split"]["val"]))
    again = train(_frozen_run(data_root, epochs=2, flip=False), tmp_path / "again")  # same tower and images
    assert sum(rows) == first and again["val"] != {}
