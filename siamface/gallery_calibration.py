"""A gallery calibrates itself: its enrolled people are impostors for one another, from the place of use.

Every pair of photos of two different enrolled people is an impostor pair taken where the gallery is used;
every enrolled photo searched against everyone else is a stranger's search at (nearly) the gallery's size.
Once these resolve an operating point (calibration.RULE), the gallery decides with its own point; until
then with the model's, and every answer says which calibration it used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import calibration as cal
from .decision import Decision, from_curve, from_point, lowest_on_curve
from .embed import probability
from .verify import Verifier, model_decision, model_label

MAX_PAIRS = 2_000_000  # impostor pairs scored at most (a seeded sample beyond)
MAX_SEARCHES = 2_000  # enrolled photos searched against the others at most


@dataclass
class SelfCalibration:
    """What a gallery's own people say: their pairs (for FAR points) and their searches (for FPIR)."""

    key: Any
    name: str
    n_people: int
    pairs: cal.PairScores
    best_other: np.ndarray  # each search's best score against the other people
    _points: dict[str, cal.OperatingPoint | None]
    _curve: tuple[tuple[float, float], ...] | None = None

    @classmethod
    def of(cls, matrix: Any, verifier: Verifier, aggregate: str, name: str, seed: int = 0) -> SelfCalibration:
        emb, starts = matrix.emb, matrix.starts
        n_rows, n_people = len(emb), len(matrix.names)
        person = np.repeat(np.arange(n_people), np.diff(np.append(starts, n_rows))) if n_rows else np.zeros(0, int)

        def score(i: np.ndarray, j: np.ndarray) -> np.ndarray:
            return _probability(verifier, emb[torch.as_tensor(i)], emb[torch.as_tensor(j)])

        pairs = cal.all_pairs(score, person, kind=f"gallery {name}", max_pairs=MAX_PAIRS, seed=seed) \
            if n_rows > 1 else cal.PairScores.of([], [], [], [], f"gallery {name}")
        best = _searches(emb, person, starts, verifier, aggregate, seed) if n_people > 1 else np.zeros(0)
        return cls(matrix.key, name, n_people, pairs, best, {})

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
            self._points[name] = cal.far_point([self.pairs], far, self.what)
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
        note = f"{self.what} do not resolve FAR {far:g} yet ({len(self.pairs.impostor):,} impostor pairs)"
        return model_decision(verifier.loaded, far=far).with_note(note)

    def fpir_decision(self, fpir: float, verifier: Verifier) -> Decision:
        """The threshold at which a share `fpir` of strangers is matched to someone in this gallery:
        measured from its own searches where they resolve it, else derived from a FAR curve (the gallery's
        own, else the model's) for its size."""
        n = max(self.n_people, 1)
        t, searches = cal.fpir_from_searches(self.best_other, fpir)
        if t is not None:
            k = int((self.best_other >= t).sum())
            src = (f"FPIR {fpir:g} measured on {searches:,} searches of enrolled photos against the other "
                   f"{n - 1:,} people of {self.name}: {k} matched someone at this threshold")
            return Decision(t, cal.fpir_name(fpir), src, None, None, fpir, n, self.label, cal.wilson(k, searches))
        d = from_curve(self.curve(), fpir, n, self.label, self.what)
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


@torch.no_grad()
def _searches(emb: torch.Tensor, person: np.ndarray, starts: np.ndarray, verifier: Verifier, aggregate: str,
              seed: int) -> np.ndarray:
    """Each (sampled) enrolled photo searched against every other person: its best person score."""
    rows = np.arange(len(emb))
    if len(rows) > MAX_SEARCHES:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_SEARCHES, replace=False))
    counts = np.diff(np.append(starts, len(emb)))
    out = []
    step = max(1, min(64, 2_000_000 // max(len(emb), 1)))  # at most ~2M pairs (1 GB of pair tensors) at once
    for c in range(0, len(rows), step):
        r = rows[c:c + step]
        f, n = len(r), len(emb)
        p = _probability(verifier, emb[torch.as_tensor(r)].repeat_interleave(n, 0), emb.repeat(f, 1)).reshape(f, n)
        if aggregate == "max":
            per = np.maximum.reduceat(p, starts, axis=1)
        else:
            per = np.add.reduceat(p, starts, axis=1) / counts
        per[np.arange(f), person[r]] = -np.inf
        out.append(per.max(axis=1))
    return np.concatenate(out) if out else np.zeros(0)
