"""`siamface models | train | evaluate | verify`: the model's life from training to a verdict."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from ..config import PATH_FIELDS, DataConfig, ModelConfig, PreprocessConfig, RunConfig, TrainConfig
from ..errors import SiamfaceError
from .flags import (
    absolute_path,
    add_config_flags,
    add_runtime_flag,
    check_device,
    config_from_args,
    json_flag,
    parse_align,
    print_json,
)


def cmd_models(args: argparse.Namespace) -> None:
    from ..models import list_models, model_spec, parameter_count

    rows = []
    for name in list_models():
        spec = model_spec(name)
        rows.append({"name": name, "parameters": parameter_count(name),
                     "input": f"{spec.preprocess.channels}x{spec.preprocess.size}x{spec.preprocess.size}",
                     "description": spec.description})
    if args.json:
        print_json(rows)
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}} {r['parameters']:>12,}  {r['input']:<10} {r['description']}")


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run a `train` command line describes: `--config FILE` (or defaults), then `--init`'s architecture
    and preprocessing, then each flag on top, one field at a time."""
    from ..data import data_root
    from ..lineage import init_defaults
    from ..models import default_preprocess

    base = RunConfig.read(args.config, data_root()) if args.config else None
    tcfg = config_from_args(TrainConfig, args, base.train if base else None)
    base_model, base_pre = (base.model, base.preprocess) if base else (None, None)
    if tcfg.init:  # fine-tuning keeps the starting model's architecture and preprocessing unless flags say otherwise
        base_model, base_pre, stored = init_defaults(tcfg.init)
        tcfg = dataclasses.replace(tcfg, init=stored)
    mcfg = config_from_args(ModelConfig, args, base_model)
    same_arch = base_model is not None and mcfg.name == base_model.name
    if args.model_kwargs:  # overrides on top of the inherited ones
        inherited = mcfg.kwargs if same_arch else {}
        mcfg = dataclasses.replace(mcfg, kwargs={**inherited, **json_flag("--model-kwargs", args.model_kwargs)})
    pre = config_from_args(PreprocessConfig, args, base_pre if same_arch else default_preprocess(mcfg.name))
    if args.align:
        pre = dataclasses.replace(pre, align=parse_align(args.align))
    data = config_from_args(DataConfig, args, base.data if base else None)
    data = dataclasses.replace(data, **{k: absolute_path(getattr(data, k)) for k in PATH_FIELDS})
    check_device(tcfg.device)
    return RunConfig(mcfg, pre, data, tcfg)


def cmd_train(args: argparse.Namespace) -> None:
    from ..training import train

    meta = train(run_config_from_args(args), args.out, resume=args.resume)
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 alone reports
        return
    print_json({"out": args.out, "status": meta["status"], "best_epoch": meta["epoch"],
            "train_seconds": meta.get("train_seconds"), "val": meta["val"], "calibration": meta.get("calibration")})


def cmd_evaluate(args: argparse.Namespace) -> None:
    from ..evaluate import reasons_text, run_evaluation

    check_device(args.device)
    report = run_evaluation(args.model, split=args.split, pairs=args.pairs, protocol=args.protocol,
                            omniglot_runs=args.omniglot_runs, data=args.data, out=args.out, way=args.way,
                            tasks=args.tasks, n_pairs=args.n_pairs, seed=args.seed, device=args.device,
                            strict=args.strict)
    if report.get("pairs_skipped"):
        print(f"siamface: {report['pairs_skipped']} of {report['pairs_skipped'] + report['n_pairs']} pairs skipped "
              f"({reasons_text(report['skipped_reasons'])}); the metrics cover the other {report['n_pairs']} "
              "(--strict to fail instead)", file=sys.stderr)
    print_json(report)


def cmd_verify(args: argparse.Namespace) -> None:
    from ..verify import Verifier

    check_device(args.device)
    if args.pairs:
        _verify_batch(args)
        return
    if not (args.image_a and args.image_b):
        raise SiamfaceError("verify needs two images (A B) or --pairs FILE")
    v = Verifier(args.model, threshold=args.threshold, device=args.device, detect=args.detect, select=args.select,
                 far=args.far, runtime=args.runtime)
    verdict = v.verify(args.image_a, args.image_b).to_dict()
    if args.full:
        print_json(verdict)
    else:
        from .compact import print_compact, verify_answer

        print_compact(verify_answer(verdict, [args.image_a, args.image_b]))


def _verify_batch(args: argparse.Namespace) -> None:
    """`--pairs in.csv --out scores.csv`: every distinct image embedded once; a row per pair."""
    import csv
    import io
    import os
    from collections import Counter

    from ..data.prepare import read_pairs
    from ..evaluate import reasons_text
    from ..files import atomic_write_bytes
    from ..verify import Verifier

    out = Path(args.out or Path(args.pairs).with_suffix(".scores.csv"))
    if out.exists() and Path(args.pairs).exists() and os.path.samefile(out, args.pairs):
        raise SiamfaceError(f"--out {out}: that is the pairs file itself; the scores would overwrite it (choose "
                            "another --out)")
    v = Verifier(args.model, threshold=args.threshold, device=args.device, detect=args.detect, select=args.select,
                 far=args.far, runtime=args.runtime)
    pairs = read_pairs(args.pairs)
    rows = v.verify_pairs([(p.a, p.b) for p in pairs], progress=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*rows[0], "label"] if rows else ["image_a"])
    writer.writeheader()
    for row, pair in zip(rows, pairs):
        writer.writerow({**row, "label": int(pair.same)})
    atomic_write_bytes(out, buf.getvalue().encode())
    failed = dict(Counter(r["error"] for r in rows if r["error"]).most_common())
    n_failed = sum(failed.values())
    print_json({"pairs": len(rows), "scored": len(rows) - n_failed, "not_scored": failed, "out": str(out),
                **v.decision.fields(), "model": v.name, "same": sum(bool(r["same"]) for r in rows)})
    if n_failed:
        summary = (f"{n_failed} of {len(rows)} pairs not scored ({reasons_text(failed)}); the reasons are in the "
                   f"error column of {out}")
        if args.strict:
            raise SiamfaceError(summary)
        print(f"siamface: {summary} (--strict to fail)", file=sys.stderr)


