"""Scores -> operating points, with the evidence behind each one (pure functions, no I/O).

An operating point is a threshold on p(same) with the false-accept rate (FAR) it stands for. A threshold
chosen on one set of people is only as good as that set: false accepts cluster on a few look-alike pairs of
people, so the uncertainty of a FAR comes from how many *people* stand behind it, not how many pairs. Here:

- every pair carries the identities of its two photos; the 95% interval of a FAR is a bootstrap over
  identities (people are resampled with replacement; a pair counts once per copy of each of its people),
  widened to at least the binomial (Wilson) interval so that zero false accepts never reads as "exactly 0";
- a FAR point is *resolved* by a set of photos when the set holds at least RESOLVE_ACCEPTS / FAR impostor
  pairs (so at least RESOLVE_ACCEPTS false accepts decide it) and those false accepts come from at least
  RESOLVE_PEOPLE_PAIRS distinct pairs of people; a point no set resolves is not stored;
- with several kinds of photos (web, studio, lab...), every kind constrains the point: the stored
  threshold is the highest of their thresholds, so the FAR is at or under the stated rate on each of them
  (a kind too small to measure the rate keeps its FAR at or under 1 / its impostor pairs), and each
  kind's measured FAR and FRR are kept;
- FPIR, the chance that a stranger matches anyone in a gallery of N people, from a FAR curve
  (1 - (1 - FAR)^N) or measured from searches of enrolled people against the others (`fpir_threshold`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

EER = "EER"
STANDARD_FARS = (1e-2, 1e-3, 1e-4, 1e-5)
RESOLVE_ACCEPTS = 10
RESOLVE_PEOPLE_PAIRS = 3
LEVEL = 0.95
N_BOOT = 400
RULE = (f"a FAR point is stored where a set of photos holds at least {RESOLVE_ACCEPTS}/FAR impostor pairs and its "
        f"false accepts at the point come from at least {RESOLVE_PEOPLE_PAIRS} distinct pairs of people; every "
        "kind of photo constrains it (the threshold is the highest the kinds need, so FAR is at or under the "
        "stated rate, or 1/its impostor pairs, on each); 95% intervals are a bootstrap over people, widened to "
        "at least the Wilson interval")


def far_name(far: float) -> str:
    """The name of the operating point at a false-accept rate: 1e-3 -> 'FAR=1e-03'."""
    return f"FAR={far:.0e}"


def fpir_name(fpir: float) -> str:
    return f"FPIR={fpir:.0e}"


@dataclass(frozen=True)
class PairScores:
    """Scores of labelled pairs with the identity of each side (-1: unknown, the pair is its own cluster)."""

    scores: np.ndarray
    same: np.ndarray
    id_a: np.ndarray
    id_b: np.ndarray
    kind: str = ""
    _memo: dict = field(default_factory=dict, compare=False, repr=False)  # derived once: sorted scores, groups

    def __post_init__(self) -> None:
        n = len(self.scores)
        if not (len(self.same) == len(self.id_a) == len(self.id_b) == n):
            raise ValueError("scores, same, id_a and id_b must have one entry per pair")
        if n and not np.all(np.isfinite(self.scores)):
            raise ValueError("scores must be finite")

    @classmethod
    def of(cls, scores: Any, same: Any, id_a: Any = None, id_b: Any = None, kind: str = "") -> PairScores:
        s = np.asarray(scores, dtype=np.float64).ravel()
        y = np.asarray(same).astype(bool).ravel()
        if id_a is None or id_b is None:  # no identities: each pair is its own cluster
            id_a = np.arange(len(s))
            id_b = np.arange(len(s)) + len(s)
        return cls(s, y, np.asarray(id_a, dtype=np.int64).ravel(), np.asarray(id_b, dtype=np.int64).ravel(), kind)

    @property
    def impostor(self) -> np.ndarray:
        return self.scores[~self.same]

    @property
    def genuine(self) -> np.ndarray:
        return self.scores[self.same]

    def need(self, far: float) -> float | None:
        """The threshold this set alone needs for FAR `far`; a set too small to measure `far` keeps its FAR
        at or under 1 / its impostor pairs. The impostor scores are sorted once per set."""
        if "ranked" not in self._memo:
            self._memo["ranked"] = np.sort(self.impostor.astype(np.float64))[::-1]
        ranked = self._memo["ranked"]
        return threshold_for_far(ranked, max(far, 1.0 / len(ranked)), presorted=True) if len(ranked) else None

    def n_identities(self) -> int:
        if "n_identities" not in self._memo:
            self._memo["n_identities"] = int(len(np.unique(np.concatenate([self.id_a, self.id_b]))))
        return self._memo["n_identities"]

    def people_pairs(self, mask: np.ndarray) -> int:
        """How many distinct (unordered) pairs of people the masked pairs come from."""
        a, b = self.id_a[mask], self.id_b[mask]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        return int(len(np.unique(lo * (int(hi.max(initial=0)) + 1) + hi))) if len(lo) else 0


def all_pairs(scorer: Callable[[np.ndarray, np.ndarray], np.ndarray], identities: Sequence[Any], kind: str = "",
              max_pairs: int | None = None, seed: int = 0) -> PairScores:
    """Every pair of distinct photos (i < j) scored by `scorer(i, j)` (index arrays -> p(same)), labelled by
    whether the identities match. Beyond `max_pairs` pairs, a seeded uniform sample of them."""
    _, ids = np.unique(np.asarray(identities), return_inverse=True)
    n = len(ids)
    total = n * (n - 1) // 2
    if max_pairs is not None and total > max_pairs:
        rng = np.random.default_rng(seed)
        k = rng.choice(total, size=max_pairs, replace=False)
        i, j = _triu_from_linear(np.sort(k), n)
    else:
        i, j = np.triu_indices(n, 1)
    s = np.concatenate([scorer(i[c:c + 1_000_000], j[c:c + 1_000_000]) for c in range(0, len(i), 1_000_000)]) \
        if len(i) else np.zeros(0)
    return PairScores.of(s, ids[i] == ids[j], ids[i], ids[j], kind)


def _triu_from_linear(k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-major linear indices of the strict upper triangle of an n x n matrix -> (i, j)."""
    start = np.arange(n) * (2 * n - np.arange(n) - 1) // 2  # first linear index of each row
    i = np.searchsorted(start, k, side="right") - 1
    j = k - start[i] + i + 1
    return i.astype(np.int64), j.astype(np.int64)


