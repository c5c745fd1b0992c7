"""One-shot enrollment and open-set identification against a gallery of people (SQLite, one file).

Enroll a person from one photo (or several); identify a photo's faces by scoring every stored embedding with
the model's Siamese head in one vectorised pass. A person scores as the best (or the mean) of their photos;
no one passing the verifier's threshold means "unknown". The file records which model (name, weights
SHA-256, preprocessing) made its embeddings and refuses another: `reembed` recomputes them from the stored
aligned face crops.
"""

from __future__ import annotations

import json
import sqlite3
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

from . import gallery_db
from .decision import DEFAULT_FPIR, Decision
from .embed import embed_batches
from .errors import DuplicatePersonError, GalleryModelError, PersonNotFoundError
from .gallery_calibration import SelfCalibration
from .gallery_results import Candidate, EnrolledPhoto, Enrollment, Identification, IdentifiedFace, Person, PersonRecord
from .gallery_search import SearchIndex
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


def _refuse_look_alike(conn: sqlite3.Connection, name: str, renaming: str | None = None) -> None:
    """ValueError when an enrolled person (other than the one being renamed) has a look-alike name."""
    other = look_alike(name, (n for (n,) in conn.execute("SELECT name FROM people") if n != renaming))
    if other is not None:
        raise ValueError(f"{name!r} looks like the enrolled {other!r}; choose a name that cannot be mistaken for it")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


