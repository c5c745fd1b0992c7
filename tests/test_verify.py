"""Verifier: determinism, types, the calibrated threshold and its provenance, files vs arrays."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import TinyRun, att_dir, copy_run, one_thread, read_meta, tiny_run, write_meta
from PIL import Image

from siamface.checkpoint import load_model
from siamface.errors import ImageError, ModelError
from siamface.verify import Verdict, Verifier

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> TinyRun:
    return tiny_run(tmp_path_factory, data_root)


@pytest.fixture(scope="module")
def verifier(tiny: TinyRun) -> Verifier:
    return Verifier(tiny.path)


@pytest.fixture(scope="module")
def images(data_root: Path) -> list[Path]:
    att = att_dir(data_root)
    return [att / "s1" / "1.pgm", att / "s1" / "2.pgm", att / "s2" / "1.pgm", att / "s3" / "5.pgm"]


def test_verdict_types_and_range(verifier: Verifier, images: list[Path], tiny: TinyRun) -> None:
    v = verifier.verify(images[0], images[2])
    assert isinstance(v, Verdict)
    assert isinstance(v.same, bool) and isinstance(v.probability, float) and isinstance(v.threshold, float)
    assert 0.0 <= v.probability <= 1.0
    assert v.model == str(tiny.path)
    assert v.elapsed_ms >= 0 and len(v.faces) == 2  # the AT&T model takes whole images: each is the face
    assert all(f["box"] is None and f["faces_in_photo"] == 1 for f in v.faces)
    d = v.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert {"same", "probability", "threshold", "threshold_source", "model", "elapsed_ms"} <= set(d)


def test_verify_is_deterministic_and_decides_by_the_threshold(verifier: Verifier, images: list[Path]) -> None:
    for a, b in [(images[0], images[1]), (images[0], images[2]), (images[2], images[3])]:
        first, second = verifier.verify(a, b), verifier.verify(a, b)
        assert first.probability == second.probability
        assert first.same == second.same == (first.probability >= first.threshold)


def test_verify_is_symmetric(verifier: Verifier, images: list[Path]) -> None:
    ab, ba = verifier.verify(images[0], images[3]), verifier.verify(images[3], images[0])
    assert ab.probability == pytest.approx(ba.probability, abs=1e-6)


def test_threshold_and_provenance_come_from_calibration(verifier: Verifier, tiny: TinyRun, images: list[Path]) -> None:
    cal = read_meta(tiny.path)["calibration"]
    v = verifier.verify(images[0], images[1])
    assert v.threshold == cal["threshold"]
    assert v.threshold_source == cal["source"]
    assert "never used for training" in v.threshold_source


def test_explicit_threshold_changes_the_decision_not_the_score(tiny: TinyRun, verifier: Verifier,
                                                               images: list[Path]) -> None:
    p = verifier.verify(images[0], images[2]).probability
    below, above = Verifier(tiny.path, threshold=p), Verifier(tiny.path, threshold=np.nextafter(p, 2.0))
    at, over = below.verify(images[0], images[2]), above.verify(images[0], images[2])
    assert at.probability == over.probability == p
    assert at.same is True and over.same is False  # 'same' means probability >= threshold
    assert "given explicitly" in at.threshold_source


def test_numpy_arrays_give_the_same_probability_as_files(verifier: Verifier, images: list[Path]) -> None:
    arrays = [np.asarray(Image.open(p)) for p in images[:3]]
    assert arrays[0].dtype == np.uint8 and arrays[0].ndim == 2  # (H, W) grey, as AT&T pgm files are
    from_files = verifier.verify(images[0], images[2]).probability
    assert verifier.verify(arrays[0], arrays[2]).probability == pytest.approx(from_files, abs=1e-7)
    assert verifier.verify(images[0], arrays[2]).probability == pytest.approx(from_files, abs=1e-7)
    assert verifier.verify(arrays[0], arrays[1]).probability == pytest.approx(
        verifier.verify(images[0], images[1]).probability, abs=1e-7)


def test_embed_gives_one_row_per_image_computed_once(verifier: Verifier, images: list[Path]) -> None:
    emb = verifier.embed([images[0], images[2], images[0]])
    assert emb.shape == (3, verifier.loaded.model.embed_dim)
    assert torch.equal(emb[0], emb[2])
    p = verifier.probability(emb[:1], emb[1:2])
    assert p.shape == (1,)
    assert p[0] == pytest.approx(verifier.verify(images[0], images[2]).probability, abs=1e-6)


def test_verifier_accepts_a_loaded_model(tiny: TinyRun, verifier: Verifier, images: list[Path]) -> None:
    v = Verifier(load_model(tiny.path))
    assert v.verify(images[0], images[1]).probability == verifier.verify(images[0], images[1]).probability


def test_model_without_calibration_needs_a_threshold(tiny: TinyRun, tmp_path: Path, images: list[Path]) -> None:
    run = copy_run(tiny.path, tmp_path / "run")
    meta = read_meta(run)
    del meta["calibration"]
    write_meta(run, meta)
    with pytest.raises(ModelError, match="give a threshold") as info:
        Verifier(run)
    assert str(run) in str(info.value)
    v = Verifier(run, threshold=0.25).verify(images[0], images[1])
    assert v.threshold == 0.25 and "given explicitly" in v.threshold_source


def test_bad_image_raises_image_error_naming_it(verifier: Verifier, images: list[Path], tmp_path: Path) -> None:
    bad = tmp_path / "photo.jpg"
    bad.write_text("not an image")
    with pytest.raises(ImageError, match="photo.jpg"):
        verifier.verify(images[0], bad)


def test_face_options_on_a_model_that_takes_whole_images(tiny: TinyRun, images: list[Path]) -> None:
    from siamface.errors import SiamfaceError

    plain = Verifier(tiny.path, detect=False)  # nothing to switch off: same preprocessing and provenance
    assert plain.preprocess == plain.loaded.preprocess
    assert plain.threshold_source == Verifier(tiny.path).threshold_source
    with pytest.raises(SiamfaceError, match="select does not apply"):
        Verifier(tiny.path, select="central")


# ---- one bad photo does not sink a batch (issue 11, fault 13) ---------------------------------------------------

def _bad_files(tmp_path: Path) -> dict[str, Path]:
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture\n")
    bad = {"missing": tmp_path / "gone.jpg", "unreadable": text, "not a regular file": tmp_path}
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.jpg")
        bad["not a regular file"] = tmp_path / "pipe.jpg"
    return bad


def test_verify_pairs_scores_every_pair_it_can_and_gives_the_reason_for_the_others(
        verifier: Verifier, images: list[Path], tmp_path: Path) -> None:
    bad = _bad_files(tmp_path)
    good = [(images[0], images[1]), (images[0], images[2]), (images[2], images[3])]
    mixed = [good[0], (bad["missing"], images[0]), good[1], (images[1], bad["unreadable"]),
             (bad["not a regular file"], bad["missing"]), good[2]]
    rows = verifier.verify_pairs(mixed, progress=False)
    clean = verifier.verify_pairs(good, progress=False)
    assert [r["error"] for r in rows] == ["", "missing", "", "unreadable", "not a regular file", ""]
    assert [rows[k] for k in (0, 2, 5)] == clean  # the failures change nothing for the other pairs
    assert all(r["error_detail"] == "" for r in clean)
    for row, path in zip((rows[1], rows[3], rows[4]), (bad["missing"], bad["unreadable"], bad["not a regular file"])):
        assert row["probability"] is None and row["same"] is None
        assert row["error_detail"].startswith(f"{path}: ")
    with pytest.raises(ImageError, match="gone.jpg: no such file"):
        verifier.verify_pairs(mixed, progress=False, strict=True)


def test_verify_pairs_with_no_usable_image_returns_only_errors(verifier: Verifier, tmp_path: Path) -> None:
    rows = verifier.verify_pairs([(tmp_path / "a.jpg", tmp_path / "b.jpg")], progress=False)
    assert [(r["error"], r["probability"]) for r in rows] == [("missing", None)]


def test_inference_net_fuses_dlibs_tower_without_touching_the_loaded_model() -> None:
    from siamface.models import create_model
    from siamface.verify import inference_net

    tiny = create_model("tiny")
    assert inference_net(tiny) is tiny  # nothing to fuse
    twin = create_model("dlib_resnet").eval()
    net = inference_net(twin)
    assert net.tower is not twin.tower and net.head is twin.head
    assert type(twin.tower.affine).__name__ == "Affine"  # the loaded model keeps its trainable affines
    x = torch.rand(2, 3, 150, 150, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (net.embed(x) - twin.embed(x)).abs().max() < 1e-5