# ---- thresholds ------------------------------------------------------------------------------------------

def threshold_for_far(impostor: np.ndarray, far: float, presorted: bool = False) -> float | None:
    """The lowest threshold t (a decision is "same" when p >= t) at which the share of impostor scores
    accepted is at most `far`: just above the (floor(far * n) + 1)-th highest impostor score. None when
    that would be above 1 (an impostor scored exactly 1). presorted: `impostor` is already sorted, highest
    first."""
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must be in [0, 1], got {far!r}")
    s = np.asarray(impostor, dtype=np.float64) if presorted else np.sort(np.asarray(impostor, dtype=np.float64))[::-1]
    if len(s) == 0:
        return None
    k = int(math.floor(far * len(s) + 1e-9))
    if k >= len(s):
        return float(min(s[-1], 1.0))
    t = float(np.nextafter(s[k], np.inf))
    return t if t <= 1.0 else None


def eer_threshold(genuine: np.ndarray, impostor: np.ndarray, tie: str = "middle") -> float:
    """The threshold minimising max(FAR, FRR) over the observed scores; where several do (scores that
    separate perfectly), the middle of their range (tie="lowest": the lowest of them)."""
    observed = np.concatenate([genuine, impostor])
    cand = np.unique(np.concatenate([observed, np.nextafter(observed, np.inf)]))  # at and just above each score
    imp, gen = np.sort(impostor), np.sort(genuine)
    far = 1.0 - np.searchsorted(imp, cand, side="left") / max(len(imp), 1)
    frr = np.searchsorted(gen, cand, side="left") / max(len(gen), 1)
    worst = np.maximum(far, frr)
    best = np.flatnonzero(worst == worst.min())
    return float(cand[best[0]] if tie == "lowest" else (cand[best[0]] + cand[best[-1]]) / 2)


# ---- uncertainty -----------------------------------------------------------------------------------------

