"""`siamface enroll | identify | verify-against | people`: JSON out, one-line errors, non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _gallery_data import other_model, single_face_photos
from _helpers import one_thread
from PIL import Image

from siamface.cli import main
from siamface.data import load_image

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


@pytest.fixture(scope="module")
def photos(data_root: Path) -> dict[str, tuple[Path, ...]]:
    return single_face_photos(data_root / "lfw", 3, 3)


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, object, str]:
    """(exit code, parsed JSON stdout or None, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def test_enroll_identify_verify_people(tmp_path: Path, photos: dict[str, tuple[Path, ...]],
                                      capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "people.db"
    for name, ps in photos.items():
        code, out, err = run(capsys, "enroll", name, ps[0], ps[1], "--gallery", db)
        assert code == 0, err
        assert out["name"] == name and out["photos"] == 2 and len(out["enrolled"]) == 2
    monkeypatch.setenv("SIAMFACE_GALLERY", str(db))
    name, ps = next(iter(photos.items()))
    code, out, _ = run(capsys, "identify", ps[2], "-k", "2")
    assert code == 0 and len(out["faces"][0]["candidates"]) == 2
    assert {"threshold", "threshold_source", "operating_point", "model", "elapsed_ms"} <= out.keys()
    code, out, _ = run(capsys, "verify-against", name, ps[2], "--aggregate", "mean")
    assert code == 0 and out["name"] == name and out["aggregate"] == "mean" and out["photos"] == 2
    code, out, _ = run(capsys, "people", "list")
    assert code == 0 and [p["name"] for p in out] == sorted(photos)
    code, out, _ = run(capsys, "people", "show", name)
    assert code == 0 and [e["source"] for e in out["enrollments"]] == [ps[0].name, ps[1].name]
    assert run(capsys, "people", "rename", name, "Someone")[0] == 0
    assert run(capsys, "people", "delete", "Someone")[:2] == (0, {"deleted": "Someone"})
    code, out, _ = run(capsys, "people", "list")
    assert sorted(p["name"] for p in out) == sorted(set(photos) - {name})


def _one_line_error(err: str, *needles: str) -> None:
    assert err.count("\n") == 1 and err.startswith("siamface: error: ") and "Traceback" not in err
    for n in needles:
        assert n in err, err


def test_errors_are_one_line_and_non_zero(tmp_path: Path, photos: dict[str, tuple[Path, ...]],
                                         capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIAMFACE_GALLERY", raising=False)
    (a, b, _), (c, *_) = list(photos.values())[:2]
    db = tmp_path / "g.db"
    code, _, err = run(capsys, "identify", a)
    assert code == 2
    _one_line_error(err, "--gallery", "SIAMFACE_GALLERY")
    code, _, err = run(capsys, "people", "list", "--gallery", db)
    assert code == 2
    _one_line_error(err, "g.db: no such gallery")
    assert not db.exists()  # reading commands never create a gallery
    group = tmp_path / "group.png"
    rgb = [load_image(p, channels=3).transpose(1, 2, 0) for p in (a, c)]
    Image.fromarray(np.concatenate(rgb, axis=1)).save(group)
    code, _, err = run(capsys, "enroll", "Ann", group, "--gallery", db)
    assert code == 2
    _one_line_error(err, "group.png: 2 faces", "--select")
    assert run(capsys, "enroll", "Ann", group, "--gallery", db, "--select", "largest")[0] == 0
    code, _, err = run(capsys, "enroll", "Ann", b, "--gallery", db, "--new")
    assert code == 2
    _one_line_error(err, "'Ann' is already enrolled")
    code, _, err = run(capsys, "verify-against", "Nobody", b, "--gallery", db)
    assert code == 2
    _one_line_error(err, "no person named 'Nobody'")
    code, _, err = run(capsys, "identify", tmp_path / "missing.jpg", "--gallery", db)
    assert code == 2
    _one_line_error(err, "missing.jpg: no such file")


def test_reembed_then_the_gallery_model_is_the_default(tmp_path: Path, photos: dict[str, tuple[Path, ...]],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "g.db"
    name, ps = next(iter(photos.items()))
    assert run(capsys, "enroll", name, ps[0], "--gallery", db)[0] == 0
    other = other_model(tmp_path / "other")
    code, _, err = run(capsys, "identify", ps[1], "--gallery", db, "--model", other)
    assert code == 2
    _one_line_error(err, f"siamface people reembed --gallery {db} --model {other}")
    code, out, err = run(capsys, "people", "reembed", "--gallery", db, "--model", other)
    assert code == 0, err
    assert out["reembedded"] == 1 and out["model"]["model"] == str(other)
    code, out, err = run(capsys, "identify", ps[1], "--gallery", db)  # no --model: the gallery's own
    assert code == 0, err
    assert out["model"] == str(other) and out["faces"][0]["candidates"][0]["name"] == name


def test_face_crops_without_detection(tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """AT&T photos are tight face crops: --no-detect takes them whole (no box reported)."""
    att = data_root / "att_faces"
    db = tmp_path / "g.db"
    for s in ("s1", "s2"):
        assert run(capsys, "enroll", s, att / s / "1.pgm", "--gallery", db, "--no-detect")[0] == 0
    code, out, err = run(capsys, "identify", att / "s1" / "2.pgm", "--gallery", db, "--no-detect")
    assert code == 0, err
    (face,) = out["faces"]
    assert face["box"] is None and {c["name"] for c in face["candidates"]} == {"s1", "s2"}
    assert "face crops" in out["threshold_source"]  # the provenance says the faces were not aligned


def test_identify_by_fpir_or_by_a_pairwise_point_not_both(tmp_path: Path, data_root: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    att = data_root / "att_faces"
    db = tmp_path / "g.db"
    for s in ("s1", "s2"):
        assert run(capsys, "enroll", s, att / s / "1.pgm", "--gallery", db)[0] == 0
    code, out, err = run(capsys, "identify", att / "s1" / "2.pgm", "--gallery", db, "--fpir", "0.05")
    assert code == 0, err
    assert out["fpir"] == 0.05 and out["operating_point"] == "FPIR=5e-02" and out["people"] == 2
    code, _, err = run(capsys, "identify", att / "s1" / "2.pgm", "--gallery", db, "--fpir", "0.05", "--far", "1e-3")
    assert code == 2
    _one_line_error(err, "--fpir", "--far")
