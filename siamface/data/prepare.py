"""From a `DataConfig` to what training needs: a seeded identity split, decoded image stores, pairs.

Identity folders: identities are split into train / validation / test and checked disjoint, so no image
of a validation or test person reaches training. A pairs file (LFW or CSV) gives fixed training pairs;
its validation pairs come from a second file or from a seeded tenth of its identities, removed from
training (pairs that straddle the two sides are dropped).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import DataError, NoFaceError
from .folders import (
    ImageRecord,
    filter_identities,
    group_array,
    identities,
    label_array,
    omniglot_drawer,
    scan_folder,
)
from .pairs import Pair, check_pairable, read_csv_pairs, read_lfw_pairs, sample_pairs
from .splits import Split, assert_disjoint, split_identities
from .store import ImageStore

if TYPE_CHECKING:
    from ..config import DataConfig, PreprocessConfig

Loader = Callable[[Path, "PreprocessConfig"], np.ndarray]  # preprocess.load_input: a path -> the model's uint8 input


@dataclass
class Prepared:
    """Decoded training and validation data. Pairs are int64 rows [i, j, same] into the image tensors."""

    split: Split
    train_store: ImageStore
    train_labels: np.ndarray
    train_groups: np.ndarray | None
    val_store: ImageStore
    val_labels: np.ndarray
    val_groups: np.ndarray | None
    train_pairs: np.ndarray | None = None
    val_pairs: np.ndarray | None = None

    @property
    def train_images(self) -> torch.Tensor:
        return self.train_store.images

    @property
    def val_images(self) -> torch.Tensor:
        return self.val_store.images

    def sample_train_pairs(self, n: int, rng: np.random.Generator, within_group: bool = False) -> np.ndarray:
        """Fresh balanced pairs from the training identities, or the pairs file's pairs in a new order."""
        if self.train_pairs is not None:
            return self.train_pairs[rng.permutation(len(self.train_pairs))]
        groups = self.train_groups if within_group else None
        return sample_pairs(self.train_labels, n, rng, groups=groups, within_group=within_group)


_MEMO: dict[tuple[Path, str], np.ndarray | None] | None = None


def keep_decoded_images() -> None:
    """Remember every decoded training image in this process (keyed by path and preprocessing), so runs
    that share images (the ten LFW View 2 folds) detect and align each photo once."""
    global _MEMO
    if _MEMO is None:
        _MEMO = {}


def _memo_key(pre: PreprocessConfig) -> str:
    return json.dumps(dataclasses.asdict(pre), sort_keys=True)


def remember_decoded(pre: PreprocessConfig, decoded: dict[Path, np.ndarray | None]) -> None:
    """Seed the memo of `keep_decoded_images` with photos decoded elsewhere (None: no face was found), e.g.
    from a benchmark's cache file of aligned faces."""
    keep_decoded_images()
    assert _MEMO is not None
    key = _memo_key(pre)
    _MEMO.update({(Path(p), key): a for p, a in decoded.items()})


def decode_images(paths: list[Path], pre: PreprocessConfig, loader: Loader, progress: bool) -> ImageStore:
    """Decode with the model's preprocessing (`loader`); training photos where no face is found are left out."""
    key = _memo_key(pre)

    def decode(p: Path) -> np.ndarray | None:
        try:
            return loader(p, pre)
        except NoFaceError:
            return None

    def load(p: Path) -> np.ndarray | None:
        if _MEMO is None:
            return decode(p)
        if (p, key) not in _MEMO:
            _MEMO[(p, key)] = decode(p)
        return _MEMO[(p, key)]

    return ImageStore.from_paths(paths, pre.channels, pre.size, crop=pre.crop, progress=progress, loader=load)


def _kept(records: list[ImageRecord], store: ImageStore) -> list[ImageRecord]:
    return [r for r in records if r.path in store.index]


def _split(cfg: DataConfig, ids: list[str], seed: int) -> Split:
    if cfg.val_ids or cfg.test_ids or cfg.train_ids:
        unknown = sorted(set(cfg.train_ids + cfg.val_ids + cfg.test_ids) - set(ids))
        if unknown:
            raise DataError(f"{cfg.root}: identities not found: {', '.join(unknown[:5])}")
        held = set(cfg.val_ids) | set(cfg.test_ids)
        train = cfg.train_ids or tuple(i for i in ids if i not in held)
        return Split(tuple(sorted(train)), tuple(sorted(cfg.val_ids)), tuple(sorted(cfg.test_ids)))
    return split_identities(ids, cfg.n_val, cfg.n_test, seed)


def _drawers(records: list[ImageRecord], drawers: tuple[int, ...]) -> list[ImageRecord]:
    """Only the images by these Omniglot drawers (all images when none are given)."""
    if not drawers:
        return records
    kept = [r for r in records if omniglot_drawer(r.path) in set(drawers)]
    if not kept:
        raise DataError(f"no images by drawers {drawers} (expected Omniglot names <id>_<drawer>.png)")
    return kept


def _split_by_groups(cfg: DataConfig, records: list[ImageRecord]) -> tuple[list[ImageRecord], Split]:
    """Validation identities from `val_root` and/or `val_groups`; everything else of `root` trains."""
    val_pool = scan_folder(cfg.val_root) if cfg.val_root else records
    val_ids = sorted({r.identity for r in val_pool if not cfg.val_groups or r.group in cfg.val_groups})
    if cfg.val_groups and not val_ids:
        raise DataError(f"{cfg.val_root or cfg.root}: no identities in groups {', '.join(cfg.val_groups)}")
    held = set(val_ids) | set(cfg.test_ids)
    train_ids = sorted({r.identity for r in records} - held)
    merged = records + [r for r in val_pool if r.identity in set(val_ids)] if cfg.val_root else records
    return merged, Split(tuple(train_ids), tuple(val_ids), tuple(sorted(cfg.test_ids)))


