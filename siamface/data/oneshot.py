"""N-way one-shot tasks: the official Omniglot runs (Lake et al. 2013/2015) and random tasks for validation.

Koch et al. (2015, section 4.3) score a query against C candidates and predict the argmax. Public
reimplementations often leak: the correct candidate always at index 0, the query reused as its own support
image, or candidates from different alphabets. make_oneshot_tasks avoids all three.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from siamface.data._classes import class_index, pick_images, pick_other_images
from siamface.errors import DataError, ImageError

__all__ = [
    "OMNIGLOT_RUN_ALPHABETS",
    "OMNIGLOT_VAL_ALPHABETS",
    "OneShotTask",
    "make_oneshot_tasks",
    "read_omniglot_runs",
]

# The 10 images_evaluation alphabets that the official runs do not use: Koch et al.'s validation alphabets.
OMNIGLOT_VAL_ALPHABETS = (
    "Angelic",
    "Atemayar_Qelisayer",
    "Aurek-Besh",
    "Avesta",
    "Keble",
    "Mongolian",
    "Oriya",
    "Sylheti",
    "Syriac_(Serto)",
    "ULOG",
)
# The 10 images_evaluation alphabets of all_runs (two runs each, run01-02 Atlantean ... run19-20 Tibetan;
# the run images are renamed, but each is pixel-identical to one image of these alphabets). Never train or
# select models on them.
OMNIGLOT_RUN_ALPHABETS = (
    "Atlantean",
    "Ge_ez",
    "Glagolitic",
    "Gurmukhi",
    "Kannada",
    "Malayalam",
    "Manipuri",
    "Old_Church_Slavonic_(Cyrillic)",
    "Tengwar",
    "Tibetan",
)


@dataclass(frozen=True)
class OneShotTask:
    """A query image, its candidate images, and the index of the candidate of the query's class."""

    query: Path
    candidates: tuple[Path, ...]
    answer: int


def _read_run(root: Path, run: Path) -> list[OneShotTask]:
    labels = run / "class_labels.txt"
    if not labels.is_file():
        raise DataError(f"{labels}: class_labels.txt missing")
    candidates = tuple(sorted((run / "training").glob("*.png")))
    if not candidates:
        raise DataError(f"{run / 'training'}: no candidate images")
    tasks = []
    for n, line in enumerate(labels.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DataError(f"{labels}:{n}: expected 'runNN/test/itemXX.png runNN/training/classYY.png'")
        query, target = root / fields[0], root / fields[1]
        if target not in candidates:
            raise DataError(f"{labels}:{n}: {fields[1]} is not one of the run's training images")
        if not query.is_file():
            raise ImageError(f"{query}: query image named in {labels}:{n} not found")
        tasks.append(OneShotTask(query=query, candidates=candidates, answer=candidates.index(target)))
    return tasks


def read_omniglot_runs(all_runs_dir: str | PathLike[str]) -> list[OneShotTask]:
    """The official 20-way within-alphabet runs (run01..run20 x 20 trials = 400 tasks), in run and line order.

    Candidates are each run's training/class01..20.png in sorted order; answer is the index of the
    training image that class_labels.txt pairs with the query.
    """
    root = Path(all_runs_dir)
    runs = sorted(p for p in root.glob("run[0-9][0-9]") if p.is_dir()) if root.is_dir() else []
    if not runs:
        raise DataError(f"{root}: no runNN folders (expected Omniglot's all_runs)")
    return [task for run in runs for task in _read_run(root, run)]


def make_oneshot_tasks(
    labels: np.ndarray,
    n_way: int,
    n_tasks: int,
    seed: int | np.random.Generator,
    groups: np.ndarray | None = None,
    within_group: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random n-way one-shot tasks as (query_idx (T,), candidate_idx (T, n_way), answer (T,)) int64 indices.

    The query class is uniform among classes with >= 2 images; the true candidate is a different image of
    that class; the other n_way - 1 candidates are one image each of distinct other classes (of the query's
    group when within_group: then only groups with >= n_way classes provide queries). The answer position is
    uniform over 0..n_way-1.
    """
    if n_way < 2:
        raise ValueError(f"n_way must be >= 2, got {n_way}")
    if n_tasks < 0:
        raise ValueError(f"n_tasks must be >= 0, got {n_tasks}")
    if within_group and groups is None:
        raise ValueError("within_group=True needs groups")
    rng = np.random.default_rng(seed)
    ci = class_index(labels, groups)
    enough = ci.group_size >= n_way if within_group else np.full(ci.n_classes, ci.n_classes >= n_way)
    eligible = np.flatnonzero((ci.count >= 2) & enough)
    if not len(eligible):
        where = "in one group" if within_group else "in total"
        raise DataError(
            f"no {n_way}-way task possible: need a class with 2 images and {n_way} classes {where}"
        )
    query_cls = eligible[rng.integers(0, len(eligible), n_tasks)]
    other_cls = np.empty((n_tasks, n_way - 1), dtype=np.int64)
    for t, c in enumerate(query_cls):
        if within_group:
            pool = ci.group_order[ci.group_start[c] : ci.group_start[c] + ci.group_size[c]]
        else:
            pool = np.arange(ci.n_classes)
        other_cls[t] = rng.choice(pool[pool != c], n_way - 1, replace=False)
    query, pos = pick_images(ci, query_cls, rng)
    true_img = pick_other_images(ci, query_cls, pos, rng)
    other_img, _ = pick_images(ci, other_cls.ravel(), rng)
    answer = rng.integers(0, n_way, n_tasks)
    candidates = np.empty((n_tasks, n_way), dtype=np.int64)
    candidates[np.arange(n_way)[None, :] != answer[:, None]] = other_img  # row-major: fills around the answer
    candidates[np.arange(n_tasks), answer] = true_img
    return query.astype(np.int64), candidates, answer.astype(np.int64)
