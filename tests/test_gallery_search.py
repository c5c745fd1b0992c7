"""The gallery's exact search against the brute-force head over every stored embedding, on real embeddings
(AT&T faces through a shipped tower) with the shipped kinds of head: tied weights (an L1 search of the stored
matrix), untied non-positive weights (an L1 search of a scaled copy) and free signs (the head in chunks)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from siamface.embed import probability
from siamface.gallery_search import BACKENDS, SearchIndex, search_budget
from siamface.models.siamese import SiameseNet
from siamface.verify import Verifier

HEADS = ("tied", "nonpositive", "free")


@pytest.fixture(scope="module")
def real(data_root: Path) -> tuple[SiameseNet, np.ndarray, np.ndarray]:
    """400 AT&T photos of 40 people embedded by the shipped lfw-view1 tower: (model, embeddings, person)."""
    v = Verifier("lfw-view1", detect=False)
    paths = sorted((data_root / "att_faces").glob("s*/*.pgm"))
    return v.loaded.model, v.embed(paths).numpy(), np.array([int(p.parent.name[1:]) - 1 for p in paths])


def _with_head(model: SiameseNet, kind: str) -> SiameseNet:
    """The model with a head of the given kind (weights of a realistic size for these embeddings)."""
    m = copy.deepcopy(model)
    w = m.head.fc.weight.detach()
    with torch.no_grad():
        if kind == "tied":
            m.head.weights, m.head.fc.weight[:] = "free", -w.abs().mean()
        elif kind == "nonpositive":
            m.head.weights = "free"
            m.head.fc.weight[:] = -w.abs()
    return m


def _brute(model: SiameseNet, emb: np.ndarray, person: np.ndarray, names: list[str], probe: np.ndarray, k: int,
           aggregate: str, exclude: int | None = None) -> list[tuple[str, float]]:
    """Every row scored by the head, aggregated per person, sorted by (-p, name)."""
    p = probability(model, torch.from_numpy(probe).expand(len(emb), -1), torch.from_numpy(emb))
    scores = []
    for i in np.unique(person):
        if i != exclude:
            mine = p[person == i]
            scores.append((names[i], float(mine.max() if aggregate == "max" else mine.mean())))
    return sorted(scores, key=lambda s: (-s[1], s[0]))[:k]


def _answer(index: SearchIndex, probe: np.ndarray, k: int, aggregate: str, exclude: int | None = None):
    (hits,) = index.search(probe[None], k, aggregate, None if exclude is None else [exclude])
    return [(index.names[h.person], h.p) for h in hits]


def _same(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [n for n, _ in got] == [n for n, _ in want]
    np.testing.assert_allclose([p for _, p in got], [p for _, p in want], rtol=0, atol=1e-12)


def _gallery(real: tuple[SiameseNet, np.ndarray, np.ndarray], size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`size` rows: the real photos, then noisy copies of them as further people with 1-3 photos each."""
    _, emb, person = real
    rng = np.random.default_rng(seed)
    if size <= len(emb):
        rows = np.sort(rng.choice(len(emb), size, replace=False))
        return emb[rows], np.unique(person[rows], return_inverse=True)[1]
    extra = size - len(emb)
    base = rng.integers(0, len(emb), extra)
    noisy = emb[base] + rng.normal(0, 0.3 * emb.std(), (extra, emb.shape[1])).astype(np.float32)
    owners = person.max() + 1 + np.cumsum(rng.random(extra) < 0.5)
    return np.concatenate([emb, noisy]), np.concatenate([person, owners])


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("size", [1, 2, 57, 400, 3000])
def test_search_equals_the_brute_force_head(real, head: str, size: int) -> None:
    model = _with_head(real[0], head)
    emb, person = _gallery(real, size, seed=size)
    names = [f"person{i:05d}" for i in range(person.max() + 1)]
    index = SearchIndex.build(model, names, person, emb)
    probes = np.concatenate([real[1][::37], emb[:3]])  # strangers' and enrolled photos (p = 1 ties)
    for aggregate in ("max", "mean"):
        for probe in probes:
            for k in (1, 5):
                _same(_answer(index, probe, k, aggregate), _brute(model, emb, person, names, probe, k, aggregate))


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_are_broken_by_name_and_both_backends_agree(real, backend: str) -> None:
    model = _with_head(real[0], "tied")
    emb = real[1][:20]
    twins = np.concatenate([emb, emb])  # each embedding enrolled under two names: every score tied
    person = np.arange(40)
    names = [f"b{i:02d}" for i in range(20)] + [f"a{i:02d}" for i in range(20)]
    index = SearchIndex.build(model, names, person, twins, backend=backend)
    got = _answer(index, emb[3], 4, "max")
    assert [n for n, _ in got[:2]] == ["a03", "b03"] and got[0][1] == got[1][1]
    _same(got, _brute(model, twins, person, names, emb[3], 4, "max"))


def test_appending_and_excluding_match_the_brute_force_head(real) -> None:
    model, emb, person = _with_head(real[0], "nonpositive"), real[1], real[2]
    names = [f"s{i + 1}" for i in range(40)]
    index = SearchIndex.build(model, names[:30], person[person < 30], emb[person < 30])
    for i in range(30, 40):  # new people, then more photos of an enrolled one
        index.add(names[i], emb[person == i])
    index.add("s1", emb[person == 35][:2])
    all_person = np.concatenate([person[person < 30], person[person >= 30], [0, 0]])
    all_emb = np.concatenate([emb[person < 30], emb[person >= 30], emb[person == 35][:2]])
    for probe in emb[5::50]:
        _same(_answer(index, probe, 5, "mean"), _brute(model, all_emb, all_person, names, probe, 5, "mean"))
        _same(_answer(index, probe, 3, "max", exclude=35),
              _brute(model, all_emb, all_person, names, probe, 3, "max", exclude=35))


def test_a_person_without_rows_is_never_answered(real) -> None:
    model, emb = real[0], real[1][:10]
    index = SearchIndex.build(model, ["gone", "here"], np.ones(10, np.int64), emb)
    assert {index.names[h.person] for h in index.search(emb[:1], 5)[0]} == {"here"}
    assert SearchIndex.build(model, [], np.zeros(0, np.int64), np.zeros((0, emb.shape[1]), np.float32)) \
        .search(emb[:1], 5) == [[]]


def test_search_budget_shrinks_with_the_gallery() -> None:
    assert search_budget(1_000, 2_000) == 2_000
    assert search_budget(1_000_000, 2_000) == 50
    assert search_budget(10**9, 2_000) == 1


@pytest.mark.parametrize("head", HEADS)
def test_small_chunks_give_the_same_answers(real, head: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Probes and rows scored in many small chunks (the bound that keeps a large search's memory flat)."""
    import siamface.gallery_search as gs

    model = _with_head(real[0], head)
    emb, person = _gallery(real, 700, seed=7)
    names = [f"p{i:04d}" for i in range(person.max() + 1)]
    index = SearchIndex.build(model, names, person, emb)
    probes = real[1][::41]
    whole = index.search(probes, 5, "mean")
    monkeypatch.setattr(gs, "PROBE_CELLS", 3_000)  # 4 probes at a time; the head: 2 rows at a time
    assert index.search(probes, 5, "mean") == whole
    for probe, hits in zip(probes, whole):
        _same([(names[h.person], h.p) for h in hits], _brute(model, emb, person, names, probe, 5, "mean"))
