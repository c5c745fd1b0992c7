"""Vectorised class bookkeeping shared by pair sampling and one-shot task sampling (private)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from siamface.errors import DataError


@dataclass(frozen=True)
class ClassIndex:
    """Images grouped by class: class k owns order[start[k] : start[k] + count[k]]."""

    order: np.ndarray  # image indices sorted by label (stable)
    start: np.ndarray  # (K,) first position of each class in order
    count: np.ndarray  # (K,) images per class
    group: np.ndarray  # (K,) group id of each class (all 0 without groups)
    group_order: np.ndarray  # (K,) classes sorted by group (stable)
    group_start: np.ndarray  # (K,) first position of each class's group in group_order
    group_size: np.ndarray  # (K,) number of classes in each class's group
    rank_in_group: np.ndarray  # (K,) position of each class inside its group's block of group_order

    @property
    def n_classes(self) -> int:
        return len(self.count)


def class_index(labels: np.ndarray, groups: np.ndarray | None = None) -> ClassIndex:
    """Index images by class (and classes by group); raises if a class spans two groups."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}")
    order = np.argsort(labels, kind="stable")
    _, start, count = np.unique(labels[order], return_index=True, return_counts=True)
    group = np.zeros(len(count), dtype=np.int64)
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != labels.shape:
            raise ValueError(f"groups must have the shape of labels {labels.shape}, got {groups.shape}")
        group = groups[order[start]].astype(np.int64)
        if np.any(groups[order] != np.repeat(group, count)):
            raise DataError("a class has images in two groups: groups must be constant within each class")
    group_order = np.argsort(group, kind="stable")
    _, g_start, slot, g_size = np.unique(
        group[group_order], return_inverse=True, return_index=True, return_counts=True
    )
    class_start, class_size = np.empty_like(group), np.empty_like(group)
    class_start[group_order], class_size[group_order] = g_start[slot], g_size[slot]
    rank = np.empty_like(group)
    rank[group_order] = np.arange(len(group)) - g_start[slot]
    return ClassIndex(order, start, count, group, group_order, class_start, class_size, rank)


def pick_images(
    ci: ClassIndex, classes: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One uniformly random image of each given class: (image index, position inside the class)."""
    pos = rng.integers(0, ci.count[classes]) if len(classes) else np.zeros(0, dtype=np.int64)
    return ci.order[ci.start[classes] + pos], pos


def pick_other_images(
    ci: ClassIndex, classes: np.ndarray, pos: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A uniformly random image of each class other than the one at pos (classes need >= 2 images)."""
    if not len(classes):
        return np.zeros(0, dtype=np.int64)
    other = rng.integers(0, ci.count[classes] - 1)
    other += other >= pos
    return ci.order[ci.start[classes] + other]


def pick_other_classes(
    ci: ClassIndex, classes: np.ndarray, rng: np.random.Generator, within_group: bool
) -> np.ndarray:
    """A uniformly random different class for each class; from the same group when within_group and the
    group has another class, else from all classes."""
    if not len(classes):
        return np.zeros(0, dtype=np.int64)
    other = rng.integers(0, ci.n_classes - 1, size=len(classes))
    other += other >= classes
    if within_group:
        size = ci.group_size[classes]
        ok = size >= 2
        r = rng.integers(0, np.maximum(size - 1, 1))
        r += r >= ci.rank_in_group[classes]
        other = np.where(ok, ci.group_order[np.where(ok, ci.group_start[classes] + r, 0)], other)
    return other
