"""Exact top-k search over a gallery's embeddings, fast enough for a million people on one core.

The Siamese head is logit(q, x) = sum_j a_j |q_j - x_j| + b. When every a_j <= 0 (the shipped head, and any
head trained with `head_weights="nonpositive"`) the logit is b minus an L1 distance in the space scaled by
|a_j|, so the best match is the nearest neighbour in L1 and a well-kept L1 kernel (faiss's flat L1, SIMD, no
index to train) ranks a million rows in tens of milliseconds. With tied weights (all a_j equal, as shipped)
the stored matrix is searched as it is, with no scaled copy. A head with positive weights is searched by the
head itself, in chunks.

The fast pass only proposes: each person whose fast score is within a float32 error margin of the k-th best is
re-scored with the model's own head (`embed.probability`, float64 sigmoid), so names, order and probabilities
are those of the brute-force head over every stored embedding, ties broken by name. Top-k takes a partial
selection (argpartition), never a sort of everyone.

`SearchIndex` keeps its rows in a growable array: enrollments made by this process are appended without
re-reading the store; anything else (deletions, renames, other processes' writes) rebuilds it from the store.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from . import threads
from .embed import probability
from .models.siamese import SiameseNet

try:  # faiss-cpu is a dependency; torch's cdist stands in where its wheel does not exist
    import faiss
except ImportError:  # pragma: no cover - exercised with backend="torch" in the tests
    faiss = None

AGGREGATES = ("max", "mean")
BACKENDS = ("faiss", "torch")
PROBE_CELLS = 16_000_000  # probes x rows scored at once (64 MB of float32 distances)
CHUNK_ROWS = 65_536  # rows per pass of the head itself (heads with positive weights), at most


@dataclass(frozen=True)
class Hit:
    """One person's exact score for one probe."""

    person: int
    p: float


