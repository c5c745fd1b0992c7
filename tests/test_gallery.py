"""Gallery: enrollment, open-set identification (against a brute-force loop of verify calls), verify-against,
bookkeeping, byte-level deletion, model mixing and re-embedding, threads (files and migrations:
test_gallery_migrations.py; processes: test_gallery_durability.py). Every test that is not about SQLite's file
runs on both stores: a SQLite file and a database on a real PostgreSQL server (`gallery_location`).

All on real LFW photos with the shipped face model (no training)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _gallery_data import lfw_view1_verifier, other_model, single_face_photos
from _helpers import one_thread

from siamface.data import load_image
from siamface.errors import (
    DuplicatePersonError,
    GalleryModelError,
    ImageError,
    MultipleFacesError,
    NoFaceError,
    PersonNotFoundError,
)
from siamface.gallery import Gallery, model_record
from siamface.gallery_results import Person
from siamface.photo_faces import png_to_rgb
from siamface.verify import Verdict, Verifier

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


verifier = pytest.fixture(scope="module")(lfw_view1_verifier)


@pytest.fixture(scope="module")
def photos(data_root: Path) -> dict[str, tuple[Path, ...]]:
    return single_face_photos(data_root / "lfw", 8, 3)


@pytest.fixture
def where(gallery_location: str | Path) -> str | Path:
    return gallery_location


@pytest.fixture
def gallery(gallery_location: str | Path, verifier: Verifier) -> Iterator[Gallery]:
    """A new gallery (a SQLite file or a PostgreSQL database: every test here runs on both)."""
    with Gallery(gallery_location, verifier) as g:
        yield g


def _rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(load_image(path, channels=3).transpose(1, 2, 0))


# ---- identification ----------------------------------------------------------------------------------

def test_identify_matches_a_brute_force_loop_of_verify_calls(where: str | Path, tmp_path: Path, verifier: Verifier,
                                                             photos: dict[str, tuple[Path, ...]]) -> None:
    """Every person's score equals the max (mean) of the verify probability of (probe, photo) over their photos
    (Verifier.verify_pairs: its own decoding and detection of every file, pair by pair), and the ranking is
    the same: the vectorised pass computes what a loop over people would."""
    with Gallery(where, verifier) as g:
        for name, ps in photos.items():
            g.enroll(name, list(ps[:2]))
    for probe_owner in list(photos)[:2]:
        probe = photos[probe_owner][2]
        rows = verifier.verify_pairs([(probe, p) for ps in photos.values() for p in ps[:2]], progress=False)
        for aggregate, reduce in (("max", np.max), ("mean", np.mean)):
            brute = {name: float(reduce([r["probability"] for r in rows[2 * i:2 * i + 2]]))
                     for i, name in enumerate(photos)}
            with Gallery(where, verifier, aggregate=aggregate) as g:
                (face,) = g.identify(probe, k=len(photos)).faces
            got = {c.name: c.probability for c in face.candidates}
            assert got.keys() == brute.keys()
            for name in brute:
                assert got[name] == pytest.approx(brute[name], abs=2e-6)  # verify_pairs rounds to 1e-6
            assert [c.name for c in face.candidates] == sorted(brute, key=lambda n: (-brute[n], n))
            top = face.candidates[0]
            assert face.match == (top.name if top.probability >= verifier.threshold else None)


def test_identify_answer_names_threshold_provenance_and_model(gallery: Gallery, verifier: Verifier,
                                                              photos: dict[str, tuple[Path, ...]]) -> None:
    name = next(iter(photos))
    gallery.enroll(name, [photos[name][0]])
    r = gallery.identify(photos[name][1], k=3).to_dict()  # the JSON the CLI and the service give
    assert r["threshold"] == verifier.threshold and r["threshold_source"].startswith(verifier.threshold_source)
    assert "FAR curve" in r["threshold_source"]  # an older model: no FPIR can be derived, and the answer says so
    assert r["operating_point"] == getattr(verifier, "operating_point", "EER")
    assert r["model"] == verifier.name and r["elapsed_ms"] >= 0
    (face,) = r["faces"]
    assert face["face"]["box"]["w"] > 0 and face["face"]["faces_in_photo"] == 1
    assert len(face["candidates"]) == 1  # k larger than the gallery


def test_open_set_unknown_when_no_one_reaches_the_threshold(where: str | Path, tmp_path: Path, verifier: Verifier,
                                                            photos: dict[str, tuple[Path, ...]]) -> None:
    names = list(photos)
    strict = Verifier(verifier.loaded, threshold=1.0)
    lenient = Verifier(verifier.loaded, threshold=0.0)
    with Gallery(where, strict) as g:
        for name in names[:4]:
            g.enroll(name, [photos[name][0]])
        probe = photos[names[5]][0]  # not enrolled
        (face,) = g.identify(probe).faces
        assert face.match is None and len(face.candidates) == 4
        assert all(c.probability < 1.0 for c in face.candidates)
    with Gallery(where, lenient) as g:
        (face,) = g.identify(probe).faces
        assert face.match == face.candidates[0].name


def test_empty_gallery_identifies_no_one(gallery: Gallery, photos: dict[str, tuple[Path, ...]]) -> None:
    (face,) = gallery.identify(next(iter(photos.values()))[0]).faces
    assert face.match is None and face.candidates == ()


def test_the_index_is_cached_and_own_enrollments_are_appended(where: str | Path, gallery: Gallery, verifier: Verifier,
                                                               photos: dict[str, tuple[Path, ...]]) -> None:
    names = list(photos)
    for name in names[:-1]:
        gallery.enroll(name, list(photos[name][:2]))
    gallery.identify(photos[names[0]][2])
    matrix = gallery._matrix
    assert matrix is not None and matrix.generation == 0 and len(matrix.emb) == 2 * (len(names) - 1)
    gallery.identify(photos[names[1]][2])
    assert gallery._matrix is matrix  # nothing changed: not re-read
    gallery.enroll(names[-1], [photos[names[-1]][0]])
    assert gallery._matrix is matrix and matrix.generation == 0  # appended, not re-read
    (face,) = gallery.identify(photos[names[-1]][1]).faces
    assert face.match == names[-1] and len(matrix.emb) == 2 * len(names) - 1
    with Gallery(where, verifier) as fresh:  # the appended index equals one read from the store
        (again,) = fresh.identify(photos[names[-1]][1]).faces
    assert again.candidates == face.candidates
    gallery.delete(names[0])
    (after,) = gallery.identify(photos[names[0]][2]).faces
    assert gallery._matrix is not matrix and gallery._matrix.generation == 1  # a deletion rebuilds
    assert names[0] not in {c.name for c in after.candidates} and after.match != names[0]
    assert len(after.candidates) == min(5, len(names) - 1)


def test_matrix_follows_writes_of_another_connection(where: str | Path, tmp_path: Path, verifier: Verifier,
                                                     photos: dict[str, tuple[Path, ...]]) -> None:
    a, b = Gallery(where, verifier), Gallery(where, verifier)
    names = list(photos)
    a.enroll(names[0], [photos[names[0]][0]])
    assert [c.name for c in b.identify(photos[names[0]][1]).faces[0].candidates] == [names[0]]
    a.enroll(names[1], [photos[names[1]][0]])
    assert len(b.identify(photos[names[0]][1]).faces[0].candidates) == 2
    a.delete(names[0])
    assert [c.name for c in b.identify(photos[names[0]][1]).faces[0].candidates] == [names[1]]
    a.close()
    b.close()


def _side_by_side(left: Path, right: Path) -> np.ndarray:
    return np.concatenate([_rgb(left), _rgb(right)], axis=1)


def test_several_faces_refused_at_enrollment_and_all_reported_by_identify(gallery: Gallery,
                                                                         photos: dict[str, tuple[Path, ...]]) -> None:
    left, right = photos["Tony_Blair"][0], photos["Colin_Powell"][0]
    group = _side_by_side(left, right)
    with pytest.raises(MultipleFacesError, match="group.jpg: 2 faces"):
        gallery.enroll("Tony_Blair", [group], sources=["group.jpg"])
    assert gallery.people() == []
    r = gallery.enroll("Tony_Blair", [group], select="largest", sources=["group.jpg"]).to_dict()
    assert r["photos"] == 1 and r["enrolled"][0]["face"]["faces_in_photo"] == 2
    gallery.delete("Tony_Blair")
    gallery.enroll("Tony_Blair", [left])
    gallery.enroll("Colin_Powell", [right])
    faces = [f.to_dict() for f in gallery.identify(group).faces]
    assert len(faces) == 2
    width = group.shape[1] // 2
    for f in faces:  # each face, found in its own half, is the person whose photo that half is
        box = f["face"]["box"]
        owner = "Tony_Blair" if box["x"] + box["w"] / 2 < width else "Colin_Powell"
        assert f["candidates"][0]["name"] == owner


def test_every_face_starts_with_the_one_extract_face_chooses(photos: dict[str, tuple[Path, ...]]) -> None:
    from siamface.faces import AlignConfig, extract_face
    from siamface.faces.multi import extract_all_faces

    group = _side_by_side(photos["Tony_Blair"][0], photos["Colin_Powell"][0])
    for select in ("largest", "central"):
        cfg = AlignConfig(select=select)
        every, chosen = extract_all_faces(group, 64, cfg), extract_face(group, 64, cfg)
        assert len(every) == len(chosen.faces) == 2 and every[0].used == chosen.used
        assert np.array_equal(every[0].image, chosen.image) and every[0].eyes == chosen.eyes
        assert {c.used for c in every} == set(chosen.faces)
    with pytest.raises(NoFaceError, match="blank"):
        extract_all_faces(np.full((100, 100, 3), 128, np.uint8), 64, AlignConfig(), source="blank")


# ---- enrollment and bookkeeping ----------------------------------------------------------------------

def test_enroll_adds_photos_and_records_provenance(gallery: Gallery, photos: dict[str, tuple[Path, ...]]) -> None:
    p = photos["Tony_Blair"]
    r1 = gallery.enroll("Tony_Blair", [p[0]]).to_dict()
    r2 = gallery.enroll("Tony_Blair", [p[1], p[2]]).to_dict()
    assert (r1["photos"], r2["photos"]) == (1, 3) and len(r2["enrolled"]) == 2
    person = gallery.person("Tony_Blair").to_dict()
    assert [e["source"] for e in person["enrollments"]] == [q.name for q in p]
    assert [e["sha256"] for e in person["enrollments"]] == [hashlib.sha256(q.read_bytes()).hexdigest() for q in p]
    first = person["enrollments"][0]
    assert first["box"] == r1["enrolled"][0]["face"]["box"] and len(first["landmarks"]) == 5  # dlib's 5 points
    assert first["face"]["eyes_source"] in ("detected", "estimated") and first["time"].endswith("+00:00")
    crop = png_to_rgb(gallery.face_crop(first["id"]))
    size = gallery.verifier.loaded.preprocess.size
    assert crop.shape == (size, size, 3) and crop.std() > 10
    assert gallery.people() == [Person("Tony_Blair", 3, person["created"])]


def test_duplicates_unknown_names_and_renames(gallery: Gallery, photos: dict[str, tuple[Path, ...]]) -> None:
    gallery.enroll("Ann", [photos["Tony_Blair"][0]])
    gallery.enroll("Bob", [photos["Colin_Powell"][0]])
    with pytest.raises(DuplicatePersonError, match="'Ann' is already enrolled"):
        gallery.enroll("Ann", [photos["Tony_Blair"][1]], new=True)
    with pytest.raises(DuplicatePersonError, match="'Bob' is already enrolled"):
        gallery.rename("Ann", "Bob")
    for call in (lambda: gallery.rename("Zed", "Yan"), lambda: gallery.delete("Zed"), lambda: gallery.person("Zed"),
                 lambda: gallery.verify_against("Zed", photos["Tony_Blair"][1])):
        with pytest.raises(PersonNotFoundError, match="no person named 'Zed'"):
            call()
    with pytest.raises(PersonNotFoundError, match="no enrollment 999"):
        gallery.face_crop(999)
    gallery.rename("Ann", "Anne")
    assert [p.name for p in gallery.people()] == ["Anne", "Bob"]
    assert gallery.person("Anne").photos == 1
    for bad in ("", "  ", "a\nb", "x" * 201, 3):
        with pytest.raises(ValueError, match="name"):
            gallery.enroll(bad, [photos["Tony_Blair"][0]])  # type: ignore[arg-type]


def test_enrollment_is_whole_or_nothing(gallery: Gallery, tmp_path: Path, photos: dict[str, tuple[Path, ...]]) -> None:
    good = photos["Tony_Blair"][0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ImageError, match="broken.jpg"):
        gallery.enroll("Tony_Blair", [good, broken])
    blank = np.full((200, 200, 3), 128, np.uint8)
    with pytest.raises(NoFaceError, match="blank.png"):
        gallery.enroll("Tony_Blair", [good, blank], sources=["good.jpg", "blank.png"])
    assert gallery.people() == []
    assert gallery._store.fetchall("SELECT count(*) FROM enrollments") == [(0,)]


def test_photo_inputs_agree_path_bytes_array(gallery: Gallery, photos: dict[str, tuple[Path, ...]]) -> None:
    p = photos["Tony_Blair"][0]
    gallery.enroll("Tony_Blair", [photos["Tony_Blair"][1]])
    probs = [gallery.verify_against("Tony_Blair", x).probability for x in (p, p.read_bytes(), _rgb(p))]
    assert probs[0] == pytest.approx(probs[1], abs=1e-6) == pytest.approx(probs[2], abs=1e-6)
    r = gallery.enroll("Someone", [p.read_bytes()], sources=["upload.jpg"]).to_dict()
    assert r["enrolled"][0]["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
    assert r["enrolled"][0]["source"] == "upload.jpg"
    with pytest.raises(ImageError, match="upload.jpg: not a recognised image format"):
        gallery.enroll("Someone", [b"hello, not an image"], sources=["upload.jpg"])


def test_verify_against_equals_verify(gallery: Gallery, verifier: Verifier,
                                      photos: dict[str, tuple[Path, ...]]) -> None:
    p = photos["Gerhard_Schroeder"]
    gallery.enroll("Gerhard_Schroeder", [p[0], p[1]])
    r = gallery.verify_against("Gerhard_Schroeder", p[2])
    expected = max(verifier.verify(p[2], q).probability for q in p[:2])
    assert isinstance(r, Verdict) and r.probability == pytest.approx(expected, abs=2e-6)
    assert r.same == (r.probability >= verifier.threshold) and r.name == "Gerhard_Schroeder"
    assert r.photos == 2 and r.threshold_source == verifier.threshold_source and len(r.faces) == 1
    assert set(verifier.verify(p[2], p[0]).to_dict()) | {"name", "photos", "aggregate"} == set(r.to_dict())  # one shape


# ---- privacy: delete removes the bytes -----------------------------------------------------------------

def _file_bytes(db: Path) -> bytes:
    return b"".join(Path(f"{db}{s}").read_bytes() for s in ("", "-wal") if Path(f"{db}{s}").exists())


def test_delete_removes_name_crops_and_embeddings_from_the_file(tmp_path: Path, verifier: Verifier,
                                                                photos: dict[str, tuple[Path, ...]]) -> None:
    db = tmp_path / "g.db"
    secret = "Quintessa_Vandersloot"
    with Gallery(db, verifier) as g:
        g.enroll("Bob", [photos["Colin_Powell"][0]])
        g.enroll(secret, list(photos["Tony_Blair"][:2]))
        with g._lock:
            rows = g._store.fetchall("SELECT e.crop, e.embedding FROM enrollments e JOIN people p ON p.id = "
                                     "e.person_id WHERE p.name = ?", (secret,))
            g._store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        needles = [secret.encode()] + [bytes(r[0][-64:]) for r in rows] + [bytes(r[1][:64]) for r in rows]
        before = _file_bytes(db)
        assert all(n in before for n in needles)  # the test can fail: they were in the file
        g.delete(secret)
        after = _file_bytes(db)
        assert [n for n in needles if n in after] == []
        assert [p.name for p in g.people()] == ["Bob"]
    after_close = _file_bytes(db)
    assert [n for n in needles if n in after_close] == [] and b"Bob" in after_close


# ---- model mixing and re-embedding ---------------------------------------------------------------------

def test_another_model_is_refused_until_reembedded(where: str | Path, tmp_path: Path, verifier: Verifier,
                                                   photos: dict[str, tuple[Path, ...]]) -> None:
    db = where
    with Gallery(db, verifier) as g:
        for name in list(photos)[:3]:
            g.enroll(name, [photos[name][0]])
    other = Verifier(other_model(tmp_path / "other"))
    with pytest.raises(GalleryModelError, match="re-embed it from its stored face crops with .*other") as e:
        Gallery(db, other)
    assert e.value.option == "reembed" and "--" not in str(e.value)  # the CLI adds its command
    probe = photos[next(iter(photos))][1]
    old = Gallery(db, verifier)
    old.identify(probe)
    with Gallery(db, other, check_model=False) as g:
        with pytest.raises(GalleryModelError):  # searching is refused until re-embedded
            g.identify(probe)
        with pytest.raises(GalleryModelError):
            g.verify_against(next(iter(photos)), probe)
        assert g.reembed(other) == 3
        assert g.model_info()["weights_sha256"] == model_record(other)["weights_sha256"]
        with g._lock:
            crop, blob = g._store.fetchall("SELECT crop, embedding FROM enrollments ORDER BY id")[0]
    crop_input = Verifier(other.loaded, detect=False).embed([png_to_rgb(crop)])[0]
    assert np.allclose(np.frombuffer(blob, "<f4"), crop_input.numpy(), atol=1e-5)
    with Gallery(db, other) as g:  # now accepted, and identifies with the new embeddings
        name = next(iter(photos))
        assert g.identify(photos[name][1]).faces[0].candidates[0].name == name
    with pytest.raises(GalleryModelError):
        Gallery(db, verifier)
    with pytest.raises(GalleryModelError):  # a gallery opened before the re-embedding notices it
        old.identify(probe)
    old.close()


def test_reembedding_with_the_same_model_reproduces_the_embeddings(gallery: Gallery, verifier: Verifier,
                                                                   photos: dict[str, tuple[Path, ...]]) -> None:
    """The stored crop is the aligned face the model saw: re-embedding it changes nothing."""
    for name in list(photos)[:3]:
        gallery.enroll(name, [photos[name][0]])
    with gallery._lock:
        before = gallery._store.fetchall("SELECT id, embedding FROM enrollments ORDER BY id")
    assert gallery.reembed(verifier) == 3
    with gallery._lock:
        after = gallery._store.fetchall("SELECT id, embedding FROM enrollments ORDER BY id")
    for (i, a), (j, b) in zip(before, after):
        assert i == j and np.allclose(np.frombuffer(a, "<f4"), np.frombuffer(b, "<f4"), atol=1e-6)


def test_people_bookkeeping_does_not_need_the_model(where: str | Path, tmp_path: Path, verifier: Verifier,
                                                    photos: dict[str, tuple[Path, ...]]) -> None:
    db = where
    with Gallery(db, verifier) as g:
        g.enroll("Ann", [photos["Tony_Blair"][0]])
    with Gallery(db, check_model=False) as g:
        assert [p.name for p in g.people()] == ["Ann"]
        assert g._verifier is None  # no model was loaded


def test_threads_sharing_one_gallery(gallery: Gallery, photos: dict[str, tuple[Path, ...]]) -> None:
    """The service calls one Gallery from a thread pool: enrollments and identifications interleave."""
    from concurrent.futures import ThreadPoolExecutor

    names = list(photos)[:4]

    def work(name: str) -> list[str]:
        gallery.enroll(name, [photos[name][0]])
        gallery.enroll(name, [photos[name][1]])
        return [c.name for c in gallery.identify(photos[name][2], k=10).faces[0].candidates]

    with ThreadPoolExecutor(4) as pool:
        seen = list(pool.map(work, names))
    assert all(name in got for name, got in zip(names, seen))  # each saw at least its own enrollment
    assert {p.name: p.photos for p in gallery.people()} == dict.fromkeys(names, 2)


def test_verify_and_the_gallery_report_a_face_in_one_shape(tmp_path: Path, verifier: Verifier,
                                                           photos: dict[str, tuple[Path, ...]]) -> None:
    """One road from a photo to the model's input: verify, enrollment and identification give the same
    face report (keys and values) and the same embedding input for the same photo."""
    from siamface.faces.report import FaceReport
    from siamface.photo_faces import faces_for, photo_of

    name, (a, b, *_) = next(iter(photos.items()))
    verdict = verifier.verify(a, b)
    (face,) = faces_for(photo_of(a), verifier.preprocess)
    x, reports = verifier.inputs([a])
    assert np.array_equal(x[0].numpy(), face.input) and reports[0] == face.report == verdict.faces[0]
    assert set(verdict.faces[0]) == set(FaceReport.__annotations__) and verdict.faces[0]["box"]["w"] > 0
    b = face.report["box"]  # a tracker's box (watch) goes the same road: the same input as when detected
    (at_box,) = faces_for(photo_of(a), verifier.preprocess, boxes=[(b["x"], b["y"], b["w"], b["h"])])
    assert np.array_equal(at_box.input, face.input) and at_box.report["box"] == {**b, "confidence": 1.0}
    with Gallery(tmp_path / "g.db", verifier) as g:
        enrolled = g.enroll(name, [a])
        assert enrolled.enrolled[0].face == face.report
        (found,) = g.identify(a).faces
        assert found.face == face.report
