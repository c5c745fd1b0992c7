"""`keep_crops` db | dir | none on both stores: where the aligned face crop goes, re-embedding from it (or the
refusal without it), deletion taking the files along, rollback removing a failed enrollment's files, crash
leftovers swept, and the CLI's one-line refusal."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from _gallery_data import lfw_view1_verifier, single_face_photos
from _helpers import one_thread

from siamface.cli import main
from siamface.errors import SiamfaceError
from siamface.gallery import Gallery
from siamface.gallery_crops import ORPHAN_AGE_S, CropFolder
from siamface.gallery_store import Transaction, is_url
from siamface.verify import Verifier

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
verifier = pytest.fixture(scope="module")(lfw_view1_verifier)


@pytest.fixture(scope="module")
def photos(data_root: Path) -> dict[str, tuple[Path, ...]]:
    return single_face_photos(data_root / "lfw", 3, 2)


def _crops_dir(where: str | Path, tmp_path: Path) -> Path | None:
    """A database gallery needs a crops folder given; a file's default is `<file>.crops` beside it."""
    return tmp_path / "crops" if is_url(where) else None


def _folder(where: str | Path, tmp_path: Path) -> Path:
    return tmp_path / "crops" if is_url(where) else Path(f"{where}.crops")


def _embeddings(g: Gallery) -> list[np.ndarray]:
    return [np.frombuffer(b, "<f4") for (b,) in g._store.fetchall("SELECT embedding FROM enrollments ORDER BY id")]


def test_db_keeps_the_crop_in_the_row_by_default(gallery_location: str | Path, verifier: Verifier,
                                                 photos: dict[str, tuple[Path, ...]]) -> None:
    with Gallery(gallery_location, verifier) as g:
        r = g.enroll("Ann", [photos["Tony_Blair"][0]])
        (crop, crop_file), = g._store.fetchall("SELECT crop, crop_file FROM enrollments")
        assert crop_file is None and bytes(crop).startswith(b"\x89PNG")
        assert g.face_crop(r.enrolled[0].id) == bytes(crop)
        assert "keep_crops" not in g.model_info()  # nothing recorded: the default


def test_dir_keeps_png_files_reembeds_from_them_and_deletes_them(gallery_location: str | Path, tmp_path: Path,
                                                                 verifier: Verifier,
                                                                 photos: dict[str, tuple[Path, ...]]) -> None:
    folder = _folder(gallery_location, tmp_path)
    with Gallery(gallery_location, verifier, keep_crops="dir", crops_dir=_crops_dir(gallery_location, tmp_path)) as g:
        ids = {name: [e.id for e in g.enroll(name, list(ps)).enrolled] for name, ps in photos.items()}
        rows = g._store.fetchall("SELECT id, crop, crop_file FROM enrollments ORDER BY id")
        assert all(crop is None and f for _, crop, f in rows)
        assert sorted(p.name for p in folder.iterdir()) == sorted(f for _, _, f in rows)
        first = ids["Tony_Blair"][0]
        assert g.face_crop(first) == (folder / rows[[r[0] for r in rows].index(first)][2]).read_bytes()
        before = _embeddings(g)
        assert g.reembed(verifier) == 6  # from the files
        for a, b in zip(before, _embeddings(g)):
            assert np.allclose(a, b, atol=1e-6)
        g.delete("Tony_Blair")
        left = {f for _, _, f in g._store.fetchall("SELECT id, crop, crop_file FROM enrollments")}
        assert {p.name for p in folder.iterdir()} == left and len(left) == 4  # Tony Blair's two files are gone
    with Gallery(gallery_location, verifier) as g:  # the policy is recorded: later enrollments follow it
        g.enroll("Tony_Blair", [photos["Tony_Blair"][0]])
        assert len(list(folder.iterdir())) == 5 and g.model_info()["keep_crops"] == "dir"


