"""AT&T faces, split by subject: train on 25, select the model and threshold on 5, test on 10 never seen.

For each seed: `siamface train` (library call), then `siamface evaluate --split test`: verification AUC,
EER, 10-fold accuracy, accuracy at the stored threshold, and 10-way one-shot accuracy on the held-out
subjects. Writes benchmarks/results/att.json with the mean and spread over seeds; finished seeds are
reused from their run folders, so an interrupted benchmark resumes. With --init, the starting model is also
scored on the same test subjects before any AT&T training: with its own head (init_zero_shot, where it has a
trained one) and as a twin alone, by plain L1 and Euclidean distances of its descriptors (twin_alone, on
the test and the validation subjects).

    python benchmarks/att.py --seeds 0 1 2
    python benchmarks/att.py --seeds 0 1 2 --init dlib-resnet --freeze all --no-distortions --flip --no-bf16 \
        --lr 1e-2 --weight-decay 1e-4 --runs runs/bench-att-twin --name att_twin   # dlib's descriptor as the twin
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, command, data_root, machine, pct, train_once, write_result

from siamface import metrics
from siamface.checkpoint import load_model
from siamface.cli import add_config_flags, config_from_args, parse_align
from siamface.config import DataConfig, ModelConfig, PreprocessConfig, RunConfig, TrainConfig, to_dict
from siamface.data import (
    ImageStore,
    filter_identities,
    group_array,
    label_array,
    make_oneshot_tasks,
    sample_pairs,
    scan_folder,
)
from siamface.data.prepare import keep_decoded_images
from siamface.embed import embed_batches, score_indices, store_for
from siamface.evaluate import evaluate_identities, run_evaluation
from siamface.freeze import keep_descriptors
from siamface.lineage import check_no_leakage, init_defaults
from siamface.models import SiameseNet, default_preprocess

KEYS = ("auc", "eer", "kfold_mean", "accuracy_at_calibrated_threshold", "oneshot_accuracy", "TAR@FAR=1e-02")


RECIPE = RunConfig(
    ModelConfig("resface64"), default_preprocess("resface64"), DataConfig(n_val=5, n_test=10),
    TrainConfig(epochs=12, pairs_per_epoch=4096, lr=5e-4, weight_decay=5e-3, flip=True, select="eer", val_way=5,
                val_pairs=2000, pairing="all", classes_per_batch=25, images_per_class=4))
FLAGS = {ModelConfig: ("name",), TrainConfig: ("epochs", "pairs_per_epoch", "lr", "weight_decay", "pairing",
                                               "id_loss", "id_margin", "init", "freeze", "distortions", "flip",
                                               "bf16", "threads", "progress")}


def run_config(args: argparse.Namespace, seed: int) -> RunConfig:
    """RECIPE with the flags applied, for one seed (the seed also chooses the subject split).

    With --init, the model (architecture and factory options) and its input (size, channels, normalisation,
    alignment) are the init's, as `siamface train --init` inherits them (lineage.init_defaults); --model,
    --model-kwargs and --align still override. The crop stays the benchmark's: AT&T photos are framed
    tight around the face by the database itself, whatever framing the init was trained on."""
    train_cfg = config_from_args(TrainConfig, args, RECIPE.train)
    base_model, base_pre = RECIPE.model, None
    if train_cfg.init:
        base_model, base_pre, _ = init_defaults(train_cfg.init)
    model = config_from_args(ModelConfig, args, base_model)
    if args.model_kwargs is not None:
        model = replace(model, kwargs=args.model_kwargs)
    if base_pre is not None and model.name == base_model.name:
        pre = replace(base_pre, crop=RECIPE.preprocess.crop)
        if args.align:
            pre = replace(pre, align=parse_align(args.align))
    else:
        pre = default_preprocess(model.name, align=parse_align(args.align) if args.align else None)
    data = replace(RECIPE.data, root=str(data_root() / "att_faces"))
    return RunConfig(model, pre, data, replace(train_cfg, patience=train_cfg.epochs, seed=seed))


_STORES: dict[tuple[tuple[Path, ...], str], ImageStore] = {}


def decoded(records: list, pre: PreprocessConfig) -> ImageStore:
    """The records' images decoded with `pre` once per process (the MMOD detector is the slow part)."""
    key = (tuple(r.path for r in records), json.dumps(to_dict(pre), sort_keys=True))
    if key not in _STORES:
        _STORES[key] = store_for([r.path for r in records], pre)
    return _STORES[key]


