"""AT&T faces, split by subject: train on 25, select the model and threshold on 5, test on 10 never seen.

For each seed: `siamface train` (library call), then `siamface evaluate --split test`: verification AUC,
EER, 10-fold accuracy, accuracy at the stored threshold, and 10-way one-shot accuracy on the held-out
subjects. Writes benchmarks/results/att.json with the mean and spread over seeds; finished seeds are
reused from their run folders, so an interrupted benchmark resumes.

    python benchmarks/att.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from common import RESULTS, command, data_root, machine, pct, train_once, write_result

from siamface import metrics
from siamface.checkpoint import load_model
from siamface.cli import add_config_flags, config_from_args, parse_align
from siamface.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from siamface.data import filter_identities, group_array, label_array, sample_pairs, scan_folder
from siamface.embed import embed_batches, score_indices, store_for
from siamface.evaluate import evaluate_identities, run_evaluation
from siamface.lineage import check_no_leakage
from siamface.models import default_preprocess

KEYS = ("auc", "eer", "kfold_mean", "accuracy_at_calibrated_threshold", "oneshot_accuracy", "TAR@FAR=1e-02")


RECIPE = RunConfig(
    ModelConfig("resface64"), default_preprocess("resface64"), DataConfig(n_val=5, n_test=10),
    TrainConfig(epochs=12, pairs_per_epoch=4096, lr=5e-4, weight_decay=5e-3, flip=True, select="eer", val_way=5,
                val_pairs=2000, pairing="all", classes_per_batch=25, images_per_class=4))
FLAGS = {ModelConfig: ("name",), TrainConfig: ("epochs", "pairs_per_epoch", "lr", "weight_decay", "pairing",
                                               "id_loss", "id_margin", "init", "threads", "progress")}


def run_config(args: argparse.Namespace, seed: int) -> RunConfig:
    """RECIPE with the flags applied, for one seed (the seed also chooses the subject split)."""
    model = config_from_args(ModelConfig, args, RECIPE.model)
    if args.model_kwargs is not None:
        model = replace(model, kwargs=args.model_kwargs)
    pre = default_preprocess(model.name, align=parse_align(args.align) if args.align else None)
    data = replace(RECIPE.data, root=str(data_root() / "att_faces"))
    train_cfg = config_from_args(TrainConfig, args, RECIPE.train)
    return RunConfig(model, pre, data, replace(train_cfg, patience=train_cfg.epochs, seed=seed))


def head_check(out: Path, seed: int) -> dict:
    """Test EER of the model's L1 head against an unweighted L1 distance of the same embeddings (same
    seeded pairs): does the learned weighting a_j carry over to new people or only fit the training ones?"""
    lm = load_model(out)
    records = filter_identities(scan_folder(data_root() / "att_faces"), lm.card.identities("test"))
    labels, _ = label_array(records)
    store = store_for([r.path for r in records], lm.preprocess)
    emb = embed_batches(lm.model, store.images, lm.preprocess)[[store.index[r.path] for r in records]]
    pairs = sample_pairs(labels, 4000, np.random.default_rng(seed))
    head = score_indices(lm.model, emb, pairs[:, 0], pairs[:, 1])
    plain = -(emb[pairs[:, 0]] - emb[pairs[:, 1]]).abs().sum(1).numpy()
    return {"eer_l1_head": metrics.eer(pairs[:, 2], head)[0], "eer_unweighted_l1": metrics.eer(pairs[:, 2], plain)[0],
            "head_weights_positive": int((lm.model.head.effective_weight() > 0).sum())}


def zero_shot(init: str, out: Path, seed: int) -> dict:
    """The --init model before any AT&T training, on the same test subjects, pairs and one-shot tasks (with
    this run's preprocessing): what fine-tuning on the 25 training subjects adds."""
    lm, tuned = load_model(init), load_model(out)
    check_no_leakage(tuned.card, set(tuned.card.identities("test")), "test split")
    records = filter_identities(scan_folder(data_root() / "att_faces"), tuned.card.identities("test"))
    labels, _ = label_array(records)
    summary, _, _ = evaluate_identities(lm.model, tuned.preprocess, store_for([r.path for r in records],
                                        tuned.preprocess), labels, n_way=10, n_tasks=1000, n_pairs=4000, seed=seed,
                                        groups=group_array(records))
    return {k: summary[k] for k in ("auc", "eer", "oneshot_accuracy", "TAR@FAR=1e-02")}


def one_seed(args: argparse.Namespace, seed: int) -> dict:
    out = Path(args.runs) / f"seed{seed}"
    t0 = time.perf_counter()
    run = run_config(args, seed)
    meta = train_once(run, out)
    wall = time.perf_counter() - t0
    rep = run_evaluation(str(out), split="test", way=10, tasks=1000, n_pairs=4000, seed=seed)
    return {"seed": seed, "train_seconds": meta["train_seconds"], "best_epoch": meta["epoch"],
            "wall_seconds_this_call": round(wall, 1), "test_identities": meta["split"]["test"],
            "val_eer": meta["val"]["eer"], **{k: rep[k] for k in KEYS}, "head_check": head_check(out, seed),
            **({"init_zero_shot": zero_shot(run.train.init, out, seed)} if run.train.init else {})}


def markdown_table(result: dict) -> str:
    """The per-seed table of docs/RESULTS.md from a results JSON written by this benchmark."""
    rows = result["per_seed"]
    init = all("init_zero_shot" in r for r in rows)  # fine-tuned runs also show their starting model
    extra = " | EER of --init, no AT&T training" if init else ""
    lines = ["| seed | test subjects | train time | val EER | **test EER** | EER, unweighted L1" + extra +
             " | test AUC | 10-fold acc. | acc. at stored threshold | 10-way one-shot | TAR@FAR=1e-2 |",
             "|---" * (11 + init) + "|"]
    for r in rows:
        zs = f" | {pct(r['init_zero_shot']['eer'])}" if init else ""
        lines.append(f"| {r['seed']} | {', '.join(r['test_identities'])} | {r['train_seconds'] / 60:.1f} min | "
                     f"{pct(r['val_eer'])} | **{pct(r['eer'])}** | {pct(r['head_check']['eer_unweighted_l1'])}{zs} | "
                     f"{r['auc']:.3f} | {pct(r['kfold_mean'])} | {pct(r['accuracy_at_calibrated_threshold'])} | "
                     f"{pct(r['oneshot_accuracy'])} | {pct(r['TAR@FAR=1e-02'])} |")
    m = {k: v["mean"] for k, v in result["summary"].items()}
    plain = np.mean([r["head_check"]["eer_unweighted_l1"] for r in rows])
    zs = f" | {pct(np.mean([r['init_zero_shot']['eer'] for r in rows]))}" if init else ""
    lines.append(f"| mean ± sd | | {m['train_seconds'] / 60:.1f} min | | **{pct(m['eer'])} ± "
                 f"{100 * result['summary']['eer']['std']:.1f}** | {pct(plain)}{zs} | {m['auc']:.3f} | "
                 f"{pct(m['kfold_mean'])} | {pct(m['accuracy_at_calibrated_threshold'])} | "
                 f"{pct(m['oneshot_accuracy'])} | {pct(m['TAR@FAR=1e-02'])} |")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    for cls, names in FLAGS.items():  # siamface train's own flags, defaults from RECIPE
        add_config_flags(p, cls, base=RECIPE.model if cls is ModelConfig else RECIPE.train, only=names)
    p.add_argument("--model-kwargs", type=json.loads, default=None,
                   help='factory overrides as JSON, e.g. \'{"head_weights": "nonpositive"}\'')
    p.add_argument("--align", default="", help="face alignment (see siamface train --align); default none")
    p.add_argument("--runs", default=str(Path("runs") / "bench-att"))
    p.add_argument("--name", default="att")
    p.add_argument("--table", action="store_true", help="print the markdown table of results/<--name>.json and exit")
    return p


def main() -> None:
    args = parser().parse_args()
    if args.table:
        print(markdown_table(json.loads((RESULTS / f"{args.name}.json").read_text())))
        return
    rows = [one_seed(args, s) for s in args.seeds]
    summary = {k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows], ddof=1))}
               for k in (*KEYS, "train_seconds")}
    write_result(args.name, {
        "benchmark": "AT&T faces, subject split 25 train / 5 validation / 10 test",
        "command": command(), "data": str(data_root() / "att_faces"), "model": run_config(args, 0).model.name,
        "config": run_config(args, args.seeds[0]).to_dict(), "seeds": args.seeds, "summary": summary,
        "summary_std": "sample standard deviation over seeds (ddof=1)",
        "per_seed": rows, "machine": machine(), "results_dir": str(RESULTS),
    })


if __name__ == "__main__":
    main()
