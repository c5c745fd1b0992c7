"""LFW View 2 with dlib's descriptor as siamface's twin tower, and the default model made from it.

Every LFW photo goes through the native dlib pipeline (MMOD detector, 5 landmarks, 150x150 chip) and the
converted ResNet once; the aligned chips are cached in `--cache` (uint8, read back without pickle) so later
runs skip the detector. Then, fold by fold of pairs.txt ("unrestricted, labeled outside data": dlib's
network was trained on about 3M faces of 7,485 people, none of them LFW's):
  (a) the twin alone: plain Euclidean and plain L1 distance of the descriptors, the threshold chosen on the
      nine other folds' pairs;
  (b) the Siamese head p = sigmoid(sum_j a_j |h1_j - h2_j| + b) trained (`siamface train --init dlib-resnet
      --freeze all`) on the people of the nine other folds, 150 of them held out to select the epoch and
      calibrate the threshold; accuracy with the protocol's threshold (nine other folds' pairs) and with the
      stored one.
Each fold's result is written to benchmarks/results/twin_view2/foldK.json as soon as it is done.

    python benchmarks/twin_lfw.py --folds 0 1 2 3 4 5 6 7 8 9   # (a) and (b)
    python benchmarks/twin_lfw.py --table                        # the summary table of the fold files
    python benchmarks/twin_lfw.py --ship-init                    # siamface/weights/dlib-resnet (untrained head)
    python benchmarks/twin_lfw.py --ship                         # the default model: the head on every LFW
                                                                 # person but 150, shipped as dlib-twin
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from common import REPO, RESULTS, command, data_root, machine, std_error, train_once, write_result

from siamface import metrics
from siamface.card import ModelCard, Provenance
from siamface.checkpoint import FROM_FACTORY, META, WEIGHTS, load_model, save_model
from siamface.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from siamface.data import pair_identities, scan_folder
from siamface.data.lfw import all_people_split, view2_pairs, view2_split
from siamface.data.prepare import decode_images, keep_decoded_images, remember_decoded
from siamface.faces.config import DLIB_CHIP
from siamface.files import atomic_write_json
from siamface.freeze import embed_frozen, keep_descriptors
from siamface.lineage import check_no_leakage
from siamface.models import create_model, default_preprocess
from siamface.preprocess import load_input

FOLDS = RESULTS / "twin_view2"  # --select central: RESULTS / "twin_view2_central"
WEIGHTS_DIR = REPO / "siamface" / "weights"
PRE = default_preprocess("dlib_resnet", align=DLIB_CHIP)  # --select central: the most central face
HEAD = TrainConfig(init="dlib-resnet", freeze="all", distortions=False, flip=True, pairing="all",
                   classes_per_batch=32, images_per_class=4, epochs=10, pairs_per_epoch=20_000, lr=1e-2,
                   weight_decay=1e-4, select="eer", val_way=20, val_tasks=320, val_pairs=4000, patience=10,
                   bf16=False)


def write_init(dest: Path) -> Path:
    """The shipped starting point `dlib-resnet`: dlib's tower (rebuilt by its factory from the converted
    weights) under an untrained L1 head (a_j = 0, b = 0: p = 0.5 for every pair), with dlib's alignment."""
    torch.manual_seed(0)
    model = create_model("dlib_resnet", preprocess=PRE)
    with torch.no_grad():
        model.head.fc.weight.zero_()
        model.head.fc.bias.zero_()
    note = ("dlib's face descriptor (CC0, Davis E. King; ~3M faces of 7,485 people, none of LFW's) under an "
            "untrained Siamese head: a starting point for `siamface train --init dlib-resnet`, not a verifier (no "
            "calibrated threshold)")
    made = Provenance(created_by="benchmarks/twin_lfw.py --ship-init", note=note)
    save_model(dest, model, ModelCard(dest, ModelConfig("dlib_resnet"), PRE, "", tower_weights=FROM_FACTORY,
                                      provenance=made))
    return dest


