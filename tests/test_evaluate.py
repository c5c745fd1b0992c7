"""Evaluation: cached embeddings give the naive pairwise answers; reports; leakage refusals.

Covers siamface.evaluate (one-shot and pair scoring) (run_evaluation) and siamface.lineage (check_no_leakage).
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import TinyRun, att_dir, copy_run, one_thread, read_meta, tiny_run, write_meta

from siamface import metrics
from siamface.checkpoint import load_model
from siamface.config import PreprocessConfig
from siamface.data import OMNIGLOT_RUN_ALPHABETS, Pair, read_lfw_pairs, read_omniglot_runs
from siamface.embed import embed_batches, store_for
from siamface.errors import DataError, ImageError, LeakageError
from siamface.evaluate import evaluate_oneshot, evaluate_pairs, oneshot_scores, run_evaluation
from siamface.lineage import check_no_leakage
from siamface.models import SiameseNet, create_model
from siamface.preprocess import load_input, normalize

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
PRE = PreprocessConfig(size=32)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> TinyRun:
    return tiny_run(tmp_path_factory, data_root)


@pytest.fixture(scope="module")
def untrained() -> SiameseNet:
    torch.manual_seed(0)
    return create_model("tiny", preprocess=PRE).eval()


@pytest.fixture(scope="module")
def omniglot_tasks(data_root: Path) -> list:
    tasks = read_omniglot_runs(data_root / "omniglot" / "all_runs")
    return tasks[:20] + tasks[200:220]  # two official runs (run01 and run11), 20 trials each


@pytest.fixture(scope="module")
def one_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An all_runs folder holding only run01 (20 official trials): cheap Omniglot-runs evaluations."""
    root = tmp_path_factory.mktemp("all_runs")
    shutil.copytree(data_root / "omniglot" / "all_runs" / "run01", root / "run01")
    return root


def naive_probabilities(model: SiameseNet, pre: PreprocessConfig, pairs: Sequence[tuple[Path, Path]]) -> np.ndarray:
    """p(same) of every pair by decoding both files and running model.forward on the pair: no caching."""
    xa = torch.from_numpy(np.stack([load_input(a, pre) for a, _ in pairs]))
    xb = torch.from_numpy(np.stack([load_input(b, pre) for _, b in pairs]))
    with torch.no_grad():
        return torch.sigmoid(model.eval()(normalize(xa, pre), normalize(xb, pre))).numpy()


# ---- cached scoring equals naive scoring ----------------------------------------------------------------------

def test_oneshot_with_cached_embeddings_equals_naive_pairwise_scoring(untrained: SiameseNet,
                                                                       omniglot_tasks: list) -> None:
    tasks = omniglot_tasks
    naive = naive_probabilities(untrained, PRE, [(t.query, c) for t in tasks for c in t.candidates])
    naive = naive.reshape(len(tasks), -1)
    store = store_for([p for t in tasks for p in (t.query, *t.candidates)], PRE)
    emb = embed_batches(untrained, store.images, PRE)
    q = np.array([store.index[t.query] for t in tasks])
    c = np.array([[store.index[p] for p in t.candidates] for t in tasks])
    cached = oneshot_scores(untrained, emb, q, c)
    assert cached.shape == (40, 20)
    np.testing.assert_allclose(cached, naive, atol=1e-5)
    answers = np.array([t.answer for t in tasks])
    out = evaluate_oneshot(untrained, PRE, tasks)
    assert out["oneshot_accuracy"] == pytest.approx(metrics.oneshot_accuracy(naive, answers))
    assert np.array_equal(cached.argmax(1), naive.argmax(1))
    assert out["n_tasks"] == 40 and out["n_way"] == 20


