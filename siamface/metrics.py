"""Verification and one-shot metrics: pure functions over numpy arrays (no torch, no I/O).

Convention: ``labels`` is a 1-D array of 0/1 (1 = same identity) and ``scores`` a 1-D float array where
higher means "more likely the same"; a pair is predicted "same" when ``score >= threshold``.
Bad input raises ``ValueError`` naming what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "KFoldResult",
    "accuracy_at",
    "best_threshold",
    "eer",
    "fold_ids",
    "is_collapsed",
    "kfold_accuracy",
    "oneshot_accuracy",
    "roc_auc",
    "roc_curve",
    "tar_at_far",
    "tar_at_fars",
    "verification_summary",
]


def _labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of 0/1, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must be non-empty")
    if arr.dtype != bool and not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be 0/1 numbers or booleans, got dtype {arr.dtype}")
    if not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must contain only 0 and 1, got values {np.unique(arr)[:5].tolist()}")
    return arr.astype(np.int64)


def _scores(scores: np.ndarray, name: str = "scores", ndim: int = 1) -> np.ndarray:
    arr = np.asarray(scores)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array of floats, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must be non-empty")
    if arr.dtype.kind not in "biuf":  # bool, signed/unsigned int, float
        raise ValueError(f"{name} must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return arr


def _pairs(labels: np.ndarray, scores: np.ndarray, both: bool) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (labels, scores) pair; ``both`` requires at least one same and one different pair."""
    y, s = _labels(labels), _scores(scores)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores must have the same length, got {y.size} and {s.size}")
    if both and (y.min() == y.max()):
        raise ValueError("labels must contain both classes (at least one 0 and one 1)")
    return y, s


def _outside(lo: float, hi: float) -> tuple[float, float]:
    """Finite thresholds strictly below ``lo`` and strictly above ``hi`` (padding by max(1, hi - lo))."""
    pad = max(1.0, hi - lo)
    below, above = lo - pad, hi + pad
    if not (np.isfinite(below) and below < lo):
        below = float(np.nextafter(lo, -np.inf))
    if not (np.isfinite(above) and above > hi):
        above = float(np.nextafter(hi, np.inf))
    return float(below), float(above)


def accuracy_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """Fraction of pairs classified correctly when "same" means ``score >= threshold``."""
    y, s = _pairs(labels, scores, both=False)
    if np.isnan(threshold):
        raise ValueError("threshold must be a number, got NaN")
    return float(np.mean((s >= threshold) == (y == 1)))