def _check_val_way(cfg: DataConfig, n_ids: int, val_way: int) -> None:
    """N-way one-shot validation needs N validation identities: refused, rather than run fewer-way than the
    config (saved with the model) says."""
    if n_ids < 2:
        raise DataError(f"{cfg.val_root or cfg.root}: {n_ids} validation identit{'y' if n_ids == 1 else 'ies'}; "
                        "different pairs need at least two")
    if val_way > n_ids:
        raise DataError(f"{cfg.val_root or cfg.root}: val_way {val_way} (train.val_way) needs {val_way} validation "
                        f"identities, the validation split has {n_ids}; use {n_ids} or less, or hold out more "
                        "identities for validation (data.n_val)", option="val_way")


def prepare_data(cfg: DataConfig, pre: PreprocessConfig, seed: int, loader: Loader, progress: bool = True,
                 val_way: int = 2) -> Prepared:
    """Split, decode (with `loader`, the model's preprocessing) and index the data of one run. `val_way`:
    the one-shot validation's N (identity folders), checked against the validation identities before
    anything is decoded."""
    if cfg.pairs_file:
        return _prepare_pairs(cfg, pre, seed, loader, progress)
    if not cfg.root:
        raise DataError("no training data: give an identity folder (root) or a pairs file")
    records = scan_folder(cfg.root)
    if cfg.val_root or cfg.val_groups:
        records, split = _split_by_groups(cfg, records)
    else:
        split = _split(cfg, identities(records), seed)
    if not split.val:
        raise DataError(f"{cfg.root}: the validation split is empty; model selection needs held-out identities")
    _check_val_way(cfg, len(split.val), val_way)
    train_rec = _drawers(filter_identities(records, split.train), cfg.train_drawers)
    val_rec = _drawers(filter_identities(records, split.val), cfg.val_drawers)
    train_store = decode_images([r.path for r in train_rec], pre, loader, progress)
    val_store = decode_images([r.path for r in val_rec], pre, loader, progress)
    train_rec, val_rec = _kept(train_rec, train_store), _kept(val_rec, val_store)
    train_labels, val_labels = label_array(train_rec)[0], label_array(val_rec)[0]
    check_pairable(train_labels, cfg.root, "training")
    check_pairable(val_labels, cfg.val_root or cfg.root, "validation")
    _check_val_way(cfg, len(np.unique(val_labels)), val_way)  # photos without a face may have removed some
    return Prepared(split, train_store, train_labels, group_array(train_rec),
                    val_store, val_labels, group_array(val_rec))


def read_pairs(path: str | Path) -> list[Pair]:
    """A CSV (`image_a,image_b,label`) or an LFW pairs file; LFW images are looked up beside it."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        return read_csv_pairs(p)
    root = p.parent / "deepfunneled" if (p.parent / "deepfunneled").is_dir() else p.parent
    return read_lfw_pairs(p, root)


def _pair_id(path: Path) -> str:
    return path.parent.name


def _index_pairs(pairs: list[Pair], pre: PreprocessConfig, loader: Loader, progress: bool
                 ) -> tuple[ImageStore, np.ndarray]:
    paths = list(dict.fromkeys(p for pair in pairs for p in (pair.a, pair.b)))
    store = decode_images(paths, pre, loader, progress)
    rows = np.array([[store.index[p.a], store.index[p.b], int(p.same)] for p in pairs
                     if p.a in store.index and p.b in store.index], dtype=np.int64).reshape(-1, 3)
    return store, rows


def _prepare_pairs(cfg: DataConfig, pre: PreprocessConfig, seed: int, loader: Loader, progress: bool) -> Prepared:
    pairs = read_pairs(cfg.pairs_file)
    ids = sorted({_pair_id(p) for pair in pairs for p in (pair.a, pair.b)})
    if cfg.val_pairs_file:
        val = read_pairs(cfg.val_pairs_file)
        val_ids = sorted({_pair_id(p) for pair in val for p in (pair.a, pair.b)})
        train_ids = [i for i in ids if i not in set(val_ids)]
    else:
        rng = np.random.default_rng(seed)
        val_ids = sorted(rng.choice(ids, size=max(2, len(ids) // 10), replace=False).tolist())
        train_ids = [i for i in ids if i not in set(val_ids)]
        val = [p for p in pairs if {_pair_id(p.a), _pair_id(p.b)} <= set(val_ids)]
    train = [p for p in pairs if {_pair_id(p.a), _pair_id(p.b)} <= set(train_ids)]
    if not train or not val:
        raise DataError(f"{cfg.pairs_file}: too few pairs left after holding out validation identities")
    split = Split(tuple(train_ids), tuple(val_ids), ())
    assert_disjoint(train=train_ids, val=val_ids)
    train_store, train_rows = _index_pairs(train, pre, loader, progress)
    val_store, val_rows = _index_pairs(val, pre, loader, progress)
    if len(set(val_rows[:, 2].tolist())) < 2:
        raise DataError(f"{cfg.val_pairs_file or cfg.pairs_file}: the validation pairs need both same and different "
                        f"pairs, got {int(val_rows[:, 2].sum())} same of {len(val_rows)}")
    empty = np.zeros(0, dtype=np.int64)
    return Prepared(split, train_store, empty, None, val_store, empty, None, train_rows, val_rows)
