"""siamface.calibration: operating points against hand-computed cases and scikit-learn's ROC, the interval
against a brute-force bootstrap, FPIR against a simulated gallery."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from siamface import calibration as cal


def _random_pairs(seed: int, n_ids: int = 30, per_id: int = 4, shift: float = 1.5) -> tuple[cal.PairScores, np.ndarray]:
    """All pairs of n_ids * per_id photos with scores from a per-photo feature (clustered by people)."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(n_ids), per_id)
    centre = rng.normal(size=(n_ids, 4))
    x = centre[ids] + 0.5 * rng.normal(size=(len(ids), 4))

    def score(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(np.linalg.norm(x[i] - x[j], axis=1) * shift - 3))

    return cal.all_pairs(score, ids, kind="synthetic"), ids


def test_threshold_for_far_by_hand() -> None:
    imp = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    t = cal.threshold_for_far(imp, 0.2)  # two of ten may pass: just above 0.8
    assert 0.8 < t < 0.8 + 1e-12 and (imp >= t).sum() == 2
    assert (imp >= cal.threshold_for_far(imp, 0.0)).sum() == 0
    assert (imp >= cal.threshold_for_far(imp, 0.05)).sum() == 0  # floor(0.5) = 0 allowed
    ties = np.array([0.5, 0.5, 0.5, 0.2])
    assert (ties >= cal.threshold_for_far(ties, 0.5)).sum() == 0  # cannot split a tie: accept none of it
    assert cal.threshold_for_far(np.array([1.0, 0.3]), 0.0) is None  # an impostor at p = 1 cannot be refused


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("far", [0.3, 0.05, 0.01, 0.002])
def test_tar_at_the_far_threshold_equals_sklearn_roc(seed: int, far: float) -> None:
    ps, _ = _random_pairs(seed)
    t = cal.threshold_for_far(ps.impostor, far)
    fpr, tpr, _ = roc_curve(ps.same, ps.scores, drop_intermediate=False)
    assert (ps.impostor >= t).mean() <= far
    assert (ps.genuine >= t).mean() == pytest.approx(tpr[fpr <= far].max())


@pytest.mark.parametrize("seed", [0, 3])
def test_eer_threshold_minimises_the_worse_error_as_sklearn_sees_it(seed: int) -> None:
    ps, _ = _random_pairs(seed)
    t = cal.eer_threshold(ps.genuine, ps.impostor)
    fpr, tpr, _ = roc_curve(ps.same, ps.scores, drop_intermediate=False)
    worst = max((ps.impostor >= t).mean(), (ps.genuine < t).mean())
    assert worst == pytest.approx(np.min(np.maximum(fpr, 1 - tpr)))


def test_eer_threshold_of_separated_scores_is_the_middle_of_the_gap() -> None:
    assert cal.eer_threshold(np.array([0.8, 0.9]), np.array([0.1, 0.2])) == pytest.approx(0.5)
    assert cal.eer_threshold(np.array([0.8, 0.9]), np.array([0.1, 0.2]), tie="lowest") == pytest.approx(0.2)


def test_bootstrap_far_equals_a_brute_force_resampling_of_people() -> None:
    ps, ids = _random_pairs(5, n_ids=8, per_id=3)
    t = float(np.quantile(ps.impostor, 0.9))
    w = cal.identity_weights(8, 25, seed=7)
    fast = cal.bootstrap_far(ps, t, w)
    # brute force: build each replicate's photo list (every copy of every drawn person) and score all pairs
    lookup = {(int(a), int(b)): s for a, b, s in zip(*np.triu_indices(len(ids), 1), ps.scores)}
    for b, counts in enumerate(w.astype(int)):
        photos = [(copy, p) for person in range(8) for copy in range(counts[person])
                  for p in np.flatnonzero(ids == person)]
        acc = tot = 0
        for u in range(len(photos)):
            for v in range(u + 1, len(photos)):
                (_, pu), (_, pv) = photos[u], photos[v]
                if ids[pu] == ids[pv]:
                    continue  # the same person (or one of their copies): not an impostor pair
                s = lookup[(min(pu, pv), max(pu, pv))]
                tot += 1
                acc += s >= t
        assert fast[b] == pytest.approx(acc / tot)


