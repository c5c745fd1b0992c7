"""A gallery calibrates itself from its enrolled people: its FPIR and FAR points follow what is enrolled and
deleted, and equal a brute-force computation over its stored embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _gallery_data import lfw_view1_verifier
from _helpers import one_thread

from siamface import calibration as cal
from siamface.gallery import Gallery
from siamface.verify import Verifier

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


@pytest.fixture(scope="module")
def crops() -> Verifier:
    """The fast grey model taking AT&T's photos as face crops (no detector): 400 enrollments in seconds."""
    from siamface.checkpoint import load_model

    return Verifier(load_model(lfw_view1_verifier().loaded.path), detect=False)


def _att(data_root: Path, n_people: int) -> dict[str, list[Path]]:
    root = data_root / "att_faces"
    return {f"s{i}": sorted((root / f"s{i}").glob("*.pgm"), key=lambda p: int(p.stem)) for i in range(1, n_people + 1)}


def _brute_force(g: Gallery, v: Verifier) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every stored embedding scored against every other: (impostor scores, each photo's best score
    against another person, person of each row)."""
    m = g._current_matrix()
    person, emb = m.person, torch.from_numpy(m.emb)
    n = len(emb)
    p = np.array([[float(v.probability(emb[i:i + 1], emb[j:j + 1])[0]) if i != j else np.nan
                   for j in range(n)] for i in range(n)])
    iu = np.triu_indices(n, 1)
    imp = p[iu][person[iu[0]] != person[iu[1]]]
    best = np.array([np.nanmax(np.where(person == person[i], -np.inf, p[i])) for i in range(n)])
    return imp, best, person


def test_a_gallery_measures_its_own_points_once_they_resolve_and_not_before(tmp_path: Path, crops: Verifier,
                                                                           data_root: Path) -> None:
    people = _att(data_root, 40)
    with Gallery(tmp_path / "g.db", crops) as g:
        for name in list(people)[:3]:
            g.enroll(name, people[name][:1])
        small = g.decision(fpir=0.05)
        assert "gallery self-calibration" not in small.calibration  # 3 searches resolve nothing
        for name in list(people)[3:]:
            g.enroll(name, people[name][:5])
        big = g.decision(fpir=0.1)  # 188 searches: 18.8 strangers matched at 0.1 resolve it
        assert big.calibration.startswith("gallery self-calibration") and big.operating_point == "FPIR=1e-01"
        assert "measured on 188 searches" in big.source
        imp, best, _ = _brute_force(g, crops)
        assert big.threshold == pytest.approx(cal.threshold_for_far(best, 0.1), abs=1e-6)
        assert (best >= big.threshold).mean() <= 0.1
        lo, hi = big.fpir_interval  # measured on the searches: a 95% interval comes with it
        assert lo <= (best >= big.threshold).mean() <= hi and hi > 0.1
        derived = g.decision(fpir=0.05)  # 9.4 < 10: from the gallery's own pairwise FAR curve instead
        assert derived.calibration.startswith("gallery self-calibration") and "FAR curve" in derived.source
        far = g.decision(far=1e-2)
        assert far.calibration.startswith("gallery self-calibration") and far.operating_point == "FAR=1e-02"
        assert far.threshold == pytest.approx(cal.threshold_for_far(imp, 1e-2), abs=1e-6)
        lo, hi = far.far_interval
        assert lo <= (imp >= far.threshold).mean() <= hi
        answer = g.identify(people["s1"][6], k=1, fpir=0.1)
        assert answer.decision == big and answer.threshold == big.threshold
        assert answer.to_dict()["fpir"] == 0.1 and answer.to_dict()["calibration"] == big.calibration
        # deleting people takes the gallery back under the resolution: the model's calibration again
        for name in list(people)[3:]:
            g.delete(name)
        again = g.decision(fpir=0.1)
        assert "gallery self-calibration" not in again.calibration


def test_fpir_follows_the_gallery_size_on_the_models_curve(tmp_path: Path, data_root: Path) -> None:
    """With the shipped twin (a FAR curve in its card), a larger gallery gets a stricter FPIR threshold."""
    v = Verifier(detect=False)
    curve = v.loaded.card.calibration.curve
    assert curve, "the shipped model stores a FAR curve"
    t10 = cal.curve_threshold(curve, cal.far_for_fpir(0.01, 10))
    t1000 = cal.curve_threshold(curve, cal.far_for_fpir(0.01, 1000))
    assert t10 is not None and t1000 is not None and t1000 > t10
    people = _att(data_root, 3)
    with Gallery(tmp_path / "g.db", v) as g:
        for name, photos in people.items():
            g.enroll(name, photos[:1])
        d = g.decision(fpir=0.01)
        assert d.threshold == pytest.approx(cal.curve_threshold(curve, cal.far_for_fpir(0.01, 3)))
        assert d.gallery_size == 3 and "FAR curve" in d.source
        verdict = g.verify_against("s1", people["s1"][1])
        assert verdict.name == "s1" and verdict.photos == 1 and verdict.far is not None
        assert verdict.same == (verdict.probability >= verdict.threshold)


def test_explicit_thresholds_still_win(tmp_path: Path, crops: Verifier, data_root: Path) -> None:
    from siamface.checkpoint import load_model

    v = Verifier(load_model(crops.loaded.path), detect=False, threshold=0.9)
    with Gallery(tmp_path / "g.db", v) as g:
        g.enroll("s1", _att(data_root, 1)["s1"][:1])
        assert g.decision().threshold == 0.9 and g.decision().operating_point == "given threshold"
        assert g.decision(fpir=0.1).threshold != 0.9  # an FPIR asked for: the calibration decides, not the given one
    assert torch.get_num_threads() == 1
