"""The from-scratch face model shipped in the package (lfw-view1): loads offline, aligns photos with the Haar
cascade, beats chance on LFW DevTest. The default model is the twin (tests/test_twin.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from siamface import metrics
from siamface.checkpoint import WEIGHTS_DIR, load_model
from siamface.data import read_lfw_pairs
from siamface.errors import LeakageError, NoFaceError, SiamfaceError
from siamface.verify import Verifier

FACE_PRIOR = WEIGHTS_DIR / "face-prior"
LFW_VIEW1 = WEIGHTS_DIR / "lfw-view1"


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return Verifier(LFW_VIEW1)


def test_shipped_model_is_complete_small_and_calibrated() -> None:
    path = LFW_VIEW1
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size < 20 * 2**20
    lm = load_model(path)  # safetensors + SHA-256 check, no network
    assert lm.card.status == "complete"
    assert lm.preprocess.align and lm.preprocess.align.detector == "haar"
    assert lm.preprocess.align.on_missing == "error"
    assert "never used for training" in lm.card.calibration.source


def test_shipped_model_never_saw_devtest_people(data_root) -> None:
    lm = load_model(LFW_VIEW1)
    lfw = data_root / "lfw"
    pairs = read_lfw_pairs(lfw / "pairsDevTest.txt", lfw / "deepfunneled")
    people = {p.parent.name for pair in pairs for p in (pair.a, pair.b)}
    assert not people & (set(lm.card.identities("train")) | set(lm.card.identities("val")))


def test_shipped_model_beats_chance_on_devtest_pairs(verifier: Verifier, data_root) -> None:
    lfw = data_root / "lfw"
    pairs = read_lfw_pairs(lfw / "pairsDevTest.txt", lfw / "deepfunneled")
    rng = np.random.default_rng(0)
    pick = [pairs[k] for k in rng.choice(len(pairs), size=60, replace=False)]
    rows = verifier.verify_pairs([(p.a, p.b) for p in pick], progress=False)
    labels = np.array([int(p.same) for p in pick])
    scores = np.array([r["probability"] for r in rows])
    assert metrics.roc_auc(labels, scores) > 0.7
    assert metrics.accuracy_at(labels, scores, verifier.threshold) > 0.6


def test_verify_cli_uses_the_shipped_model_and_reports_faces(data_root) -> None:
    a = data_root / "lfw" / "deepfunneled" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"
    out = subprocess.run([sys.executable, "-m", "siamface", "verify", "--model", "lfw-view1", str(a), str(a)],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["same"] is True and result["probability"] > result["threshold"]
    assert result["model"].endswith("lfw-view1")
    assert len(result["faces"]) == 2 and result["faces"][0]["box"]["w"] > 0


def test_photo_without_a_face_is_a_no_face_error(verifier: Verifier, data_root, tmp_path) -> None:
    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((300, 400, 3), 200, np.uint8)).save(blank)
    face = data_root / "lfw" / "deepfunneled" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"
    with pytest.raises(NoFaceError, match="wall.png"):
        verifier.verify(blank, face)
    out = subprocess.run([sys.executable, "-m", "siamface", "verify", "--model", "lfw-view1", str(blank), str(face)],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "wall.png" in out.stderr and "no face" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_verify_batch_writes_a_scores_csv(data_root, tmp_path) -> None:
    import csv

    root = data_root / "lfw" / "deepfunneled"
    a = root / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"
    b = root / "George_W_Bush" / "George_W_Bush_0001.jpg"
    c = root / "George_W_Bush" / "George_W_Bush_0002.jpg"
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"image_a,image_b,label\n{b},{c},1\n{a},{b},0\n{a},{a},1\n")
    out = tmp_path / "scores.csv"
    res = subprocess.run([sys.executable, "-m", "siamface", "verify", "--model", "lfw-view1", "--pairs", str(pairs),
                          "--out", str(out)], capture_output=True, text=True, check=True)
    summary = json.loads(res.stdout)
    assert summary["pairs"] == 3 and summary["out"] == str(out)
    rows = list(csv.DictReader(out.open()))
    assert [r["label"] for r in rows] == ["1", "0", "1"]
    probs = [float(r["probability"]) for r in rows]
    assert all(0.0 <= p <= 1.0 for p in probs)
    assert probs[2] > probs[1]  # an image against itself scores above two different people
    assert [r["same"] for r in rows] == [str(p >= summary["threshold"]) for p in probs]


def test_batch_verify_reports_a_photo_without_a_face_and_scores_the_rest(verifier: Verifier, data_root,
                                                                         tmp_path) -> None:
    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((300, 400, 3), 200, np.uint8)).save(blank)
    face = data_root / "lfw" / "deepfunneled" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"
    rows = verifier.verify_pairs([(face, face), (blank, face)], progress=False)
    assert rows[0]["error"] == "" and rows[0]["same"] is True
    assert rows[1]["error"] == "no face" and rows[1]["probability"] is None and "wall.png" in rows[1]["error_detail"]
    with pytest.raises(NoFaceError, match="wall.png"):
        verifier.verify_pairs([(face, face), (blank, face)], progress=False, strict=True)


def test_no_detect_takes_inputs_as_face_crops(verifier: Verifier, data_root, tmp_path) -> None:
    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((300, 400, 3), 200, np.uint8)).save(blank)
    face = data_root / "lfw" / "deepfunneled" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"
    crops = Verifier(LFW_VIEW1, detect=False)
    assert crops.preprocess.align.detector == "none" and verifier.preprocess.align.detector == "haar"
    verdict = crops.verify(blank, face)  # no NoFaceError: nothing is detected
    assert [f["box"] for f in verdict.faces] == [None, None] and 0.0 <= verdict.probability <= 1.0
    assert "detect=False" in verdict.threshold_source and "detect=False" not in verifier.threshold_source
    with pytest.raises(SiamfaceError, match="detect=False"):
        Verifier(LFW_VIEW1, detect=False, select="central")
    out = subprocess.run([sys.executable, "-m", "siamface", "verify", "--model", "lfw-view1", "--no-detect",
                          str(blank), str(face)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["probability"] == pytest.approx(verdict.probability, abs=1e-5)


def test_select_chooses_among_several_faces(data_root, tmp_path) -> None:
    lfw = data_root / "lfw" / "deepfunneled"
    big = np.asarray(Image.open(lfw / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg").convert("RGB"))
    small = np.asarray(Image.open(lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg").convert("RGB").resize((170, 170)))
    canvas = np.full((300, 800, 3), 127, np.uint8)
    canvas[25:275, 0:250] = big  # the largest face, at the left edge
    canvas[65:235, 315:485] = small  # a smaller face at the centre
    group = tmp_path / "group.png"
    Image.fromarray(canvas).save(group)
    used = {}
    for select in ("largest", "central"):
        v = Verifier(LFW_VIEW1, select=select)
        v.preprocess = replace(v.preprocess, align=replace(v.preprocess.align, min_size=0.1))
        faces = v.verify(group, group).faces[0]
        assert len(faces["faces"]) >= 2
        used[select] = faces["box"]
    assert used["largest"]["x"] < 250 and abs(used["central"]["x"] + used["central"]["w"] / 2 - 400) < 40
    with pytest.raises(ValueError, match="select"):
        Verifier(LFW_VIEW1, select="leftmost")


# ---- the face prior (every LFW person; the start of AT&T and user fine-tuning) -------------------------------

def test_face_prior_is_shipped_complete_and_small() -> None:
    lm = load_model("face-prior")  # a shipped model by name
    assert lm.path == FACE_PRIOR and lm.card.status == "complete"
    assert sum(f.stat().st_size for f in FACE_PRIOR.iterdir()) < 20 * 2**20
    assert lm.card.identities("test") == () and len(lm.card.identities("val")) == 150
    assert not lm.preprocess.align  # a fixed centred crop: it takes face crops such as AT&T's as they are
    assert lm.card.model.kwargs.get("embedding") == "l2"


def test_face_prior_saw_every_lfw_person_so_lfw_protocols_refuse_it(data_root, tmp_path) -> None:
    lm = load_model(FACE_PRIOR)
    seen = set(lm.card.identities("train")) | set(lm.card.identities("val"))
    assert seen == {d.name for d in (data_root / "lfw" / "deepfunneled").iterdir() if d.is_dir()}
    from siamface.evaluate import run_evaluation

    with pytest.raises(LeakageError):
        run_evaluation(str(FACE_PRIOR), protocol="lfw-view1", data=str(data_root / "lfw"), out=str(tmp_path / "r"))
