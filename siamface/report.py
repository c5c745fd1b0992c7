"""`siamface evaluate`: run one evaluation of a trained model and write report.json, report.md and plots.

Every evaluation first checks for leakage: no identity the model was trained or selected on may appear in
what it is evaluated on. The calibrated threshold is applied as stored (never re-tuned on test data),
so the report shows the accuracy a user would actually get, beside threshold-free metrics.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics
from .checkpoint import LoadedModel, atomic_write_bytes, atomic_write_json, load_model
from .data import (
    OMNIGLOT_RUN_ALPHABETS,
    assert_disjoint,
    check_pairable,
    filter_identities,
    group_array,
    label_array,
    pair_identities,
    read_omniglot_runs,
    scan_folder,
)
from .data.prepare import read_pairs
from .errors import DataError
from .evaluate import evaluate_identities, evaluate_oneshot, evaluate_pairs, reasons_text, store_for


def _trained_on(lm: LoadedModel) -> set[str]:
    """Identities the model (and any model it was fine-tuned from, `lineage_identities`) trained or selected on."""
    split = lm.meta.get("split", {})
    return set(split.get("train", ())) | set(split.get("val", ())) | set(lm.meta.get("lineage_identities", ()))


def check_no_leakage(lm: LoadedModel, evaluated: set[str], what: str, leaf: bool = False) -> None:
    """LeakageError when an identity of the model's training or validation split is being evaluated.

    leaf: `evaluated` holds folder names of images (pairs files), so compare the last path component of the
    model's identities (trained with --data lfw, an identity is 'deepfunneled/Name'; a pairs file says 'Name').
    """
    trained = _trained_on(lm)
    if leaf:
        trained = {i.rsplit("/", 1)[-1] for i in trained}
    assert_disjoint(**{"model training/validation": trained, what: evaluated})


def _lfw_root(data: str | None) -> Path:
    default = Path(os.environ.get("SIAMFACE_DATA", Path.cwd().parent / "shared" / "data"))
    root = Path(data) if data else default / "lfw"
    root = root / "lfw" if (root / "lfw").is_dir() else root
    if not (root / "pairs.txt").is_file():
        raise DataError(f"{root}: not an LFW folder (pairs.txt missing); pass --data")
    return root


def _eval_identity_split(lm: LoadedModel, split: str, data: str | None, way: int, tasks: int, n_pairs: int,
                         seed: int, device: str) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    ids = lm.meta.get("split", {}).get(split)
    if not ids:
        raise DataError(f"{lm.path}: the model records no {split!r} identities to evaluate on")
    root = data or lm.meta["data"]["root"]
    records = filter_identities(scan_folder(root), ids)
    if split == "test":
        check_no_leakage(lm, set(ids), "test split")
    labels, _ = label_array(records)
    check_pairable(labels, root, f"{split}-split")
    store = store_for([r.path for r in records], lm.preprocess)
    within = bool(lm.meta["data"].get("within_group"))
    summary, y, s = evaluate_identities(lm.model, lm.preprocess, store, labels, n_way=way, n_tasks=tasks,
                                        n_pairs=n_pairs, seed=seed, groups=group_array(records),
                                        within_group=within, device=device)
    summary["data"] = f"{root}: {split} split, {len(ids)} identities"
    return summary, y, s


def _eval_pairs(lm: LoadedModel, pairs_file: Path, device: str,
                strict: bool = False) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Metrics on the pairs it can score; a pair with an unreadable image is skipped and counted (strict: an
    error)."""
    pairs = read_pairs(pairs_file)
    check_no_leakage(lm, pair_identities(pairs), str(pairs_file), leaf=True)
    summary, y, s = evaluate_pairs(lm.model, lm.preprocess, pairs, device=device, progress=True,
                                   skip_errors=not strict, source=str(pairs_file))
    summary["data"] = str(pairs_file)
    return summary, y, s


def _eval_omniglot(lm: LoadedModel, runs: str, device: str) -> dict[str, Any]:
    used = {part for i in _trained_on(lm) for part in i.split("/")}  # any component may be an alphabet
    assert_disjoint(**{"model training/validation alphabets": used, "official run alphabets": OMNIGLOT_RUN_ALPHABETS})
    out = evaluate_oneshot(lm.model, lm.preprocess, read_omniglot_runs(runs), device=device)
    out["data"] = f"{runs}: 20 official runs, 20-way within-alphabet"
    return out


