"""scan_folder and helpers on real AT&T and Omniglot folders; identity splits and leakage checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from siamface.data import (
    Split,
    assert_disjoint,
    filter_identities,
    group_array,
    identities,
    label_array,
    omniglot_drawer,
    scan_folder,
    split_identities,
)
from siamface.errors import DataError, LeakageError


def test_scan_att_faces(data_root: Path) -> None:
    records = scan_folder(data_root / "att_faces")
    assert len(records) == 400
    names = identities(records)
    assert len(names) == 40 and "s1" in names and "s40" in names
    assert {r.group for r in records} == {""}
    assert [r.path for r in records] == sorted(r.path for r in records)
    assert all(r.path.parent.name == r.identity for r in records)  # README etc. in the root are ignored
    labels, label_names = label_array(records)
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [10] * 40
    assert all(label_names[k] == r.identity for k, r in zip(labels, records, strict=True))
    assert group_array(records).tolist() == [0] * 400
    assert scan_folder(data_root / "att_faces") == records  # deterministic


def test_scan_one_omniglot_alphabet(data_root: Path) -> None:
    latin = data_root / "omniglot/images_background/Latin"
    records = scan_folder(latin.parent, exts=(".png",))
    mine = [r for r in records if r.group == "Latin"]
    assert len(mine) == 26 * 20
    assert identities(mine)[0] == "Latin/character01"
    assert all(r.identity.startswith("Latin/character") for r in mine)
    groups = group_array(records)
    assert len(set(groups.tolist())) == 30
    assert groups.dtype == np.int64
    kept = filter_identities(records, ["Latin/character01", "Latin/character02", "not/there"])
    assert len(kept) == 40 and {r.identity for r in kept} == {"Latin/character01", "Latin/character02"}
    assert omniglot_drawer(mine[0].path) == 1
    assert {omniglot_drawer(r.path) for r in mine} == set(range(1, 21))


def test_scan_rules(tmp_path: Path) -> None:
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "1.PNG").write_bytes(b"x")  # extension matched case-insensitively, not decoded
    (tmp_path / "alice" / "notes.txt").write_text("no")
    (tmp_path / ".hidden" / "x").mkdir(parents=True)
    (tmp_path / ".hidden" / "x" / "1.png").write_bytes(b"x")
    (tmp_path / "root.png").write_bytes(b"x")
    records = scan_folder(tmp_path)
    assert [(r.path.name, r.identity, r.group) for r in records] == [("1.PNG", "alice", "")]


def test_scan_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere"):
        scan_folder(tmp_path / "nowhere")
    (tmp_path / "empty" / "bob").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty.*no images"):
        scan_folder(tmp_path / "empty")


def test_omniglot_drawer() -> None:
    assert omniglot_drawer("0709_17.png") == 17
    assert omniglot_drawer(Path("a/b/1234_01.png")) == 1
    with pytest.raises(DataError, match=r"1\.pgm"):
        omniglot_drawer("s1/1.pgm")


def test_split_identities_deterministic_and_disjoint() -> None:
    names = [f"s{k}" for k in range(1, 41)]
    split = split_identities(names, n_val=5, n_test=10, seed=3)
    assert split == split_identities(list(reversed(names)), n_val=5, n_test=10, seed=3)
    assert split != split_identities(names, n_val=5, n_test=10, seed=4)
    assert (len(split.train), len(split.val), len(split.test)) == (25, 5, 10)
    assert sorted(split.train + split.val + split.test) == sorted(names)
    for part in (split.train, split.val, split.test):
        assert list(part) == sorted(part)
    assert Split.from_dict(split.to_dict()) == split
    with pytest.raises(DataError, match="none left"):
        split_identities(names, n_val=20, n_test=20, seed=0)
    with pytest.raises(DataError, match="lacks"):
        Split.from_dict({"train": ["a"], "val": []})


def test_assert_disjoint_names_the_leak() -> None:
    assert_disjoint(train=["a", "b"], val=["c"], test=["d"])
    with pytest.raises(LeakageError, match=r"'train' and 'test': 'Zico'"):
        assert_disjoint(train=["a", "Zico"], val=["c"], test=["Zico", "d"])
    with pytest.raises(LeakageError, match="'val' and 'test'"):
        Split(train=("a",), val=("b",), test=("b",))
    assert issubclass(LeakageError, DataError)
