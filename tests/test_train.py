"""The training loop on real AT&T faces: run folder contents, no leakage, determinism, resume, schedules,
collapse detection and pairs-file training. Every run is the tiny model at 32x32 for a few hundred pairs."""

from __future__ import annotations

import contextlib
import csv
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _helpers import (
    TinyRun,
    att_dir,
    att_run,
    copy_run,
    identity_of,
    log_without_time,
    one_thread,
    read_log,
    read_meta,
    run_file,
    tiny_run,
    weights,
)

import siamface.training as tr
from siamface import metrics
from siamface.checkpoint import load_model
from siamface.config import DataConfig, TrainConfig
from siamface.data.prepare import prepare_data
from siamface.errors import CollapseError, SiamfaceError
from siamface.models import count_parameters, create_model, default_preprocess
from siamface.optim import cosine_lr, koch_momentum, make_optimizer, set_epoch_hparams
from siamface.preprocess import load_input
from siamface.training import (
    RunConfig,
    train,
)

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
ATT_IDS = {f"s{k}" for k in range(1, 41)}
SMALL = dict(pairs_per_epoch=128, val_tasks=20, val_pairs=100)  # for runs whose quality does not matter


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> TinyRun:
    return tiny_run(tmp_path_factory, data_root)


# ---- the run folder --------------------------------------------------------------------------------------

def test_run_folder_has_weights_metadata_log_and_curves(tiny: TinyRun) -> None:
    for name in ("model.safetensors", "model.json", "log.jsonl", "curves.png", "state.json", "state.safetensors"):
        assert run_file(tiny.path, name).is_file(), name
    assert (tiny.path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p.name for p in tiny.path.iterdir() if p.name.endswith(".tmp")]
    meta = read_meta(tiny.path)
    assert meta == json.loads(json.dumps(tiny.meta))  # train() returns the model.json it wrote, hash included
    assert meta["status"] == "complete"
    assert meta["epochs_run"] == 2 and meta["epoch"] in (1, 2)
    assert meta["parameters"] == count_parameters(create_model("tiny"))
    assert RunConfig.from_dict(meta) == tiny.run  # every config is recorded and rebuilds the run


def test_log_has_one_row_per_epoch(tiny: TinyRun) -> None:
    rows = read_log(tiny.path)
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert math.isfinite(r["loss"]) and r["loss"] > 0
        assert 0.0 <= r["val_auc"] <= 1.0
        assert 0.0 <= r["val_oneshot_accuracy"] <= 1.0
        assert r["val_n_pairs"] == 200 and r["val_oneshot_way"] == 5 and r["val_oneshot_tasks"] == 50
    best = rows[read_meta(tiny.path)["epoch"] - 1]
    assert best["val_oneshot_accuracy"] == max(r["val_oneshot_accuracy"] for r in rows)  # select='oneshot'


def test_split_is_disjoint_and_covers_every_subject(tiny: TinyRun) -> None:
    split = read_meta(tiny.path)["split"]
    train_ids, val_ids, test_ids = set(split["train"]), set(split["val"]), set(split["test"])
    assert (len(train_ids), len(val_ids), len(test_ids)) == (25, 5, 10)
    assert not (train_ids & val_ids) and not (train_ids & test_ids) and not (val_ids & test_ids)
    assert train_ids | val_ids | test_ids == ATT_IDS