def split_embeddings(model: SiameseNet, pre: PreprocessConfig, ids: list[str]) -> tuple:
    """fp32 embeddings, labels and groups of the AT&T images of identities `ids`, in scan order."""
    records = filter_identities(scan_folder(data_root() / "att_faces"), ids)
    labels, _ = label_array(records)
    store = decoded(records, pre)
    emb = embed_batches(model, store.images, pre)[[store.index[r.path] for r in records]]
    return emb, labels, group_array(records)


def head_check(out: Path, seed: int) -> dict:
    """Test EER of the model's L1 head against an unweighted L1 distance of the same embeddings (same
    seeded pairs): does the learned weighting a_j carry over to new people or only fit the training ones?"""
    lm = load_model(out)
    emb, labels, _ = split_embeddings(lm.model, lm.preprocess, lm.card.identities("test"))
    pairs = sample_pairs(labels, 4000, np.random.default_rng(seed))
    head = score_indices(lm.model, emb, pairs[:, 0], pairs[:, 1])
    plain = -(emb[pairs[:, 0]] - emb[pairs[:, 1]]).abs().sum(1).numpy()
    return {"eer_l1_head": metrics.eer(pairs[:, 2], head)[0], "eer_unweighted_l1": metrics.eer(pairs[:, 2], plain)[0],
            "head_weights_positive": int((lm.model.head.effective_weight() > 0).sum())}


def distance_scores(emb: torch.Tensor, i: np.ndarray, j: np.ndarray, kind: str) -> np.ndarray:
    """Minus the plain L1 or Euclidean distance of rows i and j (higher: more alike)."""
    d = emb[torch.as_tensor(i)] - emb[torch.as_tensor(j)]
    return -(d.abs().sum(1) if kind == "l1" else d.norm(dim=1)).numpy()


def plain_distance(emb: torch.Tensor, labels: np.ndarray, groups: np.ndarray | None, seed: int, n_pairs: int,
                   n_way: int, tasks: int) -> dict:
    """The twin alone: verification and N-way one-shot with plain L1 and Euclidean distances of the
    descriptors, on the seeded pairs and tasks `siamface evaluate` draws for the same identities."""
    pairs = sample_pairs(labels, n_pairs, np.random.default_rng(seed), groups=groups)
    q, c, ans = make_oneshot_tasks(labels, min(n_way, len(np.unique(labels))), tasks, seed, groups=groups)
    out = {}
    for kind in ("l1", "euclidean"):
        s = metrics.verification_summary(pairs[:, 2].astype(int), distance_scores(emb, pairs[:, 0], pairs[:, 1], kind),
                                         metrics.fold_ids(len(pairs), 10, seed=seed))
        oneshot = distance_scores(emb, np.repeat(q, c.shape[1]), c.reshape(-1), kind).reshape(c.shape)
        out[kind] = {**{k: s[k] for k in ("auc", "eer", "kfold_mean", "TAR@FAR=1e-02")},
                     "oneshot_accuracy": metrics.oneshot_accuracy(oneshot, ans)}
    return out


def zero_shot(init: str, out: Path, seed: int) -> dict:
    """The --init model before any AT&T training, on the same test subjects, pairs and one-shot tasks (with
    this run's preprocessing): what fine-tuning on the 25 training subjects adds."""
    lm, tuned = load_model(init), load_model(out)
    check_no_leakage(tuned.card, set(tuned.card.identities("test")), "test split")
    records = filter_identities(scan_folder(data_root() / "att_faces"), tuned.card.identities("test"))
    labels, _ = label_array(records)
    summary, _, _ = evaluate_identities(lm.model, tuned.preprocess, decoded(records, tuned.preprocess), labels,
                                        n_way=10, n_tasks=1000, n_pairs=4000, seed=seed, groups=group_array(records))
    return {k: summary[k] for k in ("auc", "eer", "oneshot_accuracy", "TAR@FAR=1e-02")}