@dataclass
class _Matrix:
    """Every stored embedding in a search index, and the file state it reflects. `generation` counts
    rebuilds from the file (appending this process's own enrollments keeps it)."""

    key: tuple[int, int]
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
    enrollment or search, so `people` bookkeeping and `reembed` work on any gallery)."""

    def __init__(self, path: str | Path, verifier: Verifier | None = None, *, aggregate: str = "max",
                 check_model: bool = True) -> None:
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        self.path = Path(path)
        self.aggregate = aggregate
        self._verifier = verifier
        self._lock = threading.RLock()
        self._writes = 0  # our own commits (PRAGMA data_version only counts other connections')
        self._matrix: _Matrix | None = None
        self._selfcal: SelfCalibration | None = None
        self._record: tuple[Verifier, dict[str, str]] | None = None
        self._conn = gallery_db.connect(self.path)
        if check_model:
            try:
                with self._transaction() as conn:
                    self._check_model(conn)
            except BaseException:
                self._conn.close()
                raise

    # ---- plumbing ------------------------------------------------------------------------------------

    @property
    def verifier(self) -> Verifier:
        if self._verifier is None:
            self._verifier = Verifier()
        return self._verifier

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One BEGIN IMMEDIATE ... COMMIT under the gallery's lock, rolled back on any error. IMMEDIATE takes
        the write lock at once, so concurrent writers queue on the busy timeout instead of deadlocking."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:  # SQLite may have rolled back itself (disk full, I/O error)
                    self._conn.execute("ROLLBACK")
                raise
            self._writes += 1

    def _check_model(self, conn: sqlite3.Connection) -> None:
        """Record the model in a new file; refuse a file made by another model or preprocessing."""
        if self._record is None or self._record[0] is not self.verifier:
            self._record = (self.verifier, model_record(self.verifier))  # hashes the weights file: once
        mine = self._record[1]
        stored = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if "weights_sha256" not in stored:
            rows = [*mine.items(), ("created", str(time.time()))]
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", rows)
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
        if self._conn.execute("SELECT 1 FROM meta WHERE key = 'weights_sha256'").fetchone():
            self._check_model(self._conn)

    @classmethod
    def open(cls, path: str | Path, model: str | Path | None = None, *, aggregate: str = "max",
             **verifier_options: Any) -> Gallery:
        """Open a gallery with the model that built it (found from its record: a shipped name or a run
        folder), or `model` (refused if it is not that one); a new file gets `model` or the shipped one.
        The file's integrity is checked first. `verifier_options` go to `Verifier` (far, threshold, ...)."""
        from .gallery_model import open_gallery

        return open_gallery(cls, path, model, aggregate=aggregate, **verifier_options)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def model_info(self) -> dict[str, str]:
        """The stored record of the model that made the embeddings ({} in a new file)."""
        with self._lock:
            return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

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
        with self._transaction() as conn:
            before = self._key()  # under the write lock: nobody else can commit until we do
            self._check_model(conn)
            row = conn.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
            if row and new:
                raise DuplicatePersonError(f"{name!r} is already enrolled in {self.path}")
            if not row:
                _refuse_look_alike(conn, name)
            pid = row[0] if row else conn.execute("INSERT INTO people (name, created) VALUES (?, ?)",
                                                  (name, now)).lastrowid
            ids = [self._insert_enrollment(conn, pid, f, e, now) for f, e in zip(faces, emb)]
            total = conn.execute("SELECT count(*) FROM enrollments WHERE person_id = ?", (pid,)).fetchone()[0]
        self._append(before, name, emb)
        return Enrollment(name, tuple(EnrolledPhoto(i, f.source, f.sha256, f.report) for i, f in zip(ids, faces)),
                          int(total))

    def _insert_enrollment(self, conn: sqlite3.Connection, person_id: int, face: Face, emb: torch.Tensor,
                           now: float) -> int:
        blob = emb.numpy().astype("<f4").tobytes()
        cur = conn.execute(
            "INSERT INTO enrollments (person_id, embedding, crop, source, sha256, box, landmarks, created, face) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (person_id, blob, face.crop_png, face.source, face.sha256, json.dumps(face.report["box"]),
             json.dumps(face.report["landmarks"]), now, json.dumps(face.report)))
        return int(cur.lastrowid or 0)

    def _append(self, before: tuple[int, int], name: str, emb: torch.Tensor) -> None:
        """Our own enrollment goes straight into a current index (no re-read of every stored embedding)."""
        with self._lock:
            m = self._matrix
            if m is not None and m.key == before and self._key() == (before[0], before[1] + 1):
                m.index.add(name, emb.numpy())
                m.key = self._key()

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
        decision = self.decision(fpir=fpir)
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
        v = self.verifier
        if fpir is not None and far is not None:
            raise ValueError("give an FPIR or a FAR, not both")
        if v.explicit and fpir is None and far is None:
            return v.decision
        own = self.self_calibration()
        if far is not None:
            return v.noted(own.far_decision(far, v))
        return v.noted(own.fpir_decision(DEFAULT_FPIR if fpir is None else fpir, v))

    def self_calibration(self) -> SelfCalibration:
        """The gallery's calibration from its own enrolled people: recomputed when the file changed, except
        that this process's own enrollments adding at most 1% more photos keep it (a large gallery enrolling
        one person at a time would otherwise recalibrate before every search)."""
        m = self._current_matrix()
        with self._lock:
            cal = self._selfcal
            if cal is None or cal.key[0] != m.generation or not 0 <= len(m.emb) - cal.key[1] <= 0.01 * cal.key[1]:
                self._selfcal = SelfCalibration.of(m, self.verifier, self.aggregate, str(self.path.name))
            return self._selfcal

    def _key(self) -> tuple[int, int]:
        """The file's state: other connections' commits (PRAGMA data_version) and our own."""
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0]), self._writes

    def _current_matrix(self) -> _Matrix:
        """The search index over every stored embedding, re-read only when the file changed since it was
        built (this process's own enrollments are appended instead). Read in chunks into one preallocated
        array: peak memory stays near the matrix itself."""
        with self._lock:
            key = self._key()
            if self._matrix is not None and self._matrix.key == key:
                return self._matrix
            self._same_model()
            dim = self.verifier.loaded.model.embed_dim
            n = int(self._conn.execute("SELECT count(*) FROM enrollments").fetchone()[0])
            emb = np.empty((n, dim), np.float32)
            person = np.empty(n, np.int64)
            names: list[str] = []
            cur = self._conn.execute("SELECT p.id, p.name, e.embedding FROM enrollments e JOIN people p "
                                     "ON p.id = e.person_id ORDER BY e.person_id, e.id")
            i, last = 0, -1
            while rows := cur.fetchmany(8192):  # a person's rows are consecutive
                pids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
                new = np.diff(pids, prepend=last) != 0
                person[i:i + len(rows)] = len(names) - 1 + np.cumsum(new)
                names.extend(rows[j][1] for j in np.flatnonzero(new))
                last = int(pids[-1])
                emb[i:i + len(rows)] = np.frombuffer(b"".join(r[2] for r in rows), "<f4").reshape(len(rows), dim)
                i += len(rows)
            generation = self._matrix.generation + 1 if self._matrix is not None else 0
            self._matrix = _Matrix(key, SearchIndex.build(self.verifier.loaded.model, names, person[:i], emb[:i]),
                                   generation)
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
            rows = self._conn.execute("SELECT e.embedding FROM enrollments e JOIN people p ON p.id = e.person_id "
                                      "WHERE p.name = ?", (name,)).fetchall()
        if not rows:
            raise PersonNotFoundError(f"no person named {name!r} in {self.path}")
        stored = torch.from_numpy(np.frombuffer(b"".join(r[0] for r in rows), dtype="<f4")
                                  .reshape(len(rows), -1).astype(np.float32))
        probe = self._embed([face])
        probs = v.probability(probe.expand(len(stored), -1), stored)
        p = float(probs.max() if self.aggregate == "max" else probs.mean())
        decision = v.decision if v.explicit and far is None else v.noted(self.self_calibration().far_decision(far, v))
        return Verdict.of(decision, p, v.name, round((time.perf_counter() - t0) * 1000, 2), [face.report],
                          name=name, photos=len(rows), aggregate=self.aggregate)

    # ---- bookkeeping ---------------------------------------------------------------------------------

    def people(self) -> list[Person]:
        """Everyone enrolled, by name, with their number of photos and enrollment time."""
        with self._lock:
            rows = self._conn.execute("SELECT p.name, count(e.id), p.created FROM people p LEFT JOIN enrollments e "
                                      "ON e.person_id = p.id GROUP BY p.id ORDER BY p.name").fetchall()
        return [Person(n, c, _iso(t)) for n, c, t in rows]

    def person(self, name: str) -> PersonRecord:
        """One person and their enrollments (no embeddings, no crops: see face_crop)."""
        with self._lock:
            row = self._conn.execute("SELECT id, created FROM people WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise PersonNotFoundError(f"no person named {name!r} in {self.path}")
            rows = self._conn.execute("SELECT id, source, sha256, box, landmarks, face, created FROM enrollments "
                                      "WHERE person_id = ? ORDER BY id", (row[0],)).fetchall()
        enrollments = [{"id": i, "source": s, "sha256": h, "box": json.loads(b or "null"),
                        "landmarks": json.loads(lm or "[]"), "face": json.loads(f or "null"), "time": _iso(t)}
                       for i, s, h, b, lm, f, t in rows]
        return PersonRecord(name, _iso(row[1]), len(enrollments), tuple(enrollments))

    def face_crop(self, enrollment_id: int) -> bytes:
        """The stored PNG of an enrollment's aligned face."""
        with self._lock:
            row = self._conn.execute("SELECT crop FROM enrollments WHERE id = ?", (int(enrollment_id),)).fetchone()
        if row is None:
            raise PersonNotFoundError(f"no enrollment {enrollment_id} in {self.path}")
        return bytes(row[0])

    def rename(self, old: str, new: str) -> None:
        new = check_name(new)
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM people WHERE name = ?", (new,)).fetchone() and new != old:
                raise DuplicatePersonError(f"cannot rename {old!r}: {new!r} is already enrolled in {self.path}")
            _refuse_look_alike(conn, new, old)
            if conn.execute("UPDATE people SET name = ? WHERE name = ?", (new, old)).rowcount == 0:
                raise PersonNotFoundError(f"no person named {old!r} in {self.path}")

    def delete(self, name: str) -> None:
        """Remove the person with every photo, crop and embedding, and overwrite them in the file
        (secure_delete, then a WAL checkpoint so no copy stays in the write-ahead log)."""
        with self._transaction() as conn:
            if conn.execute("DELETE FROM people WHERE name = ?", (name,)).rowcount == 0:
                raise PersonNotFoundError(f"no person named {name!r} in {self.path}")
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

    def reembed(self, verifier: Verifier) -> int:
        """Recompute every embedding with another model from the stored aligned face crops (taken as face
        crops, as `--no-detect` takes them) and record that model; returns the number of embeddings.
        One transaction: enrollments made meanwhile by other processes wait, then see the new model."""
        pre = verifier.loaded.preprocess
        with self._transaction() as conn:
            rows = conn.execute("SELECT id, crop FROM enrollments ORDER BY id").fetchall()
            updates = []
            if rows:
                x = torch.from_numpy(np.stack([to_input(png_to_rgb(crop), pre) for _, crop in rows]))
                emb = embed_batches(verifier.net, x, pre, device=verifier.device)
                updates = [(e.numpy().astype("<f4").tobytes(), i) for (i, _), e in zip(rows, emb)]
            self._verifier, self._matrix, self._selfcal = verifier, None, None
            conn.execute("DELETE FROM meta")
            self._check_model(conn)
            conn.executemany("UPDATE enrollments SET embedding = ? WHERE id = ?", updates)
        return len(rows)
