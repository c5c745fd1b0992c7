"""Gallery files: settings, the recorded model, numbered schema migrations from every earlier version (each
applied atomically), files from a newer siamface or not databases at all."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from _gallery_data import lfw_view1_verifier, open_gallery, single_face_photos
from _helpers import one_thread
from PIL import Image

from siamface import gallery_db
from siamface.errors import SiamfaceError
from siamface.files import sha256_file
from siamface.gallery import Gallery, model_record
from siamface.verify import Verifier

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


verifier = pytest.fixture(scope="module")(lfw_view1_verifier)


@pytest.fixture(scope="module")
def photos(data_root: Path) -> dict[str, tuple[Path, ...]]:
    return single_face_photos(data_root / "lfw", 3, 1)


gallery = pytest.fixture(open_gallery)


def test_file_settings(gallery: Gallery) -> None:
    c = gallery._store.conn
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert c.execute("PRAGMA secure_delete").fetchone()[0] == 1
    assert gallery_db.schema_version(c) == gallery_db.SCHEMA_VERSION >= 2


def test_records_the_model_that_made_the_embeddings(gallery: Gallery, verifier: Verifier) -> None:
    info = gallery.model_info()
    assert info["model"] == "lfw-view1"  # the shipped model, by the name --model accepts anywhere
    assert info["weights_sha256"] == sha256_file(Path(verifier.loaded.path) / "model.safetensors")
    assert json.loads(info["preprocess"])["size"] == verifier.loaded.preprocess.size
    assert int(info["embed_dim"]) == verifier.loaded.model.embed_dim


def _png_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("version", range(gallery_db.SCHEMA_VERSION))
def test_migrates_from_every_earlier_version(tmp_path: Path, verifier: Verifier, version: int,
                                             photos: dict[str, tuple[Path, ...]]) -> None:
    """A file left at `version` (with a person enrolled when the schema had people) opens at the current
    version with its data intact and usable."""
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db, isolation_level=None)
    gallery_db.migrate(conn, db, upto=version)
    assert gallery_db.schema_version(conn) == version
    emb = verifier.embed([photos["Tony_Blair"][0]])[0].numpy().astype("<f4")
    if version >= 1:
        conn.executemany("INSERT INTO meta VALUES (?, ?)", model_record(verifier).items())
        conn.execute("INSERT INTO people (id, name, created) VALUES (1, 'Old_Timer', 1.7e9)")
        conn.execute("INSERT INTO enrollments (person_id, embedding, crop, source, sha256, box, landmarks, created) "
                     "VALUES (1, ?, ?, 'a.jpg', 'abc', '{\"x\": 1, \"y\": 2, \"w\": 3, \"h\": 4}', '[]', 1.7e9)",
                     (emb.tobytes(), _png_bytes(0)))
    if version >= 2:  # a row written by that version has its face report
        conn.execute("""UPDATE enrollments SET face = '{"box": {"x": 1, "y": 2, "w": 3, "h": 4}, "landmarks": []}'""")
    conn.close()
    with Gallery(db, verifier) as g:
        assert gallery_db.schema_version(g._store.conn) == gallery_db.SCHEMA_VERSION
        if version >= 1:
            (e,) = g.person("Old_Timer").enrollments
            assert e["box"] == {"x": 1, "y": 2, "w": 3, "h": 4}
            assert e["face"] == {"box": {"x": 1, "y": 2, "w": 3, "h": 4}, "landmarks": []}
            assert g.face_crop(e["id"]) == _png_bytes(0)  # the crop survived migration 3's table rebuild
            p = g.verify_against("Old_Timer", photos["Tony_Blair"][0]).probability
            assert p == pytest.approx(float(verifier.probability(torch.from_numpy(emb[None]),
                                                                 torch.from_numpy(emb[None]))[0]), abs=1e-5)
        r = g.enroll("New_Comer", [photos["Colin_Powell"][0]]).to_dict()
        assert r["photos"] == 1 and r["enrolled"][0]["face"]["box"] is not None


def test_newer_schema_and_foreign_files_are_refused(tmp_path: Path, verifier: Verifier) -> None:
    db = tmp_path / "future.db"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {gallery_db.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SiamfaceError, match="newer than this siamface reads"):
        Gallery(db, verifier)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SiamfaceError, match="junk.db: not a usable gallery"):
        Gallery(junk, verifier)
    with pytest.raises(SiamfaceError, match="does not exist"):
        Gallery(tmp_path / "no" / "such" / "g.db", verifier)


def test_a_failing_migration_leaves_the_file_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "g.db"
    conn = sqlite3.connect(db, isolation_level=None)
    gallery_db.migrate(conn, db, upto=1)

    def broken(c: sqlite3.Connection) -> None:
        c.execute("ALTER TABLE enrollments ADD COLUMN half_done TEXT")
        raise RuntimeError("migration failed half-way")

    monkeypatch.setattr(gallery_db, "MIGRATIONS", [gallery_db.MIGRATIONS[0], broken])
    with pytest.raises(RuntimeError, match="half-way"):
        gallery_db.migrate(conn, db, upto=2)
    assert gallery_db.schema_version(conn) == 1 and not conn.in_transaction
    assert "half_done" not in [r[1] for r in conn.execute("PRAGMA table_info(enrollments)")]
    conn.close()


def test_a_file_recording_fewer_alignment_settings_has_the_same_preprocessing() -> None:
    """A gallery written before an alignment setting existed records fewer keys; they take their defaults,
    so the file still matches its model, while a changed setting does not."""
    import json
    from dataclasses import asdict

    from siamface.config import AlignConfig, PreprocessConfig
    from siamface.gallery import same_preprocess

    full = json.dumps(asdict(PreprocessConfig(size=150, align=AlignConfig(detector="haar"))), sort_keys=True)
    old = json.loads(full)
    del old["align"]["upsample"], old["align"]["chip_padding"], old["align"]["alignment"]
    assert same_preprocess(json.dumps(old), full)
    old["align"]["detector"] = "mmod"
    assert not same_preprocess(json.dumps(old), full)