@dataclass
class SearchIndex:
    """The gallery's embeddings (rows) with the person of each row, searchable by the model's head."""

    model: SiameseNet
    names: list[str]  # person index -> name
    person: np.ndarray  # (n,) int64, the person of each row
    emb: np.ndarray  # (capacity, D) float32, rows [:n] in use
    n: int
    backend: str = "faiss"
    _scaled: np.ndarray | None = field(default=None, repr=False)  # rows scaled by |a_j| (untied heads only)
    _groups: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)  # rows sorted by person
    _counts: np.ndarray | None = field(default=None, repr=False)  # rows of each person
    _index_of: dict[str, int] | None = field(default=None, repr=False)  # name -> person index
    _identity: bool | None = field(default=None, repr=False)  # row i is person i

    # ---- building ------------------------------------------------------------------------------------

    @classmethod
    def build(cls, model: SiameseNet, names: Sequence[str], person: np.ndarray, emb: np.ndarray,
              backend: str | None = None) -> SearchIndex:
        """An index over `emb` (N, D) float32 (kept, not copied) whose row i belongs to names[person[i]]."""
        backend = backend or ("faiss" if faiss is not None else "torch")
        if backend not in BACKENDS or (backend == "faiss" and faiss is None):
            raise ValueError(f"backend must be one of {BACKENDS} (faiss importable: {faiss is not None}), "
                             f"got {backend!r}")
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        person = np.asarray(person, dtype=np.int64)
        if emb.ndim != 2 or len(person) != len(emb):
            raise ValueError(f"{len(person)} persons for an embedding matrix of shape {emb.shape}")
        return cls(model, list(names), person, emb, len(emb), backend)

    @property
    def rows(self) -> np.ndarray:
        return self.emb[:self.n]

    @property
    def dim(self) -> int:
        return int(self.emb.shape[1])

    def add(self, name: str, emb: np.ndarray) -> None:
        """Append rows of `name` (a new or an enrolled person), growing the array by doubling."""
        emb = np.asarray(emb, dtype=np.float32).reshape(-1, self.dim)
        index = self._name_index()
        pid = index.get(name)
        if pid is None:
            pid = index[name] = len(self.names)
            self.names.append(name)
        need = self.n + len(emb)
        if need > len(self.emb):
            grown = np.empty((max(need, 2 * len(self.emb), 16), self.dim), np.float32)
            grown[:self.n] = self.rows
            self.emb = grown
        self.emb[self.n:need] = emb
        self.person = np.concatenate([self.person, np.full(len(emb), pid, np.int64)])
        self.n = need
        self._scaled, self._groups, self._counts, self._identity = None, None, None, None

    def _name_index(self) -> dict[str, int]:
        if self._index_of is None:
            self._index_of = {name: i for i, name in enumerate(self.names)}
        return self._index_of

    # ---- the head ------------------------------------------------------------------------------------

    def _head(self) -> tuple[np.ndarray, float]:
        head = self.model.head
        a = head.effective_weight().detach().double().cpu().numpy().reshape(-1)
        return a, float(head.fc.bias.detach().double().cpu().item())

    def _fast_logits(self, probes: np.ndarray) -> np.ndarray:
        """(F, N) float32 logits of every probe against every row: an L1 search where the head allows."""
        a, b = self._head()
        rows = self.rows
        if np.all(a <= 0):
            w = -a
            if np.all(w == w[0]):
                d = self._l1(probes, rows)
                d *= np.float32(-w[0])
                d += np.float32(b)
                return d
            if self._scaled is None:
                self._scaled = rows * w.astype(np.float32)
            return (b - self._l1(probes * w.astype(np.float32), self._scaled)).astype(np.float32, copy=False)
        a32 = torch.from_numpy(a.astype(np.float32))
        out = np.empty((len(probes), self.n), np.float32)
        q = torch.from_numpy(probes)
        step = max(1, min(CHUNK_ROWS, PROBE_CELLS // max(1, len(probes) * self.dim)))  # (F, rows, D) at most 64 MB
        for c in range(0, self.n, step):
            x = torch.from_numpy(rows[c:c + step])
            out[:, c:c + step] = ((q[:, None, :] - x[None]).abs() @ a32 + b).numpy()
        return out

    def _l1(self, q: np.ndarray, x: np.ndarray) -> np.ndarray:
        q = np.ascontiguousarray(q, dtype=np.float32)
        if self.backend == "faiss":
            faiss.omp_set_num_threads(threads.apply())  # the policy's count, as torch's inference calls
            return faiss.pairwise_distances(q, x, faiss.METRIC_L1)
        return torch.cdist(torch.from_numpy(q), torch.from_numpy(x), p=1).numpy()

    def _person_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows grouped by person: (row order, offsets) with person i's rows order[offsets[i]:offsets[i+1]]."""
        if self._groups is None:
            order = np.argsort(self.person[:self.n], kind="stable")
            self._groups = (order, np.concatenate([[0], np.cumsum(self._person_counts())]))
        return self._groups

    def _person_counts(self) -> np.ndarray:
        """How many rows each person has (0: a person without photos, never answered)."""
        if self._counts is None:
            self._counts = np.bincount(self.person[:self.n], minlength=len(self.names))
        return self._counts

    # ---- searching -----------------------------------------------------------------------------------

    @torch.no_grad()
    def search(self, probes: np.ndarray | torch.Tensor, k: int, aggregate: str = "max",
               exclude: Sequence[int] | None = None) -> list[list[Hit]]:
        """The k best people for each probe embedding, exactly as the head scores them: best first, ties by
        name. A person's score is the max (or mean) p over their rows. `exclude[f]`: a person left out of
        probe f's answer (an enrolled photo searched against everyone else)."""
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        probes = np.ascontiguousarray(probes.numpy() if isinstance(probes, torch.Tensor) else probes, np.float32)
        present = self._person_counts() > 0
        out: list[list[Hit]] = []
        step = max(1, PROBE_CELLS // max(self.n, 1))
        for c in range(0, len(probes), step):
            z = self._fast_logits(probes[c:c + step])
            for f, row in enumerate(z):
                skip = None if exclude is None else exclude[c + f]
                out.append(self._top(probes[c + f], row, k, aggregate, present, skip))
        return out

    def _top(self, probe: np.ndarray, z: np.ndarray, k: int, aggregate: str, present: np.ndarray,
             skip: int | None) -> list[Hit]:
        """Candidates from the fast logits of one probe, re-scored exactly."""
        if aggregate == "max":
            per = self._best_row(z)
            margin = 1e-3 + 1e-5 * float(np.max(np.abs(z), initial=0.0))  # float32 sums of D terms
        else:
            counts = self._person_counts()
            per = np.bincount(self.person[:self.n], weights=_sigmoid(z), minlength=len(self.names))
            per = np.where(counts > 0, per / np.maximum(counts, 1), -np.inf)
            margin = 1e-3  # a probability moves by at most a quarter of its logit's error
        per[~present] = -np.inf
        if skip is not None:
            per[skip] = -np.inf
        live = int(np.isfinite(per).sum())
        if live == 0:
            return []
        kk = min(k, live)
        top = np.argpartition(-per, kk - 1)[:kk]
        floor = float(per[top].min()) - margin
        cands = np.flatnonzero(per >= floor)
        return sorted(self._exact(probe, cands, aggregate), key=lambda h: (-h.p, self.names[h.person]))[:k]

    def _best_row(self, z: np.ndarray) -> np.ndarray:
        """Each person's highest row logit (-inf for a person without rows)."""
        if self.n == len(self.names) and self._one_each():
            return z.astype(np.float64)
        order, offsets = self._person_rows()
        per = np.full(len(self.names), -np.inf, np.float64)
        some = offsets[1:] > offsets[:-1]
        if self.n:
            per[some] = np.maximum.reduceat(z[order], offsets[:-1][some])
        return per

    def _one_each(self) -> bool:
        """Row i is person i (a gallery of one photo per person, read from its store)."""
        if self._identity is None:
            self._identity = bool(np.array_equal(self.person[:self.n], np.arange(self.n)))
        return self._identity

    def _exact(self, probe: np.ndarray, people: np.ndarray, aggregate: str) -> list[Hit]:
        """The model head's p for every row of each candidate person, aggregated per person."""
        if self.n == len(self.names) and self._one_each():
            rows, owner = people, np.arange(len(people))
        else:
            order, offsets = self._person_rows()
            rows = np.concatenate([order[offsets[i]:offsets[i + 1]] for i in people])
            owner = np.repeat(np.arange(len(people)), offsets[people + 1] - offsets[people])
        x = torch.from_numpy(self.rows[rows])
        p = probability(self.model, torch.from_numpy(probe).expand(len(rows), -1), x)
        hits = []
        for j, i in enumerate(people):
            mine = p[owner == j]
            hits.append(Hit(int(i), float(mine.max() if aggregate == "max" else mine.mean())))
        return hits


def _sigmoid(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    return 1.0 / (1.0 + np.exp(-z))


def search_budget(n_rows: int, wanted: int, cells: float = 5e7) -> int:
    """How many enrolled photos a gallery of n_rows can search against itself for its calibration within
    about `cells` row scorings (about a second on one core): all `wanted` in small galleries, fewer in
    large ones."""
    return int(min(wanted, max(1, math.floor(cells / max(n_rows, 1)))))
