"""The default model: dlib's descriptor (converted, native) under the Siamese L1 head trained on LFW people,
and the starting point `dlib-resnet` that fine-tunes it on your own faces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _helpers import att_dir, one_thread
from safetensors.torch import load_file

from siamface.card import far_name
from siamface.checkpoint import WEIGHTS_DIR, default_model_path, load_model
from siamface.cli import main
from siamface.data import read_lfw_pairs
from siamface.errors import LeakageError
from siamface.evaluate import run_evaluation
from siamface.verify import Verifier

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
TWIN = WEIGHTS_DIR / "dlib-twin"


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return Verifier()  # no model given: the default


def test_the_default_is_the_twin_and_ships_only_its_head() -> None:
    assert default_model_path() == TWIN
    lm = load_model(TWIN)
    card = lm.card
    assert card.model.name == "dlib_resnet" and card.raw["tower_weights"] == "factory"
    assert sorted(load_file(TWIN / "model.safetensors")) == ["head.fc.bias", "head.fc.weight"]
    assert card.preprocess.align.detector == "mmod" and card.preprocess.align.alignment == "dlib_chip"
    assert card.train.freeze == "all" and card.train.init == "dlib-resnet"
    cal = card.calibration
    assert cal.point().name == cal.default == far_name(1e-3)  # the default for doors and accounts
    thresholds = [cal.point(f).threshold for f in (1e-2, 1e-3, 1e-4, 1e-5)]
    assert thresholds == sorted(thresholds)  # stricter as the rate falls
    kinds = {"lfw", "att", "imm", "lfw-grey", "lfw-lowres", "lfw-blur", "lfw-jpeg", "lfw-sidelight", "lfw-dark"}
    for far in (1e-2, 1e-3):
        p = cal.point(far)
        assert {e.kind for e in p.kinds} == kinds and p.far == far
        assert all(e.far <= far for e in p.kinds)  # at or under the stated rate on every kind
        assert p.threshold == max(e.needs for e in p.kinds)
    # calibrated on people it never trained on, and never on LFW's test-role people
    assert not set(cal.identities) & (set(card.identities("train")) | set(card.identities("val")))
    assert not set(cal.identities) & set(card.identities("test")) and len(cal.identities) > 2000


@pytest.mark.parametrize("same, a, b", [(True, "s1/1.pgm", "s1/2.pgm"), (True, "s7/3.pgm", "s7/9.pgm"),
                                        (True, "s22/1.pgm", "s22/10.pgm"), (False, "s1/1.pgm", "s2/1.pgm"),
                                        (False, "s7/3.pgm", "s22/1.pgm"), (False, "s30/5.pgm", "s31/5.pgm")])
def test_att_pairs_it_never_saw_are_decided_right(verifier: Verifier, data_root: Path, same: bool, a: str,
                                                  b: str) -> None:
    att = att_dir(data_root)
    verdict = verifier.verify(att / a, att / b)
    assert verdict.same is same, verdict
    assert verdict.operating_point == far_name(1e-3) and verdict.far == 1e-3 and len(verdict.faces) == 2
    lo, hi = verdict.far_interval
    assert lo <= 1e-3 <= hi
    assert all(len(f["box"]["landmarks"]) == 5 for f in verdict.faces)


def test_lfw_pairs_are_decided_as_the_stated_rates_say(verifier: Verifier, data_root: Path) -> None:
    """40 pairs of pairsDevTest: no stranger accepted at FAR 1e-3, most genuine pairs accepted (its FRR
    on LFW people is about 18%)."""
    lfw = data_root / "lfw"
    pairs = read_lfw_pairs(lfw / "pairsDevTest.txt", lfw / "deepfunneled")
    pick = pairs[:20] + pairs[-20:]
    rows = verifier.verify_pairs([(p.a, p.b) for p in pick], progress=False)
    assert not any(r["same"] for r, p in zip(rows, pick) if not p.same)
    assert sum(r["same"] for r, p in zip(rows, pick) if p.same) >= 14


def test_it_has_seen_every_lfw_person_so_lfw_protocols_are_refused(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(LeakageError):
        run_evaluation("dlib-twin", protocol="lfw-view2", data=str(data_root / "lfw"), out=str(tmp_path / "r"))


def test_fine_tuning_the_head_on_your_faces_through_the_cli(data_root: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    rc = main(["train", "--data", str(att_dir(data_root)), "--init", "dlib-resnet", "--freeze", "all",
               "--no-distortions", "--flip", "--n-val", "5", "--n-test", "10", "--val-way", "5", "--val-pairs", "200",
               "--val-tasks", "50", "--epochs", "2", "--pairs-per-epoch", "512", "--lr", "1e-2", "--no-progress",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    meta = json.loads((out / "model.json").read_text())
    assert meta["tower_weights"] == "factory" and meta["model"]["name"] == "dlib_resnet"
    assert meta["val"]["auc"] > 0.95  # dlib's descriptor separates AT&T people well from the first epoch
    assert (out / "model.safetensors").stat().st_size < 4096  # the head only
