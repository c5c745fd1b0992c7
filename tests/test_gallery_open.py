"""Gallery.open finds the model that built a gallery (the CLI and the service alike) and checks the file;
the model identity covers the tower too (both on a SQLite file and a PostgreSQL database); names are
normalised and look-alikes refused; library errors name no command-line flag (the CLI adds it); face reports
of photos analysed at reduced size are mapped back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _gallery_data import lfw_view1_verifier, other_model, single_face_photos
from _helpers import one_thread

from siamface.checkpoint import load_model
from siamface.errors import GalleryModelError, MultipleFacesError, NoFaceError, SiamfaceError
from siamface.faces.report import rescale_report
from siamface.gallery import Gallery, model_record
from siamface.gallery_model import tower_sha256
from siamface.names import check_name, look_alike, skeleton
from siamface.verify import Verifier

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
verifier = pytest.fixture(scope="module")(lfw_view1_verifier)


@pytest.fixture(scope="module")
def photos(data_root: Path) -> dict[str, tuple[Path, ...]]:
    return single_face_photos(data_root / "lfw", 2, 2)


def test_open_finds_the_model_that_built_the_gallery(tmp_path: Path, photos: dict,
                                                      gallery_location: str | Path) -> None:
    db, other = gallery_location, other_model(tmp_path / "other")
    name, ps = next(iter(photos.items()))
    with Gallery(db, Verifier(other)) as g:
        g.enroll(name, [ps[0]])
    with Gallery.open(db) as g:  # no model given: the one recorded in the file, not the shipped one
        assert g.verifier.name == str(other)
        assert g.identify(ps[1]).faces[0].candidates[0].name == name
    with pytest.raises(GalleryModelError):
        Gallery.open(db, "lfw-view1")  # another model is refused


def test_open_refuses_a_damaged_file(tmp_path: Path, verifier: Verifier, photos: dict) -> None:
    db = tmp_path / "g.db"
    with Gallery(db, verifier) as g:
        for name, ps in photos.items():
            g.enroll(name, list(ps))
        g._store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page + 8 :] = bytes(len(data) - page - 8)  # every page after the header page zeroed
    db.write_bytes(bytes(data))
    with pytest.raises(SiamfaceError, match=r"g\.db: the gallery file is damaged \(.*\); restore it from a backup"):
        Gallery.open(db)


def test_the_model_identity_covers_the_tower(verifier: Verifier, photos: dict, gallery_location: str | Path) -> None:
    db = gallery_location
    name, ps = next(iter(photos.items()))
    with Gallery(db, verifier) as g:
        g.enroll(name, [ps[0]])
    assert model_record(verifier)["tower_sha256"] == tower_sha256(verifier.loaded.model)
    changed = load_model(verifier.loaded.path)  # the same weights file ...
    with torch.no_grad():
        next(changed.model.tower.parameters()).add_(1e-3)  # ... but another tower (as a changed factory's)
    assert tower_sha256(changed.model) != tower_sha256(verifier.loaded.model)
    with pytest.raises(GalleryModelError, match="whose tower differ"):
        Gallery(db, Verifier(changed))


def test_library_errors_name_no_flag_and_the_cli_adds_it(tmp_path: Path, verifier: Verifier) -> None:
    from siamface.cli import with_hint

    blank = np.full((120, 120, 3), 200, np.uint8)
    with Gallery(tmp_path / "g.db", verifier) as g:
        with pytest.raises(NoFaceError) as no_face:
            g.enroll("x", [blank])
    assert "--" not in str(no_face.value) and "detector=" not in str(no_face.value)
    assert with_hint(no_face.value).endswith("(--no-detect if the photos already are face crops)")
    several = MultipleFacesError("group.jpg: 3 faces found; say which one to enroll (the largest or the central one)")
    assert with_hint(several).endswith("(--select largest or --select central)")


def test_names_are_normalised_and_look_alikes_found() -> None:
    assert check_name("  Rene\u0301e ") == "Ren\u00e9e"
    assert skeleton("\u0410LICE  Smith") == skeleton("alice smith")  # Cyrillic A, case, spaces
    assert look_alike("ALICE", ["Bob", "Alice"]) == "Alice" and look_alike("Alice", ["Alice"]) is None
    for bad in ("AC/DC", "..", "a\u202eb", "\u0410lice", "x" * 201, ""):
        with pytest.raises(ValueError):
            check_name(bad)
    assert check_name("Владимир") == "Владимир" and check_name("李小龍") == "李小龍"  # one script each: fine


def test_rescale_report_maps_both_report_shapes_back() -> None:
    verify_report = {"faces": [{"x": 10, "y": 20, "w": 30, "h": 30, "confidence": 0.9,
                                "landmarks": [[12, 22], [20, 22]]}],
                     "box": {"x": 10, "y": 20, "w": 30, "h": 30, "confidence": 0.9}, "eyes_source": "landmarks",
                     "eyes": [[15.5, 25.0], [30.0, 25.0]], "landmarks": [[12, 22], [20, 22]]}
    out = rescale_report(verify_report, 4.0)
    assert out["box"] == {"x": 40, "y": 80, "w": 120, "h": 120, "confidence": 0.9}
    assert out["eyes"] == [[62.0, 100.0], [120.0, 100.0]] and out["landmarks"] == [[48, 88], [80, 88]]
    assert out["faces"][0]["landmarks"] == [[48, 88], [80, 88]] and out["eyes_source"] == "landmarks"
    gallery_report = {"box": {"x": 1, "y": 2, "w": 3, "h": 4, "confidence": 1.0}, "eyes": None, "landmarks": [],
                      "faces_in_photo": 2}
    assert rescale_report(gallery_report, 2.0)["box"] == {"x": 2, "y": 4, "w": 6, "h": 8, "confidence": 1.0}
    assert rescale_report(gallery_report, 2.0)["faces_in_photo"] == 2


def test_open_refuses_a_file_that_is_not_a_gallery(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SiamfaceError, match="junk.db: not a usable gallery database"):
        Gallery.open(junk)