def test_a_failed_enrollment_leaves_no_crop_file(gallery_location: str | Path, tmp_path: Path, verifier: Verifier,
                                                 photos: dict[str, tuple[Path, ...]],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(gallery_location, tmp_path)
    real, calls = Transaction.add_enrollment, []

    def second_fails(self: Transaction, *args: object) -> int:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full (simulated after the first row and its file)")
        return real(self, *args)  # type: ignore[arg-type]

    with Gallery(gallery_location, verifier, keep_crops="dir", crops_dir=_crops_dir(gallery_location, tmp_path)) as g:
        monkeypatch.setattr(Transaction, "add_enrollment", second_fails)
        with pytest.raises(OSError, match="disk full"):
            g.enroll("Ann", list(photos["Tony_Blair"]))
        assert g.people() == [] and list(folder.iterdir()) == []


def test_none_keeps_no_crop_and_reembed_refuses(gallery_location: str | Path, verifier: Verifier,
                                                photos: dict[str, tuple[Path, ...]]) -> None:
    with Gallery(gallery_location, verifier, keep_crops="none") as g:
        for name, ps in photos.items():
            g.enroll(name, [ps[0]])
        assert g._store.fetchall("SELECT count(*) FROM enrollments WHERE crop IS NULL AND crop_file IS NULL") == [(3,)]
        assert g.identify(photos["Tony_Blair"][1]).faces[0].candidates[0].name == "Tony_Blair"  # search works
        with pytest.raises(SiamfaceError, match="crops were not kept") as e:
            g.face_crop(1)
        assert "\n" not in str(e.value)
        with pytest.raises(SiamfaceError, match=r"cannot re-embed: crops were not kept for 3 of 3 enrollments"):
            g.reembed(verifier)
        assert len(g.people()) == 3  # the refusal changed nothing


def test_a_database_gallery_needs_a_crops_folder_for_dir(postgres_server, verifier: Verifier) -> None:  # noqa: ANN001
    with pytest.raises(SiamfaceError, match="needs a crops folder") as e:
        Gallery(postgres_server.new_database(), verifier, keep_crops="dir")
    assert e.value.option == "crops_dir"
    with pytest.raises(ValueError, match="keep_crops must be one of"):
        Gallery(postgres_server.new_database(), verifier, keep_crops="disk")


def test_crash_leftovers_are_swept_when_old(tmp_path: Path, verifier: Verifier,
                                            photos: dict[str, tuple[Path, ...]]) -> None:
    """A crop file no row names (an enrollment killed between writing it and committing) is deleted at the
    next open once it is older than any enrollment in progress could be; a recent one is left alone."""
    db = tmp_path / "g.db"
    with Gallery(db, verifier, keep_crops="dir") as g:
        g.enroll("Ann", [photos["Tony_Blair"][0]])
    folder = CropFolder(f"{db}.crops")
    old, recent = folder.write(b"old orphan"), folder.write(b"recent orphan")
    past = time.time() - ORPHAN_AGE_S - 10
    os.utime(folder.folder / old, (past, past))
    with Gallery(db, verifier) as g:
        assert g.person("Ann").photos == 1
    names = {p.name for p in folder.folder.iterdir()}
    assert old not in names and recent in names and len(names) == 2  # Ann's crop stays


def test_cli_keep_crops_none_then_reembed_fails_in_one_line(tmp_path: Path, photos: dict[str, tuple[Path, ...]],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "people.db"
    ps = photos["Tony_Blair"]
    assert main(["enroll", "Ann", str(ps[0]), "--gallery", str(db), "--model", "lfw-view1", "--keep-crops",
                 "none"]) == 0
    capsys.readouterr()
    assert main(["people", "reembed", "--model", "lfw-view1", "--gallery", str(db)]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "crops were not kept for 1 of 1 enrollments" in err and str(db) in err
    assert main(["people", "show", "Ann", "--gallery", str(db)]) == 0
    assert json.loads(capsys.readouterr().out)["photos"] == 1


def test_the_service_option_is_recorded_and_followed(tmp_path: Path, photos: dict[str, tuple[Path, ...]]) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from siamface.serve import Settings, create_app

    key, db = "k-" + "3" * 30, tmp_path / "people.db"
    settings = Settings(gallery=db, model="lfw-view1", api_key=key, keep_crops="dir", crops_dir=tmp_path / "faces")
    with TestClient(create_app(settings), headers={"X-API-Key": key}) as c:
        p = photos["Tony_Blair"][0]
        r = c.post("/enroll", data={"name": "Ann"}, files={"image": (p.name, p.read_bytes(), "image/jpeg")})
        assert r.status_code == 200, r.text
    assert len(list((tmp_path / "faces").iterdir())) == 1 and not Path(f"{db}.crops").exists()
    with Gallery(db, check_model=False) as g:
        assert g.model_info()["keep_crops"] == "dir"
        assert g.model_info()["crops_dir"] == str((tmp_path / "faces").resolve())
