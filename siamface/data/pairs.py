"""Verification pairs: the LFW protocol files, CSV pair lists, and random same/different pair sampling.

LFW (Huang et al. 2007): pairs.txt is View 2 (10 folds, disjoint in people); pairsDevTrain/pairsDevTest are
View 1. Sampling follows Koch et al. (2015, section 4.1): balanced random same/different pairs.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from siamface.data._classes import class_index, pick_images, pick_other_classes, pick_other_images
from siamface.errors import DataError, ImageError

__all__ = [
    "Pair",
    "check_exists",
    "check_pairable",
    "pair_identities",
    "read_csv_pairs",
    "read_lfw_pairs",
    "read_lfw_people",
    "sample_pairs",
]

_LABELS = {"1": True, "0": False, "same": True, "different": False, "true": True, "false": False}


@dataclass(frozen=True)
class Pair:
    """Two image paths, whether they show the same identity, and the protocol fold (0 when unfolded)."""

    a: Path
    b: Path
    same: bool
    fold: int


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, whitespace-split fields) of each non-blank line."""
    if not path.is_file():
        raise DataError(f"{path}: protocol file not found")
    text = path.read_text(encoding="utf-8", errors="replace")
    rows = [(n, line.split()) for n, line in enumerate(text.splitlines(), start=1)]
    return [(n, f) for n, f in rows if f]


