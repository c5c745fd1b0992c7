"""Operating points that hold on people and photos never seen: the shipped twin's head, its calibration over
every kind of photo here, and the transfer table.

LFW's people are split four ways by seed (`siamface.data.lfw.calibration_split`): 250 + 50 people train the
Siamese head and select its epoch (`siamface train --init dlib-resnet --freeze all`), 2,449 calibrate
its operating points, and 3,000 (500 with two or more photos, 2,500 with one) are never used: the transfer
rows and the 1,000-person gallery are measured on them. The descriptors come from
`benchmarks/photo_kinds.py` (run it first); a pair's score is the head's p(same).

    python benchmarks/photo_kinds.py                  # descriptors of every kind (about 25 min on 2 cores)
    python benchmarks/operating_points.py --train     # the head (runs/ops/head)
    python benchmarks/operating_points.py --tie       # the shipped head: tied weights, fitted on those people
    python benchmarks/operating_points.py --ship      # calibrate on every kind -> siamface/weights/dlib-twin
    python benchmarks/operating_points.py --transfer  # the transfer table -> results/operating_points.json
    python benchmarks/operating_points.py --heads --previous runs/previous-twin   # TAR by head
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, command, data_root, machine, train_once, write_result  # noqa: E402
from photo_kinds import KINDS, VARIANTS, load  # noqa: E402

from siamface import calibration as cal  # noqa: E402
from siamface.card import calibration_record  # noqa: E402
from siamface.checkpoint import META, WEIGHTS, load_model  # noqa: E402
from siamface.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from siamface.data.lfw import calibration_split  # noqa: E402
from siamface.embed import probability  # noqa: E402
from siamface.faces.config import DLIB_CHIP  # noqa: E402
from siamface.files import atomic_write_json  # noqa: E402
from siamface.models import default_preprocess  # noqa: E402

PRE = default_preprocess("dlib_resnet", align=DLIB_CHIP)
HEAD = TrainConfig(init="dlib-resnet", freeze="all", distortions=False, flip=True, pairing="all",
                   classes_per_batch=32, images_per_class=4, epochs=10, pairs_per_epoch=20_000, lr=1e-2,
                   weight_decay=1e-4, select="eer", val_way=20, val_tasks=320, val_pairs=4000, patience=10,
                   bf16=False)
DEST = REPO / "siamface" / "weights" / "dlib-twin"
POINTS = (None, 1e-2, 1e-3, 1e-4)
MAX_PAIRS = 20_000_000


def roles(seed: int = 0) -> tuple[set[str], set[str], set[str]]:
    """(head people: train + val, calibration people, test people) of LFW."""
    split, calib = calibration_split(data_root() / "lfw", seed=seed)
    return set(split.train) | set(split.val), set(calib), set(split.test)


def train_head(args: argparse.Namespace) -> dict:
    lfw = data_root() / "lfw"
    split, _ = calibration_split(lfw, seed=args.seed)
    run = RunConfig(ModelConfig("dlib_resnet"), PRE,
                    DataConfig(root=str(lfw / "deepfunneled"), train_ids=split.train, val_ids=split.val,
                               test_ids=split.test),
                    replace(HEAD, seed=args.seed, threads=args.threads))
    return train_once(run, Path(args.runs) / "head")


def tie_head(args: argparse.Namespace) -> dict:
    """The shipped head: the paper's p = sigmoid(sum_j a_j |h1_j - h2_j| + b) with its weights tied (a_j = a
    for every j), a and b fitted by class-balanced logistic regression on every pair of the head people's
    photos. On the test people the learned per-dimension head trails this one (see the result file)."""
    src, dest = Path(args.runs) / "head", Path(args.runs) / "tied"
    head_people, _, test = roles(args.seed)
    emb, ids, _ = load("lfw", Path(args.cache))
    keep = np.isin(ids, sorted(head_people))
    e, y_ids = torch.from_numpy(emb[keep]), ids[keep]
    i, j = np.triu_indices(len(e), 1)
    x = (e[torch.as_tensor(i)] - e[torch.as_tensor(j)]).abs().sum(1).double().numpy()
    y = (y_ids[i] == y_ids[j]).astype(np.float64)
    w = np.where(y == 1, 0.5 / y.sum(), 0.5 / (1 - y).sum())
    mu, sd = x.mean(), x.std()
    z, a, b = (x - mu) / sd, 0.0, 0.0
    for _ in range(30):  # Newton's method on the weighted logistic loss, on the standardised distance
        p = 1 / (1 + np.exp(-(a * z + b)))
        g = np.array([np.sum(w * (p - y) * z), np.sum(w * (p - y))])
        h = np.array([[np.sum(w * p * (1 - p) * z * z), np.sum(w * p * (1 - p) * z)],
                      [np.sum(w * p * (1 - p) * z), np.sum(w * p * (1 - p))]])
        a, b = np.array([a, b]) - np.linalg.solve(h, g)
    a, b = a / sd, b - a * mu / sd
    lm = load_model(src)
    with torch.no_grad():
        lm.model.head.fc.weight.fill_(float(a))
        lm.model.head.fc.bias.fill_(float(b))
    meta = json.loads((src / META).read_text())
    meta.pop("weights_sha256", None)
    meta["note"] = (f"the Siamese L1 head with tied weights (a_j = {a:.4f} for all j, b = {b:.4f}), fitted by "
                    f"class-balanced logistic regression on all {len(x):,} pairs of the {len(head_people)} head "
                    "people's photos (benchmarks/operating_points.py --tie); the per-dimension head trained by "
                    "siamface train on them (the train section) scored lower on people never seen")
    dest.mkdir(parents=True, exist_ok=True)
    from siamface.checkpoint import save_model

    save_model(dest, lm.model, meta)
    return {"a": float(a), "b": float(b), "pairs": int(len(x)), "people": len(head_people)}


class Scorer:
    """The head's p(same) over rows of a descriptor matrix."""

    def __init__(self, model_dir: Path) -> None:
        self.model = load_model(model_dir).model.eval()

    def __call__(self, emb: np.ndarray):
        e = torch.from_numpy(emb)

        @torch.no_grad()
        def score(i: np.ndarray, j: np.ndarray) -> np.ndarray:
            return probability(self.model, e[torch.as_tensor(i)], e[torch.as_tensor(j)])

        return score


