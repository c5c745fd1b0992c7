"""Koch, Zemel & Salakhutdinov (2015), Tables 1 and 2 on Omniglot, by one command.

Trains the selected configs of configs/koch2015/ (all six by default: 30k / 90k / 150k fixed training pairs,
without and with 8 stored affine distortions per pair), each keeping its best epoch by 20-way one-shot
accuracy on 320 validation tasks, then:

* Table 1 (verification accuracy): each best checkpoint scores 10,000 TEST pairs, drawn once with seed 0 by
  `siamface.data.sample_pairs` (5,000 same, 5,000 different, the different ones within one alphabet, each
  pair's character uniform) from the images of the 10 evaluation alphabets of the official one-shot runs
  (OMNIGLOT_RUN_ALPHABETS) by drawers 17-20 (training uses drawers 1-12, validation 13-16): the paper's
  "last 10 alphabets and 4 drawers", never seen in training or model selection. The reported accuracy uses
  the threshold calibrated at the end of training (EER on 10,000 validation pairs of the validation
  alphabets, drawers 13-16), as stored in the checkpoint; accuracy at p = 0.5, the oracle best-threshold
  accuracy, AUC and the validation accuracy are reported beside it.
* Table 2 (20-way one-shot on the 20 official runs, 400 trials): the 150k + x8 model, through
  `siamface.evaluate.run_evaluation(..., omniglot_runs=...)` (with its leakage check).

Results: benchmarks/results/koch_tables.json and koch_tables.md (the paper's layout, the paper's numbers
beside siamface's).

Sizing (the 150k + x8 config must finish in about 10 minutes on one H200). One koch2015 image costs
908.6M multiply-adds forward (benchmarks/speed.py counts them from the layer shapes), so a training pair
costs 2 images x 2 x 3 (forward + backward) x 908.6M = 10.9 GFLOP. Assumption: at batch 128 the H200
sustains ~150 TFLOP/s on this network in bf16 (~15% of its ~989 TFLOP/s dense bf16 peak: small convolutions,
a 1-channel first layer, a host sync per step) = ~13.8k pairs/s. The paper's 200 epochs of 1.35M rows
(270M pairs, ~5.5 h) do not fit, so every config gets a budget of ~6.75M pair presentations
(~52.7k SGD steps): 150k + x8 = 5 epochs of 1.35M rows = 7.4e16 FLOP = ~8.2 min, plus ~1 min of decoding,
validation and evaluation. Smaller configs get more epochs for the same budget (30k: the paper's 200).
max_minutes 9 in every config stops training after the epoch that crosses 9 minutes if the GPU is slower.

    python benchmarks/koch_tables.py --device cuda                     # all six, then both tables
    python benchmarks/koch_tables.py --device cuda --configs 150k-x8   # the Table 2 model only
    python benchmarks/koch_tables.py --smoke --configs 30k-x8          # CPU smoke run: 2 steps, tiny evaluation
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import common
import numpy as np
from common import REPO, command, data_root, machine, write_result

from siamface import metrics, train
from siamface.checkpoint import load_model
from siamface.config import RunConfig
from siamface.data import OMNIGLOT_RUN_ALPHABETS, group_array, label_array, omniglot_drawer, sample_pairs, scan_folder
from siamface.embed import embed_batches, score_indices, store_for
from siamface.errors import CollapseError
from siamface.evaluate import run_evaluation
from siamface.lineage import check_no_leakage

CONFIGS = REPO / "configs" / "koch2015"
ORDER = ("30k", "30k-x8", "90k", "90k-x8", "150k", "150k-x8")
PAPER_TABLE1 = {(30_000, 0): 90.61, (30_000, 8): 91.90, (90_000, 0): 91.54, (90_000, 8): 93.15,
                (150_000, 0): 91.63, (150_000, 8): 93.42}
PAPER_TABLE2 = {"Humans": 95.5, "Hierarchical Bayesian Program Learning": 95.2, "Affine model": 81.8,
                "Hierarchical Deep": 65.2, "Deep Boltzmann Machine": 62.0, "Simple Stroke": 35.2,
                "1-Nearest Neighbor": 21.7, "Siamese Neural Net (non-convolutional)": 58.3,
                "Convolutional Siamese Net": 92.0}
TABLE2_CONFIG = "150k-x8"
TEST_DRAWERS = (17, 18, 19, 20)
TEST_PAIRS, TEST_SEED = 10_000, 0
ASSUMED_H200_TFLOPS = 150.0
SMOKE = {"max_epochs": 1, "max_steps": 2, "batch_size": 8, "val_tasks": 10, "val_pairs": 100, "test_pairs": 200,
         "official_runs": 1}


# ---- configs --------------------------------------------------------------------------------------------------

def config_names() -> list[str]:
    """The Table 1 configs, in the paper's order."""
    found = {p.stem for p in CONFIGS.glob("*.json")}
    return [n for n in ORDER if n in found] + sorted(found - set(ORDER))


