"""`siamface calibrate`: the shipped model's operating points measured on a folder of the user's own people,
end to end on an AT&T subset, against an independent computation from the verifier's embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import one_thread

from siamface import calibration as cal
from siamface.checkpoint import default_model_path, load_model
from siamface.cli import main
from siamface.errors import SiamfaceError
from siamface.files import sha256_file
from siamface.recalibrate import calibrate
from siamface.verify import Verifier

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
PEOPLE = [f"s{i}" for i in range(1, 13)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """12 AT&T people, 10 photos each (symbolic links: the data is never copied)."""
    root = tmp_path_factory.mktemp("mine") / "my_people"
    for p in PEOPLE:
        (root / p).mkdir(parents=True)
        for photo in (data_root / "att_faces" / p).glob("*.pgm"):
            (root / p / photo.name).symlink_to(photo)
    return root


@pytest.fixture(scope="module")
def derived(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return calibrate(folder, out=tmp_path_factory.mktemp("out") / "mine")


def _independent_scores(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of the folder's photos scored through the public Verifier (embed + head)."""
    v = Verifier()
    paths = sorted(folder.glob("*/*.pgm"))
    emb = v.embed(paths)
    ids = np.array([p.parent.name for p in paths])
    i, j = np.triu_indices(len(paths), 1)
    p = v.probability(emb[torch.as_tensor(i)], emb[torch.as_tensor(j)])
    return p, ids[i] == ids[j]


def test_calibrate_measures_the_points_on_the_folder(folder: Path, derived: Path) -> None:
    card = load_model(derived).card
    base = load_model(default_model_path()).card
    c = card.calibration
    assert card.weights_sha256 == base.weights_sha256 == sha256_file(derived / "model.safetensors")
    assert c.raw["people"] == 12 and c.raw["photos"] == 120
    assert c.raw["impostor_pairs"] == 120 * 110 // 2 and c.raw["genuine_pairs"] == 12 * 45
    assert c.raw["folder"] == str(folder.resolve())
    scores, same = _independent_scores(folder)
    p = c.point(1e-2)
    assert p.threshold == pytest.approx(cal.threshold_for_far(scores[~same], 1e-2), abs=2e-6)
    assert p.kinds[0].n_impostor == int((~same).sum()) and p.kinds[0].far <= 1e-2
    assert p.far_interval[0] <= p.kinds[0].far <= p.far_interval[1]
    assert p.kinds[0].frr == pytest.approx(float((scores[same] < p.threshold).mean()), abs=1e-9)
    assert "my_people" in p.source
    # 6,600 impostor pairs cannot resolve FAR 1e-3 (10 false accepts need 10,000): the shipped point is kept
    assert "FAR=1e-03" in c.raw["inherited"] and c.point(1e-3).threshold == base.calibration.point(1e-3).threshold
    assert "inherited from the starting model" in c.point(1e-3).source
    assert set(PEOPLE) <= card.seen_identities()  # never to be evaluated on the people it was calibrated on


def test_the_derived_model_decides_everywhere_with_its_points(folder: Path, derived: Path) -> None:
    v = Verifier(derived, far=1e-2)
    a, b = sorted((folder / "s1").glob("*.pgm"))[:2]
    verdict = v.verify(a, b)
    assert verdict.operating_point == "FAR=1e-02" and verdict.far == 1e-2 and verdict.far_interval is not None
    assert verdict.threshold == load_model(derived).card.calibration.point(1e-2).threshold
    assert verdict.calibration.startswith("model") and verdict.same == (verdict.probability >= verdict.threshold)


def test_calibrate_is_reproducible_and_refuses_bad_input(folder: Path, derived: Path, tmp_path: Path) -> None:
    again = calibrate(folder, out=tmp_path / "again")
    a, b = load_model(derived).card.calibration, load_model(again).card.calibration
    assert {n: p.threshold for n, p in a.points.items()} == {n: p.threshold for n, p in b.points.items()}
    assert {n: p.far_interval for n, p in a.points.items()} == {n: p.far_interval for n, p in b.points.items()}
    with pytest.raises(SiamfaceError, match="not empty"):
        calibrate(folder, out=derived)
    one = tmp_path / "one" / "s1"
    one.mkdir(parents=True)
    (one / "1.pgm").symlink_to(next((folder / "s1").glob("*.pgm")))
    with pytest.raises(SiamfaceError, match="at least 2 people"):
        calibrate(one.parent, out=tmp_path / "x")


def test_cli_calibrate_prints_the_points(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "--data", str(folder), "--out", str(tmp_path / "cli")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["people"] == 12 and "FAR=1e-02" in out["points"] and out["default"] == "FAR=1e-03"
    assert main(["calibrate", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing" in err and "not a folder" in err


def test_the_public_name_is_the_function_even_after_the_module_is_imported() -> None:
    import siamface
    import siamface.recalibrate  # noqa: F401  (a submodule named `calibrate` would shadow the function here)

    assert siamface.calibrate is calibrate and callable(siamface.calibrate)