def run_evaluation(model: str, *, split: str | None = None, pairs: str | None = None, protocol: str | None = None,
                   omniglot_runs: str | None = None, data: str | None = None, out: str | None = None,
                   way: int = 20, tasks: int = 400, n_pairs: int = 4000, seed: int = 0,
                   device: str = "cpu", strict: bool = False) -> dict[str, Any]:
    """Evaluate one model on one source and write the report folder; returns the report dict.
    strict: on a pairs file, an image that cannot be used is an error instead of a skipped pair."""
    t0 = time.perf_counter()
    lm = load_model(model, device=device)
    y = s = None
    if omniglot_runs:
        what, summary = "omniglot-runs", _eval_omniglot(lm, omniglot_runs, device)
    elif pairs or protocol:
        if protocol:
            root = _lfw_root(data)
            pairs = str(root / ("pairsDevTest.txt" if protocol == "lfw-view1" else "pairs.txt"))
        what = protocol or Path(pairs).stem  # type: ignore[arg-type]
        summary, y, s = _eval_pairs(lm, Path(pairs), device, strict)  # type: ignore[arg-type]
    else:
        what = split or "test"
        summary, y, s = _eval_identity_split(lm, what, data, way, tasks, n_pairs, seed, device)
    report = _report(lm, what, summary, y, s, time.perf_counter() - t0)
    folder = Path(out) if out else lm.path / f"eval-{what}"
    _write(folder, report, y, s)
    report["out"] = str(folder)
    return report


def _report(lm: LoadedModel, what: str, summary: dict[str, Any], y: np.ndarray | None, s: np.ndarray | None,
            seconds: float) -> dict[str, Any]:
    rep: dict[str, Any] = {"model": str(lm.path), "architecture": lm.meta["model"]["name"], "evaluated": what,
                           **summary, "seconds": round(seconds, 2), "command": " ".join(sys.argv)}
    if y is not None and s is not None and lm.threshold is not None:
        rep["calibrated_threshold"] = lm.threshold
        rep["threshold_source"] = lm.meta["calibration"]["source"]
        rep["accuracy_at_calibrated_threshold"] = metrics.accuracy_at(y, s, lm.threshold)
        pred = s >= lm.threshold
        rep["false_accept_rate_at_calibrated_threshold"] = float(pred[y == 0].mean())
        rep["false_reject_rate_at_calibrated_threshold"] = float((~pred[y == 1]).mean())
    return rep


def _markdown(rep: dict[str, Any]) -> str:
    lines = [f"# siamface evaluation: {rep['evaluated']}", "", f"- model: `{rep['model']}` ({rep['architecture']})",
             f"- data: {rep.get('data', '')}", f"- command: `{rep['command']}`", "", "| metric | value |", "|---|---|"]
    for k, v in rep.items():
        if isinstance(v, float):
            lines.append(f"| {k} | {v:.4f} |")
        elif isinstance(v, int) and not isinstance(v, bool):
            lines.append(f"| {k} | {v} |")
    if rep.get("skipped_reasons"):
        lines += ["", f"Skipped pairs (an image could not be used): {reasons_text(rep['skipped_reasons'])}"]
    if "threshold_source" in rep:
        lines += ["", f"Threshold provenance: {rep['threshold_source']}"]
    return "\n".join(lines) + "\n"


def _write(folder: Path, rep: dict[str, Any], y: np.ndarray | None, s: np.ndarray | None) -> None:
    from .plots import plot_histogram, plot_roc

    folder.mkdir(parents=True, exist_ok=True)
    if y is not None and s is not None:
        plot_roc(y, s, folder / "roc.png", title=f"ROC: {rep['evaluated']}")
        plot_histogram(y, s, folder / "hist.png", rep.get("calibrated_threshold"), title=f"scores: {rep['evaluated']}")
    atomic_write_bytes(folder / "report.md", _markdown(rep).encode())
    atomic_write_json(folder / "report.json", rep)