def cmd_calibrate(args: argparse.Namespace) -> None:
    from ..recalibrate import calibrate, summary

    path = calibrate(args.data, model=args.model, out=args.out, seed=args.seed, default=args.default, progress=True)
    print_json(summary(path))


def add_run_commands(sub: Any) -> None:
    """The models, train, evaluate and verify subcommands."""
    m = sub.add_parser("models", help="list registered architectures with parameter counts and input size")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")
    m.set_defaults(func=cmd_models)

    t = sub.add_parser("train", help="train on an identity folder (--data) or a pairs file (--pairs-file)",
                       usage="siamface train --out RUN (--data FOLDER | --pairs-file FILE) [--init MODEL] [options]",
                       description="Train a Siamese network; every option below is one field of the run's config "
                                   "(saved in RUN/model.json).")
    t.add_argument("--out", required=True, help="run folder: model.safetensors, model.json, log.jsonl, curves.png")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    t.add_argument("--config", default=None,
                   help="a run config JSON (model/preprocess/data/train sections, as in model.json or configs/); "
                        "flags override its fields; relative data paths are under the data root (SIAMFACE_DATA)")
    t.add_argument("--model-kwargs", default="",
                   help='JSON overrides for the model factory, e.g. \'{"embed_dim": 128}\' (with --init: on top of '
                        "the starting model's own)")
    t.add_argument("--align", default=None,
                   help='detect and align faces: "haar", "none" (default) or AlignConfig JSON, e.g. '
                        '\'{"detector": "haar", "on_missing": "center", "fallback_box": 0.8}\'')
    for cls in (ModelConfig, DataConfig, TrainConfig):
        add_config_flags(t, cls)
    add_config_flags(t, PreprocessConfig, defaults=False)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a model; writes report.json, report.md, roc.png, hist.png")
    e.add_argument("--model", required=True, help="run folder of a trained model")
    src = e.add_mutually_exclusive_group()
    src.add_argument("--split", choices=("test", "val"),
                     help="held-out identities recorded in the model (default test)")
    src.add_argument("--pairs", help="pairs file: LFW pairs.txt/pairsDevTest.txt or CSV image_a,image_b,label")
    src.add_argument("--protocol", choices=("lfw-view1", "lfw-view2"), help="standard LFW protocol on --data")
    src.add_argument("--omniglot-runs", help="the official Omniglot all_runs folder (20-way, 400 trials)")
    e.add_argument("--data", help="dataset root (default: the one recorded in the model)")
    e.add_argument("--out", help="report folder (default: <model>/eval-<what>)")
    e.add_argument("--way", type=int, default=20, help="N of N-way one-shot on identity splits")
    e.add_argument("--tasks", type=int, default=400, help="one-shot tasks on identity splits")
    e.add_argument("--n-pairs", type=int, default=4000, help="verification pairs sampled on identity splits")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="cpu")
    e.add_argument("--strict", action="store_true",
                   help="on a pairs file, fail when an image cannot be used (default: skip its pairs and count them)")
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("calibrate", help="measure a model's operating points on your own people; writes a derived "
                                         "model folder (same weights, your calibration)")
    c.add_argument("--data", required=True, help="identity folder: <data>/<person>/<photo> (at least 2 people)")
    c.add_argument("--out", required=True, help="the derived model folder to write (must not exist or be empty)")
    c.add_argument("--model", default=None, help="the model to calibrate (default: the shipped face model)")
    c.add_argument("--default", default=None,
                   help="the point decisions use by default, e.g. FAR=1e-03 or EER (default: the model's)")
    c.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and of pair sampling beyond 5M pairs")
    c.set_defaults(func=cmd_calibrate)

    v = sub.add_parser("verify", help="are two photos the same person? prints JSON")
    v.add_argument("image_a", nargs="?")
    v.add_argument("image_b", nargs="?")
    v.add_argument("--model", default=None,
                   help="a shipped model's name (dlib-twin, dlib-resnet, face-prior, lfw-view1; `siamface models` "
                        "lists architectures) or a trained run's folder (default: dlib-twin)")
    v.add_argument("--full", action="store_true",
                   help="print the whole report (every face box, eyes, landmarks), not the decision and one line "
                        "per photo")
    v.add_argument("--pairs", help="batch mode: a CSV image_a,image_b,label (or LFW pairs file) to score")
    v.add_argument("--out", help="batch mode: the scores CSV to write (default: <pairs>.scores.csv)")
    v.add_argument("--threshold", type=float, default=None, help="override the calibrated threshold")
    v.add_argument("--far", type=float, default=None,
                   help="decide at the threshold calibrated for this false-accept rate (1e-2, 1e-3, 1e-4..., where "
                        "the model's calibration resolved it) instead of the model's default point")
    v.add_argument("--no-detect", dest="detect", action="store_false",
                   help="the images are already face crops: no face detection (centre square, resized)")
    v.add_argument("--select", choices=("largest", "central"), default=None,
                   help="which face to use when a photo has several (default: the model's setting)")
    v.add_argument("--device", default="cpu")
    add_runtime_flag(v)
    v.add_argument("--strict", action="store_true",
                   help="batch mode: exit non-zero when a pair cannot be scored (its reason is in the error column "
                        "either way)")
    v.set_defaults(func=cmd_verify)