def test_the_interval_covers_the_rate_and_widens_when_false_accepts_cluster() -> None:
    n = 40
    ids = np.arange(n)
    a, b = np.triu_indices(n, 1)
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 0.5, len(a))
    spread = cal.PairScores.of(np.where(rng.random(len(a)) < 0.02, 0.9, scores), np.zeros(len(a)), a, b)
    # the same number of false accepts, all from the pairs of three people
    clustered_mask = np.isin(a, [0, 1, 2]) & np.isin(b, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    k = int((spread.scores >= 0.8).sum())
    chosen = np.flatnonzero(clustered_mask)[:k]
    clustered = cal.PairScores.of(np.where(np.isin(np.arange(len(a)), chosen), 0.9, scores), np.zeros(len(a)), a, b)
    lo_s, hi_s = cal.far_interval(spread, 0.8)
    lo_c, hi_c = cal.far_interval(clustered, 0.8)
    rate = k / len(a)
    assert lo_s <= rate <= hi_s and lo_c <= rate <= hi_c
    assert hi_c - lo_c > 1.5 * (hi_s - lo_s)
    assert (lo_c, hi_c)[1] >= cal.wilson(k, len(a))[1]  # never narrower than the binomial interval
    assert ids.size == n


def test_zero_false_accepts_still_have_an_upper_bound() -> None:
    ps = cal.PairScores.of(np.full(1000, 0.1), np.zeros(1000))
    lo, hi = cal.far_interval(ps, 0.5)
    assert lo == 0.0 and hi == pytest.approx(cal.wilson(0, 1000)[1]) and 0.003 < hi < 0.0045


def test_points_are_stored_only_where_the_data_resolves_them() -> None:
    ps, _ = _random_pairs(1, n_ids=30, per_id=4)  # 6,960 impostor pairs of 435 pairs of people
    points = cal.calibrate_sets([ps], "synthetic")
    assert "FAR=1e-02" in points.points and "FAR=1e-03" not in points.points  # 7 < 10 false accepts
    assert "FAR=1e-03" in points.unresolved
    p = points.points["FAR=1e-02"]
    assert p.far == 0.01 and p.target == 0.01 and p.kinds[0].far <= 0.01
    assert p.far_interval[0] <= p.kinds[0].far <= p.far_interval[1]
    ev = p.kinds[0]
    assert ev.n_impostor == int((~ps.same).sum()) and ev.n_identities == 30
    assert ev.false_accepts == int((ps.impostor >= p.threshold).sum())
    # false accepts from fewer than 3 pairs of people: not resolved, however many pairs there are
    a, b = np.triu_indices(50, 1)
    s = np.where((a == 0) & (b < 3), 0.9, 0.1)
    lonely = cal.PairScores.of(s, np.zeros(len(a)), a, b, "lonely")
    assert cal.far_point([lonely], 0.001, "x") is None


def test_several_kinds_take_the_strictest_threshold_and_keep_each_kind() -> None:
    easy, _ = _random_pairs(2, n_ids=60, per_id=3, shift=2.0)
    hard, _ = _random_pairs(3, n_ids=60, per_id=3, shift=1.0)
    easy, hard = cal.PairScores(*[getattr(easy, f) for f in ("scores", "same", "id_a", "id_b")], "easy"), \
        cal.PairScores(*[getattr(hard, f) for f in ("scores", "same", "id_a", "id_b")], "hard")
    p = cal.far_point([easy, hard], 0.01, "two kinds")
    assert p.threshold == max(cal.threshold_for_far(easy.impostor, 0.01), cal.threshold_for_far(hard.impostor, 0.01))
    assert {e.kind for e in p.kinds} == {"easy", "hard"}
    assert all(e.far <= 0.01 for e in p.kinds)
    curve = cal.far_curve([easy, hard])
    thr = [t for _, t in curve]
    assert curve[0][0] == pytest.approx(0.1) and all(x <= y for x, y in zip(thr, thr[1:]))  # stricter as FAR falls


def test_fpir_from_a_far_curve_matches_a_simulated_gallery() -> None:
    rng = np.random.default_rng(0)
    imp = rng.beta(2, 5, 2_000_000)  # pairwise impostor scores
    ps = cal.PairScores.of(imp, np.zeros(len(imp)))
    curve = cal.far_curve([ps], decades=0.1)
    n_people, fpir = 200, 0.05
    t = cal.curve_threshold(curve, cal.far_for_fpir(fpir, n_people))
    strangers = rng.beta(2, 5, (20_000, n_people)).max(axis=1)  # each stranger's best score in the gallery
    assert (strangers >= t).mean() == pytest.approx(fpir, rel=0.15)
    assert cal.fpir_of_far(cal.far_for_fpir(fpir, n_people), n_people) == pytest.approx(fpir)
    t2, n = cal.fpir_from_searches(strangers, fpir)
    assert n == 20_000 and (strangers >= t2).mean() <= fpir
    assert cal.fpir_from_searches(strangers[:100], 0.01) == (None, 100)  # 1 expected: not resolved


def test_curve_lookup_interpolates_and_refuses_beyond_resolution() -> None:
    curve = [(1e-1, 0.3), (1e-2, 0.5), (1e-3, 0.7)]
    assert cal.curve_threshold(curve, 10 ** -1.5) == pytest.approx(0.4)
    assert cal.curve_threshold(curve, 1e-4) is None
    assert cal.curve_threshold(curve, 0.5) == pytest.approx(0.3)


def test_all_pairs_samples_without_repeats_beyond_the_cap() -> None:
    ids = np.repeat(np.arange(50), 2)

    def score(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return (i * 1000 + j).astype(float)

    ps = cal.all_pairs(score, ids, max_pairs=500, seed=1)
    keys = ps.scores.astype(int)
    i, j = keys // 1000, keys % 1000
    assert len(set(keys.tolist())) == 500 and np.all(i < j) and np.all(j < 100)
    assert np.array_equal(ps.same, ids[i] == ids[j])
    full = cal.all_pairs(score, ids)
    assert len(full.scores) == 100 * 99 // 2