def test_oneshot_embeds_each_distinct_image_once(untrained: SiameseNet, omniglot_tasks: list) -> None:
    distinct = {p for t in omniglot_tasks for p in (t.query, *t.candidates)}
    out = evaluate_oneshot(untrained, PRE, omniglot_tasks)
    assert out["embeddings"] == len(distinct) == 40 + 40  # 40 queries, 20 candidates per run
    assert out["embeddings"] < len(omniglot_tasks) * 21  # not one pass per (task, image)
    single_run = evaluate_oneshot(untrained, PRE, omniglot_tasks[:20])
    assert single_run["embeddings"] == 40


def test_evaluate_pairs_equals_naive_scoring_on_lfw(untrained: SiameseNet, data_root: Path) -> None:
    lfw = data_root / "lfw"
    pairs = read_lfw_pairs(lfw / "pairsDevTest.txt", lfw / "deepfunneled")
    pairs = pairs[:20] + pairs[-20:]  # 20 matched, 20 mismatched
    summary, labels, scores = evaluate_pairs(untrained, PRE, pairs)
    naive = naive_probabilities(untrained, PRE, [(p.a, p.b) for p in pairs])
    np.testing.assert_allclose(scores, naive, atol=1e-5)
    assert labels.tolist() == [1] * 20 + [0] * 20
    assert (summary["n_pairs"], summary["n_same"], summary["n_diff"]) == (40, 20, 20)
    assert summary["auc"] == pytest.approx(metrics.roc_auc(labels, naive), abs=1e-3)
    assert ((scores >= 0) & (scores <= 1)).all()


# ---- reports ----------------------------------------------------------------------------------------------

def test_report_on_the_test_split(tiny: TinyRun, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    rep = run_evaluation(str(tiny.path), split="test", out=str(out), way=5, tasks=20, n_pairs=100)
    for name in ("report.json", "report.md", "roc.png", "hist.png"):
        assert (out / name).is_file(), name
    assert (out / "roc.png").read_bytes()[:4] == b"\x89PNG"
    meta = read_meta(tiny.path)
    assert rep["evaluated"] == "test" and rep["architecture"] == "tiny"
    assert rep["identities"] == 10 and rep["images"] == 100
    assert (rep["n_pairs"], rep["oneshot_way"], rep["oneshot_tasks"]) == (100, 5, 20)
    assert rep["calibrated_threshold"] == meta["calibration"]["threshold"]  # applied as stored, never re-tuned
    assert rep["threshold_source"] == meta["calibration"]["source"]
    acc, far, frr = (rep[f"{k}_at_calibrated_threshold"] for k in ("accuracy", "false_accept_rate",
                                                                    "false_reject_rate"))
    assert 0.0 <= acc <= 1.0
    errors = far * rep["n_diff"] + frr * rep["n_same"]
    assert acc == pytest.approx(1.0 - errors / rep["n_pairs"])
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps({k: v for k, v in rep.items() if k != "out"}))
    md = (out / "report.md").read_text()
    assert "accuracy_at_calibrated_threshold" in md and meta["calibration"]["source"] in md


def test_report_goes_into_the_model_folder_by_default(tiny: TinyRun, tmp_path: Path) -> None:
    run = copy_run(tiny.path, tmp_path / "run")
    rep = run_evaluation(str(run), split="test", way=5, tasks=10, n_pairs=40)
    assert Path(rep["out"]) == run / "eval-test"
    assert (run / "eval-test" / "report.json").is_file()


def test_evaluation_is_deterministic_for_a_seed(tiny: TinyRun, tmp_path: Path) -> None:
    kw = dict(split="test", way=5, tasks=20, n_pairs=60)
    a = run_evaluation(str(tiny.path), out=str(tmp_path / "a"), seed=3, **kw)
    b = run_evaluation(str(tiny.path), out=str(tmp_path / "b"), seed=3, **kw)
    keys = ("auc", "eer", "oneshot_accuracy", "accuracy_at_calibrated_threshold")
    assert [a[k] for k in keys] == [b[k] for k in keys]


# ---- leakage ----------------------------------------------------------------------------------------------