def load_run(name_or_path: str | Path, root: Path | None = None) -> RunConfig:
    """A config of configs/koch2015 (by name or path) as a RunConfig, data paths resolved against `root`."""
    path = Path(name_or_path)
    path = path if path.suffix == ".json" else CONFIGS / f"{name_or_path}.json"
    return RunConfig.read(path, root or data_root())


def shrink(run: RunConfig, *, device: str | None = None, max_epochs: int | None = None,
           max_steps: int | None = None, batch_size: int | None = None, val_tasks: int | None = None,
           val_pairs: int | None = None, max_minutes: float | None = None, progress: bool | None = None,
           threads: int | None = None) -> RunConfig:
    """A copy of `run` with smaller sizes; max_steps caps the SGD steps per epoch by shrinking the fixed pairs."""
    t = run.train
    changes: dict[str, Any] = {k: v for k, v in {
        "device": device, "batch_size": batch_size, "val_tasks": val_tasks, "val_pairs": val_pairs,
        "max_minutes": max_minutes, "progress": progress, "threads": threads}.items() if v is not None}
    if max_epochs is not None:
        changes["epochs"] = min(t.epochs, max_epochs)
    if max_steps is not None:
        batch = changes.get("batch_size", t.batch_size)
        rows_per_pair = 1 + t.distortions_per_pair
        changes["pairs_per_epoch"] = max(1, min(t.pairs_per_epoch, max_steps * batch // rows_per_pair))
    return replace(run, train=replace(t, **changes))


def steps_per_epoch(run: RunConfig) -> int:
    return math.ceil(run.train.pairs_per_epoch * (1 + run.train.distortions_per_pair) / run.train.batch_size)


@functools.lru_cache(maxsize=1)
def train_flops_per_pair() -> float:
    """FLOPs of one koch2015 training pair (two images, forward + backward), from the layer shapes."""
    from speed import step_flops

    from siamface.models import create_model

    return step_flops(create_model("koch2015"), images=2, pairs=1)


def sizing(run: RunConfig) -> dict[str, Any]:
    """Pair presentations and the FLOP-based H200 time estimate of one config (see the module docstring)."""
    flops_pair = train_flops_per_pair()
    rows = run.train.pairs_per_epoch * (1 + run.train.distortions_per_pair)
    total = rows * run.train.epochs
    return {"rows_per_epoch": rows, "max_epochs": run.train.epochs, "max_pair_presentations": total,
            "train_gflop_per_pair": round(flops_pair / 1e9, 2),
            "assumed_h200_tflops": ASSUMED_H200_TFLOPS,
            "estimated_h200_train_minutes": round(total * flops_pair / (ASSUMED_H200_TFLOPS * 1e12) / 60, 1)}


# ---- Table 1: verification on the test alphabets and drawers --------------------------------------------------

def table1_test_records(run: RunConfig) -> list[Any]:
    """Images of the official runs' alphabets by the test drawers (from the config's evaluation folder)."""
    records = scan_folder(run.data.val_root)
    return [r for r in records if r.group in OMNIGLOT_RUN_ALPHABETS and omniglot_drawer(r.path) in TEST_DRAWERS]


def evaluate_table1(run_dir: Path, run: RunConfig, n_pairs: int = TEST_PAIRS, device: str = "cpu") -> dict[str, Any]:
    """Verification accuracy of the best checkpoint on the Table 1 test pairs (see the module docstring)."""
    lm = load_model(run_dir, device=device)
    records = table1_test_records(run)
    check_no_leakage(lm.card, {r.identity for r in records}, "Table 1 test pairs")
    labels, _ = label_array(records)
    pairs = sample_pairs(labels, n_pairs, TEST_SEED, groups=group_array(records), within_group=True)
    store = store_for([r.path for r in records], lm.preprocess)
    emb = embed_batches(lm.model, store.images, lm.preprocess, device=device, bf16=run.train.bf16)
    scores, y = score_indices(lm.model, emb, pairs[:, 0], pairs[:, 1]), pairs[:, 2].astype(int)
    summary = metrics.verification_summary(y, scores)
    threshold = float(lm.threshold if lm.threshold is not None else 0.5)
    return {"accuracy": metrics.accuracy_at(y, scores, threshold), "threshold": threshold,
            "threshold_source": lm.card.calibration.source if lm.card.calibration else "none stored: 0.5",
            "accuracy_at_0.5": metrics.accuracy_at(y, scores, 0.5), "oracle_best_accuracy": summary["best_accuracy"],
            "auc": summary["auc"], "eer": summary["eer"], "n_pairs": summary["n_pairs"],
            "n_same": summary["n_same"], "identities": int(len(np.unique(labels))), "images": len(store),
            "pairs": f"{n_pairs} pairs, seed {TEST_SEED}, within-alphabet negatives, {len(OMNIGLOT_RUN_ALPHABETS)} "
                     f"official-run alphabets of {run.data.val_root}, drawers {TEST_DRAWERS}"}


# ---- Table 2: the official one-shot runs ----------------------------------------------------------------------

def evaluate_table2(run_dir: Path, runs_dir: Path, device: str, n_runs: int = 20) -> dict[str, Any]:
    """20-way one-shot accuracy on the official runs (only the first n_runs of them for smoke runs)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = runs_dir
        if n_runs < 20:
            src = Path(tmp) / "all_runs"
            for run in sorted(runs_dir.glob("run[0-9][0-9]"))[:n_runs]:
                shutil.copytree(run, src / run.name)
        rep = run_evaluation(str(run_dir), omniglot_runs=str(src), device=device,
                             out=str(run_dir / "eval-omniglot-runs"))
    return {k: rep[k] for k in ("oneshot_accuracy", "n_tasks", "n_way", "embeddings", "seconds")}


# ---- one config, end to end -----------------------------------------------------------------------------------

def _completed(out: Path, run: RunConfig) -> bool:
    meta_path = out / "model.json"
    if not meta_path.exists():
        return False
    meta = json.loads(meta_path.read_text())
    return meta.get("status") == "complete" and RunConfig.from_dict(meta) == run


def run_config(name: str, run: RunConfig, out: Path, test_pairs: int, table_pairs: int) -> dict[str, Any]:
    """Train (or resume, or reuse a completed run with the same config), then evaluate Table 1.

    `table_pairs`: the config's training pairs before any shrinking (its Table 1 row)."""
    t0 = time.perf_counter()
    if not _completed(out, run):
        train(run, out, resume=(out / "state.json").exists())
    meta = json.loads((out / "model.json").read_text())
    rows = run.train.pairs_per_epoch * (1 + run.train.distortions_per_pair)
    return {
        "config": name, "table_pairs": table_pairs, "pairs": run.train.pairs_per_epoch,
        "distortions_per_pair": run.train.distortions_per_pair,
        "run_dir": str(out), "best_epoch": meta["epoch"], "epochs_run": meta["epochs_run"],
        "max_epochs": run.train.epochs, "steps_per_epoch": steps_per_epoch(run),
        "train_seconds": meta["train_seconds"],
        "pairs_per_second_incl_validation": round(rows * meta["epochs_run"] / max(meta["train_seconds"], 1e-9), 1),
        "val_oneshot_accuracy": meta["val"]["oneshot_accuracy"],
        "val_verification_accuracy": (meta.get("calibration") or {}).get("val_accuracy_at_threshold"),
        "test": evaluate_table1(out, run, test_pairs, run.train.device),
        "warning": meta.get("warning"), "wall_seconds": round(time.perf_counter() - t0, 1),
    }


# ---- the tables -----------------------------------------------------------------------------------------------

def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def markdown(rows: list[dict[str, Any]], table2: dict[str, Any] | None, smoke: bool) -> str:
    """Tables 1 and 2 in the paper's layout with the paper's numbers beside siamface's."""
    by = {(r["table_pairs"], r["distortions_per_pair"]): r for r in rows}
    n_test = next((r["test"]["n_pairs"] for r in rows if "test" in r), TEST_PAIRS)
    lines = ["# Koch et al. (2015) on Omniglot: the paper and siamface", ""]
    if smoke:
        lines += ["**Smoke run: a few steps on tiny settings; the numbers below mean nothing.**", ""]
    lines += [f"Table 1. Verification accuracy (%) on {n_test:,} test pairs of the 10 official-run alphabets, "
              "drawers 17-20 (threshold calibrated on validation).", "",
              "| Method | Test (paper) | Test (siamface) |", "|---|---|---|"]
    for n in (30_000, 90_000, 150_000):
        for k, label in ((0, "no distortions"), (8, "affine distortions x8")):
            r = by.get((n, k))
            ours = "not run" if r is None else "collapsed" if "error" in r else _pct(r["test"]["accuracy"])
            lines.append(f"| {n // 1000}k training: {label} | {PAPER_TABLE1[(n, k)]:.2f} | {ours} |")
    lines += ["", "Table 2. 20-way one-shot accuracy (%) on the 20 official runs (400 trials; siamface's "
              "row says how many it ran).", "",
              "| Method | Test |", "|---|---|"]
    lines += [f"| {m} (paper) | {v:.1f} |" for m, v in PAPER_TABLE2.items()]
    if table2:
        lines.append(f"| **siamface koch2015, {table2['config']}** ({table2['n_tasks']} trials) | "
                     f"**{100 * table2['oneshot_accuracy']:.1f}** |")
    lines += ["", "Runs (val: 320 one-shot tasks and the calibration pairs of the validation alphabets):", "",
              "| config | epochs run / max | best epoch | train min | wall min | val one-shot | val verif. | "
              "test acc. at 0.5 | test AUC |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['config']} | {r['error']} | | | | | | | |")
            continue
        t = r["test"]
        lines.append(f"| {r['config']} | {r['epochs_run']} / {r['max_epochs']} | {r['best_epoch']} | "
                     f"{r['train_seconds'] / 60:.1f} | {r['wall_seconds'] / 60:.1f} | "
                     f"{_pct(r['val_oneshot_accuracy'])} | {_pct(r['val_verification_accuracy'])} | "
                     f"{_pct(t['accuracy_at_0.5'])} | {t['auc']:.4f} |")
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=None, help=f"config names (default: all of {', '.join(ORDER)})")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the configs' cpu)")
    p.add_argument("--data", default=None, help="data root holding omniglot/ (default: SIAMFACE_DATA)")
    p.add_argument("--out", default=None, help="runs folder (default runs/koch2015, runs/koch2015-smoke)")
    p.add_argument("--smoke", action="store_true", help="CPU smoke run: " + ", ".join(f"{k}={v}" for k, v in
                                                                                     SMOKE.items()))
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None, help="at most this many SGD steps per epoch")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--val-tasks", type=int, default=None)
    p.add_argument("--val-pairs", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--test-pairs", type=int, default=None, help=f"Table 1 test pairs (default {TEST_PAIRS})")
    p.add_argument("--official-runs", type=int, default=None, help="official runs for Table 2 (default 20)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--name", default=None, help="result name (default koch_tables, koch_tables_smoke)")
    args = p.parse_args(argv)
    for k, v in (SMOKE.items() if args.smoke else ()):
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.name = args.name or ("koch_tables_smoke" if args.smoke else "koch_tables")
    args.out = Path(args.out or REPO / "runs" / ("koch2015-smoke" if args.smoke else "koch2015"))
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    root = Path(args.data).resolve() if args.data else data_root()
    names = args.configs or config_names()
    t0 = time.perf_counter()
    configs = {n: load_run(n, root) for n in names}
    runs = {n: shrink(run, device=args.device, max_epochs=args.max_epochs, max_steps=args.max_steps,
                      batch_size=args.batch_size, val_tasks=args.val_tasks, val_pairs=args.val_pairs,
                      max_minutes=args.max_minutes, progress=args.progress, threads=args.threads)
            for n, run in configs.items()}
    rows = []
    for n, run in runs.items():
        table_pairs = configs[n].train.pairs_per_epoch
        try:
            rows.append(run_config(n, run, args.out / n, args.test_pairs or TEST_PAIRS, table_pairs))
        except CollapseError as e:  # record it and go on with the other configs
            rows.append({"config": n, "table_pairs": table_pairs,
                         "distortions_per_pair": run.train.distortions_per_pair, "error": str(e)})
    table2 = None
    if TABLE2_CONFIG in runs and "error" not in rows[list(runs).index(TABLE2_CONFIG)]:
        run = runs[TABLE2_CONFIG]
        table2 = {"config": TABLE2_CONFIG, **evaluate_table2(args.out / TABLE2_CONFIG, root / "omniglot" / "all_runs",
                                                              run.train.device, args.official_runs or 20)}
    shrunk = any(getattr(args, k) is not None for k in ("max_epochs", "max_steps", "batch_size", "val_tasks",
                                                        "val_pairs", "test_pairs", "official_runs"))
    result = {
        "benchmark": "Koch et al. (2015) Tables 1 and 2 on Omniglot, koch2015 network, configs/koch2015",
        "command": command(), "smoke": args.smoke or shrunk, "data": str(root / "omniglot"), "machine": machine(),
        "table1_paper": {f"{n // 1000}k{'-x8' if k else ''}": v for (n, k), v in PAPER_TABLE1.items()},
        "table2_paper": PAPER_TABLE2, "runs": rows, "table2": table2,
        "sizing_full_configs": {n: sizing(run) for n, run in configs.items()},
        "configs": {n: run.to_dict() for n, run in runs.items()},
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    md = markdown(rows, table2, result["smoke"])
    path = write_result(args.name, result)
    md_path = Path(common.RESULTS) / f"{args.name}.md"
    md_path.write_text(md)
    print(md)
    print(f"wrote {path} and {md_path}")
    return result


if __name__ == "__main__":
    main()