def wilson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a binomial rate k/n."""
    if n <= 0:
        return 0.0, 1.0
    z = _z(level)
    p = k / n
    mid, half = (p + z * z / (2 * n)), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    den = 1 + z * z / n
    return (0.0 if k == 0 else max(0.0, (mid - half) / den)), (1.0 if k == n else min(1.0, (mid + half) / den))


def _z(level: float) -> float:
    return {0.9: 1.6448536, 0.95: 1.959964, 0.99: 2.5758293}.get(round(level, 4)) or \
        float(np.sqrt(2) * _erfinv(level))


def _erfinv(y: float) -> float:
    lo, hi = 0.0, 6.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if math.erf(mid) < y else (lo, mid)
    return (lo + hi) / 2


def identity_weights(n_ids: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_ids) bootstrap counts: each replicate draws n_ids people with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_ids, np.full(n_ids, 1.0 / n_ids), size=n_boot).astype(np.float64)


def _impostor_groups(ps: PairScores) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """The impostor pairs' people on a compact index (a, b), the distinct pairs of people (ka, kb) with how
    many pairs each holds, and the number of people: computed once per PairScores."""
    if "groups" not in ps._memo:
        imp = ~ps.same
        a, b = _compact(ps.id_a[imp], ps.id_b[imp])
        width = int(b.max(initial=0)) + 1
        key, count = np.unique(a * width + b, return_counts=True)
        n_ids = int(max(a.max(initial=-1), b.max(initial=-1))) + 1
        ps._memo["groups"] = (a, b, key // width, key % width, count.astype(np.float64), n_ids)
    return ps._memo["groups"]


def _compact(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    _, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    return inv[:len(a)], inv[len(a):]


def bootstrap_far(ps: PairScores, threshold: float, weights: np.ndarray) -> np.ndarray:
    """FAR at `threshold` in each bootstrap replicate: a pair of people a, b counts w_a * w_b times
    (weights: (B, n_ids) counts over the compact identity index of `ps`'s impostor pairs)."""
    a, b, ka, kb, count, _ = _impostor_groups(ps)
    acc = ps.impostor >= threshold
    den = np.zeros(len(weights))  # the denominator sums w_a w_b over every impostor pair, by pairs of people
    for c in range(0, len(ka), 200_000):
        sl = slice(c, c + 200_000)
        den += (weights[:, ka[sl]] * weights[:, kb[sl]]) @ count[sl]
    num = (weights[:, a[acc]] * weights[:, b[acc]]).sum(axis=1) if acc.any() else np.zeros(len(weights))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def far_interval(ps: PairScores, threshold: float, n_boot: int = N_BOOT, seed: int = 0,
                 level: float = LEVEL) -> tuple[float, float]:
    """95% interval of the FAR at `threshold`: the percentile bootstrap over identities, widened to at
    least the Wilson interval of (false accepts, impostor pairs)."""
    imp = ps.impostor
    k, n = int((imp >= threshold).sum()), len(imp)
    lo, hi = wilson(k, n, level)
    if n and k and n_boot:
        far = bootstrap_far(ps, threshold, identity_weights(_impostor_groups(ps)[5], n_boot, seed))
        far = far[np.isfinite(far)]
        if len(far):
            q = (1 - level) / 2
            lo, hi = min(lo, float(np.quantile(far, q))), max(hi, float(np.quantile(far, 1 - q)))
    return lo, hi


# ---- operating points ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Evidence:
    """What one set of photos says about a threshold."""

    kind: str
    far: float
    far_interval: tuple[float, float]
    frr: float | None
    n_impostor: int
    n_impostor_people_pairs: int
    false_accepts: int
    false_accept_people_pairs: int
    n_genuine: int
    n_identities: int
    needs: float | None = None  # the threshold this kind alone needs for the point (None: cannot measure it)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["far_interval"] = list(self.far_interval)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Evidence:
        return cls(**{**d, "far_interval": tuple(d["far_interval"])})


def evidence(ps: PairScores, threshold: float, needs: float | None = None, seed: int = 0,
             n_boot: int = N_BOOT) -> Evidence:
    """What a set of pairs says about `threshold` (n_boot=0: the Wilson interval alone, for speed)."""
    imp_mask = ~ps.same
    acc = imp_mask & (ps.scores >= threshold)
    gen = ps.genuine
    return Evidence(ps.kind, float(acc.sum() / max(imp_mask.sum(), 1)),
                    far_interval(ps, threshold, n_boot=n_boot, seed=seed),
                    float((gen < threshold).mean()) if len(gen) else None, int(imp_mask.sum()),
                    len(_impostor_groups(ps)[2]), int(acc.sum()), ps.people_pairs(acc), int(len(gen)),
                    ps.n_identities(), needs)


@dataclass(frozen=True)
class OperatingPoint:
    """A decision threshold ("same" when p(same) >= threshold) and the evidence behind it.

    far: the false-accept rate the point stands for (its target; for the EER point, the rate measured
    where FAR and FRR meet); far_interval: its 95% interval (None: not known, an older model); frr: the
    false-reject rate measured with it; kinds: each set of photos it was measured on."""

    name: str
    threshold: float
    far: float
    frr: float
    source: str
    far_interval: tuple[float, float] | None = None
    target: float | None = None
    kinds: tuple[Evidence, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"threshold": self.threshold, "far": self.far, "frr": self.frr, "source": self.source}
        if self.far_interval is not None:
            d["far_interval"] = list(self.far_interval)
        if self.target is not None:
            d["target"] = self.target
        if self.kinds:
            d["evidence"] = [e.to_dict() for e in self.kinds]
        return d

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any], source: str = "") -> OperatingPoint:
        fi = d.get("far_interval")
        return cls(name, float(d["threshold"]), float(d.get("far", math.nan)), float(d.get("frr", math.nan)),
                   str(d.get("source", source)), tuple(float(x) for x in fi) if fi else None,  # type: ignore[arg-type]
                   float(d["target"]) if d.get("target") is not None else
                   float(name[4:]) if name.startswith("FAR=") else None,
                   tuple(Evidence.from_dict(e) for e in d.get("evidence", ())))


