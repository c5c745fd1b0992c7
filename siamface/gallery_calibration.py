"""A gallery calibrates itself: its enrolled people are impostors for one another, from the place of use.

Every pair of photos of two different enrolled people is an impostor pair taken where the gallery is used;
every enrolled photo searched against everyone else is a stranger's search at (nearly) the gallery's size.
Once these resolve an operating point (calibration.RULE), the gallery decides with its own point; until
then with the model's, and every answer says which calibration it used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import calibration as cal
from .decision import Decision, from_curve, from_point, lowest_on_curve
from .embed import probability
from .gallery_search import SearchIndex, search_budget
from .verify import Verifier, model_decision, model_label

MAX_PAIRS = 500_000  # pairs scored at most (a seeded sample beyond): about a second on one core
MAX_SEARCHES = 2_000  # enrolled photos searched against the others at most (fewer in large galleries)
PAIR_SLICE = 100_000  # pairs gathered at once


@dataclass
class SelfCalibration:
    """What a gallery's own people say: their pairs (for FAR points) and their searches (for FPIR).

    Both are measured on first need and only where they could resolve the point asked: a million-person
    gallery asked for FPIR 1% needs a pairwise FAR near 1e-8, which no affordable sample of its pairs
    resolves, so it goes straight to the model's curve instead of scoring pairs it cannot use."""

    key: Any
    name: str
    n_people: int
    n_rows: int
    _matrix: Any = field(repr=False)
    _verifier: Verifier = field(repr=False)
    _aggregate: str = "max"
    _seed: int = 0
    _pairs: cal.PairScores | None = field(default=None, repr=False)
    _best: np.ndarray | None = field(default=None, repr=False)
    _points: dict[str, cal.OperatingPoint | None] = field(default_factory=dict, repr=False)
    _curve: tuple[tuple[float, float], ...] | None = None

    @classmethod
    def of(cls, matrix: Any, verifier: Verifier, aggregate: str, name: str, seed: int = 0) -> SelfCalibration:
        """For a gallery's search index (`matrix`: its index, row persons and generation); measures nothing yet."""
        return cls((matrix.generation, len(matrix.emb)), name, len(matrix.names), len(matrix.emb), matrix,
                   verifier, aggregate, seed)

    @property
    def pairs(self) -> cal.PairScores:
        """Pairs of photos of different enrolled people (a seeded sample of at most MAX_PAIRS), scored."""
        if self._pairs is None:
            name, verifier = self.name, self._verifier
            emb, person = torch.from_numpy(self._matrix.emb), self._matrix.person

            def score(i: np.ndarray, j: np.ndarray) -> np.ndarray:  # in slices: ~50 MB of pairs at once
                return np.concatenate([_probability(verifier, emb[torch.as_tensor(i[c:c + PAIR_SLICE])],
                                                    emb[torch.as_tensor(j[c:c + PAIR_SLICE])])
                                       for c in range(0, len(i), PAIR_SLICE)])

            self._pairs = cal.all_pairs(score, person, kind=f"gallery {name}", max_pairs=MAX_PAIRS,
                                        seed=self._seed) \
                if self.n_rows > 1 else cal.PairScores.of([], [], [], [], f"gallery {name}")
        return self._pairs

    @property
    def best_other(self) -> np.ndarray:
        """Each (sampled) enrolled photo's best score against the other people."""
        if self._best is None:
            self._best = _searches(self._matrix.index, self._matrix.person, self._aggregate, self._seed) \
                if self.n_people > 1 else np.zeros(0)
        return self._best

    def _could_resolve_far(self, far: float) -> bool:
        return min(self.n_rows * (self.n_rows - 1) // 2, MAX_PAIRS) * far >= cal.RESOLVE_ACCEPTS - 1e-9

    def _could_resolve_fpir(self, fpir: float) -> bool:
        wanted = search_budget(self.n_rows, MAX_SEARCHES) if self.n_people > 1 else 0
        return wanted * fpir >= cal.RESOLVE_ACCEPTS - 1e-9

    @property
    def what(self) -> str:
        return f"the {self.n_people} people enrolled in {self.name}"

    @property
    def label(self) -> str:
        """The `calibration` field of the decisions it makes."""
        return f"gallery self-calibration ({self.what})"

    def far_point(self, far: float) -> cal.OperatingPoint | None:
        name = cal.far_name(far)
        if name not in self._points:
            self._points[name] = cal.far_point([self.pairs], far, self.what) if self._could_resolve_far(far) else None
        return self._points[name]

    def curve(self) -> tuple[tuple[float, float], ...]:
        if self._curve is None:
            self._curve = tuple(cal.far_curve([self.pairs]))
        return self._curve

    def far_decision(self, far: float | None, verifier: Verifier) -> Decision:
        """The FAR point `far` (None: the model's default point): this gallery's own where it resolves it."""
        card = verifier.loaded.card.calibration
        if far is None:
            far = card.point().target if card is not None else None
            if far is None:  # no calibration, or a default that is no FAR point (EER): the model's own
                return model_decision(verifier.loaded)
        own = self.far_point(far)
        if own is not None:
            return from_point(own, self.label)
        pairs = f"{len(self.pairs.impostor):,} impostor pairs" if self._pairs is not None else \
            f"at most {MAX_PAIRS:,} pairs are scored"
        note = f"{self.what} do not resolve FAR {far:g} yet ({pairs})"
        return model_decision(verifier.loaded, far=far).with_note(note)

    def fpir_decision(self, fpir: float, verifier: Verifier) -> Decision:
        """The threshold at which a share `fpir` of strangers is matched to someone in this gallery:
        measured from its own searches where they resolve it, else derived from a FAR curve (the gallery's
        own, else the model's) for its size."""
        n = max(self.n_people, 1)
        t, searches = cal.fpir_from_searches(self.best_other, fpir) if self._could_resolve_fpir(fpir) else (None, 0)
        if t is not None:
            k = int((self.best_other >= t).sum())
            src = (f"FPIR {fpir:g} measured on {searches:,} searches of enrolled photos against the other "
                   f"{n - 1:,} people of {self.name}: {k} matched someone at this threshold")
            return Decision(t, cal.fpir_name(fpir), src, None, None, fpir, n, self.label, cal.wilson(k, searches))
        d = from_curve(self.curve(), fpir, n, self.label, self.what) \
            if self._could_resolve_far(cal.far_for_fpir(fpir, n)) else None
        if d is not None:
            return d
        model = verifier.loaded.card.calibration
        curve = model.curve if model is not None else ()
        where = f"model {model_label(verifier.loaded)}"
        if not curve:  # an older model: its default point, with the FPIR it gives if its FAR is known
            point = model_decision(verifier.loaded)
            got = cal.fpir_of_far(point.far, n) if point.far is not None and math.isfinite(point.far) else None
            note = (f"the model has no FAR curve to derive an FPIR from; at {n} people this point's FPIR is about "
                    f"{got:.2g} (1 - (1 - FAR)^N)") if got is not None else "the model has no FAR curve"
            return Decision(point.threshold, point.operating_point, f"{point.source}; {note}", point.far,
                            point.far_interval, got, n, point.calibration)
        return from_curve(curve, fpir, n, where, "the model's calibration") or \
            lowest_on_curve(curve, fpir, n, where, "the model's calibration")


@torch.no_grad()
def _probability(verifier: Verifier, e1: torch.Tensor, e2: torch.Tensor) -> np.ndarray:
    """The head's p(same), as Verifier.probability computes it (the calibration's own passes, counted apart
    from the searches a caller asks for)."""
    return probability(verifier.loaded.model, e1, e2)


def _searches(index: SearchIndex, person: np.ndarray, aggregate: str, seed: int) -> np.ndarray:
    """Enrolled photos (a seeded sample: all of a small gallery's, fewer in a large one, within the search
    budget) each searched against every other person: its best person score."""
    rows = np.arange(len(person))
    wanted = search_budget(len(rows), MAX_SEARCHES)
    if len(rows) > wanted:
        rows = np.sort(np.random.default_rng(seed).choice(rows, wanted, replace=False))
    hits = index.search(index.rows[rows], 1, aggregate, exclude=person[rows])
    return np.array([h[0].p if h else -np.inf for h in hits])
