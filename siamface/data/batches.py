"""Class-balanced batches (K identities x M images) for the all-pairs loss: each batch holds positives
for every identity in it and, with `within_group`, identities of one group (an Omniglot alphabet)."""

from __future__ import annotations

import numpy as np


class ClassBatches:
    """Draws batches of up to `classes` identities (those with >= 2 images) x up to `per_class` images."""

    def __init__(self, labels: np.ndarray, classes: int, per_class: int, groups: np.ndarray | None = None,
                 within_group: bool = False) -> None:
        order = np.argsort(labels, kind="stable")
        ids, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        self.members = {int(c): order[s:s + n] for c, s, n in zip(ids, starts, counts) if n >= 2}
        if len(self.members) < 2:
            raise ValueError("class batches need at least two identities with two or more images")
        self.eligible = np.array(sorted(self.members))
        self.classes, self.per_class = classes, per_class
        self.pools: list[np.ndarray] = [self.eligible]
        if within_group and groups is not None:
            group_of = np.array([groups[self.members[int(c)][0]] for c in self.eligible])
            self.pools = [self.eligible[group_of == g] for g in np.unique(group_of)]
            self.pools = [p for p in self.pools if len(p) >= 2] or [self.eligible]

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        """Indices of one batch (identities of one group when within_group)."""
        pool = self.pools[int(rng.integers(len(self.pools)))]
        chosen = rng.choice(pool, size=min(self.classes, len(pool)), replace=False)
        return np.concatenate([rng.choice(self.members[int(c)], size=min(self.per_class, len(self.members[int(c)])),
                                          replace=False) for c in chosen])