def _pooled_frr(sets: Sequence[PairScores], t: float) -> float:
    gen = np.concatenate([ps.genuine for ps in sets]) if sets else np.zeros(0)
    return float((gen < t).mean()) if len(gen) else math.nan


def _resolves(ps: PairScores, far: float, t: float) -> bool:
    """Whether a kind resolves FAR `far` at its own threshold `t` (see RULE)."""
    imp = ~ps.same
    if imp.sum() * far < RESOLVE_ACCEPTS - 1e-9:
        return False
    return ps.people_pairs(imp & (ps.scores >= t)) >= RESOLVE_PEOPLE_PAIRS


def far_point(sets: Sequence[PairScores], far: float, what: str, seed: int = 0,
              n_boot: int = N_BOOT) -> OperatingPoint | None:
    """The point at FAR `far` over one or more kinds of photos, or None when none resolves it: the highest
    threshold any kind that can measure the rate needs."""
    needs = {}
    for ps in sets:
        if len(ps.impostor):
            t = ps.need(far)
            if t is None:
                return None
            needs[ps.kind] = t
    if not needs:
        return None
    t = max(needs.values())
    if not any(_resolves(ps, far, needs[ps.kind]) for ps in sets if ps.kind in needs):
        return None
    ev = tuple(evidence(ps, t, needs.get(ps.kind), seed, n_boot) for ps in sets)
    name = far_name(far)
    worst = max(ev, key=lambda e: e.far / far)
    lo = max(e.far_interval[0] for e in ev)
    hi = max(e.far_interval[1] for e in ev)
    kinds = ", ".join(e.kind for e in ev)
    where = f"on each of {len(ev)} kinds of photos ({kinds}) of" if len(ev) > 1 else "on the pairs of"
    src = (f"FAR <= {far:g} {where} {what}: "
           f"{sum(e.n_impostor for e in ev):,} impostor pairs of {sum(e.n_identities for e in ev):,} people"
           f"{' (counted per kind)' if len(ev) > 1 else ''}; "
           f"measured FAR {worst.far:.2g} on {worst.kind} "
           f"(95% {worst.far_interval[0]:.2g}-{worst.far_interval[1]:.2g})")
    return OperatingPoint(name, t, far, _pooled_frr(sets, t), src, (lo, hi), far, ev)


def eer_point(sets: Sequence[PairScores], what: str, seed: int = 0, n_boot: int = N_BOOT) -> OperatingPoint | None:
    """The equal-error point: the highest of the kinds' EER thresholds (kinds with both genuine and
    impostor pairs; with several kinds, a kind that separates perfectly needs only the lowest of its
    error-free thresholds); far is the highest FAR measured there."""
    tie = "middle" if len(sets) == 1 else "lowest"
    needs = {ps.kind: eer_threshold(ps.genuine, ps.impostor, tie) for ps in sets
             if len(ps.genuine) and len(ps.impostor)}
    if not needs:
        return None
    t = max(needs.values())
    ev = tuple(evidence(ps, t, needs.get(ps.kind), seed, n_boot) for ps in sets)
    worst = max(ev, key=lambda e: e.far)
    how = (f"the highest of the equal-error thresholds of {len(ev)} kinds of photos of" if len(ev) > 1
           else "the equal-error threshold of the pairs of")
    src = (f"EER point ({how} {what}): "
           f"{sum(e.n_impostor for e in ev):,} impostor and {sum(e.n_genuine for e in ev):,} genuine pairs")
    return OperatingPoint(EER, t, worst.far, _pooled_frr(sets, t), src, worst.far_interval, None, ev)


