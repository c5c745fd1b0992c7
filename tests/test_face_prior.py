"""benchmarks/face_prior.py: its run config is the all-LFW split, and shipping replaces a model folder whole."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest
from _helpers import TinyRun, tiny_run

from siamface.checkpoint import META, WEIGHTS, load_model
from siamface.config import RunConfig
from siamface.errors import ModelError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import face_prior  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> TinyRun:
    return tiny_run(tmp_path_factory, data_root)


def test_the_prior_trains_on_every_lfw_person_but_the_validation_ones(data_root: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIAMFACE_DATA", str(data_root))
    run = face_prior.run_config(face_prior.parser().parse_args([]))
    everyone = {d.name for d in (data_root / "lfw" / "deepfunneled").iterdir() if d.is_dir()}
    assert set(run.data.train_ids) | set(run.data.val_ids) == everyone and run.data.test_ids == ()
    assert len(run.data.val_ids) == 150 and not set(run.data.train_ids) & set(run.data.val_ids)
    assert run.preprocess.align is None and run.preprocess.crop == 0.55
    assert run.model.kwargs == {"head_weights": "nonpositive", "embedding": "l2"} and run.train.id_loss == 1.0


def test_ship_replaces_the_folder_with_a_loadable_readable_model(tiny: TinyRun, tmp_path: Path) -> None:
    dest = tmp_path / "weights" / "face-prior"
    dest.mkdir(parents=True)
    (dest / "stale.txt").write_text("from an older prior")
    (dest.parent / ".face-prior-old").mkdir()  # left behind by an interrupted ship
    (dest.parent / ".face-prior-old" / "x").write_text("x")
    assert face_prior.ship(tiny.path, dest) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted([META, WEIGHTS])  # nothing stale, no state files
    assert load_model(dest).card.weights_sha256 == load_model(tiny.path).card.weights_sha256
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    assert [p.name for p in dest.parent.iterdir()] == ["face-prior"]  # no temporary or old folder left


def test_ship_refuses_an_incomplete_run_and_keeps_the_shipped_model(tiny: TinyRun, tmp_path: Path) -> None:
    dest = tmp_path / "face-prior"
    face_prior.ship(tiny.path, dest)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / META).write_text((tiny.path / META).read_text())
    (broken / WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(ModelError):
        face_prior.ship(broken, dest)
    load_model(dest)  # still the good one


def test_the_shipped_prior_is_what_this_benchmark_trains_by_default(data_root: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from siamface.checkpoint import WEIGHTS_DIR
    from siamface.resume import run_differences

    monkeypatch.setenv("SIAMFACE_DATA", str(data_root))
    shipped = RunConfig.from_dict(json.loads((WEIGHTS_DIR / "face-prior" / META).read_text()))
    diff = run_differences(face_prior.run_config(face_prior.parser().parse_args([])), shipped)
    assert diff in ([], ["data.root"])  # the data may sit elsewhere on another machine
