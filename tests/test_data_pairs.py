"""LFW protocol files, CSV pairs, and balanced pair sampling."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from siamface.data import (
    Pair,
    check_exists,
    check_pairable,
    pair_identities,
    read_csv_pairs,
    read_lfw_pairs,
    read_lfw_people,
    sample_pairs,
)
from siamface.errors import DataError, ImageError


@pytest.fixture(scope="module")
def lfw(data_root: Path) -> Path:
    return data_root / "lfw"


def test_lfw_pairs_view2(lfw: Path) -> None:
    pairs = read_lfw_pairs(lfw / "pairs.txt", lfw / "deepfunneled")
    assert len(pairs) == 6000
    assert pairs[0] == Pair(
        lfw / "deepfunneled/Abel_Pacheco/Abel_Pacheco_0001.jpg",
        lfw / "deepfunneled/Abel_Pacheco/Abel_Pacheco_0004.jpg",
        True,
        0,
    )
    people = []
    for fold in range(10):
        mine = [p for p in pairs if p.fold == fold]
        assert [p.same for p in mine] == [True] * 300 + [False] * 300
        assert all((p.a.parent.name == p.b.parent.name) == p.same for p in mine)
        people.append(pair_identities(mine))
    for i in range(10):
        for j in range(i + 1, 10):
            assert not people[i] & people[j], f"folds {i} and {j} share people"
    check_exists(pairs[:50])


def test_lfw_pairs_view1(lfw: Path) -> None:
    train = read_lfw_pairs(lfw / "pairsDevTrain.txt", lfw / "deepfunneled")
    test = read_lfw_pairs(lfw / "pairsDevTest.txt", lfw / "deepfunneled")
    assert (len(train), sum(p.same for p in train)) == (2200, 1100)
    assert (len(test), sum(p.same for p in test)) == (1000, 500)
    assert {p.fold for p in train + test} == {0}
    assert not pair_identities(train) & pair_identities(test)


def test_lfw_people(lfw: Path) -> None:
    people = read_lfw_people(lfw / "people.txt")
    dev_train = read_lfw_people(lfw / "peopleDevTrain.txt")
    dev_test = read_lfw_people(lfw / "peopleDevTest.txt")
    assert len(people) == len(set(people)) == 5749
    assert (len(dev_train), len(dev_test)) == (4038, 1711)
    assert not set(dev_train) & set(dev_test)
    assert set(dev_train) | set(dev_test) == set(people)


def test_lfw_malformed(tmp_path: Path) -> None:
    bad = tmp_path / "pairs.txt"
    bad.write_text("1 2\nA\t1\t2\nA\t1\t3\nA\t1\nB\t1\tC\t1\n")
    with pytest.raises(DataError, match=r"pairs\.txt:4: expected a mismatched"):
        read_lfw_pairs(bad, tmp_path)
    bad.write_text("1 2\nA\t1\t2\nA\tx\t3\nA\t1\tB\t1\nB\t1\tC\t1\n")
    with pytest.raises(DataError, match=r"pairs\.txt:3: expected an integer"):
        read_lfw_pairs(bad, tmp_path)
    bad.write_text("1 2\nA\t1\t2\n")
    with pytest.raises(DataError, match="promises 4"):
        read_lfw_pairs(bad, tmp_path)
    with pytest.raises(ImageError, match=r"A_0001\.jpg"):
        check_exists([Pair(tmp_path / "A/A_0001.jpg", tmp_path / "A/A_0002.jpg", True, 0)])


def test_csv_pairs(tmp_path: Path) -> None:
    csv = tmp_path / "sub" / "pairs.csv"
    csv.parent.mkdir()
    csv.write_text(
        "image_a,image_b,label\nx/1.jpg,x/2.jpg,1\nx/1.jpg,/abs/y.jpg,different\n\n a.png , b.png ,TRUE\n"
    )
    pairs = read_csv_pairs(csv)
    assert pairs == [
        Pair(csv.parent / "x/1.jpg", csv.parent / "x/2.jpg", True, 0),
        Pair(csv.parent / "x/1.jpg", Path("/abs/y.jpg"), False, 0),
        Pair(csv.parent / "a.png", csv.parent / "b.png", True, 0),
    ]
    assert pair_identities(pairs[:2]) == {"x", "abs"}
    csv.write_text("image_a,image_b,label\nx/1.jpg,x/2.jpg,1\nx/1.jpg,x/3.jpg,maybe\n")
    with pytest.raises(DataError, match=r"pairs\.csv:3: label"):
        read_csv_pairs(csv)
    csv.write_text("image_a,image_b,label\nx/1.jpg\n")
    with pytest.raises(DataError, match=r"pairs\.csv:2"):
        read_csv_pairs(csv)
    csv.write_text("a,b,c\n")
    with pytest.raises(DataError, match=r"pairs\.csv:1: expected the header"):
        read_csv_pairs(csv)


def _labels() -> tuple[np.ndarray, np.ndarray]:
    """60 identities in 3 groups with 1 to 5 images, plus a group with a single identity."""
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(61), rng.integers(1, 6, 61))
    rng.shuffle(labels)
    groups = np.minimum(labels // 20, 3)
    return labels, groups


def test_sample_pairs_balanced_and_correct() -> None:
    labels, _ = _labels()
    out = sample_pairs(labels, 1001, 0)
    assert out.shape == (1001, 3) and out.dtype == np.int64
    i, j, same = out.T
    assert same.sum() == 500
    assert np.all(i != j)
    assert np.array_equal(labels[i] == labels[j], same.astype(bool))
    assert 0.3 < same[:500].mean() < 0.7  # shuffled, not 500 ones then 501 zeros
    assert np.array_equal(out, sample_pairs(labels, 1001, 0))
    assert not np.array_equal(out, sample_pairs(labels, 1001, 1))
    assert np.array_equal(out, sample_pairs(labels, 1001, np.random.default_rng(0)))


def test_sample_pairs_within_group() -> None:
    labels, groups = _labels()
    i, j, same = sample_pairs(labels, 4000, 0, groups=groups, within_group=True).T
    multi = groups[i] != 3  # group 3 has a single identity: its negatives fall back to other groups
    assert np.all(groups[i][multi] == groups[j][multi])
    assert np.all(labels[i][same == 0] != labels[j][same == 0])
    assert np.any(groups[i] != groups[j])  # fallback happened
    i, j, same = sample_pairs(labels, 4000, 0, groups=groups).T
    different = same == 0
    assert (
        np.mean(groups[i][different] != groups[j][different]) > 0.5
    )  # without within_group, negatives cross groups


def test_sample_pairs_uniform_over_identities() -> None:
    labels = np.concatenate([np.zeros(1000, dtype=np.int64), np.repeat(np.arange(1, 10), 2)])
    i, _, same = sample_pairs(labels, 20000, 0).T
    share = np.mean(labels[i][same == 1] == 0)
    assert 0.07 < share < 0.13  # 1/10, not 1000/1018


def test_sample_pairs_errors() -> None:
    with pytest.raises(DataError, match="two images"):
        sample_pairs(np.arange(10), 10, 0)
    with pytest.raises(DataError, match="two identities"):
        sample_pairs(np.zeros(5, dtype=np.int64), 3, 0)
    with pytest.raises(ValueError, match="groups"):
        sample_pairs(np.zeros(5, dtype=np.int64), 2, 0, within_group=True)
    with pytest.raises(DataError, match="two groups"):
        sample_pairs(np.array([0, 0, 1, 1]), 2, 0, groups=np.array([0, 1, 1, 1]))


def test_sample_150k_pairs_fast() -> None:
    labels = np.repeat(np.arange(964), 20)
    groups = labels // 32
    start = time.perf_counter()
    out = sample_pairs(labels, 150_000, 0, groups=groups, within_group=True)
    assert time.perf_counter() - start < 1.0
    assert out.shape == (150_000, 3) and out[:, 2].sum() == 75_000


def test_a_pairs_file_without_pairs_says_so(tmp_path: Path) -> None:
    """Issue 11, fault 9: a header-only CSV said 'ImageStore.from_paths: no image paths given'."""
    csv = tmp_path / "pairs.csv"
    csv.write_text("image_a,image_b,label\n\n")
    with pytest.raises(DataError, match=r"pairs\.csv: the pairs file has no pairs \(only a header\)"):
        read_csv_pairs(csv)
    lfw = tmp_path / "pairsDevTest.txt"
    lfw.write_text("0\n")
    with pytest.raises(DataError, match=r"pairsDevTest\.txt: the pairs file has no pairs"):
        read_lfw_pairs(lfw, tmp_path)


def test_check_pairable_names_the_place() -> None:
    check_pairable(np.array([0, 0, 1]), "faces/", "training")
    with pytest.raises(DataError, match=r"^faces/: no training identity has two images"):
        check_pairable(np.array([0, 1, 2]), "faces/", "training")
    with pytest.raises(DataError, match=r"^faces/: 1 test identity; different pairs need at least two"):
        check_pairable(np.array([3, 3]), "faces/", "test")
    with pytest.raises(DataError, match=r"^faces/: 0 test identities"):
        check_pairable(np.array([], dtype=np.int64), "faces/", "test")