def far_curve(sets: Sequence[PairScores], decades: float = 0.25, lowest: float = 1e-7) -> list[tuple[float, float]]:
    """(FAR, threshold) pairs on a log grid from 1e-1 down to the lowest FAR the kinds resolve
    (RESOLVE_ACCEPTS / impostor pairs of the largest kind): the threshold is the highest a kind needs."""
    out = []
    k = 1.0
    sets = [ps for ps in sets if len(ps.impostor)]
    while True:
        far = 10 ** (-k)
        if far < lowest * (1 - 1e-9):
            break
        needs = [ps.need(far) for ps in sets]
        if not any(len(ps.impostor) * far >= RESOLVE_ACCEPTS - 1e-9 for ps in sets) or any(t is None for t in needs):
            break
        out.append((far, float(max(t for t in needs if t is not None))))
        k += decades
    return out


@dataclass(frozen=True)
class Points:
    """The outcome of a calibration: its operating points, FAR curve and provenance."""

    points: dict[str, OperatingPoint]
    curve: tuple[tuple[float, float], ...]
    what: str
    rule: str = RULE
    unresolved: tuple[str, ...] = ()
    kinds: tuple[str, ...] = field(default=())


def calibrate_sets(sets: Sequence[PairScores], what: str, fars: Sequence[float] = STANDARD_FARS,
                   seed: int = 0, n_boot: int = N_BOOT) -> Points:
    """Operating points (EER and each resolvable FAR) and the FAR curve over one or more kinds of photos
    (n_boot=0: thresholds and Wilson intervals only, no bootstrap)."""
    sets = [ps if ps.kind else replace(ps, kind=f"set{i}") for i, ps in enumerate(sets)]
    points: dict[str, OperatingPoint] = {}
    eer = eer_point(sets, what, seed, n_boot)
    if eer is not None:
        points[EER] = eer
    unresolved = []
    for far in fars:
        p = far_point(sets, far, what, seed, n_boot)
        if p is None:
            unresolved.append(far_name(far))
        else:
            points[p.name] = p
    return Points(points, tuple(far_curve(sets)), what, RULE, tuple(unresolved), tuple(ps.kind for ps in sets))


# ---- open set --------------------------------------------------------------------------------------------

def far_for_fpir(fpir: float, n_people: int) -> float:
    """The pairwise FAR at which a stranger matches one of n_people independently drawn people with
    probability fpir: 1 - (1 - fpir)^(1/n)."""
    if not 0.0 < fpir < 1.0:
        raise ValueError(f"fpir must be in (0, 1), got {fpir!r}")
    return -math.expm1(math.log1p(-fpir) / max(int(n_people), 1))


def fpir_of_far(far: float, n_people: int) -> float:
    return -math.expm1(max(int(n_people), 1) * math.log1p(-min(far, 1 - 1e-16)))


def curve_threshold(curve: Sequence[tuple[float, float]], far: float) -> float | None:
    """The threshold for `far` on a FAR curve (log-linear interpolation between its points); None when
    `far` is below the lowest FAR the curve resolves."""
    if not curve:
        return None
    fars = np.array([c[0] for c in curve])
    thr = np.array([c[1] for c in curve])
    order = np.argsort(fars)
    fars, thr = fars[order], thr[order]
    if far < fars[0] * (1 - 1e-9):
        return None
    if far >= fars[-1]:
        return float(thr[-1])
    return float(np.interp(math.log10(far), np.log10(fars), thr))


def fpir_from_searches(best_other: np.ndarray, fpir: float) -> tuple[float | None, int]:
    """The threshold at which a share `fpir` of strangers is matched to someone, measured from searches
    (each enrolled person searched against everyone else: `best_other` holds the best score each got).
    Returns (threshold or None when not resolved, the number of searches)."""
    s = np.asarray(best_other, dtype=np.float64)
    if len(s) * fpir < RESOLVE_ACCEPTS - 1e-9:
        return None, len(s)
    return threshold_for_far(s, fpir), len(s)