def chips(paths: list[Path], cache: Path) -> dict[Path, np.ndarray | None]:
    """Every photo aligned once by the model's preprocessing (None: no face), cached on disk."""
    index = cache.with_suffix(".json")
    if index.exists():
        names = json.loads(index.read_text())
        arrays = np.load(cache, allow_pickle=False)
        got = {Path(n): (arrays[i] if i >= 0 else None) for n, i in names.items()}
        if set(got) >= set(paths):
            return got
    keep_decoded_images()
    store = decode_images(paths, PRE, load_input, progress=True)  # no face: left out
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, store.images.numpy())
    atomic_write_json(index, {str(p): store.index.get(p, -1) for p in paths})
    return {p: (store.images[store.index[p]].numpy() if p in store.index else None) for p in paths}


def descriptors(model: torch.nn.Module, decoded: dict[Path, np.ndarray | None], paths: list[Path]) -> torch.Tensor:
    """Descriptors of photos; a photo with no face found falls back to the central box (a protocol may not
    drop pairs), as `siamface evaluate` does."""
    arrays = [decoded[p] if decoded.get(p) is not None else load_input(p, PRE, fallback=True) for p in paths]
    return embed_frozen(model, torch.from_numpy(np.stack(arrays)), PRE, "cpu", False)


def zero_shot(test_d: np.ndarray, y: np.ndarray, other_d: np.ndarray, y9: np.ndarray) -> dict:
    """Accuracy on a fold with the threshold chosen on the nine other folds (scores: minus the distance)."""
    thr, _ = metrics.best_threshold(y9, -other_d)
    return {"accuracy": metrics.accuracy_at(y, -test_d, thr), "threshold": -thr}


def one_fold(args: argparse.Namespace, fold: int, decoded: dict, tower: torch.nn.Module) -> dict:
    lfw = data_root() / "lfw"
    pairs = view2_pairs(lfw)
    paths = list(dict.fromkeys(p for q in pairs for p in (q.a, q.b)))
    emb = dict(zip(paths, descriptors(tower, decoded, paths)))
    a, b = torch.stack([emb[q.a] for q in pairs]), torch.stack([emb[q.b] for q in pairs])
    y, folds = np.array([int(q.same) for q in pairs]), np.array([q.fold for q in pairs])
    test, rest = folds == fold, folds != fold
    result: dict = {"fold": fold, "n_pairs": int(test.sum())}
    for name, d in (("euclidean", (a - b).norm(dim=1)), ("l1", (a - b).abs().sum(dim=1))):
        d = d.numpy()
        result[f"twin_{name}"] = {**zero_shot(d[test], y[test], d[rest], y[rest]),
                                  "scores": [round(-float(v), 6) for v in d[test]]}
    out = Path(args.runs) / f"fold{fold}"
    run = RunConfig(ModelConfig("dlib_resnet"), PRE, DataConfig(), replace(HEAD, seed=args.seed, threads=args.threads))
    split = view2_split(lfw, fold, 150, args.seed)
    run = replace(run, data=DataConfig(root=str(lfw / "deepfunneled"), train_ids=split.train, val_ids=split.val,
                                       test_ids=split.test))
    t0 = time.perf_counter()
    meta = train_once(run, out)
    lm = load_model(out)
    check_no_leakage(lm.card, pair_identities([q for q, t in zip(pairs, test) if t]), f"fold {fold}", leaf=True)
    p = torch.sigmoid(lm.model.score(a, b).float()).detach().numpy()
    thr9, _ = metrics.best_threshold(y[rest], p[rest])
    result["head"] = {"accuracy_protocol_threshold": metrics.accuracy_at(y[test], p[test], thr9),
                      "accuracy_at_calibrated_threshold": metrics.accuracy_at(y[test], p[test], lm.threshold),
                      "calibrated_threshold": lm.threshold, "val_eer": meta["val"]["eer"],
                      "best_epoch": meta["epoch"], "train_seconds": meta["train_seconds"],
                      "wall_seconds": round(time.perf_counter() - t0, 1),
                      "scores": [round(float(v), 6) for v in p[test]]}
    result.update(labels=y[test].tolist(), command=command(), config=run.to_dict(), machine=machine())
    FOLDS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(FOLDS / f"fold{fold}.json", result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("labels", "config", "machine")}, default=str)[:400])
    return result


