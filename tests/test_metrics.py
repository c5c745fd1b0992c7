"""Tests for siamface.metrics against scikit-learn, brute-force loops and hand-computed cases."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable

import numpy as np
import pytest
from sklearn import metrics as skm

from siamface import metrics as M

SEEDS = [0, 1, 2]
SIZES = [2, 9, 60, 150]
FARS = [0.0, 1e-3, 0.05, 0.1, 0.5, 1.0]


def make_data(seed: int, n: int, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Seeded labels with both classes and informative-but-noisy scores; ``ties`` rounds them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    y[0], y[-1] = 0, 1
    s = rng.normal(size=n) + 1.2 * y
    if ties:
        s = np.round(s, 0)
    return y, s


def candidates(s: np.ndarray) -> list[float]:
    """Independent brute-force candidate list: below min, midpoints, above max (pad max(1, span))."""
    u = sorted(set(s.tolist()))
    pad = max(1.0, u[-1] - u[0])
    return [u[0] - pad] + [(a + b) / 2 for a, b in itertools.pairwise(u)] + [u[-1] + pad]


def data_cases() -> list[tuple[int, int, bool]]:
    return [(seed, n, ties) for seed in SEEDS for n in SIZES for ties in (False, True)]


# ---------------------------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("seed,n,ties", data_cases())
def test_accuracy_at_matches_sklearn(seed: int, n: int, ties: bool) -> None:
    y, s = make_data(seed, n, ties)
    for thr in (float(np.median(s)), float(s.min()), float(s.max()) + 1e-9, -np.inf):
        assert M.accuracy_at(y, s, thr) == pytest.approx(skm.accuracy_score(y, s >= thr))


def test_accuracy_at_threshold_is_inclusive() -> None:
    assert M.accuracy_at([1, 0], [0.5, 0.4], 0.5) == 1.0
    assert M.accuracy_at([1, 0], [0.5, 0.4], 0.5000001) == 0.5


@pytest.mark.parametrize("seed,n,ties", data_cases())
def test_best_threshold_matches_brute_force(seed: int, n: int, ties: bool) -> None:
    y, s = make_data(seed, n, ties)
    brute = [(skm.accuracy_score(y, s >= t), t) for t in candidates(s)]
    best_acc = max(a for a, _ in brute)
    first_thr = next(t for a, t in brute if a == best_acc)
    thr, acc = M.best_threshold(y, s)
    assert acc == pytest.approx(best_acc)
    assert thr == pytest.approx(first_thr)
    assert M.accuracy_at(y, s, thr) == pytest.approx(acc)


def test_best_threshold_hand_cases() -> None:
    assert M.best_threshold([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == (pytest.approx(0.5), 1.0)
    thr, acc = M.best_threshold([1, 1, 0], [0.3, 0.3, 0.3])  # constant: accept all beats reject all
    assert acc == pytest.approx(2 / 3) and thr < 0.3
    thr, acc = M.best_threshold([0, 0, 1], [0.3, 0.3, 0.3])
    assert acc == pytest.approx(2 / 3) and thr > 0.3


def test_best_threshold_is_a_midpoint_not_a_score() -> None:
    thr, _ = M.best_threshold([0, 1, 0, 1], [0.0, 10.0, 2.0, 6.0])
    assert thr == 4.0


# ---------------------------------------------------------------------------------------------- k-fold


def test_kfold_hand_example_2x2() -> None:
    # fold 0 separable (threshold 0.5 learnt from it), fold 1 reversed (learns "accept all" at 0.4-1).
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.1, 0.4, 0.6])
    res = M.kfold_accuracy(y, s, np.array([0, 0, 1, 1]))
    assert res.accuracies == pytest.approx((0.5, 0.0))
    assert res.thresholds == pytest.approx((-0.6, 0.5))
    assert res.mean == pytest.approx(0.25)
    assert res.std_error == pytest.approx(0.25)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.mean = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("seed,k", [(0, 2), (1, 5), (2, 10)])
def test_kfold_matches_hand_loop_with_sklearn(seed: int, k: int) -> None:
    y, s = make_data(seed, 60, ties=k == 10)
    folds = M.fold_ids(y.size, k, seed=seed)
    accs = []
    for f in range(k):
        tr, te = folds != f, folds == f
        ts = candidates(s[tr])
        scores = [skm.accuracy_score(y[tr], s[tr] >= t) for t in ts]
        thr = ts[int(np.argmax(scores))]
        accs.append(skm.accuracy_score(y[te], s[te] >= thr))
    res = M.kfold_accuracy(y, s, folds)
    assert res.accuracies == pytest.approx(tuple(accs))
    assert res.mean == pytest.approx(np.mean(accs))
    assert res.std_error == pytest.approx(np.std(accs, ddof=1) / np.sqrt(k))
    assert len(res.thresholds) == k


def test_fold_ids_contiguous_and_seeded() -> None:
    assert M.fold_ids(7, 3).tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert np.bincount(M.fold_ids(10, 10)).tolist() == [1] * 10
    a, b = M.fold_ids(100, 10, seed=3), M.fold_ids(100, 10, seed=3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, M.fold_ids(100, 10))
    assert np.bincount(a).tolist() == [10] * 10
    for bad in [(5, 0), (3, 4), (5.0, 2)]:
        with pytest.raises(ValueError, match="k"):
            M.fold_ids(*bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- ROC / AUC


@pytest.mark.parametrize("seed,n,ties", data_cases())
def test_roc_curve_and_auc_match_sklearn(seed: int, n: int, ties: bool) -> None:
    y, s = make_data(seed, n, ties)
    fpr, tpr, thr = M.roc_curve(y, s)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_array_equal(thr, sk_thr)
    assert M.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s))


@pytest.mark.parametrize("seed", SEEDS)
def test_roc_auc_equals_pairwise_probability_with_half_ties(seed: int) -> None:
    y, s = make_data(seed, 60, ties=True)
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    expected = (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / diff.size
    assert M.roc_auc(y, s) == pytest.approx(expected)


def test_auc_hand_cases() -> None:
    y = [0, 0, 1, 1]
    assert M.roc_auc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert M.roc_auc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert M.roc_auc(y, [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert M.roc_auc([True, False], [0.7, 0.3]) == 1.0


# ---------------------------------------------------------------------------------------------- EER


def brute_eer(y: np.ndarray, s: np.ndarray) -> float:
    """Intersect each ROC segment (from sklearn) with the line FPR == FNR."""
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    fnr = 1 - tpr
    for i in range(1, fpr.size):
        x0, y0, x1, y1 = fpr[i - 1], fnr[i - 1], fpr[i], fnr[i]
        if y0 > x0 and y1 <= x1:
            # point (x0 + t(x1-x0), y0 + t(y1-y0)) with x == y
            t = (y0 - x0) / ((x1 - x0) - (y1 - y0))
            return x0 + t * (x1 - x0)
    raise AssertionError("ROC never crosses FPR == FNR")


@pytest.mark.parametrize("seed,n,ties", data_cases())
def test_eer_matches_brute_force_and_bounds(seed: int, n: int, ties: bool) -> None:
    y, s = make_data(seed, n, ties)
    rate, thr = M.eer(y, s)
    assert rate == pytest.approx(brute_eer(y, s))
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    fnr = 1 - tpr
    assert np.max(np.minimum(fpr, fnr)) - 1e-12 <= rate <= np.min(np.maximum(fpr, fnr)) + 1e-12
    assert np.isfinite(thr)
    assert s.min() - max(1.0, np.ptp(s)) <= thr <= s.max() + max(1.0, np.ptp(s))


def test_eer_hand_cases() -> None:
    assert M.eer([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == (0.0, pytest.approx(0.8))
    assert M.eer([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1])[0] == 1.0
    rate, thr = M.eer([0, 1], [0.5, 0.5])  # constant: halfway between accept-none and accept-all
    assert rate == 0.5 and thr == pytest.approx(1.0)
    # ROC (0,0) (0,.5) (.5,.5) (.5,1) (1,1): FNR-FPR goes .5 -> 0 at the 3rd point, EER 0.5 exactly.
    assert M.eer([1, 0, 1, 0], [4.0, 3.0, 2.0, 1.0]) == (0.5, 3.0)


# ---------------------------------------------------------------------------------------------- TAR@FAR


@pytest.mark.parametrize("seed,n,ties", data_cases())
def test_tar_at_far_matches_sklearn_roc(seed: int, n: int, ties: bool) -> None:
    y, s = make_data(seed, n, ties)
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    for far in FARS:
        tar, thr = M.tar_at_far(y, s, far)
        best = tpr[fpr <= far].max()
        assert tar == pytest.approx(best)
        pred = s >= thr  # the threshold achieves that TAR at the lowest FAR that does so
        assert np.mean(pred[y == 1]) == pytest.approx(tar)
        assert np.mean(pred[y == 0]) == pytest.approx(fpr[(fpr <= far) & (tpr == best)].min())


def test_tar_at_far_hand_and_keys() -> None:
    y, s = [0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.95, 0.9, 0.8]
    assert M.tar_at_far(y, s, 0.0) == (0.0, pytest.approx(1.95))
    assert M.tar_at_far(y, s, 0.25) == (1.0, pytest.approx(0.8))
    assert M.tar_at_far(y, s, 0.5) == (1.0, pytest.approx(0.8))  # same TAR at 0.3: keep the stricter one
    out = M.tar_at_fars(y, s)
    assert out == {"TAR@FAR=1e-03": 0.0, "TAR@FAR=1e-02": 0.0, "TAR@FAR=1e-01": 0.0}
    assert list(M.tar_at_fars(y, s, (0.25, 0.015))) == ["TAR@FAR=2.5e-01", "TAR@FAR=1.5e-02"]
    with pytest.raises(ValueError, match="distinct"):
        M.tar_at_fars(y, s, (0.1, 0.1))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="far"):
            M.tar_at_far(y, s, bad)


# ---------------------------------------------------------------------------------------------- one-shot


def test_oneshot_perfect_wrong_constant_and_ties() -> None:
    answers = np.array([0, 1, 2, 3])
    assert M.oneshot_accuracy(np.eye(4) + 0.1, answers) == 1.0
    assert M.oneshot_accuracy(1.0 - np.eye(4), answers) == 0.0
    for n in (2, 5, 20):  # KOCH2015 pitfall: a collapsed model is at chance, not 100%
        assert M.oneshot_accuracy(np.full((3, n), 0.7), np.array([0, n - 1, 1])) == pytest.approx(1 / n)
    ties = np.array([[0.9, 0.9, 0.1], [0.5, 0.5, 0.5], [0.2, 0.9, 0.9]])
    assert M.oneshot_accuracy(ties, np.array([1, 2, 0])) == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)


@pytest.mark.parametrize("seed", SEEDS)
def test_oneshot_matches_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = np.round(rng.normal(size=(40, 6)), 0)
    a = rng.integers(0, 6, size=40)
    credit = [(row[ans] == row.max()) / np.sum(row == row.max()) for row, ans in zip(m, a)]
    assert M.oneshot_accuracy(m, a) == pytest.approx(np.mean(credit))


@pytest.mark.parametrize(
    "matrix,answers,match",
    [
        (np.ones((2, 3)), np.array([0, 3]), "answers"),
        (np.ones((2, 3)), np.array([-1, 0]), "answers"),
        (np.ones((2, 3)), np.array([0]), "answers"),
        (np.ones((2, 3)), np.array([0.0, 1.0]), "integer"),
        (np.ones(3), np.array([0]), "2-D"),
        (np.array([[1.0, np.nan]]), np.array([0]), "finite"),
    ],
)
def test_oneshot_rejects_bad_input(matrix: np.ndarray, answers: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        M.oneshot_accuracy(matrix, answers)


# ---------------------------------------------------------------------------------------------- summary / collapse


def test_verification_summary_is_consistent_and_json_friendly() -> None:
    y, s = make_data(5, 120, ties=True)
    folds = M.fold_ids(y.size, 10, seed=0)
    out = M.verification_summary(y, s, folds)
    json.loads(json.dumps(out, allow_nan=False))
    assert all(type(v) in (float, int) for v in out.values())
    assert out["auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert (out["eer"], out["eer_threshold"]) == M.eer(y, s)
    assert (out["best_threshold"], out["best_accuracy"]) == M.best_threshold(y, s)
    assert out["TAR@FAR=1e-01"] == M.tar_at_far(y, s, 0.1)[0]
    assert out["kfold_mean"] == M.kfold_accuracy(y, s, folds).mean
    assert (out["n_pairs"], out["n_same"], out["n_diff"]) == (120, int(y.sum()), int(120 - y.sum()))
    assert "kfold_mean" not in M.verification_summary(y, s)


def brute_best_balanced(y: np.ndarray, s: np.ndarray) -> float:
    ts = [np.inf] + sorted(set(s.tolist()))
    return max(skm.balanced_accuracy_score(y, s >= t) for t in ts)


def test_is_collapsed_constant_and_chance() -> None:
    y = np.array([0, 1, 0, 1, 0, 1])
    assert M.is_collapsed(np.full(6, 0.42))
    assert M.is_collapsed(0.42 + 1e-6 * np.arange(6))
    assert not M.is_collapsed(np.arange(6.0))
    assert M.is_collapsed(np.array([6.0, 1, 5, 2, 4, 3]), y)  # anti-correlated: never above chance
    assert not M.is_collapsed(np.array([1.0, 6, 2, 5, 3, 4]), y)
    assert M.is_collapsed(np.arange(6.0), tol=10.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_is_collapsed_agrees_with_sklearn_balanced_accuracy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=30)
    y[:2] = [0, 1]
    for s in (y + rng.normal(size=30), -y + 0.1 * rng.normal(size=30), np.round(rng.normal(size=30), 0)):
        expected = brute_best_balanced(y, s) <= 0.5 + 1e-9
        assert M.is_collapsed(s, y) == expected
    assert not M.is_collapsed(y + 0.1 * rng.normal(size=30), y)


# ---------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "labels,scores,match",
    [
        ([0, 1, 1], [0.1, 0.2], "same length"),
        ([], [], "non-empty"),
        ([0, 2], [0.1, 0.2], "0 and 1"),
        ([0, 0.5], [0.1, 0.2], "0 and 1"),
        (["a", "b"], [0.1, 0.2], "0/1"),
        ([[0, 1]], [[0.1, 0.2]], "1-D"),
        ([0, 1], [0.1, np.nan], "finite"),
        ([0, 1], [0.1, np.inf], "finite"),
        ([0, 1], ["x", "y"], "real"),
    ],
)
@pytest.mark.parametrize("fn", [M.accuracy_at, M.best_threshold, M.roc_curve, M.eer, M.verification_summary])
def test_bad_pairs_raise(labels: list, scores: list, match: str, fn: Callable[..., object]) -> None:
    args = (labels, scores, 0.5) if fn is M.accuracy_at else (labels, scores)
    with pytest.raises(ValueError, match=match):
        fn(*args)


@pytest.mark.parametrize("fn", [M.roc_curve, M.roc_auc, M.eer, M.verification_summary, M.is_collapsed])
def test_single_class_raises_where_both_needed(fn: Callable[..., object]) -> None:
    args = ([0.1, 0.5, 0.9], [1, 1, 1]) if fn is M.is_collapsed else ([1, 1, 1], [0.1, 0.5, 0.9])
    with pytest.raises(ValueError, match="both classes"):
        fn(*args)


def test_single_class_raises_for_tar_at_far() -> None:
    with pytest.raises(ValueError, match="both classes"):
        M.tar_at_far([0, 0], [0.1, 0.2], 0.1)


def test_single_class_allowed_for_accuracy() -> None:
    assert M.accuracy_at([1, 1], [0.2, 0.8], 0.5) == 0.5
    assert M.best_threshold([1, 1], [0.2, 0.8])[1] == 1.0


def test_kfold_rejects_bad_folds() -> None:
    y, s = [0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8]
    with pytest.raises(ValueError, match="at least 2"):
        M.kfold_accuracy(y, s, np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="one fold id per pair"):
        M.kfold_accuracy(y, s, np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="integer"):
        M.kfold_accuracy(y, s, np.array([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="NaN"):
        M.accuracy_at(y, s, float("nan"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eer_operating_point_is_an_observed_minimax_threshold(seed: int) -> None:
    from siamface.metrics import eer_operating_point

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    labels[:2] = [0, 1]
    scores = np.round(rng.normal(labels * 1.2, 1.0), 1)  # ties
    t, far, frr = eer_operating_point(labels, scores)
    assert t in set(scores.tolist())
    pred = scores >= t
    assert far == pytest.approx(pred[labels == 0].mean())
    assert frr == pytest.approx((~pred[labels == 1]).mean())
    brute = min(max((scores[labels == 0] >= c).mean(), (scores[labels == 1] < c).mean()) for c in set(scores.tolist()))
    assert max(far, frr) == pytest.approx(brute)


def test_eer_operating_point_stays_inside_the_scores_when_the_top_is_tied() -> None:
    from siamface.metrics import eer_operating_point

    y = np.array([1] * 10 + [0] * 10)
    s = np.array([1.0] * 7 + [0.6] * 3 + [1.0] * 5 + [0.2] * 5)
    t, far, frr = eer_operating_point(y, s)
    assert t <= 1.0 and (s >= t).any()