def test_calibration_is_recorded_with_its_provenance(tiny: TinyRun) -> None:
    meta = read_meta(tiny.path)
    cal, val_ids = meta["calibration"], meta["split"]["val"]
    assert 0.0 <= cal["threshold"] <= 1.0 and cal["default"] == "EER"
    # every pair of the 5 validation people's 50 photos, with the identities behind each pair
    assert cal["n_pairs"] == 50 * 49 // 2 and cal["val_identities"] == val_ids
    eer = cal["operating_points"]["EER"]
    (ev,) = eer["evidence"]
    assert (ev["n_impostor"], ev["n_genuine"], ev["n_identities"]) == (50 * 40 // 2, 5 * 45, 5)
    assert ev["far_interval"][0] <= ev["far"] <= ev["far_interval"][1] and eer["threshold"] == cal["threshold"]
    for ident in val_ids:
        assert ident in cal["source"]
    assert "never used for training" in cal["source"]
    expected_acc = 1 - (ev["far"] * ev["n_impostor"] + ev["frr"] * ev["n_genuine"]) / cal["n_pairs"]
    assert cal["val_accuracy_at_threshold"] == pytest.approx(expected_acc)
    assert load_model(tiny.path).threshold == cal["threshold"]


# ---- no leakage ------------------------------------------------------------------------------------------

def test_training_never_decodes_a_test_identity(tiny: TinyRun) -> None:
    split = read_meta(tiny.path)["split"]
    decoded_ids = {identity_of(p) for p in tiny.decoded}
    assert decoded_ids == set(split["train"]) | set(split["val"])
    assert not decoded_ids & set(split["test"])
    assert len(tiny.decoded) == len(set(tiny.decoded)) == 300  # each train/val image decoded exactly once


def test_training_batches_come_only_from_training_identities(tiny: TinyRun) -> None:
    split = read_meta(tiny.path)["split"]
    (data,) = tiny.prepared
    assert {identity_of(p) for p in data.train_store.paths} == set(split["train"])
    assert {identity_of(p) for p in data.val_store.paths} == set(split["val"])
    assert len(data.train_store) == 250
    # every optimisation step indexed the training store, never the validation one
    assert tiny.batch_sources and all(tiny.batch_sources)
    assert len(tiny.batch_sources) == 2 * 256 // 64
    assert 0 <= tiny.batch_max_index < len(data.train_store)


# ---- determinism -----------------------------------------------------------------------------------------

def test_same_seed_gives_identical_weights_and_metrics(tiny: TinyRun, tmp_path: Path) -> None:
    meta = train(tiny.run, tmp_path)
    for name in ("model.safetensors", "state.safetensors"):
        a, b = weights(run_file(tiny.path, name)), weights(run_file(tmp_path, name))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert log_without_time(tmp_path) == log_without_time(tiny.path)
    assert meta["val"] == tiny.meta["val"]
    assert meta["calibration"] == tiny.meta["calibration"]


def test_different_seed_gives_different_weights(tiny: TinyRun, tmp_path: Path) -> None:
    # only the randomness of training changes: the split is pinned to the session run's
    split = read_meta(tiny.path)["split"]
    data = replace(tiny.run.data, train_ids=tuple(split["train"]), val_ids=tuple(split["val"]),
                   test_ids=tuple(split["test"]))
    run = replace(tiny.run.replace_train(seed=1), data=data)
    with contextlib.suppress(CollapseError):  # whether 2 short epochs beat chance is not the point here
        train(run, tmp_path)
    assert json.loads((tmp_path / "state.json").read_text())["run"]["data"]["val_ids"] == split["val"]
    a, b = weights(run_file(tiny.path, "state.safetensors")), weights(run_file(tmp_path, "state.safetensors"))
    assert a.keys() == b.keys()
    assert not all(torch.equal(a[k], b[k]) for k in a if k.endswith("weight"))
    assert log_without_time(tmp_path) != log_without_time(tiny.path)


# ---- resume ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [{}, dict(pairing="all", classes_per_batch=8, id_loss=0.5)],
                         ids=["pairs", "all-pairs+cosface"])
