"""Identity-disjoint train/val/test splits.

Verification and one-shot results only mean something when test identities were never seen in training
or model selection (Koch et al. 2015 hold out whole alphabets and drawers), so every Split checks that
its three parts are disjoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from itertools import combinations

import numpy as np

from siamface.errors import DataError, LeakageError

__all__ = ["Split", "assert_disjoint", "split_identities"]

_SHOW = 5  # identities named in a LeakageError


def assert_disjoint(**named: Iterable[str]) -> None:
    """Raise LeakageError if any identity is in two of the named collections (e.g. train=..., test=...)."""
    sets = {name: set(items) for name, items in named.items()}
    for (name_a, a), (name_b, b) in combinations(sets.items(), 2):
        common = sorted(a & b)
        if common:
            more = f" (+{len(common) - _SHOW} more)" if len(common) > _SHOW else ""
            shown = ", ".join(repr(c) for c in common[:_SHOW])
            raise LeakageError(f"{len(common)} identities in both '{name_a}' and '{name_b}': {shown}{more}")


@dataclass(frozen=True)
class Split:
    """Identity names of each split, sorted; construction fails with LeakageError if they overlap."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str):
                raise TypeError(f"Split.{f.name} must be a collection of identity names, not a string")
            object.__setattr__(self, f.name, tuple(value))
        assert_disjoint(train=self.train, val=self.val, test=self.test)

    def to_dict(self) -> dict[str, list[str]]:
        """Plain JSON-ready dict {"train": [...], "val": [...], "test": [...]}."""
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Iterable[str]]) -> Split:
        """Inverse of to_dict; raises DataError if a key is missing."""
        missing = [k for k in ("train", "val", "test") if k not in d]
        if missing:
            raise DataError(f"split dict lacks key(s) {missing}; expected 'train', 'val' and 'test'")
        return cls(train=tuple(d["train"]), val=tuple(d["val"]), test=tuple(d["test"]))


def split_identities(identities: Iterable[str], n_val: int, n_test: int, seed: int) -> Split:
    """Seeded split of unique identities: test = first n_test of a permutation, val = next n_val, rest train.

    The permutation (numpy default_rng(seed)) is taken over the sorted unique names, so the result does not
    depend on input order. At least one identity must remain for training.
    """
    if n_val < 0 or n_test < 0:
        raise ValueError(f"n_val and n_test must be >= 0, got {n_val} and {n_test}")
    names = sorted(set(identities))
    if n_val + n_test >= len(names):
        raise DataError(
            f"cannot hold out {n_val} val + {n_test} test identities from {len(names)}: none left to train on; "
            "hold out fewer (n_val, n_test)", option="n_val"
        )
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return Split(train=tuple(sorted(train)), val=tuple(sorted(val)), test=tuple(sorted(test)))