def test_check_no_leakage_refuses_training_and_validation_identities(tiny: TinyRun) -> None:
    card = load_model(tiny.path).card
    split = card.split
    with pytest.raises(LeakageError, match=split["train"][0]):
        check_no_leakage(card, {split["train"][0], split["test"][0]}, "evaluation set")
    with pytest.raises(LeakageError, match=split["val"][0]):
        check_no_leakage(card, set(split["val"]), "evaluation set")
    check_no_leakage(card, set(split["test"]), "evaluation set")  # held-out identities are fine


def _att_pairs_csv(path: Path, att: Path, ids: Sequence[str]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_a", "image_b", "label"])
        for a, b in zip(ids, ids[1:]):
            w.writerow([att / a / "1.pgm", att / a / "2.pgm", 1])
            w.writerow([att / a / "3.pgm", att / b / "3.pgm", 0])
    return path


def test_pairs_of_training_identities_are_refused(tiny: TinyRun, data_root: Path, tmp_path: Path) -> None:
    split = read_meta(tiny.path)["split"]
    leaky = _att_pairs_csv(tmp_path / "leaky.csv", att_dir(data_root), [split["test"][0], split["train"][0]])
    with pytest.raises(LeakageError, match="training"):
        run_evaluation(str(tiny.path), pairs=str(leaky), out=str(tmp_path / "r1"))
    assert not (tmp_path / "r1").exists()
    clean = _att_pairs_csv(tmp_path / "clean.csv", att_dir(data_root), split["test"][:4])
    rep = run_evaluation(str(tiny.path), pairs=str(clean), out=str(tmp_path / "r2"))
    assert rep["evaluated"] == "clean" and rep["n_pairs"] == 6


def _with_split(tiny: TinyRun, dst: Path, train: list[str], val: list[str]) -> Path:
    run = copy_run(tiny.path, dst)
    meta = read_meta(run)
    meta["split"] = {"train": train, "val": val, "test": []}
    write_meta(run, meta)  # the weights are unchanged, so their hash still matches
    return run


def test_omniglot_runs_refused_when_a_run_alphabet_was_used(tiny: TinyRun, data_root: Path, tmp_path: Path) -> None:
    alphabet = OMNIGLOT_RUN_ALPHABETS[0]
    run = _with_split(tiny, tmp_path / "run", [f"{alphabet}/character01", "Latin/character01"],
                      ["Angelic/character01"])
    with pytest.raises(LeakageError, match=alphabet):
        run_evaluation(str(run), omniglot_runs=str(data_root / "omniglot" / "all_runs"), out=str(tmp_path / "o"))
    run_val = _with_split(tiny, tmp_path / "run_val", ["Latin/character01"], [f"{alphabet}/character02"])
    with pytest.raises(LeakageError):  # selecting a model on a run alphabet leaks too
        run_evaluation(str(run_val), omniglot_runs=str(data_root / "omniglot" / "all_runs"))


def test_omniglot_runs_evaluated_when_no_run_alphabet_was_used(tiny: TinyRun, one_run: Path, tmp_path: Path) -> None:
    run = _with_split(tiny, tmp_path / "run", ["Latin/character01", "Greek/character02"], ["Angelic/character01"])
    rep = run_evaluation(str(run), omniglot_runs=str(one_run), out=str(tmp_path / "o"))
    assert (rep["n_tasks"], rep["n_way"], rep["embeddings"]) == (20, 20, 40)
    assert 0.0 <= rep["oneshot_accuracy"] <= 1.0
    assert "accuracy_at_calibrated_threshold" not in rep  # one-shot only: no pair scores to threshold
    assert (tmp_path / "o" / "report.json").is_file()


def test_omniglot_runs_refused_for_identities_with_a_set_prefix(tiny: TinyRun, one_run: Path,
                                                                tmp_path: Path) -> None:
    run = _with_split(tiny, tmp_path / "run", ["images_evaluation/Atlantean/character01"],
                      ["images_evaluation/Angelic/character01"])
    with pytest.raises(LeakageError):
        run_evaluation(str(run), omniglot_runs=str(one_run), out=str(tmp_path / "o"))


def test_pairs_leakage_compares_folder_names_with_the_last_path_component(tiny: TinyRun) -> None:
    from dataclasses import replace

    card = load_model(tiny.path).card
    # trained from --data lfw: identities are 'deepfunneled/Name'
    lfw_split = {**card.split, "train": tuple("deepfunneled/" + i for i in card.split["train"])}
    card = replace(card, split=lfw_split)
    with pytest.raises(LeakageError):
        check_no_leakage(card, {lfw_split["train"][0].split("/")[-1]}, "pairs", leaf=True)


def test_a_fine_tuned_model_inherits_the_identities_of_its_init(tiny: TinyRun, data_root: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from siamface.training import train

    init_split = tiny.meta["split"]
    # B holds out other subjects, some of which trained A: evaluation must refuse them
    data = replace(tiny.run.data, n_val=0, n_test=0, val_ids=tuple(init_split["test"][:5]),
                   test_ids=tuple(init_split["train"][:10]))
    run = replace(tiny.run, data=data, train=replace(tiny.run.train, init=str(tiny.path), epochs=1))
    meta = train(run, tmp_path / "ft")
    assert set(init_split["train"]) <= set(meta["lineage_identities"])
    assert meta["init_weights_sha256"] == load_model(tiny.path).card.weights_sha256  # which weights it started from
    with pytest.raises(LeakageError):
        run_evaluation(str(tmp_path / "ft"), split="test", way=5, tasks=10, n_pairs=40)


def test_evaluate_pairs_skips_pairs_with_unusable_images_and_counts_them(untrained: SiameseNet, data_root: Path,
                                                                         tmp_path: Path) -> None:
    """Issue 11, fault 13: metrics on the pairs that can be scored; strict (the default) still raises."""
    lfw = data_root / "lfw"
    pairs = read_lfw_pairs(lfw / "pairsDevTest.txt", lfw / "deepfunneled")
    pairs = pairs[:10] + pairs[-10:]
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture\n")
    broken = [Pair(tmp_path / "gone.jpg", pairs[0].b, True, 0), Pair(pairs[-1].a, text, False, 0),
              Pair(text, tmp_path / "gone.jpg", False, 0)]
    summary, labels, scores = evaluate_pairs(untrained, PRE, pairs + broken, skip_errors=True, source="p.csv")
    clean, clean_labels, clean_scores = evaluate_pairs(untrained, PRE, pairs)
    np.testing.assert_array_equal(labels, clean_labels)
    np.testing.assert_allclose(scores, clean_scores, atol=1e-6)
    assert summary["n_pairs"] == 20 and summary["pairs_skipped"] == 3
    assert summary["skipped_reasons"] == {"unreadable": 2, "missing": 1}
    assert summary["auc"] == clean["auc"]
    with pytest.raises(ImageError, match="gone.jpg: no such file"):
        evaluate_pairs(untrained, PRE, pairs + broken)


def test_evaluate_pairs_of_one_class_names_the_source(untrained: SiameseNet, data_root: Path, tmp_path: Path) -> None:
    lfw = data_root / "lfw"
    same = read_lfw_pairs(lfw / "pairsDevTest.txt", lfw / "deepfunneled")[:4]
    with pytest.raises(DataError, match=r"^mine\.csv: only same pairs to score; the metrics need both"):
        evaluate_pairs(untrained, PRE, same, source="mine.csv")
    gone = [Pair(tmp_path / "x.jpg", same[0].a, False, 0)]
    with pytest.raises(DataError, match=r"^mine\.csv: only same pairs to score \(1 skipped: 1 missing\)"):
        evaluate_pairs(untrained, PRE, same + gone, skip_errors=True, source="mine.csv")
