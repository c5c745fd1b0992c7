"""LFW protocol splits: no person of the evaluated fold (or of DevTest) reaches training or selection."""

from __future__ import annotations

import pytest

from siamface.data import read_lfw_pairs
from siamface.data.lfw import all_people_split, view1_split, view2_fold_people, view2_pairs, view2_split


@pytest.fixture(scope="module")
def lfw(data_root):
    return data_root / "lfw"


@pytest.mark.parametrize("fold", range(10))
def test_view2_model_k_never_sees_fold_k(lfw, fold):
    split = view2_split(lfw, fold)
    tested = view2_fold_people(lfw, fold)
    assert tested, "fold has people"
    assert not tested & (set(split.train) | set(split.val))
    assert tested <= set(split.test)
    # everyone else of the other folds is available for training or selection
    others = {p.parent.name for pair in view2_pairs(lfw) if pair.fold != fold for p in (pair.a, pair.b)}
    assert others <= set(split.train) | set(split.val)


def test_view2_split_is_seeded_and_validation_people_have_two_images(lfw):
    a, b = view2_split(lfw, 0, seed=0), view2_split(lfw, 0, seed=0)
    assert a == b
    assert view2_split(lfw, 0, seed=1).val != a.val
    for person in a.val[:20]:
        assert len(list((lfw / "deepfunneled" / person).glob("*.jpg"))) >= 2


def test_view1_devtest_people_are_held_out(lfw):
    split = view1_split(lfw)
    dev_test = read_lfw_pairs(lfw / "pairsDevTest.txt", lfw / "deepfunneled")
    people = {p.parent.name for pair in dev_test for p in (pair.a, pair.b)}
    assert people <= set(split.test)
    assert not people & (set(split.train) | set(split.val))
    assert len(split.val) == 150


def test_view2_rejects_bad_fold(lfw):
    with pytest.raises(ValueError, match="fold"):
        view2_split(lfw, 10)


def test_all_people_split_covers_everyone_and_tests_no_one(lfw):
    split = all_people_split(lfw)
    everyone = {d.name for d in (lfw / "deepfunneled").iterdir() if d.is_dir()}
    assert set(split.train) | set(split.val) == everyone and not set(split.train) & set(split.val)
    assert split.test == () and len(split.val) == 150
    assert all(len(list((lfw / "deepfunneled" / p).glob("*.jpg"))) >= 2 for p in split.val)
    assert all_people_split(lfw, seed=1).val != split.val