def twin_alone(init: str, out: Path, seed: int) -> dict:
    """The --init tower with no head and no AT&T training (plain distances of its descriptors, fp32, this
    run's preprocessing) on the run's test subjects (the pairs and one-shot tasks of its test) and on its
    validation subjects (the pairs and tasks its training validated on: what recipe selection may look at)."""
    tower, tuned = load_model(init).model, load_model(out)
    train = tuned.card.train
    result = {}
    for split, draw, n_pairs, way, tasks in (("test", seed, 4000, 10, 1000),
                                             ("val", train.seed + 1, train.val_pairs, train.val_way, train.val_tasks)):
        emb, labels, groups = split_embeddings(tower, tuned.preprocess, tuned.card.identities(split))
        result[split] = plain_distance(emb, labels, groups, draw, n_pairs, way, tasks)
    return result


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
            **({"init_zero_shot": zero_shot(run.train.init, out, seed)} if trained_head(run.train.init) else {}),
            **({"twin_alone": twin_alone(run.train.init, out, seed)} if run.train.init else {})}


def trained_head(init: str) -> bool:
    """Whether a --init model has a Siamese head worth scoring zero-shot (a shipped starting point such as
    dlib-resnet has a_j = 0: p = 0.5 for every pair)."""
    return bool(init) and any(bool(p.detach().abs().sum()) for p in load_model(init).model.head.parameters())


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
                 f"{100 * (result['summary']['eer']['std'] or 0):.1f}** | {pct(plain)}{zs} | {m['auc']:.3f} | "
                 f"{pct(m['kfold_mean'])} | {pct(m['accuracy_at_calibrated_threshold'])} | "
                 f"{pct(m['oneshot_accuracy'])} | {pct(m['TAR@FAR=1e-02'])} |")
    return "\n".join(lines)


def twin_table(result: dict) -> str:
    """The twin alone (plain distances, no AT&T training) beside the trained model, mean ± sd over seeds,
    with each seed's figure: validation subjects first (what a recipe is chosen on), then the test ones."""
    rows = result["per_seed"]

    def cell(values: list[float], fmt: str = "pct") -> str:
        text = [f"{v:.4f}" if fmt == "auc" else f"{100 * v:.1f}" for v in values]
        mean, sd = float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        head = f"{mean:.4f} ± {sd:.4f}" if fmt == "auc" else f"{100 * mean:.2f}% ± {100 * sd:.2f}"
        return f"{head} ({' / '.join(text)})"

    lines = ["| subjects: metric | twin alone, plain L1 | twin alone, plain Euclidean | trained model |",
             "|---|---|---|---|"]
    for split, key, label, fmt, mine in (
            ("val", "eer", "validation: EER", "pct", "val_eer"), ("test", "eer", "**test: EER**", "pct", "eer"),
            ("test", "auc", "test: AUC", "auc", "auc"),
            ("test", "oneshot_accuracy", "test: 10-way one-shot", "pct", "oneshot_accuracy"),
            ("test", "TAR@FAR=1e-02", "test: TAR@FAR=1e-2", "pct", "TAR@FAR=1e-02"),
            ("test", "kfold_mean", "test: 10-fold accuracy", "pct", "kfold_mean")):
        twin = [cell([r["twin_alone"][split][k][key] for r in rows], fmt) for k in ("l1", "euclidean")]
        lines.append(f"| {label} | {twin[0]} | {twin[1]} | {cell([r[mine] for r in rows], fmt)} |")
    lines.append(f"| test: accuracy at the stored threshold | | | "
                 f"{cell([r['accuracy_at_calibrated_threshold'] for r in rows])} |")
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
        result = json.loads((RESULTS / f"{args.name}.json").read_text())
        print(markdown_table(result))
        if all("twin_alone" in r for r in result["per_seed"]):
            print("\n" + twin_table(result))
        return
    keep_decoded_images()  # seeds share the 400 photos: detect, align and (frozen tower) embed each once
    keep_descriptors()
    rows = [one_seed(args, s) for s in args.seeds]
    summary = {k: {"mean": float(np.mean([r[k] for r in rows])),
                   "std": float(np.std([r[k] for r in rows], ddof=1)) if len(rows) > 1 else None}  # JSON: no NaN
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
