"""The LFW protocols' identity splits ("unrestricted, no outside data"), with leakage checks.

View 1: train and select on peopleDevTrain, test on pairsDevTest (peopleDevTest). View 2: for fold k of
pairs.txt, the model may see only people of the other nine folds of people.txt. In both, a seeded set of
training-side people with at least two images is held out for model selection and the threshold.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np

from .folders import scan_folder
from .pairs import Pair, read_lfw_pairs, read_lfw_people, read_lfw_people_folds
from .splits import Split, assert_disjoint


@lru_cache(maxsize=4)
def _image_counts(lfw: Path) -> Counter[str]:
    return Counter(r.identity for r in scan_folder(lfw / "deepfunneled"))


def _hold_out(people: list[str], counts: Counter[str], n_val: int, seed: int) -> tuple[list[str], list[str]]:
    multi = sorted(p for p in people if counts.get(p, 0) >= 2)
    val = sorted(np.random.default_rng(seed).choice(multi, size=min(n_val, len(multi)), replace=False).tolist())
    return sorted(set(people) - set(val)), val


def view1_split(lfw: str | Path, n_val: int = 150, seed: int = 0) -> Split:
    """Train/val from DevTrain people, test = DevTest people."""
    lfw = Path(lfw)
    dev_train, dev_test = read_lfw_people(lfw / "peopleDevTrain.txt"), read_lfw_people(lfw / "peopleDevTest.txt")
    train, val = _hold_out(dev_train, _image_counts(lfw), n_val, seed)
    return Split(tuple(train), tuple(val), tuple(sorted(dev_test)))


def all_people_split(lfw: str | Path, n_val: int = 150, seed: int = 0) -> Split:
    """Every LFW person: a face prior for other datasets (its test split is empty). A model trained on it has
    seen every LFW protocol's test people, so it must never be scored on LFW (evaluation refuses: lineage)."""
    lfw = Path(lfw)
    train, val = _hold_out(sorted(_image_counts(lfw)), _image_counts(lfw), n_val, seed)
    return Split(tuple(train), tuple(val), ())


def view2_split(lfw: str | Path, fold: int, n_val: int = 150, seed: int = 0) -> Split:
    """Model k: train/val from the people of the nine other folds, test = the people of fold k."""
    lfw = Path(lfw)
    folds = read_lfw_people_folds(lfw / "people.txt")
    if not 0 <= fold < len(folds):
        raise ValueError(f"fold must be in 0..{len(folds) - 1}, got {fold}")
    others = sorted({p for k, block in enumerate(folds) if k != fold for p in block})
    train, val = _hold_out(others, _image_counts(lfw), n_val, seed + fold)
    split = Split(tuple(train), tuple(val), tuple(sorted(folds[fold])))
    assert_disjoint(train=train, test=view2_fold_people(lfw, fold))
    return split


def view2_pairs(lfw: str | Path) -> list[Pair]:
    return list(_view2_pairs(Path(lfw)))


@lru_cache(maxsize=4)
def _view2_pairs(lfw: Path) -> tuple[Pair, ...]:
    return tuple(read_lfw_pairs(lfw / "pairs.txt", lfw / "deepfunneled"))


def view2_fold_people(lfw: str | Path, fold: int) -> set[str]:
    """Everyone in the pairs of fold k (a subset of people.txt's fold k)."""
    return {p.parent.name for pair in view2_pairs(lfw) if pair.fold == fold for p in (pair.a, pair.b)}


def calibration_split(lfw: str | Path, n_train: int = 250, n_val: int = 50, n_test_multi: int = 500,
                      n_test_single: int = 2500, seed: int = 0) -> tuple[Split, tuple[str, ...]]:
    """Every LFW person in one of four roles, for a model whose thresholds hold on people never seen:
    (Split(train, val, test), calibration). train/val (people with >= 2 photos) train the Siamese head and
    select its epoch; calibration (the thousands left) sets its operating points; test (n_test_multi
    people with >= 2 photos and n_test_single with one) is never used by the model: the transfer table and
    the 1,000-person gallery are measured on it."""
    lfw = Path(lfw)
    counts = _image_counts(lfw)
    rng = np.random.default_rng(seed)
    multi = rng.permutation(sorted(p for p, c in counts.items() if c >= 2)).tolist()
    single = rng.permutation(sorted(p for p, c in counts.items() if c == 1)).tolist()
    test = multi[:n_test_multi] + single[:n_test_single]
    train = multi[n_test_multi:n_test_multi + n_train]
    val = multi[n_test_multi + n_train:n_test_multi + n_train + n_val]
    cal = multi[n_test_multi + n_train + n_val:] + single[n_test_single:]
    assert_disjoint(train=train, val=val, test=test, calibration=cal)
    return Split(tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test))), tuple(sorted(cal))
