"""prepare_data refuses data that cannot make pairs, naming the folder or pairs file (issue 11, fault 9)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siamface.config import DataConfig
from siamface.data.prepare import prepare_data
from siamface.errors import DataError
from siamface.models import default_preprocess
from siamface.preprocess import load_input

PRE = default_preprocess("tiny")


def _folder(root: Path, images_per_identity: dict[str, int]) -> Path:
    for ident, n in images_per_identity.items():
        (root / ident).mkdir(parents=True)
        for k in range(n):
            Image.fromarray(np.full((8, 8), 10 * k, dtype=np.uint8)).save(root / ident / f"{k}.png")
    return root


def test_training_identities_with_one_image_each_name_the_folder(tmp_path: Path) -> None:
    root = _folder(tmp_path / "faces", {f"p{k}": 1 for k in range(6)} | {"v0": 2, "v1": 2})
    cfg = DataConfig(root=str(root), val_ids=("v0", "v1"))
    with pytest.raises(DataError, match=rf"^{re.escape(str(root))}: no training identity has two images; same pairs"):
        prepare_data(cfg, PRE, seed=0, loader=load_input, progress=False)


def test_validation_identities_with_one_image_each_name_the_folder(tmp_path: Path) -> None:
    root = _folder(tmp_path / "faces", {"p0": 2, "p1": 2, "v0": 1, "v1": 1})
    with pytest.raises(DataError, match=rf"^{re.escape(str(root))}: no validation identity has two images"):
        prepare_data(DataConfig(root=str(root), val_ids=("v0", "v1")), PRE, seed=0, loader=load_input, progress=False)
    with pytest.raises(DataError, match=rf"^{re.escape(str(root))}: 1 validation identity; different pairs need"):
        prepare_data(DataConfig(root=str(root), val_ids=("p0",)), PRE, seed=0, loader=load_input, progress=False)


def _csv(path: Path, rows: list[tuple[str, str, int]]) -> Path:
    path.write_text("image_a,image_b,label\n" + "".join(f"{a},{b},{y}\n" for a, b, y in rows))
    return path


def test_validation_pairs_of_one_class_name_the_pairs_file(tmp_path: Path) -> None:
    _folder(tmp_path, {"a": 2, "b": 2, "c": 2, "d": 2})
    train = _csv(tmp_path / "train.csv", [("a/0.png", "a/1.png", 1), ("a/0.png", "b/0.png", 0)])
    val = _csv(tmp_path / "val.csv", [("c/0.png", "c/1.png", 1), ("d/0.png", "d/1.png", 1)])
    cfg = DataConfig(pairs_file=str(train), val_pairs_file=str(val))
    with pytest.raises(DataError, match=rf"^{re.escape(str(val))}: the validation pairs need both same and different"):
        prepare_data(cfg, PRE, seed=0, loader=load_input, progress=False)


def test_a_header_only_pairs_file_says_so(tmp_path: Path) -> None:
    empty = _csv(tmp_path / "train.csv", [])
    with pytest.raises(DataError, match=rf"^{re.escape(str(empty))}: the pairs file has no pairs"):
        prepare_data(DataConfig(pairs_file=str(empty)), PRE, seed=0, loader=load_input, progress=False)