def test_resume_after_interruption_equals_an_uninterrupted_run(data_root: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               extra: dict[str, Any]) -> None:
    run = att_run(data_root, epochs=3, **{**SMALL, **extra})
    full = train(run, tmp_path / "full")

    real, calls = tr.train_epoch, []

    def interrupted(*args: Any, **kwargs: Any) -> float:
        calls.append(args[2])  # the epoch: train_epoch(step, opt, epoch)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    part = tmp_path / "part"
    monkeypatch.setattr(tr, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(run, part)
    monkeypatch.setattr(tr, "train_epoch", real)
    assert calls == [0, 1, 2]
    assert json.loads((part / "state.json").read_text())["epoch"] == 2
    assert [r["epoch"] for r in read_log(part)] == [1, 2]
    with open(part / "log.jsonl", "a") as f:  # a crash after the log line but before the state was saved
        f.write(json.dumps({"epoch": 3, "loss": 123.0}) + "\n")

    resumed = train(run, part, resume=True)
    for name in ("model.safetensors", "state.safetensors"):
        a, b = weights(run_file(tmp_path / "full", name)), weights(run_file(part, name))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert ("extra.classifier.weight" in weights(run_file(part, "state.safetensors"))) == bool(extra)
    assert log_without_time(part) == log_without_time(tmp_path / "full")
    assert [r["epoch"] for r in read_log(part)] == [1, 2, 3]
    assert resumed["epoch"] == full["epoch"] and resumed["epochs_run"] == 3
    assert resumed["val"] == full["val"] and resumed["calibration"] == full["calibration"]


def test_existing_run_without_resume_is_refused(tiny: TinyRun, tmp_path: Path) -> None:
    run_dir = copy_run(tiny.path, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with pytest.raises(SiamfaceError, match="a run already exists there; resume it") as e:
        train(tiny.run, run_dir)
    assert e.value.option == "resume" and "--" not in str(e.value)  # the Python API names no flag
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # nothing overwritten


def test_resume_with_another_configuration_is_refused(tiny: TinyRun, tmp_path: Path) -> None:
    run_dir = copy_run(tiny.path, tmp_path / "run")
    with pytest.raises(SiamfaceError, match=r"differs in train\.lr"):
        train(tiny.run.replace_train(lr=0.01), run_dir, resume=True)


def test_resume_refuses_when_the_init_weights_changed_since_the_run_began(tiny: TinyRun, tmp_path: Path) -> None:
    from siamface.checkpoint import save_model

    init = copy_run(tiny.path, tmp_path / "init")
    run = tiny.run.replace_train(init=str(init), epochs=1)
    train(run, tmp_path / "ft")
    lm = load_model(init)
    with torch.no_grad():
        next(lm.model.parameters()).add_(0.01)  # the same path now holds other weights (a re-shipped prior)
    save_model(init, lm.model, read_meta(init))
    with pytest.raises(SiamfaceError, match=r"weights of the starting model \(init\)"):
        train(run, tmp_path / "ft", resume=True)


def test_init_defaults_name_a_shipped_model_by_name_and_a_run_by_its_absolute_path(tiny: TinyRun) -> None:
    from siamface.lineage import init_defaults

    model, pre, stored = init_defaults("lfw-view1")
    assert stored == "lfw-view1" and model.name == "resface64" and pre.align.detector == "haar"
    model, pre, stored = init_defaults(str(tiny.path / "model.json"))
    assert stored == str(tiny.path.resolve()) and model.name == tiny.run.model.name and pre == tiny.run.preprocess


def test_resume_ignores_runtime_only_fields_and_does_not_train_past_a_stop(tiny: TinyRun, tmp_path: Path) -> None:
    run_dir = copy_run(tiny.path, tmp_path / "run")
    before = (run_dir / "model.safetensors").read_bytes()
    meta = train(tiny.run.replace_train(progress=True, threads=1), run_dir, resume=True)  # finished: no epoch more
    assert meta["epochs_run"] == read_meta(tiny.path)["epochs_run"]
    assert (run_dir / "model.safetensors").read_bytes() == before


def test_resume_after_an_early_stop_keeps_the_stopped_model(data_root: Path, tmp_path: Path) -> None:
    run = att_run(data_root, epochs=3, max_minutes=1e-6)
    first = train(run, tmp_path / "run")
    assert first["epochs_run"] == 1
    again = train(run, tmp_path / "run", resume=True)
    assert again["epochs_run"] == 1 and again["calibration"] == first["calibration"]


def test_a_model_folder_without_training_state_is_never_overwritten(tiny: TinyRun, tmp_path: Path) -> None:
    run_dir = copy_run(tiny.path, tmp_path / "run")
    for name in ("state.safetensors", "state.json"):
        run_file(run_dir, name).unlink()
    before = (run_dir / "model.safetensors").read_bytes()
    with pytest.raises(SiamfaceError, match="no training state"):
        train(tiny.run, run_dir)
    assert (run_dir / "model.safetensors").read_bytes() == before


# ---- schedules and the optimiser ---------------------------------------------------------------------------

def test_cosine_lr_warms_up_then_decays_to_one_percent() -> None:
    base, total, warmup = 0.1, 110, 10
    assert cosine_lr(0, total, warmup, base) == pytest.approx(base / 10)
    assert cosine_lr(4, total, warmup, base) == pytest.approx(base * 5 / 10)
    assert cosine_lr(9, total, warmup, base) == pytest.approx(base)
    assert cosine_lr(10, total, warmup, base) == pytest.approx(base)  # decay starts at its top
    assert cosine_lr(60, total, warmup, base) == pytest.approx(base * (0.01 + 0.99 * 0.5))  # half way
    assert cosine_lr(110, total, warmup, base) == pytest.approx(base * 0.01)
    assert cosine_lr(500, total, warmup, base) == pytest.approx(base * 0.01)  # clamped past the end
    lrs = [cosine_lr(s, total, warmup, base) for s in range(warmup, total)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert cosine_lr(0, 10, 0, base) == pytest.approx(base)  # no warm-up


def test_koch_momentum_ramps_linearly_then_holds() -> None:
    assert koch_momentum(0, 0.5, 0.9, 30) == pytest.approx(0.5)
    assert koch_momentum(15, 0.5, 0.9, 30) == pytest.approx(0.7)
    assert koch_momentum(30, 0.5, 0.9, 30) == pytest.approx(0.9)
    assert koch_momentum(200, 0.5, 0.9, 30) == pytest.approx(0.9)
    assert koch_momentum(3, 0.5, 0.9, 0) == pytest.approx(0.9)  # no ramp


def _layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if not list(m.children()) and list(m.parameters(recurse=False))]


def test_koch_optimizer_has_one_sgd_group_per_layer() -> None:
    model = create_model("tiny")
    cfg = TrainConfig(regime="koch", lr=0.05, weight_decay=2e-4, momentum_start=0.5, momentum_end=0.9,
                      momentum_epochs=10, lr_decay=0.99)
    opt = make_optimizer(model, cfg)
    layers = _layers(model)
    assert isinstance(opt, torch.optim.SGD)
    assert len(opt.param_groups) == len(layers) == 7  # 2 x (conv, bn), fc, bn1d, head
    for g, layer in zip(opt.param_groups, layers):
        assert [id(p) for p in g["params"]] == [id(p) for p in layer.parameters(recurse=False)]
        assert g["weight_decay"] == 2e-4
    grouped = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    for epoch in (0, 5, 40):
        set_epoch_hparams(opt, cfg, epoch)
        for g in opt.param_groups:
            assert g["lr"] == pytest.approx(0.05 * 0.99**epoch)
            assert g["momentum"] == pytest.approx(koch_momentum(epoch, 0.5, 0.9, 10))


def test_koch_optimizer_takes_per_layer_values() -> None:
    model = create_model("tiny")
    lrs = tuple(0.01 * (k + 1) for k in range(7))
    mus = tuple(0.8 + 0.01 * k for k in range(7))
    cfg = TrainConfig(regime="koch", layer_lr=lrs, layer_momentum=mus, layer_l2=(1e-4,) * 7, momentum_epochs=1)
    opt = make_optimizer(model, cfg)
    set_epoch_hparams(opt, cfg, 3)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([lr * 0.99**3 for lr in lrs])
    assert [g["momentum"] for g in opt.param_groups] == pytest.approx(list(mus))  # ramp done after 1 epoch
    with pytest.raises(ValueError, match="layer_lr"):
        make_optimizer(model, replace(cfg, layer_lr=(0.1, 0.2)))


@pytest.mark.parametrize("regime", ["adamw", "koch"])
def test_a_nonpositive_head_and_the_identity_prototypes_are_not_decayed(regime: str) -> None:
    from siamface.losses import CosineClassifier

    model = create_model("tiny", head_weights="nonpositive")
    clf = CosineClassifier(5, model.embed_dim) if regime == "adamw" else None
    opt = make_optimizer(model, TrainConfig(regime=regime, weight_decay=0.01), clf)
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decay_of[id(model.head.fc.weight)] == 0.0
    assert decay_of[id(model.tower.head.fc.weight)] == 0.01  # the tower still is
    if clf is not None:
        assert decay_of[id(clf.weight)] == 0.0
    assert len(decay_of) == len(list(model.parameters())) + (clf is not None)


def test_adamw_decays_weights_only_and_ignores_epoch_hparams() -> None:
    model = create_model("tiny")
    cfg = TrainConfig(regime="adamw", lr=3e-3, weight_decay=0.01)
    opt = make_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    set_epoch_hparams(opt, cfg, 7)
    assert [g["lr"] for g in opt.param_groups] == [3e-3, 3e-3]


# ---- collapse ----------------------------------------------------------------------------------------------

def test_huge_learning_rate_collapses_and_is_reported(data_root: Path, tmp_path: Path) -> None:
    run = att_run(data_root, epochs=3, regime="adamw", lr=50.0, warmup_epochs=0.0, **SMALL)
    with pytest.raises(CollapseError, match="collapsed") as info:
        train(run, tmp_path)
    assert str(tmp_path / "log.jsonl") in str(info.value)
    rows = read_log(tmp_path)
    assert rows and rows[-1]["val_auc"] == pytest.approx(0.5)
    assert (tmp_path / "curves.png").is_file()
    assert not (tmp_path / "model.json").exists()  # no epoch beat chance: no model to mistake for a trained one


def _labels() -> np.ndarray:
    return np.tile([0, 1], 50)


def _summary(scores: np.ndarray, oneshot: float) -> dict[str, Any]:
    return {**metrics.verification_summary(_labels(), scores), "oneshot_accuracy": oneshot}


def _good_scores() -> np.ndarray:
    return _labels() * 0.5 + 0.25 + np.linspace(0.0, 0.01, 100)


def test_constant_validation_scores_raise_collapse_error(data_root: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    const = np.full(100, 0.5)
    seen: list[np.ndarray] = []
    real_is_collapsed = metrics.is_collapsed

    def is_collapsed(scores: np.ndarray, labels: np.ndarray | None = None, **kw: Any) -> bool:
        seen.append(np.asarray(scores))
        return real_is_collapsed(scores, labels, **kw)

    monkeypatch.setattr(tr, "validate", lambda *a, **k: (_summary(const, 0.2), _labels(), const))
    monkeypatch.setattr(tr.metrics, "is_collapsed", is_collapsed)
    run = att_run(data_root, epochs=3, pairs_per_epoch=64, val_tasks=20, val_pairs=100)
    with pytest.raises(CollapseError, match="collapsed"):
        train(run, tmp_path)
    assert len(seen) == 1 and np.array_equal(seen[0], const)  # detected after the first epoch, not the third
    assert [r["epoch"] for r in read_log(tmp_path)] == [1]


@pytest.fixture(scope="module")
def collapsed_late(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A run whose first epoch is good and whose second collapses to constant scores."""
    out = tmp_path_factory.mktemp("collapsed_late")
    answers = iter([_good_scores(), np.full(100, 0.5), np.full(100, 0.5)])

    def validate(*args: Any, **kwargs: Any) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        scores = next(answers)
        return _summary(scores, 0.9 if scores.std() else 0.2), _labels(), scores

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tr, "validate", validate)
        meta = train(att_run(data_root, epochs=4, pairs_per_epoch=64, val_tasks=20, val_pairs=100), out)
    return out, meta


def test_collapse_after_a_good_epoch_stops_early_with_a_warning(collapsed_late: tuple[Path, dict[str, Any]]) -> None:
    out, meta = collapsed_late
    assert "collapse" in meta["warning"] and "kept epoch 1" in meta["warning"]
    assert read_meta(out)["warning"] == meta["warning"]
    assert meta["epoch"] == 1
    assert [r["epoch"] for r in read_log(out)] == [1, 2]  # stopped at once, did not run epochs 3 and 4
    assert load_model(out).model is not None  # the kept epoch's weights load (hash matches)


def test_collapse_after_a_good_epoch_still_calibrates_the_kept_model(
        collapsed_late: tuple[Path, dict[str, Any]]) -> None:
    out, meta = collapsed_late
    assert meta["status"] == "complete"
    assert "threshold" in meta.get("calibration", {})
    assert load_model(out).threshold is not None


# ---- training from a pairs file ------------------------------------------------------------------------------

def _write_att_pairs_csv(att: Path, path: Path) -> list[tuple[str, str, int]]:
    """5 same pairs per subject s1..s20 and one different pair for every two of them (290 pairs)."""
    subjects = [f"s{k}" for k in range(1, 21)]
    rows = [(str(att / s / f"{i}.pgm"), str(att / s / f"{i + 1}.pgm"), 1) for s in subjects for i in (1, 3, 5, 7, 9)]
    rows += [(str(att / a / f"{(i + j) % 10 + 1}.pgm"), str(att / b / f"{(i * j) % 10 + 1}.pgm"), 0)
             for i, a in enumerate(subjects) for j, b in enumerate(subjects) if i < j]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_a", "image_b", "label"])
        w.writerows(rows)
    return rows


def test_training_from_a_pairs_csv(data_root: Path, tmp_path: Path) -> None:
    rows = _write_att_pairs_csv(att_dir(data_root), tmp_path / "pairs.csv")
    run = replace(att_run(data_root, epochs=1, batch_size=64), data=DataConfig(pairs_file=str(tmp_path / "pairs.csv")))
    meta = train(run, tmp_path / "run")
    assert meta["status"] == "complete"
    split = meta["split"]
    assert len(split["val"]) == 2 and len(split["train"]) == 18 and split["test"] == []
    assert set(split["train"]) | set(split["val"]) == {f"s{k}" for k in range(1, 21)}
    assert not set(split["train"]) & set(split["val"])
    ids = [(Path(a).parent.name, Path(b).parent.name) for a, b, _ in rows]
    val_pairs = [p for p in ids if set(p) <= set(split["val"])]
    assert meta["calibration"]["n_pairs"] == len(val_pairs) == 11  # 5 + 5 same, 1 different
    log = read_log(tmp_path / "run")
    assert len(log) == 1 and "val_oneshot_accuracy" not in log[0]  # pairs validation: verification only

    data = prepare_data(run.data, default_preprocess("tiny"), seed=0, loader=load_input, progress=False)
    assert {identity_of(p) for p in data.train_store.paths} == set(split["train"])
    assert {identity_of(p) for p in data.val_store.paths} == set(split["val"])
    assert data.train_pairs is not None and len(data.train_pairs) == sum(set(p) <= set(split["train"]) for p in ids)


def test_all_pairs_batches_need_identity_folders(tmp_path: Path) -> None:
    from siamface.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from siamface.models import default_preprocess

    run = RunConfig(ModelConfig("tiny"), default_preprocess("tiny"), DataConfig(pairs_file=str(tmp_path / "p.csv")),
                    TrainConfig(pairing="all"))
    with pytest.raises(SiamfaceError, match="identity folder"):
        train(run, tmp_path / "out")


def test_a_run_killed_before_its_first_epoch_can_start_again(data_root: Path, tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "log.jsonl").write_text("")  # what a run killed during decoding leaves
    meta = train(att_run(data_root, epochs=1), tmp_path / "run")
    assert meta["status"] == "complete"
