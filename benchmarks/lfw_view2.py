"""LFW View 2, "unrestricted, no outside data": ten models, one per fold of pairs.txt.

Model k trains only on people of the other nine folds of people.txt (150 of them, with >= 2 images, held
out for epoch selection and the calibrated threshold), and is tested on the 600 pairs of fold k. Reported:
mean accuracy +- standard error over the folds with the threshold chosen on the nine other folds' pairs
(the protocol's rule) and with the calibrated threshold, plus AUC, EER and TAR@FAR over all 6,000 pairs.
Each fold's result is written to benchmarks/results/lfw_view2/foldK.json as soon as it is done, so the
benchmark resumes fold by fold (commit those files as they arrive).

    python benchmarks/lfw_view2.py --folds 0 1 2 3 4 5 6 7 8 9 --epochs 14 --pairs-per-epoch 20000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import (
    RESULTS,
    add_lfw_args,
    command,
    data_root,
    lfw_options,
    lfw_run_config,
    machine,
    pct,
    std_error,
    train_once,
    write_result,
)

from siamface import metrics
from siamface.checkpoint import load_model
from siamface.config import RunConfig
from siamface.data import pair_identities
from siamface.data.lfw import view2_pairs, view2_split
from siamface.data.prepare import keep_decoded_images
from siamface.evaluate import evaluate_pairs
from siamface.files import atomic_write_json
from siamface.lineage import check_no_leakage

FOLDS = RESULTS / "lfw_view2"


def run_config(args: argparse.Namespace, fold: int) -> RunConfig:
    options = lfw_options(args)
    return lfw_run_config(options, view2_split(data_root() / "lfw", fold, options.data.n_val, options.train.seed))


def one_fold(args: argparse.Namespace, fold: int) -> dict:
    out = Path(args.runs) / f"fold{fold}"
    run = run_config(args, fold)
    meta = train_once(run, out)
    device = run.train.device
    lm = load_model(out, device=device)
    pairs = view2_pairs(data_root() / "lfw")
    test = [p for p in pairs if p.fold == fold]
    check_no_leakage(lm.card, pair_identities(test), f"fold {fold}", leaf=True)
    _, y, s = evaluate_pairs(lm.model, lm.preprocess, test, device=device)
    _, y9, s9 = evaluate_pairs(lm.model, lm.preprocess, [p for p in pairs if p.fold != fold], device=device)
    t9, _ = metrics.best_threshold(y9, s9)
    row = {"fold": fold, "accuracy_threshold_from_other_folds": metrics.accuracy_at(y, s, t9),
           "threshold_from_other_folds": t9,
           "accuracy_at_calibrated_threshold": metrics.accuracy_at(y, s, lm.threshold),
           "calibrated_threshold": lm.threshold, "auc": metrics.roc_auc(y, s), "train_seconds": meta["train_seconds"],
           "best_epoch": meta["epoch"], "labels": y.tolist(), "scores": [round(float(v), 6) for v in s]}
    atomic_write_json(FOLDS / f"fold{fold}.json", row)
    return row


def summarise(rows: list[dict], args: argparse.Namespace) -> dict:
    acc = np.array([r["accuracy_threshold_from_other_folds"] for r in rows])
    cal = np.array([r["accuracy_at_calibrated_threshold"] for r in rows])
    y = np.concatenate([r["labels"] for r in rows])
    s = np.concatenate([r["scores"] for r in rows])
    from siamface.plots import plot_roc

    plot_roc(y, s, RESULTS / "lfw_view2_roc.png", title="LFW View 2 (10 folds, 10 models)")
    return {"benchmark": "LFW View 2, unrestricted with no outside data, one model per fold",
            "command": command(), "data": str(data_root() / "lfw"), "folds_done": [r["fold"] for r in rows],
            "mean_accuracy": float(acc.mean()), "std_error": std_error(acc),
            "mean_accuracy_calibrated_threshold": float(cal.mean()), "std_error_calibrated": std_error(cal),
            "all_pairs": {k: v for k, v in metrics.verification_summary(y, s).items() if "threshold" not in k},
            "train_seconds_total": float(sum(r["train_seconds"] for r in rows)),
            "config_fold0": run_config(args, rows[0]["fold"]).to_dict(), "machine": machine()}


def finished_folds() -> list[dict]:
    """The committed fold results, in fold order."""
    return [json.loads((FOLDS / f"fold{k}.json").read_text()) for k in range(10) if (FOLDS / f"fold{k}.json").exists()]


def markdown_table(rows: list[dict]) -> str:
    """The per-fold table of docs/RESULTS.md, from the fold files."""
    lines = ["| fold | training time | best epoch | accuracy, threshold from other folds | "
             "accuracy, stored threshold | AUC |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['fold']} | {r['train_seconds'] / 60:.1f} min | {r['best_epoch']} | "
              f"{pct(r['accuracy_threshold_from_other_folds'])} | {pct(r['accuracy_at_calibrated_threshold'])} | "
              f"{r['auc']:.3f} |" for r in rows]
    keys = ("accuracy_threshold_from_other_folds", "accuracy_at_calibrated_threshold")
    mean_se = [(np.mean(a), std_error(a) or 0.0) for a in ([r[k] for r in rows] for k in keys)]
    minutes = sum(r["train_seconds"] for r in rows) / 60
    lines.append(f"| mean over {len(rows)} folds | {minutes:.0f} min total | | "
                 + " | ".join(f"**{pct(m)} ± {100 * se:.1f}**" for m, se in mean_se)
                 + f" | {np.mean([r['auc'] for r in rows]):.3f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folds", type=int, nargs="+", default=list(range(10)))
    add_lfw_args(p)
    p.add_argument("--runs", default=str(Path("runs") / "bench-lfw-view2"))
    p.add_argument("--table", action="store_true", help="print the markdown table of the finished folds and exit")
    args = p.parse_args()
    if args.table:
        print(markdown_table(finished_folds()))
        return
    keep_decoded_images()  # the folds share images: detect and align each photo once
    for fold in args.folds:
        if not (FOLDS / f"fold{fold}.json").exists():
            one_fold(args, fold)
        write_result("lfw_view2", summarise(finished_folds(), args))  # after every fold: the summary so far


if __name__ == "__main__":
    main()