def best_threshold(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Return ``(threshold, accuracy)`` maximising accuracy.

    Candidates are one value below the minimum score, the midpoints between consecutive distinct sorted
    scores, and one value above the maximum; ties go to the lowest candidate. O(n log n), no loop.
    """
    y, s = _pairs(labels, scores, both=False)
    distinct, inverse = np.unique(s, return_inverse=True)
    pos = np.bincount(inverse, weights=y, minlength=distinct.size)
    neg = np.bincount(inverse, minlength=distinct.size) - pos
    # Candidate j lies just below distinct[j] (j == m: above all): negatives below it are correct,
    # positives at or above it are correct.
    neg_below = np.concatenate(([0.0], np.cumsum(neg)))
    pos_below = np.concatenate(([0.0], np.cumsum(pos)))
    correct = neg_below + (pos_below[-1] - pos_below)
    j = int(np.argmax(correct))
    below, above = _outside(float(distinct[0]), float(distinct[-1]))
    if j == 0:
        thr = below
    elif j == distinct.size:
        thr = above
    else:
        lo, hi = float(distinct[j - 1]), float(distinct[j])
        mid = lo + (hi - lo) / 2.0
        thr = mid if lo < mid <= hi else hi  # guard float rounding between adjacent doubles
    return float(thr), float(correct[j] / y.size)


@dataclass(frozen=True)
class KFoldResult:
    """Cross-validated accuracy: mean, its standard error, and per-fold accuracies and thresholds."""

    mean: float
    std_error: float
    accuracies: tuple[float, ...]
    thresholds: tuple[float, ...]


def fold_ids(n: int, k: int, seed: int | None = None) -> np.ndarray:
    """Assign ``n`` items to ``k`` near-equal folds: contiguous blocks, or a seeded permutation of them."""
    if not all(np.issubdtype(np.asarray(v).dtype, np.integer) for v in (n, k)):
        raise ValueError(f"n and k must be integers, got {type(n).__name__} and {type(k).__name__}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n so that no fold is empty, got n={n}, k={k}")
    ids = (np.arange(n, dtype=np.int64) * k) // n
    if seed is not None:
        ids = np.random.default_rng(seed).permutation(ids)
    return ids


def kfold_accuracy(labels: np.ndarray, scores: np.ndarray, folds: np.ndarray) -> KFoldResult:
    """LFW View 2 protocol: per fold, pick the threshold on the other folds and score this fold.

    ``std_error`` is the sample standard deviation (ddof=1) of the fold accuracies over sqrt(k).
    """
    y, s = _pairs(labels, scores, both=False)
    f = np.asarray(folds)
    if f.shape != y.shape:
        raise ValueError(f"folds must be a 1-D array with one fold id per pair, got shape {f.shape}")
    if not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"folds must be integer fold ids, got dtype {f.dtype}")
    ids = np.unique(f)
    if ids.size < 2:
        raise ValueError(f"folds must contain at least 2 distinct fold ids, got {ids.size}")
    accs, thrs = [], []
    for fid in ids:
        test = f == fid
        thr, _ = best_threshold(y[~test], s[~test])
        thrs.append(thr)
        accs.append(accuracy_at(y[test], s[test], thr))
    arr = np.asarray(accs)
    std_error = float(np.std(arr, ddof=1) / np.sqrt(arr.size))
    return KFoldResult(float(arr.mean()), std_error, tuple(accs), tuple(thrs))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC as ``(fpr, tpr, thresholds)``, one point per distinct score plus a leading ``+inf`` threshold.

    Matches ``sklearn.metrics.roc_curve(labels, scores, drop_intermediate=False)``.
    """
    y, s = _pairs(labels, scores, both=True)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[last].astype(np.float64)
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps] / tps[-1]
    fpr = np.r_[0.0, fps] / fps[-1]
    return fpr, tpr, np.r_[np.inf, s_sorted[last]]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC (trapezoidal, so tied same/different scores count half)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def _finite_thresholds(thresholds: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC thresholds with the leading +inf replaced by the finite above-max value of best_threshold."""
    out = thresholds.copy()
    out[0] = _outside(float(np.min(scores)), float(np.max(scores)))[1]
    return out


def eer(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Equal error rate and its threshold.

    Walking the ROC by decreasing threshold, FPR rises and FNR = 1 - TPR falls. The EER is where the
    straight segment between the last point with FNR > FPR and the next one crosses FPR == FNR; the
    threshold is interpolated linearly between those two points' thresholds with the same weight
    (the ROC's leading +inf threshold is replaced by a finite value above the maximum score).
    """
    _, s = _pairs(labels, scores, both=True)
    fpr, tpr, thr = roc_curve(labels, scores)
    thr = _finite_thresholds(thr, s)
    d = (1.0 - tpr) - fpr  # > 0 at the first point (FNR 1, FPR 0), <= 0 at the last (FNR 0, FPR 1)
    i = int(np.argmax(d <= 0))
    alpha = d[i - 1] / (d[i - 1] - d[i])
    rate = fpr[i - 1] + alpha * (fpr[i] - fpr[i - 1])
    return float(rate), float(thr[i - 1] + alpha * (thr[i] - thr[i - 1]))


def eer_operating_point(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float, float]:
    """The real threshold nearest the EER, for deciding: (threshold, FAR, FRR) of the ROC point, among
    those that accept at least one pair, with the smallest max(FAR, FRR). Unlike `eer`'s interpolated
    threshold it is always an observed score, so ties at the top cannot push it above every score."""
    _pairs(labels, scores, both=True)
    fpr, tpr, thr = roc_curve(labels, scores)
    fpr, fnr, thr = fpr[1:], 1.0 - tpr[1:], thr[1:]  # drop the leading "accept nothing" point
    k = int(np.argmin(np.maximum(fpr, fnr)))
    return float(thr[k]), float(fpr[k]), float(fnr[k])


def tar_at_far(labels: np.ndarray, scores: np.ndarray, far: float) -> tuple[float, float]:
    """Highest true-accept rate among ROC points with false-accept rate <= ``far``, and its threshold.

    Among points with that TAR the highest threshold (lowest FAR) is returned; when nothing can be
    accepted the threshold is a finite value above the maximum score.
    """
    _, s = _pairs(labels, scores, both=True)
    if not (np.isfinite(far) and 0.0 <= far <= 1.0):
        raise ValueError(f"far must be a number in [0, 1], got {far!r}")
    fpr, tpr, thr = roc_curve(labels, scores)
    thr = _finite_thresholds(thr, s)
    ok = fpr <= far  # fpr[0] == 0, so at least one point qualifies
    best = tpr[ok].max()
    i = int(np.flatnonzero(ok & (tpr == best))[0])
    return float(tpr[i]), float(thr[i])


def _far_key(far: float) -> str:
    for digits in range(7):
        text = f"{far:.{digits}e}"
        if float(text) == far:
            return f"TAR@FAR={text}"
    return f"TAR@FAR={far!r}"


def tar_at_fars(
    labels: np.ndarray, scores: np.ndarray, fars: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
) -> dict[str, float]:
    """TAR at several FARs, keyed like ``"TAR@FAR=1e-03"``."""
    out: dict[str, float] = {}
    for far in fars:
        key = _far_key(float(far))
        if key in out:
            raise ValueError(f"fars must be distinct, got {far!r} twice")
        out[key] = tar_at_far(labels, scores, far)[0]
    return out


def oneshot_accuracy(score_matrix: np.ndarray, answers: np.ndarray) -> float:
    """N-way one-shot accuracy; ``score_matrix[t, j]`` scores query t against candidate j.

    A trial whose true candidate is among k tied maxima gets credit 1/k, so a constant model scores
    exactly 1/N (never 100%).
    """
    m = _scores(score_matrix, "score_matrix", ndim=2)
    a = np.asarray(answers)
    if a.ndim != 1 or a.size != m.shape[0]:
        raise ValueError(f"answers must be a 1-D array of length {m.shape[0]} (one per trial), got {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"answers must be integer candidate indices, got dtype {a.dtype}")
    if a.min() < 0 or a.max() >= m.shape[1]:
        raise ValueError(f"answers must be indices in [0, {m.shape[1] - 1}], got [{a.min()}, {a.max()}]")
    tied = m == m.max(axis=1, keepdims=True)
    credit = tied[np.arange(a.size), a] / tied.sum(axis=1)
    return float(credit.mean())


def verification_summary(
    labels: np.ndarray, scores: np.ndarray, folds: np.ndarray | None = None
) -> dict[str, float | int]:
    """All verification metrics as a JSON-friendly dict of Python floats and ints."""
    y, s = _pairs(labels, scores, both=True)
    rate, rate_thr = eer(y, s)
    thr, acc = best_threshold(y, s)
    out: dict[str, float | int] = {
        "auc": roc_auc(y, s),
        "eer": rate,
        "eer_threshold": rate_thr,
        "best_threshold": thr,
        "best_accuracy": acc,
    }
    out.update(tar_at_fars(y, s))
    if folds is not None:
        res = kfold_accuracy(y, s, folds)
        out["kfold_mean"], out["kfold_std_error"] = res.mean, res.std_error
    out.update(n_pairs=int(y.size), n_same=int(y.sum()), n_diff=int(y.size - y.sum()))
    return out


def is_collapsed(scores: np.ndarray, labels: np.ndarray | None = None, tol: float = 1e-4) -> bool:
    """True when scores are (near) constant (std < ``tol``) or, given labels, at chance.

    "At chance" means the balanced accuracy, (TPR + TNR) / 2, at its best threshold (over every
    threshold, i.e. every ROC point) is <= 0.5 + 1e-9.
    """
    s = _scores(scores)
    if float(np.std(s)) < tol:
        return True
    if labels is None:
        return False
    fpr, tpr, _ = roc_curve(labels, s)
    return bool(np.max((tpr + 1.0 - fpr) / 2.0) <= 0.5 + 1e-9)
