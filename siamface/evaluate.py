"""Verification and one-shot evaluation, and the `siamface evaluate` command that reports them.

`evaluate_pairs` scores a list of `Pair`s (LFW protocol files, CSV) and summarises them with
`metrics.verification_summary` (k-fold accuracy when the pairs carry folds). `evaluate_oneshot` runs
N-way one-shot tasks: 400 official Omniglot trials cost ~800 tower passes, not 16,000.

`run_evaluation` first checks for leakage: no identity the model (or an ancestor) trained or selected on
may appear in what it is evaluated on. The calibrated threshold is applied as stored (never re-tuned on
test data), so the report shows the accuracy a user would actually get, beside threshold-free metrics.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import metrics
from .calibration import wilson
from .checkpoint import LoadedModel, load_model
from .config import PreprocessConfig
from .data import (
    OMNIGLOT_RUN_ALPHABETS,
    ImageStore,
    OneShotTask,
    Pair,
    assert_disjoint,
    check_pairable,
    data_root,
    filter_identities,
    group_array,
    label_array,
    pair_identities,
    read_omniglot_runs,
    scan_folder,
)
from .data.prepare import read_pairs
from .embed import embed_batches, score_indices, store_for
from .errors import DataError, SiamfaceError
from .files import atomic_write_bytes, atomic_write_json, check_output_folder
from .lineage import check_no_leakage
from .models import SiameseNet


def pair_errors(pairs: Sequence[tuple[Path, Path]], errors: dict[Path, SiamfaceError]) -> list[SiamfaceError | None]:
    """For each pair, the error of its first image that could not be used (None when both could)."""
    return [errors.get(Path(a)) or errors.get(Path(b)) for a, b in pairs]


def count_reasons(failed: Sequence[SiamfaceError | None]) -> dict[str, int]:
    """{reason: number of pairs} over the pairs that failed, most frequent first."""
    counts = Counter(e.reason for e in failed if e is not None)
    return dict(counts.most_common())


def evaluate_pairs(
    model: SiameseNet, pre: PreprocessConfig, pairs: Sequence[Pair], device: str = "cpu",
    progress: bool = False, bf16: bool = False, skip_errors: bool = False, source: str = "pairs",
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Score pairs (each distinct image embedded once); returns (summary, labels, scores).

    skip_errors: a pair with an image that cannot be read is left out instead of raising; the summary
    counts them (`pairs_skipped`, `skipped_reasons`) and the metrics cover the rest. `source` names the
    pairs in errors (the pairs file)."""
    errors: dict[Path, SiamfaceError] | None = {} if skip_errors else None
    store = store_for([p for pair in pairs for p in (pair.a, pair.b)], pre, progress, errors=errors)
    failed = pair_errors([(p.a, p.b) for p in pairs], errors or {})
    skipped = count_reasons(failed)
    pairs = [p for p, e in zip(pairs, failed) if e is None]
    if len({p.same for p in pairs}) < 2:
        left = f" ({sum(skipped.values())} skipped: {reasons_text(skipped)})" if skipped else ""
        kind = "no pair" if not pairs else f"only {'same' if pairs[0].same else 'different'} pairs"
        raise DataError(f"{source}: {kind} to score{left}; the metrics need both same and different pairs")
    emb = embed_batches(model, store.images, pre, device=device, bf16=bf16)
    i = np.array([store.index[Path(p.a)] for p in pairs])
    j = np.array([store.index[Path(p.b)] for p in pairs])
    scores = score_indices(model, emb, i, j)
    labels = np.array([int(p.same) for p in pairs])
    folds = np.array([p.fold for p in pairs])
    summary = metrics.verification_summary(labels, scores, folds if len(set(folds)) > 1 else None)
    if skip_errors:
        summary.update(pairs_skipped=sum(skipped.values()), skipped_reasons=skipped)
    return summary, labels, scores


def reasons_text(counts: dict[str, int]) -> str:
    """'2 no face, 1 too large' for {reason: count}."""
    return ", ".join(f"{n} {reason}" for reason, n in counts.items()) or "none"