def table() -> dict:
    """Mean accuracy +- standard error over the folds done, and AUC, EER, TAR@FAR over all their pairs."""
    rows = [json.loads(f.read_text()) for f in sorted(FOLDS.glob("fold*.json"))]
    y = np.concatenate([r["labels"] for r in rows])
    out: dict = {"folds": [r["fold"] for r in rows], "n_pairs": int(len(y))}
    for key, acc_key in (("twin_euclidean", "accuracy"), ("twin_l1", "accuracy"),
                         ("head", "accuracy_protocol_threshold"), ("head", "accuracy_at_calibrated_threshold")):
        s = np.concatenate([r[key]["scores"] for r in rows])
        accs = [r[key][acc_key] for r in rows]
        name = key if key != "head" else f"head ({acc_key})"
        out[name] = {"mean_accuracy": float(np.mean(accs)), "std_error": std_error(accs),
                     "per_fold": accs, "auc": metrics.roc_auc(y, s), "eer": metrics.eer(y, s)[0],
                     **metrics.tar_at_fars(y, s, (1e-3, 1e-2))}
    return out


def ship(args: argparse.Namespace, decoded: dict) -> dict:
    """The default model: the head trained on every LFW person but 150 held out for the epoch and the
    threshold (whose lineage then holds every LFW person: it can never be scored on LFW)."""
    lfw = data_root() / "lfw"
    split = all_people_split(lfw, 150, args.seed)
    run = RunConfig(ModelConfig("dlib_resnet"), PRE,
                    DataConfig(root=str(lfw / "deepfunneled"), train_ids=split.train, val_ids=split.val),
                    replace(HEAD, seed=args.seed, threads=args.threads))
    out = Path(args.runs) / "ship"
    meta = train_once(run, out)
    dest, tmp = WEIGHTS_DIR / "dlib-twin", WEIGHTS_DIR / ".dlib-twin.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in (META, WEIGHTS):
        shutil.copy2(out / name, tmp / name)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return {"val": meta["val"], "calibration": meta["calibration"], "train_seconds": meta["train_seconds"],
            "shipped": str(dest.relative_to(REPO))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folds", type=int, nargs="*", default=[])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", default=str(Path("runs") / "bench-twin"))
    p.add_argument("--cache", default=str(Path("runs") / "bench-twin" / "chips.npy"))
    p.add_argument("--table", action="store_true")
    p.add_argument("--ship-init", action="store_true")
    p.add_argument("--ship", action="store_true")
    p.add_argument("--select", choices=("largest", "central"), default="largest",
                   help="which face of a photo with several (LFW labels the central one); central: results in "
                        "twin_view2_central")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.select == "central":  # the module's settings for this run: another alignment, other result files
        global PRE, FOLDS
        PRE = replace(PRE, align=replace(PRE.align, select="central"))
        FOLDS = RESULTS / "twin_view2_central"
    if args.ship_init:
        print(write_init(WEIGHTS_DIR / "dlib-resnet"))
    if args.folds or args.ship:
        paths = sorted(r.path for r in scan_folder(data_root() / "lfw" / "deepfunneled"))
        decoded = chips(paths, Path(args.cache))
        remember_decoded(PRE, decoded)
        keep_descriptors()
        tower = create_model("dlib_resnet", preprocess=PRE).eval()
        for fold in args.folds:
            one_fold(args, fold, decoded, tower)
        if args.ship:
            write_result("twin_default", {"command": command(), "machine": machine(), **ship(args, decoded)})
    if args.table or args.folds:
        write_result(FOLDS.name, {"benchmark": "LFW View 2, dlib's descriptor as the twin", "command": command(),
                                  "select": PRE.align.select, **table()})


if __name__ == "__main__":
    main()