def kind_pairs(scorer: Scorer, kind: str, cache: Path, people: set[str] | None, name: str | None = None,
               seed: int = 0) -> cal.PairScores:
    """Every pair of a kind's photos (restricted to `people`), scored by the head."""
    emb, ids, _ = load(kind, cache)
    if people is not None:
        keep = np.isin(ids, sorted(people))
        emb, ids = emb[keep], ids[keep]
    return cal.all_pairs(scorer(emb), ids, kind=name or kind, max_pairs=MAX_PAIRS, seed=seed)


def measure(point: cal.OperatingPoint, ps: cal.PairScores, n_boot: int = cal.N_BOOT) -> dict:
    ev = cal.evidence(ps, point.threshold, n_boot=n_boot)
    return {"stated_far": point.far, "measured_far": ev.far, "far_interval": [round(x, 7) for x in ev.far_interval],
            "ratio": round(ev.far / point.far, 3) if point.far else None, "frr": ev.frr,
            "false_accepts": ev.false_accepts, "false_accept_people_pairs": ev.false_accept_people_pairs,
            "impostor_pairs": ev.n_impostor, "genuine_pairs": ev.n_genuine, "people": ev.n_identities,
            "threshold": point.threshold}


def heads(args: argparse.Namespace) -> dict:
    """TAR at FAR 1e-2 / 1e-3 / 1e-4 on every pair of the test people's photos (at most 3M sampled) for the
    per-dimension head, the tied head, a previous model given by --previous, and the plain L1 and L2
    distances of the descriptors."""
    cache = Path(args.cache)
    _, _, test = roles(args.seed)
    emb, ids, _ = load("lfw", cache)
    keep = np.isin(ids, sorted(test))
    e = torch.from_numpy(emb[keep])
    scorers = {name: Scorer(Path(args.runs) / name)(emb[keep]) for name in ("head", "tied")}
    if args.previous:
        scorers["previous"] = Scorer(Path(args.previous))(emb[keep])
    scorers["L1 distance"] = lambda i, j: -(e[torch.as_tensor(i)] - e[torch.as_tensor(j)]).abs().sum(1).numpy()
    scorers["L2 distance"] = lambda i, j: -(e[torch.as_tensor(i)] - e[torch.as_tensor(j)]).norm(dim=1).numpy()
    out = {}
    for name, score in scorers.items():
        ps = cal.all_pairs(score, ids[keep], max_pairs=3_000_000, seed=args.seed)
        out[name] = {f"TAR@FAR={f:.0e}": float((ps.genuine >= ps.need(f)).mean()) for f in (1e-2, 1e-3, 1e-4)}
        print(name, out[name], flush=True)
    return {"benchmark": "TAR at FAR on LFW test-role people, by head", "command": command(), "seed": args.seed,
            "pairs": "every pair of the test people's photos, at most 3M sampled", "heads": out, "machine": machine()}


