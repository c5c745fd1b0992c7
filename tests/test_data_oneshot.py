"""The official Omniglot runs and random one-shot tasks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siamface.data import (
    OMNIGLOT_RUN_ALPHABETS,
    OMNIGLOT_VAL_ALPHABETS,
    make_oneshot_tasks,
    read_omniglot_runs,
)
from siamface.errors import DataError


def test_read_omniglot_runs(data_root: Path) -> None:
    runs = data_root / "omniglot/all_runs"
    tasks = read_omniglot_runs(runs)
    assert len(tasks) == 400
    assert all(len(t.candidates) == 20 for t in tasks)
    assert tasks[0].candidates[0] == runs / "run01/training/class01.png"
    assert tasks[0].query == runs / "run01/test/item01.png"
    assert tasks[0].answer == 7  # class_labels.txt: item01 -> class08
    answers = np.array([t.answer for t in tasks])
    assert answers.min() >= 0 and answers.max() <= 19 and len(set(answers.tolist())) == 20
    files = {t.query for t in tasks} | {c for t in tasks for c in t.candidates}
    assert len(files) == 800 and all(f.is_file() for f in files)
    for k in range(20):  # within a run, each training image is the answer exactly once
        assert sorted(answers[20 * k : 20 * k + 20].tolist()) == list(range(20))


def test_omniglot_alphabet_constants(data_root: Path) -> None:
    evaluation = {p.name for p in (data_root / "omniglot/images_evaluation").iterdir() if p.is_dir()}
    assert set(OMNIGLOT_VAL_ALPHABETS) | set(OMNIGLOT_RUN_ALPHABETS) == evaluation
    assert not set(OMNIGLOT_VAL_ALPHABETS) & set(OMNIGLOT_RUN_ALPHABETS)
    assert len(OMNIGLOT_VAL_ALPHABETS) == len(OMNIGLOT_RUN_ALPHABETS) == 10


def test_runs_use_no_validation_alphabet(data_root: Path) -> None:
    """Run images are renamed copies; compare pixels of a sample against every validation-alphabet image."""
    val_pixels = {
        Image.open(p).tobytes()
        for name in OMNIGLOT_VAL_ALPHABETS
        for p in (data_root / "omniglot/images_evaluation" / name).glob("*/*.png")
    }
    assert len(val_pixels) > 5000
    runs = data_root / "omniglot/all_runs"
    sample = [runs / f"run{k:02d}/training/class{c:02d}.png" for k in range(1, 21) for c in (1, 20)]
    assert not any(Image.open(p).tobytes() in val_pixels for p in sample)
    # positive control: run01 images are found among Atlantean's (pixel-identical, different file names)
    atlantean_dir = data_root / "omniglot/images_evaluation/Atlantean"
    atlantean = {Image.open(p).tobytes() for p in atlantean_dir.glob("*/*.png")}
    assert Image.open(runs / "run01/training/class01.png").tobytes() in atlantean


def test_read_runs_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no runNN"):
        read_omniglot_runs(tmp_path)
    run = tmp_path / "run01"
    (run / "training").mkdir(parents=True)
    (run / "test").mkdir()
    (run / "training" / "class01.png").write_bytes(b"x")
    (run / "test" / "item01.png").write_bytes(b"x")
    (run / "class_labels.txt").write_text("run01/test/item01.png run01/training/class02.png\n")
    with pytest.raises(DataError, match=r"class_labels\.txt:1"):
        read_omniglot_runs(tmp_path)


def _labels() -> tuple[np.ndarray, np.ndarray]:
    """40 classes of 1-4 images; groups 0 and 1 have 18 classes each, group 2 only 4."""
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(40), rng.integers(1, 5, 40))
    rng.shuffle(labels)
    return labels, np.where(labels < 18, 0, np.where(labels < 36, 1, 2))


def test_make_oneshot_tasks() -> None:
    labels, _ = _labels()
    query, cand, answer = make_oneshot_tasks(labels, n_way=10, n_tasks=500, seed=0)
    assert query.shape == (500,) and cand.shape == (500, 10) and answer.shape == (500,)
    assert query.dtype == cand.dtype == answer.dtype == np.int64
    truth = cand[np.arange(500), answer]
    assert np.all(labels[truth] == labels[query]) and np.all(truth != query)
    for t in range(500):
        others = np.delete(cand[t], answer[t])
        assert len(set(labels[others].tolist())) == 9 and labels[query[t]] not in labels[others]
        assert query[t] not in cand[t]
    counts = np.bincount(answer, minlength=10)
    assert counts.min() > 25  # spread over positions: a collapsed model cannot score by always picking 0
    again = make_oneshot_tasks(labels, n_way=10, n_tasks=500, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(again, (query, cand, answer), strict=True))


def test_make_oneshot_tasks_within_group() -> None:
    labels, groups = _labels()
    query, cand, _ = make_oneshot_tasks(labels, 10, 300, seed=1, groups=groups, within_group=True)
    assert np.all(groups[cand] == groups[query][:, None])
    assert set(groups[query].tolist()) <= {0, 1}  # group 2 has fewer than 10 classes: no task from it
    with pytest.raises(DataError, match="20-way"):
        make_oneshot_tasks(labels, 20, 10, seed=0, groups=groups, within_group=True)
    with pytest.raises(ValueError, match="n_way"):
        make_oneshot_tasks(labels, 1, 10, seed=0)