def oneshot_scores(model: SiameseNet, emb: torch.Tensor, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(T, N) scores of each query embedding against its N candidate embeddings."""
    t, n = candidates.shape
    return score_indices(model, emb, np.repeat(queries, n), candidates.reshape(-1)).reshape(t, n)


def evaluate_oneshot(
    model: SiameseNet, pre: PreprocessConfig, tasks: Sequence[OneShotTask], device: str = "cpu",
    progress: bool = False, bf16: bool = False,
) -> dict[str, Any]:
    """N-way one-shot accuracy over tasks; also returns how many tower passes it took."""
    store = store_for([p for t in tasks for p in (t.query, *t.candidates)], pre, progress)
    emb = embed_batches(model, store.images, pre, device=device, bf16=bf16)
    q = np.array([store.index[Path(t.query)] for t in tasks])
    c = np.array([[store.index[Path(p)] for p in t.candidates] for t in tasks])
    answers = np.array([t.answer for t in tasks])
    acc = metrics.oneshot_accuracy(oneshot_scores(model, emb, q, c), answers)
    return {"oneshot_accuracy": acc, "n_tasks": len(tasks), "n_way": int(c.shape[1]), "embeddings": len(store)}


def evaluate_identities(
    model: SiameseNet, pre: PreprocessConfig, store: ImageStore, labels: np.ndarray, *, n_way: int,
    n_tasks: int, n_pairs: int, seed: int, groups: np.ndarray | None = None, within_group: bool = False,
    device: str = "cpu", bf16: bool = False, emb: torch.Tensor | None = None, report: bool = False,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Verification on seeded balanced pairs and N-way one-shot on seeded tasks, over identities of one split.

    Pairs are split into 10 folds for a k-fold accuracy. Returns (summary, labels, scores) of the pairs.
    report=True (an evaluation report, not training's validation): count the distinct pairs, and warn when
    they repeat much or when the split has fewer identities than `n_way`.
    """
    from .data import make_oneshot_tasks, sample_pairs

    if emb is None:
        emb = embed_batches(model, store.images, pre, device=device, bf16=bf16)
    rng = np.random.default_rng(seed)
    pairs = sample_pairs(labels, n_pairs, rng, groups=groups, within_group=within_group)
    scores = score_indices(model, emb, pairs[:, 0], pairs[:, 1])
    y = pairs[:, 2].astype(int)
    summary = metrics.verification_summary(y, scores, metrics.fold_ids(len(y), 10, seed=seed))
    if report:
        summary["distinct_pairs"] = _distinct_pairs(pairs)
    if report and summary["distinct_pairs"] < 0.9 * len(pairs):
        warnings.warn(f"{len(pairs)} pairs drawn from {len(labels)} images hold only {summary['distinct_pairs']} "
                      "distinct pairs: repeated pairs weigh more in the metrics (distinct_pairs in the report)",
                      stacklevel=2)
    n_ids = len(np.unique(labels))
    if report and n_way > n_ids:
        warnings.warn(f"{n_way}-way one-shot needs {n_way} identities, the split has {n_ids}: the tasks are "
                      f"{n_ids}-way (oneshot_way in the report)", stacklevel=2)
        summary["oneshot_way_requested"] = n_way
    n_way = min(n_way, n_ids)
    q, c, ans = make_oneshot_tasks(labels, n_way, n_tasks, seed, groups=groups, within_group=within_group)
    summary["oneshot_accuracy"] = metrics.oneshot_accuracy(oneshot_scores(model, emb, q, c), ans)
    summary.update(oneshot_way=n_way, oneshot_tasks=len(q), identities=int(n_ids), images=len(store))
    return summary, y, scores


def _distinct_pairs(pairs: np.ndarray) -> int:
    """How many different unordered image pairs (i, j) an array of [i, j, same] rows holds."""
    return len(np.unique(np.sort(pairs[:, :2], axis=1), axis=0)) if len(pairs) else 0


# ---- the `siamface evaluate` command -------------------------------------------------------------------

def _lfw_root(data: str | None) -> Path:
    root = Path(data) if data else data_root() / "lfw"
    root = root / "lfw" if (root / "lfw").is_dir() else root
    if not (root / "pairs.txt").is_file():
        raise DataError(f"{root}: not an LFW folder (pairs.txt missing); give the LFW folder", option="data")
    return root


def _eval_identity_split(lm: LoadedModel, split: str, data: str | None, way: int, tasks: int, n_pairs: int,
                         seed: int, device: str) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    card = lm.card
    ids = card.identities(split)
    if not ids:
        raise DataError(f"{card.file}: the model records no {split!r} identities to evaluate on")
    root = data or (card.data.root if card.data else "")
    records = filter_identities(scan_folder(root), ids)
    if split == "test":
        check_no_leakage(card, set(ids), "test split")
    labels, _ = label_array(records)
    check_pairable(labels, root, f"{split}-split")
    store = store_for([r.path for r in records], lm.preprocess)
    within = bool(card.data and card.data.within_group)
    summary, y, s = evaluate_identities(lm.model, lm.preprocess, store, labels, n_way=way, n_tasks=tasks,
                                        n_pairs=n_pairs, seed=seed, groups=group_array(records),
                                        within_group=within, device=device, report=True)
    summary["data"] = f"{root}: {split} split, {len(ids)} identities"
    return summary, y, s


def _eval_pairs(lm: LoadedModel, pairs_file: Path, device: str,
                strict: bool = False) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Metrics on the pairs it can score; a pair with an unreadable image is skipped and counted (strict: an
    error)."""
    pairs = read_pairs(pairs_file)
    check_no_leakage(lm.card, pair_identities(pairs), str(pairs_file), leaf=True)
    summary, y, s = evaluate_pairs(lm.model, lm.preprocess, pairs, device=device, progress=True,
                                   skip_errors=not strict, source=str(pairs_file))
    summary["data"] = str(pairs_file)
    return summary, y, s


def _eval_omniglot(lm: LoadedModel, runs: str, device: str) -> dict[str, Any]:
    used = {part for i in lm.card.seen_identities() for part in i.split("/")}  # any component may be an alphabet
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
    folder = check_output_folder(Path(out), "report folder", create=False) if out else None  # before any work
    lm = load_model(model, device=device)
    warning = _model_warning(lm)
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
    if warning:
        report["warning"] = warning
    folder = folder or check_output_folder(lm.path / f"eval-{what}", "report folder", create=False)
    _write(folder, report, y, s)
    report["out"] = str(folder)
    return report


def _model_warning(lm: LoadedModel) -> str:
    """A model still training, or one that ended with a warning, is evaluated, but never silently."""
    card = lm.card
    text = ""
    if card.status != "complete":
        text = (f"{card.file}: status {card.status!r}: training has not finished, these are the weights of its "
                f"best epoch so far ({card.epoch})")
    elif card.warning:
        text = f"{card.file}: {card.warning}"
    if text:
        warnings.warn(text, stacklevel=3)
    return text


def _report(lm: LoadedModel, what: str, summary: dict[str, Any], y: np.ndarray | None, s: np.ndarray | None,
            seconds: float) -> dict[str, Any]:
    rep: dict[str, Any] = {"model": str(lm.path), "architecture": lm.card.model.name, "evaluated": what,
                           **summary, "seconds": round(seconds, 2), "command": " ".join(sys.argv)}
    cal = lm.card.calibration
    if y is not None and s is not None and cal is not None:
        rep["calibrated_threshold"] = cal.threshold
        rep["threshold_source"] = cal.source
        rep["accuracy_at_calibrated_threshold"] = metrics.accuracy_at(y, s, cal.threshold)
        pred = s >= cal.threshold
        rep["false_accept_rate_at_calibrated_threshold"] = float(pred[y == 0].mean())
        rep["false_reject_rate_at_calibrated_threshold"] = float((~pred[y == 1]).mean())
        # every stored point: the rate it states against the rate measured here (pairs: no identities)
        imp, gen = s[y == 0], s[y == 1]
        rep["operating_points"] = {
            name: {"threshold": p.threshold, "stated_far": p.far, "stated_far_interval": p.far_interval,
                   "measured_far": float((imp >= p.threshold).mean()) if len(imp) else None,
                   "measured_far_interval": list(wilson(int((imp >= p.threshold).sum()), len(imp))),
                   "measured_frr": float((gen < p.threshold).mean()) if len(gen) else None}
            for name, p in cal.points.items()}
    return rep


def _markdown(rep: dict[str, Any]) -> str:
    lines = [f"# siamface evaluation: {rep['evaluated']}", "", f"- model: `{rep['model']}` ({rep['architecture']})",
             f"- data: {rep.get('data', '')}", f"- command: `{rep['command']}`", "", "| metric | value |", "|---|---|"]
    for k, v in rep.items():
        if isinstance(v, float):
            lines.append(f"| {k} | {v:.4f} |")
        elif isinstance(v, int) and not isinstance(v, bool):
            lines.append(f"| {k} | {v} |")
    if "threshold_source" in rep:
        lines += ["", f"Threshold provenance: {rep['threshold_source']}"]
    if rep.get("skipped_reasons"):
        lines += ["", f"Skipped pairs (an image could not be used): {reasons_text(rep['skipped_reasons'])}"]
    if "warning" in rep:
        lines += ["", f"Warning: {rep['warning']}"]
    return "\n".join(lines) + "\n"


def _write(folder: Path, rep: dict[str, Any], y: np.ndarray | None, s: np.ndarray | None) -> None:
    from .plots import plot_histogram, plot_roc

    folder.mkdir(parents=True, exist_ok=True)
    if y is not None and s is not None:
        plot_roc(y, s, folder / "roc.png", title=f"ROC: {rep['evaluated']}")
        plot_histogram(y, s, folder / "hist.png", rep.get("calibrated_threshold"), title=f"scores: {rep['evaluated']}")
    atomic_write_bytes(folder / "report.md", _markdown(rep).encode())
    atomic_write_json(folder / "report.json", rep)
