"""One-shot enrollment and open-set identification against a gallery of people (a SQLite file or PostgreSQL).

Enroll a person from one photo (or several); identify a photo's faces by scoring every stored embedding with
the model's Siamese head in one vectorised pass. A person scores as the best (or the mean) of their photos;
no one passing the verifier's threshold means "unknown". The file records which model (name, weights
SHA-256, preprocessing) made its embeddings and refuses another: `reembed` recomputes them from the stored
aligned face crops. Every SQL statement is in the store (gallery_store: SQLite; gallery_postgres: a
database several service replicas share); the crops are kept in the database, in files, or not at all
(gallery_crops).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .decision import DEFAULT_FPIR, Decision
from .embed import embed_batches
from .errors import DuplicatePersonError, GalleryModelError, PersonNotFoundError, SiamfaceError
from .gallery_calibration import SelfCalibration
from .gallery_crops import CropFolder, check_keep_crops
from .gallery_results import Candidate, EnrolledPhoto, Enrollment, Identification, IdentifiedFace, Person, PersonRecord
from .gallery_search import SearchIndex
from .gallery_store import SqlStore, Transaction, is_url, location_of, open_store
from .names import MAX_NAME, check_name, look_alike  # noqa: F401 (MAX_NAME, check_name: this module's API too)
from .photo_faces import Face, faces_for, one_face_to_enroll, photo_of, png_to_rgb, to_input
from .verify import Verdict, Verifier, model_label

Image = str | Path | np.ndarray | bytes
AGGREGATES = ("max", "mean")


def model_record(verifier: Verifier) -> dict[str, str]:
    """What the gallery stores about the model that made its embeddings: its name (a shipped model by the
    name a model argument accepts), the SHA-256 of its weights file and of its tower's tensors (a frozen
    tower is not in the weights file), its embedding size and preprocessing."""
    from .checkpoint import WEIGHTS
    from .files import sha256_file
    from .gallery_model import tower_sha256

    loaded = verifier.loaded
    path = Path(loaded.path).resolve()
    return {"model": model_label(loaded),
            "weights_sha256": sha256_file(path / WEIGHTS), "tower_sha256": tower_sha256(loaded.model),
            "embed_dim": str(loaded.model.embed_dim),
            "preprocess": json.dumps(asdict(loaded.preprocess), sort_keys=True)}


def same_preprocess(stored: str, mine: str) -> bool:
    """Two recorded preprocessings (JSON) are the same settings: a file written before a field was added
    to them records fewer keys, which take their defaults."""
    from .config import PreprocessConfig, from_dict

    try:
        return from_dict(PreprocessConfig, json.loads(stored)) == from_dict(PreprocessConfig, json.loads(mine))
    except (ValueError, TypeError):
        return stored == mine


def _refuse_look_alike(tx: Transaction, name: str, renaming: str | None = None) -> None:
    """ValueError when an enrolled person (other than the one being renamed) has a look-alike name."""
    other = look_alike(name, (n for n in tx.names() if n != renaming))
    if other is not None:
        raise ValueError(f"{name!r} looks like the enrolled {other!r}; choose a name that cannot be mistaken for it")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


@dataclass
class _Matrix:
    """Every stored embedding in a search index, and the file state it reflects. `generation` counts
    rebuilds from the file (appending this process's own enrollments keeps it)."""

    key: Any  # the store's version() it reflects
    index: SearchIndex
    generation: int

    @property
    def names(self) -> list[str]:
        return self.index.names

    @property
    def emb(self) -> np.ndarray:
        return self.index.rows

    @property
    def person(self) -> np.ndarray:
        return self.index.person[:self.index.n]


class Gallery:
    """People enrolled from photos, identified with one model: `Gallery("people.db", Verifier(...))`.

    verifier: the model and threshold (None: `Verifier()`, the shipped face model, loaded on first use).
    aggregate: a person's score is the "max" (default) or "mean" probability over their photos.
    check_model: refuse at once a file made by another model (False: the check waits for the first
    enrollment or search, so `people` bookkeeping and `reembed` work on any gallery).
    path: a file (SQLite) or a `postgresql://` URL (a database several service replicas share).
    keep_crops: where later enrollments keep their aligned face crop, recorded in the gallery: "db" (the
    default), "dir" (PNG files in `crops_dir`, default `<file>.crops` beside a gallery file) or "none" (no
    crop: the gallery cannot be re-embedded); None: as the gallery records."""

    def __init__(self, path: str | Path, verifier: Verifier | None = None, *, aggregate: str = "max",
                 check_model: bool = True, keep_crops: str | None = None, crops_dir: str | Path | None = None) -> None:
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        if keep_crops is not None:
            check_keep_crops(keep_crops)
        self.aggregate = aggregate
        self._verifier = verifier
        self._lock = threading.RLock()
        self._matrix: _Matrix | None = None
        self._selfcal: SelfCalibration | None = None
        self._record: tuple[Verifier, dict[str, str]] | None = None
        self._store: SqlStore = open_store(location_of(path))
        self.path: str | Path = self._store.where if is_url(path) else Path(path)  # how messages name it
        try:
            if keep_crops is not None or crops_dir is not None:
                self._record_crop_policy(keep_crops, crops_dir)
            if check_model:
                with self._transaction() as tx:
                    self._check_model(tx)
                    meta = tx.meta()
                folder = self._crop_folder(meta)
                if folder is not None and folder.folder.is_dir():  # crash leftovers (gallery_crops.sweep)
                    folder.sweep(self._store.crop_files())
        except BaseException:
            self._store.close()
            raise

    # ---- plumbing ------------------------------------------------------------------------------------

    @property
    def verifier(self) -> Verifier:
        if self._verifier is None:
            self._verifier = Verifier()
        return self._verifier

    @contextmanager
    def _transaction(self) -> Iterator[Transaction]:
        """One write transaction of the store under the gallery's lock, rolled back on any error; the crop
        files it wrote (`tx.files`) are removed with it."""
        with self._lock:
            written: list[tuple[CropFolder, str]] = []
            try:
                with self._store.write() as tx:
                    tx.files = written
                    yield tx
            except BaseException:  # the body failed or the commit did: the files it wrote go too
                for folder, name in written:
                    folder.delete([name])
                raise

    def _check_model(self, tx: Transaction | SqlStore) -> None:
        """Record the model in a new gallery; refuse a gallery made by another model or preprocessing (reads
        only, unless the gallery has no model record yet: then `tx` is a write transaction)."""
        if self._record is None or self._record[0] is not self.verifier:
            self._record = (self.verifier, model_record(self.verifier))  # hashes the weights file: once
        mine = self._record[1]
        stored = tx.meta()
        if "weights_sha256" not in stored:
            assert isinstance(tx, Transaction)
            tx.set_meta([*mine.items(), ("created", str(time.time()))])
            return
        for key, what in (("weights_sha256", "weights"), ("tower_sha256", "tower"), ("preprocess", "preprocessing")):
            if key == "preprocess" and same_preprocess(stored.get(key, mine[key]), mine[key]):
                continue
            if stored.get(key, mine[key]) != mine[key]:  # files from before tower_sha256 lack it
                raise GalleryModelError(
                    f"{self.path}: its embeddings were made by model {stored.get('model')} (weights SHA-256 "
                    f"{stored['weights_sha256'][:12]}), whose {what} differ from {mine['model']} "
                    f"({mine['weights_sha256'][:12]}); re-embed it from its stored face crops with "
                    f"{mine['model']}", option="reembed")

    def _same_model(self) -> None:
        """Before searching: the file's embeddings are (still) this model's (a gallery opened with
        check_model=False, or re-embedded by another process since). Under the lock; reads only."""
        if self._store.has_model():
            self._check_model(self._store)

    # ---- crops ---------------------------------------------------------------------------------------

    def _record_crop_policy(self, keep: str | None, crops_dir: str | Path | None) -> None:
        """Record keep_crops (and the crops folder, made absolute) for later enrollments, if it changed."""
        wanted = {"keep_crops": keep} if keep is not None else {}
        if crops_dir is not None:
            wanted["crops_dir"] = str(Path(crops_dir).resolve())
        with self._transaction() as tx:
            stored = tx.meta()
            changed = [(k, v) for k, v in wanted.items() if stored.get(k) != v]
            if changed:
                tx.set_meta(changed)
            if wanted.get("keep_crops", stored.get("keep_crops")) == "dir":
                self._crop_folder({**stored, **wanted}, need=True)

    def _crop_folder(self, meta: dict[str, str], need: bool = False) -> CropFolder | None:
        """The folder of `keep_crops dir` (recorded, else beside a gallery file); None if there is none and
        `need` is false."""
        folder = meta.get("crops_dir") or self._store.crops_dir
        if folder is None:
            if need:
                raise SiamfaceError(f"{self.path}: keeping crops as files needs a crops folder for a database "
                                    "gallery (one every replica mounts)", option="crops_dir")
            return None
        return CropFolder(folder)

    def _keep_crop(self, tx: Transaction, face: Face) -> tuple[bytes | None, str | None]:
        """Where this enrollment's crop goes, by the gallery's keep_crops: (crop in the row, crop file)."""
        meta = tx.meta()
        keep = meta.get("keep_crops", "db")
        if keep == "db":
            return face.crop_png, None
        if keep == "none":
            return None, None
        folder = self._crop_folder(meta, need=True)
        assert folder is not None
        name = folder.write(face.crop_png)
        tx.files.append((folder, name))
        return None, name

    def _crop_of(self, enrollment_id: int, crop: bytes | None, crop_file: str | None,
                 meta: dict[str, str]) -> bytes:
        if crop is not None:
            return crop
        if crop_file is not None:
            return self._crop_folder(meta, need=True).read(crop_file)  # type: ignore[union-attr]
        raise SiamfaceError(f"{self.path}: enrollment {enrollment_id} has no face crop: crops were not kept "
                            "(keep_crops none)")

    @classmethod
    def open(cls, path: str | Path, model: str | Path | None = None, *, aggregate: str = "max",
             keep_crops: str | None = None, crops_dir: str | Path | None = None, **verifier_options: Any) -> Gallery:
        """Open a gallery (a file or a `postgresql://` URL) with the model that built it (found from its
        record: a shipped name or a run folder), or `model` (refused if it is not that one); a new gallery
        gets `model` or the shipped one. A file's integrity is checked first. `verifier_options` go to
        `Verifier` (far, threshold, ...)."""
        from .gallery_model import open_gallery

        return open_gallery(cls, path, model, aggregate=aggregate, keep_crops=keep_crops, crops_dir=crops_dir,
                            **verifier_options)

    def close(self) -> None:
        with self._lock:
            self._store.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def model_info(self) -> dict[str, str]:
        """The stored record of the model that made the embeddings ({} in a new file)."""
        with self._lock:
            return self._store.meta()

    # ---- enrollment ----------------------------------------------------------------------------------

    def enroll(self, name: str, images: list[Image], select: str | None = None,
               sources: list[str] | None = None, new: bool = False) -> Enrollment:
        """Add photos of `name` (creating the person; `new=True`: DuplicatePersonError if they exist).
        Every photo is decoded, checked (exactly one face, or `select`) and embedded before anything is
        written; then all of them land in one transaction."""
        name = check_name(name)
        if not images:
            raise ValueError("enroll needs at least one photo")
        if sources is not None and len(sources) != len(images):
            raise ValueError(f"{len(sources)} source names for {len(images)} photos")
        v = self.verifier
        photos = [photo_of(im, None if sources is None else sources[i]) for i, im in enumerate(images)]
        faces = [one_face_to_enroll(faces_for(ph, v.preprocess, select), ph.where or ph.source, select)
                 for ph in photos]
        emb = self._embed(faces)
        now = time.time()
        with self._transaction() as tx:
            before = self._store.version()  # under the write lock: nobody else can commit until we do
            self._check_model(tx)
            pid = tx.person_id(name)
            if pid is not None and new:
                raise DuplicatePersonError(f"{name!r} is already enrolled in {self.path}")
            if pid is None:
                _refuse_look_alike(tx, name)
                pid = tx.add_person(name, now)
            ids = [self._insert_enrollment(tx, pid, f, e, now) for f, e in zip(faces, emb)]
            total = tx.photos(pid)
        self._append(before, name, emb)
        return Enrollment(name, tuple(EnrolledPhoto(i, f.source, f.sha256, f.report) for i, f in zip(ids, faces)),
                          int(total))

    def _insert_enrollment(self, tx: Transaction, person_id: int, face: Face, emb: torch.Tensor,
                           now: float) -> int:
        crop, crop_file = self._keep_crop(tx, face)
        return tx.add_enrollment(person_id, face, emb.numpy(), now, crop, crop_file)

    def _append(self, before: Any, name: str, emb: torch.Tensor) -> None:
        """Our own enrollment goes straight into a current index (no re-read of every stored embedding),
        when nobody else wrote since the index was read."""
        with self._lock:
            m = self._matrix
            now = self._store.version()
            if m is not None and m.key == before and now == self._store.bumped(before):
                m.index.add(name, emb.numpy())
                m.key = now

    def _embed(self, faces: list[Face]) -> torch.Tensor:
        v = self.verifier
        x = torch.from_numpy(np.stack([f.input for f in faces]))
        return embed_batches(v.net, x, v.preprocess, device=v.device)

    # ---- identification ------------------------------------------------------------------------------

    def identify(self, image: Image, k: int = 5, fpir: float | None = None) -> Identification:
        """Every face of the photo against every person: top-k names with probabilities, and the match
        (None = unknown: no one reaches the decision's threshold). The decision is the FPIR point for this
        gallery's size (`fpir`, default DEFAULT_FPIR: the share of strangers matched to someone), unless the
        verifier was given a threshold or a FAR point."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        t0 = time.perf_counter()
        v = self.verifier
        faces = faces_for(photo_of(image), v.preprocess, every=True)
        answers, decision, n_people = self._search(self._embed(faces), k, fpir)
        out = tuple(IdentifiedFace(face.report, match, cands) for face, (match, cands) in zip(faces, answers))
        return Identification(out, decision, v.name, self.aggregate, n_people,
                              round((time.perf_counter() - t0) * 1000, 2))

    def _search(self, probes: torch.Tensor, k: int, fpir: float | None = None
                ) -> tuple[list[tuple[str | None, tuple[Candidate, ...]]], Decision, int]:
        """Face embeddings against everyone: each one's (match or None, top-k candidates), the decision and
        the number of people searched."""
        m = self._current_matrix()
        hits = m.index.search(probes, k, self.aggregate)
        decision = self._decision(fpir, None, m)
        answers = []
        for best in hits:
            cands = tuple(Candidate(m.names[h.person], round(h.p, 10)) for h in best)
            answers.append((cands[0].name if best and decision.accepts(best[0].p) else None, cands))
        return answers, decision, len(m.names)

    # ---- decisions -----------------------------------------------------------------------------------

    def decision(self, fpir: float | None = None, far: float | None = None) -> Decision:
        """How this gallery decides: a search (identify) by its FPIR point, a one-to-one check
        (verify_against) by a FAR point. A verifier given a threshold or a FAR point decides with it;
        otherwise the gallery's own calibration (its enrolled people) where it resolves the point, else
        the model's."""
        return self._decision(fpir, far)

    def _decision(self, fpir: float | None, far: float | None, m: _Matrix | None = None) -> Decision:
        """`decision`, for the index `m` a search has just checked is current (None: check it here)."""
        v = self.verifier
        if fpir is not None and far is not None:
            raise ValueError("give an FPIR or a FAR, not both")
        if v.explicit and fpir is None and far is None:
            return v.decision
        own = self._self_calibration(m if m is not None else self._current_matrix())
        if far is not None:
            return v.noted(own.far_decision(far, v))
        return v.noted(own.fpir_decision(DEFAULT_FPIR if fpir is None else fpir, v))

    def self_calibration(self) -> SelfCalibration:
        """The gallery's calibration from its own enrolled people: recomputed when the file changed, except
        that this process's own enrollments adding at most 1% more photos keep it (a large gallery enrolling
        one person at a time would otherwise recalibrate before every search)."""
        return self._self_calibration(self._current_matrix())

    def _self_calibration(self, m: _Matrix) -> SelfCalibration:
        with self._lock:
            cal = self._selfcal
            if cal is None or cal.key[0] != m.generation or not 0 <= len(m.emb) - cal.key[1] <= 0.01 * cal.key[1]:
                self._selfcal = SelfCalibration.of(m, self.verifier, self.aggregate, self._store.label)
            return self._selfcal

    def _current_matrix(self) -> _Matrix:
        """The search index over every stored embedding, re-read only when the file changed since it was
        built (this process's own enrollments are appended instead). Read in chunks into one preallocated
        array: peak memory stays near the matrix itself."""
        with self._lock:
            key = self._store.version()
            if self._matrix is not None and self._matrix.key == key:
                return self._matrix
            self._same_model()
            generation = self._matrix.generation + 1 if self._matrix is not None else 0
            self._matrix = self._selfcal = None  # let the old index go before the new one is read (1M: 0.5 GB)
            names, person, emb = self._store.embeddings(self.verifier.loaded.model.embed_dim)
            self._matrix = _Matrix(key, SearchIndex.build(self.verifier.loaded.model, names, person, emb), generation)
            return self._matrix

    def verify_against(self, name: str, image: Image, far: float | None = None) -> Verdict:
        """Is the photo's (chosen) face this enrolled person? A verify `Verdict` with `name`, `photos`,
        decided at a FAR point (default: the model's default point, measured on this gallery's people where
        they resolve it)."""
        t0 = time.perf_counter()
        v = self.verifier
        face = faces_for(photo_of(image), v.preprocess)[0]
        with self._lock:
            self._same_model()
            stored = torch.from_numpy(self._store.person_embeddings(name, v.loaded.model.embed_dim))
        if not len(stored):
            raise PersonNotFoundError(f"no person named {name!r} in {self.path}")
        probe = self._embed([face])
        probs = v.probability(probe.expand(len(stored), -1), stored)
        p = float(probs.max() if self.aggregate == "max" else probs.mean())
        decision = v.decision if v.explicit and far is None else v.noted(self.self_calibration().far_decision(far, v))
        return Verdict.of(decision, p, v.name, round((time.perf_counter() - t0) * 1000, 2), [face.report],
                          name=name, photos=len(stored), aggregate=self.aggregate)

    # ---- bookkeeping ---------------------------------------------------------------------------------

    def people(self) -> list[Person]:
        """Everyone enrolled, by name, with their number of photos and enrollment time."""
        with self._lock:
            rows = self._store.people()
        return [Person(n, c, _iso(t)) for n, c, t in rows]

    def person(self, name: str) -> PersonRecord:
        """One person and their enrollments (no embeddings, no crops: see face_crop)."""
        with self._lock:
            found = self._store.person(name)
        if found is None:
            raise PersonNotFoundError(f"no person named {name!r} in {self.path}")
        created, rows = found
        enrollments = [{"id": i, "source": s, "sha256": h, "box": json.loads(b or "null"),
                        "landmarks": json.loads(lm or "[]"), "face": json.loads(f or "null"), "time": _iso(t)}
                       for i, s, h, b, lm, f, t in rows]
        return PersonRecord(name, _iso(created), len(enrollments), tuple(enrollments))

    def face_crop(self, enrollment_id: int) -> bytes:
        """The stored PNG of an enrollment's aligned face (from the database or the crops folder);
        SiamfaceError where crops were not kept."""
        with self._lock:
            found = self._store.crop(enrollment_id)
            if found is None:
                raise PersonNotFoundError(f"no enrollment {enrollment_id} in {self.path}")
            return self._crop_of(enrollment_id, *found, self._store.meta())

    def rename(self, old: str, new: str) -> None:
        new = check_name(new)
        with self._transaction() as tx:
            if new != old and tx.person_id(new) is not None:
                raise DuplicatePersonError(f"cannot rename {old!r}: {new!r} is already enrolled in {self.path}")
            _refuse_look_alike(tx, new, old)
            if not tx.rename(old, new):
                raise PersonNotFoundError(f"no person named {old!r} in {self.path}")

    def delete(self, name: str) -> None:
        """Remove the person with every photo, crop and embedding in one transaction, then their crop files,
        then what the backend keeps of deleted rows (SQLite: secure_delete zeroed them, and a WAL checkpoint
        leaves no copy in the write-ahead log; PostgreSQL: VACUUM, see gallery_postgres)."""
        with self._transaction() as tx:
            files = tx.delete_person(name)
            if files is None:
                raise PersonNotFoundError(f"no person named {name!r} in {self.path}")
            meta = tx.meta()
        with self._lock:
            if files:
                self._crop_folder(meta, need=True).delete(files)  # type: ignore[union-attr]
            self._store.after_delete()

    def reembed(self, verifier: Verifier) -> int:
        """Recompute every embedding with another model from the stored aligned face crops (taken as face
        crops, as `--no-detect` takes them) and record that model; returns the number of embeddings.
        One transaction: enrollments made meanwhile by other processes wait, then see the new model.
        Refused (SiamfaceError) when some enrollment's crop was not kept."""
        pre = verifier.loaded.preprocess
        with self._transaction() as tx:
            rows, meta = tx.crops(), tx.meta()
            missing = sum(c is None and f is None for _, c, f in rows)
            if missing:
                raise SiamfaceError(f"{self.path}: cannot re-embed: crops were not kept for {missing} of "
                                    f"{len(rows)} enrollments (keep_crops none); enroll their photos again")
            updates = []
            if rows:
                crops = [self._crop_of(i, c, f, meta) for i, c, f in rows]
                x = torch.from_numpy(np.stack([to_input(png_to_rgb(crop), pre) for crop in crops]))
                emb = embed_batches(verifier.net, x, pre, device=verifier.device)
                updates = [(i, e.numpy()) for (i, _, _), e in zip(rows, emb)]
            self._verifier, self._matrix, self._selfcal = verifier, None, None
            tx.clear_model(keep=("keep_crops", "crops_dir"))
            self._check_model(tx)
            tx.set_embeddings(updates)
        return len(rows)
