"""The CLI's default answers are compact (the decision, one line per face with its file); --full prints the
library's whole report; serve reads SIAMFACE_GALLERY; --model help and errors name the shipped models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _serve_helpers import lfw_photos

from siamface.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_prints_the_decision_and_one_line_per_photo(data_root: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = lfw_photos(data_root, "George_W_Bush")
    code, out, err = run(capsys, "verify", a, b, "--model", "lfw-view1")
    assert code == 0, err
    assert len(out.splitlines()) <= 20 and "landmarks" not in out and "eyes" not in out  # the decision's fields
    answer = json.loads(out)
    assert answer["operating_point"] == "EER" and answer["same"] == (answer["probability"] >= answer["threshold"])
    face_lines = [line for line in out.splitlines() if '"file"' in line]
    assert [json.loads(line.strip().rstrip(","))["file"] for line in face_lines] == [a.name, b.name]
    code, full, _ = run(capsys, "verify", a, b, "--model", "lfw-view1", "--full")
    assert code == 0 and json.loads(full)["faces"][0]["eyes"] and len(full.splitlines()) > 40


def test_enroll_and_identify_are_compact_unless_full(data_root: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    a, b = lfw_photos(data_root, "George_W_Bush")
    db = tmp_path / "people.db"
    code, out, err = run(capsys, "enroll", "Bush", a, "--gallery", db, "--model", "lfw-view1")
    assert code == 0, err
    assert len(out.splitlines()) <= 8 and json.loads(out)["enrolled"][0]["file"] == a.name
    code, out, err = run(capsys, "identify", b, "--gallery", db)  # the gallery's own model, found by Gallery.open
    assert code == 0, err
    answer = json.loads(out)
    assert answer["file"] == b.name and answer["faces"][0]["match"] in ("Bush", None) and "landmarks" not in out
    code, out, _ = run(capsys, "identify", b, "--gallery", db, "--full")
    assert code == 0 and "landmarks" in json.loads(out)["faces"][0]["face"]


def test_an_unknown_model_name_lists_the_shipped_ones(data_root: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = lfw_photos(data_root, "George_W_Bush")
    code, _, err = run(capsys, "verify", a, b, "--model", "dlib_twin")
    assert code == 2 and "or a shipped model: dlib-resnet, dlib-twin, face-prior, lfw-view1" in err
    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    assert "a shipped model's name" in capsys.readouterr().out


def test_serve_reads_the_gallery_from_the_environment(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIAMFACE_GALLERY", raising=False)
    code, _, err = run(capsys, "serve")
    assert code == 2 and err == ("siamface: error: no gallery: pass --gallery FILE (or a postgresql:// URL) or set "
                                 "SIAMFACE_GALLERY\n")
    monkeypatch.setenv("SIAMFACE_GALLERY", str(tmp_path / "people.db"))
    monkeypatch.setenv("SIAMFACE_API_KEY", "short")  # refused before listening: proves the gallery was taken
    code, _, err = run(capsys, "serve")
    assert code == 2 and "the API key has 5 characters; use at least 16" in err


def test_train_help_has_a_sentence_per_flag(capsys: pytest.CaptureFixture) -> None:
    import re

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert not re.search(r"\b[A-Z][a-zA-Z]+Config\.[a-z_]+ \(default", text)  # no bare field names
    assert "identities held out to choose the best epoch" in text and text.startswith("usage: siamface train --out")


def test_a_small_folder_is_told_how_to_hold_out_fewer(data_root: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    import shutil

    for s in ("s1", "s2", "s3", "s4", "s5", "s6"):
        shutil.copytree(data_root / "att_faces" / s, tmp_path / "mine" / s)
    code, _, err = run(capsys, "train", "--data", tmp_path / "mine", "--model", "tiny", "--out", tmp_path / "run")
    assert code == 2 and "cannot hold out 5 val + 10 test identities from 6" in err
    assert err.rstrip().endswith("(--n-val and --n-test: with a few people, e.g. --n-val 3 --val-way 3 --n-test 0)")