def _int(path: Path, n: int, text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise DataError(f"{path}:{n}: expected an integer {what}, got {text!r}") from None
    if value < 0:
        raise DataError(f"{path}:{n}: {what} must be >= 0, got {value}")
    return value


def _lfw_image(root: Path, name: str, index: int) -> Path:
    return root / name / f"{name}_{index:04d}.jpg"


def read_lfw_pairs(pairs_file: str | PathLike[str], image_root: str | PathLike[str]) -> list[Pair]:
    """Read LFW pairs.txt ("10 300" header, fold k = 0..9) or pairsDevTrain/DevTest.txt ("N" header, fold 0).

    Each fold is N matched lines ``name i j`` then N mismatched lines ``name1 i name2 j``. Image existence
    is not checked here (see check_exists).
    """
    path, root = Path(pairs_file), Path(image_root)
    rows = _lines(path)
    if not rows or len(rows[0][1]) not in (1, 2):
        raise DataError(f"{path}:1: expected a header 'n_folds n_pairs' or 'n_pairs'")
    head = [_int(path, rows[0][0], t, "count in the header") for t in rows[0][1]]
    n_folds, n = (1, head[0]) if len(head) == 1 else head
    body = rows[1:]
    if len(body) != 2 * n * n_folds:
        raise DataError(f"{path}: header promises {2 * n * n_folds} pair lines, file has {len(body)}")
    if not body:
        raise DataError(f"{path}: the pairs file has no pairs (its header counts none)")
    pairs = []
    for k, (n_line, f) in enumerate(body):
        fold, same = k // (2 * n), (k % (2 * n)) < n
        if len(f) != (3 if same else 4):
            kind = "matched 'name i j'" if same else "mismatched 'name1 i name2 j'"
            raise DataError(f"{path}:{n_line}: expected a {kind} line (fold {fold}), got {len(f)} fields")
        name_a, i, name_b, j = (f[0], f[1], f[0], f[2]) if same else f
        a = _lfw_image(root, name_a, _int(path, n_line, i, "image number"))
        b = _lfw_image(root, name_b, _int(path, n_line, j, "image number"))
        pairs.append(Pair(a, b, same, fold))
    return pairs


def _people_block(rows: list[tuple[int, list[str]]], start: int, path: Path) -> tuple[list[str], int]:
    n_line, f = rows[start]
    count = _int(path, n_line, f[0], "count") if len(f) == 1 else -1
    if count < 0 or start + 1 + count > len(rows):
        raise DataError(f"{path}:{n_line}: expected a count line followed by that many 'name n' lines")
    names = []
    for n_line, f in rows[start + 1 : start + 1 + count]:
        if len(f) != 2:
            raise DataError(f"{path}:{n_line}: expected 'name n_images', got {len(f)} fields")
        _int(path, n_line, f[1], "image count")
        names.append(f[0])
    return names, start + 1 + count


def read_lfw_people_folds(path: str | PathLike[str]) -> list[list[str]]:
    """The names of each block: people.txt has 10 folds (a fold count, then per fold a count line and
    'name n' lines); peopleDev*.txt has one block."""
    path = Path(path)
    rows = _lines(path)
    if not rows or len(rows[0][1]) != 1:
        raise DataError(f"{path}:1: expected a single count on the first line")
    folded = len(rows) > 1 and len(rows[1][1]) == 1  # people.txt: fold count, then per fold a count line
    n_blocks = _int(path, rows[0][0], rows[0][1][0], "fold count") if folded else 1
    blocks, pos = [], 1 if folded else 0
    for fold in range(n_blocks):
        if pos >= len(rows):
            raise DataError(f"{path}: file ends before block {fold + 1} of {n_blocks}")
        block, pos = _people_block(rows, pos, path)
        blocks.append(block)
    if pos != len(rows):
        raise DataError(f"{path}:{rows[pos][0]}: unexpected line after the last block")
    return blocks


def read_lfw_people(path: str | PathLike[str]) -> list[str]:
    """All names of people.txt or peopleDev*.txt."""
    return [name for block in read_lfw_people_folds(path) for name in block]


def _csv_label(path: Path, n: int, text: str) -> bool:
    key = text.strip().lower()
    if key not in _LABELS:
        raise DataError(f"{path}:{n}: label must be 0/1, same/different or true/false, got {text!r}")
    return _LABELS[key]


def read_csv_pairs(path: str | PathLike[str]) -> list[Pair]:
    """Pairs from a CSV with header ``image_a,image_b,label``; relative paths resolve against its folder."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: pairs CSV not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: spreadsheet exports start with a BOM
            reader = csv.reader(fh)
            rows = [(reader.line_num, row) for row in reader]  # line_num: true line even with quoted newlines
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable UTF-8 CSV ({e})") from e
    header = [h.strip().lower() for h in rows[0][1]] if rows else []
    if header[:3] != ["image_a", "image_b", "label"]:
        raise DataError(f"{path}:1: expected the header 'image_a,image_b,label', got {','.join(header)!r}")
    pairs = []
    for n, row in rows[1:]:
        if not any(c.strip() for c in row):
            continue
        if len(row) < 3 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{path}:{n}: expected 'image_a,image_b,label', got {','.join(row)!r}")
        a, b = (path.parent / row[k].strip() for k in (0, 1))  # an absolute path stays absolute
        pairs.append(Pair(a, b, _csv_label(path, n, row[2]), 0))
    if not pairs:
        raise DataError(f"{path}: the pairs file has no pairs (only a header)")
    return pairs


def pair_identities(pairs: Iterable[Pair]) -> set[str]:
    """Identities (parent directory names) of every image in the pairs."""
    return {p.parent.name for pair in pairs for p in (pair.a, pair.b)}


def check_pairable(labels: np.ndarray, where: str | PathLike[str], what: str) -> None:
    """DataError naming `where` (a folder or file) unless the identities in `labels` allow same and different
    pairs: at least two identities, one of them with two images."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    if len(counts) < 2:
        raise DataError(f"{where}: {len(counts)} {what} identit{'y' if len(counts) == 1 else 'ies'}; "
                        "different pairs need at least two")
    if not (counts >= 2).any():
        raise DataError(f"{where}: no {what} identity has two images; same pairs need two photos of one person")


def check_exists(pairs: Iterable[Pair]) -> None:
    """Raise ImageError naming the first image of the pairs that is not a file."""
    seen: set[Path] = set()
    for k, pair in enumerate(pairs):
        for p in (pair.a, pair.b):
            if p not in seen and not p.is_file():
                raise ImageError(f"{p}: image of pair {k} not found")
            seen.add(p)


def sample_pairs(
    labels: np.ndarray,
    n_pairs: int,
    seed_or_rng: int | np.random.Generator,
    groups: np.ndarray | None = None,
    within_group: bool = False,
) -> np.ndarray:
    """Random balanced pairs as an int64 array (n_pairs, 3) of [i, j, same] indices into labels.

    n_pairs // 2 same pairs and the rest different, shuffled; i != j always. Each pair first draws its
    identity uniformly (same pairs: among identities with >= 2 images), then images uniformly inside it,
    so identities with many images (LFW's George_W_Bush has 530) do not dominate. A different pair draws
    its second identity uniformly among the others; with within_group, among the others of the same group
    (Omniglot: same alphabet, the harder negatives), falling back to any group when the group has only one
    identity.
    """
    if n_pairs < 0:
        raise ValueError(f"n_pairs must be >= 0, got {n_pairs}")
    if within_group and groups is None:
        raise ValueError("within_group=True needs groups")
    rng = np.random.default_rng(seed_or_rng)
    ci = class_index(labels, groups)
    n_same, n_diff = n_pairs // 2, n_pairs - n_pairs // 2
    multi = np.flatnonzero(ci.count >= 2)
    if n_same and not len(multi):
        raise DataError("no identity has two images: cannot make same pairs")
    if n_diff and ci.n_classes < 2:
        raise DataError(f"need at least two identities for different pairs, got {ci.n_classes}")
    same_cls = multi[rng.integers(0, len(multi), n_same)] if n_same else np.zeros(0, dtype=np.int64)
    i_same, pos = pick_images(ci, same_cls, rng)
    j_same = pick_other_images(ci, same_cls, pos, rng)
    cls_a = rng.integers(0, ci.n_classes, n_diff) if n_diff else np.zeros(0, dtype=np.int64)
    i_diff, _ = pick_images(ci, cls_a, rng)
    j_diff, _ = pick_images(ci, pick_other_classes(ci, cls_a, rng, within_group), rng)
    out = np.empty((n_pairs, 3), dtype=np.int64)
    out[:, 0] = np.concatenate([i_same, i_diff])
    out[:, 1] = np.concatenate([j_same, j_diff])
    out[:, 2] = np.repeat([1, 0], [n_same, n_diff])
    return out[rng.permutation(n_pairs)]