def point_names() -> list[str]:
    return [cal.EER if f is None else cal.far_name(f) for f in POINTS]


def calibration_sets(scorer: Scorer, cache: Path, people: set[str], leave_out: str | None = None) -> list:
    """Every kind for calibration: LFW and its variants on the calibration people, AT&T, IMM."""
    out = []
    for kind in KINDS:
        if kind == leave_out:
            continue
        out.append(kind_pairs(scorer, kind, cache, people if kind.startswith("lfw") else None))
    return out


def halves(ids: np.ndarray, seed: int) -> tuple[set[str], set[str]]:
    people = np.random.default_rng(seed).permutation(sorted(set(ids.tolist())))
    return set(people[: len(people) // 2].tolist()), set(people[len(people) // 2:].tolist())


def transfer(args: argparse.Namespace) -> dict:
    """For each kind: calibrate on every other kind, measure on the one left out (LFW kinds: on the test
    people); then `siamface calibrate`'s points on half of a kind's people, measured on the other half, over
    --half-seeds random halves (a few look-alike pairs of people decide a small set's FAR, so one split
    says little: the median and the 10th-90th percentiles of the ratio)."""
    cache, head = Path(args.cache), Path(args.runs) / args.head
    scorer = Scorer(head)
    _, calib, test = roles(args.seed)
    rows: dict = {}
    pool = {kind: kind_pairs(scorer, kind, cache, calib if kind.startswith("lfw") else None) for kind in KINDS}
    for kind in KINDS:
        t0 = time.perf_counter()
        sets = [ps for k, ps in pool.items() if k != kind]
        pts = cal.calibrate_sets(sets, "the other kinds", fars=[f for f in POINTS if f], n_boot=0).points
        held = kind_pairs(scorer, kind, cache, test) if kind.startswith("lfw") else pool[kind]
        rows[kind] = {"left_out": {n: measure(pts[n], held) for n in point_names() if n in pts}}
        _, ids, _ = load(kind, cache)
        people = sorted((test if kind.startswith("lfw") else set(ids.tolist())) & set(ids.tolist()))
        runs = []
        for seed in range(args.half_seeds):  # `siamface calibrate` on half the people, measured on the others
            a, b = halves(np.array(people), seed)
            pa, pb = kind_pairs(scorer, kind, cache, a), kind_pairs(scorer, kind, cache, b)
            own = cal.calibrate_sets([pa], f"half of {kind}", fars=[f for f in POINTS if f], n_boot=0).points
            runs.append({n: measure(own[n], pb, n_boot=0) for n in point_names() if n in own})
        rows[kind]["calibrate_half"] = {
            n: {"ratios": [r[n]["ratio"] for r in runs if n in r],
                "median_ratio": float(np.median([r[n]["ratio"] for r in runs if n in r])),
                "p10_p90": np.percentile([r[n]["ratio"] for r in runs if n in r], [10, 90]).round(3).tolist(),
                "resolved_in": sum(n in r for r in runs), "splits": len(runs)}
            for n in point_names() if any(n in r for r in runs) and n != cal.EER}
        print(json.dumps({kind: {n: v.get("ratio") for n, v in rows[kind]["left_out"].items()},
                          "half": {n: v["median_ratio"] for n, v in rows[kind]["calibrate_half"].items()}}),
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    return {"benchmark": "stated against measured FAR, each kind left out of the calibration in turn",
            "command": command(), "seed": args.seed, "head": str(head), "rows": rows, "machine": machine()}


def ship(args: argparse.Namespace) -> dict:
    """Calibrate the head on every kind (LFW calibration people and their variants, AT&T, IMM) and write it
    as the default model `dlib-twin`."""
    cache, head = Path(args.cache), Path(args.runs) / args.head
    scorer = Scorer(head)
    _, calib, _ = roles(args.seed)
    sets = calibration_sets(scorer, cache, calib)
    what = ("LFW people never used to train the head (calibration role, seed "
            f"{args.seed}), the same photos changed here ({', '.join(VARIANTS)}), AT&T and IMM")
    points = cal.calibrate_sets(sets, what, seed=args.seed)
    meta = json.loads((head / META).read_text())
    meta["calibration"] = calibration_record(points, default=args.default, identities=sorted(calib))
    meta["created_by"] = "benchmarks/operating_points.py --ship"
    tmp = DEST.with_name(".dlib-twin.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    shutil.copy2(head / WEIGHTS, tmp / WEIGHTS)
    atomic_write_json(tmp / META, meta)
    load_model(tmp)  # the card validates
    shutil.rmtree(DEST, ignore_errors=True)
    tmp.rename(DEST)
    summary = {n: {k: v for k, v in p.to_dict().items() if k != "evidence"} |
               {"kinds": {e.kind: {"far": e.far, "frr": e.frr, "n_impostor": e.n_impostor, "needs": e.needs}
                          for e in p.kinds}} for n, p in points.points.items()}
    return {"command": command(), "seed": args.seed, "points": summary, "unresolved": points.unresolved,
            "curve": points.curve, "machine": machine()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", action="store_true")
    p.add_argument("--ship", action="store_true")
    p.add_argument("--transfer", action="store_true")
    p.add_argument("--tie", action="store_true", help="fit the tied-weight head (runs/ops/tied) from runs/ops/head")
    p.add_argument("--head", default="tied", help="the head under runs/ that --ship and --transfer use")
    p.add_argument("--heads", action="store_true", help="TAR at FAR of each head on the test people")
    p.add_argument("--previous", default="", help="--heads: a previous model folder to compare too")
    p.add_argument("--default", default=cal.far_name(1e-3), help="the shipped default operating point")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--half-seeds", type=int, default=10, help="--transfer: splits of each kind into halves")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", default="runs/ops")
    p.add_argument("--cache", default="runs/kinds")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.train:
        meta = train_head(args)
        print(json.dumps({"val": meta["val"], "train_seconds": meta["train_seconds"]})[:600])
    if args.tie:
        print(json.dumps(tie_head(args)))
    if args.heads:
        write_result("operating_points_heads", heads(args))
    if args.ship:
        write_result("operating_points_ship", ship(args))
    if args.transfer:
        write_result("operating_points", transfer(args))


if __name__ == "__main__":
    main()
