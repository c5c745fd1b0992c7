"""`siamface` command line: a thin translator from flags to library calls, JSON out, one-line errors.

Training flags are generated from the config dataclasses' fields, one flag per field (`--batch-size` is
`TrainConfig.batch_size`), so the CLI cannot drift from the library.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

from . import __version__
from .config import PATH_FIELDS, DataConfig, ModelConfig, PreprocessConfig, RunConfig, TrainConfig
from .errors import SiamfaceError
from .files import os_reason

# Config fields that get a different flag name, or none (set by a dedicated flag).
RENAME = {("DataConfig", "root"): "data", ("ModelConfig", "name"): "model"}
SKIP = {("PreprocessConfig", "align"), ("ModelConfig", "kwargs")}
HELP = {("TrainConfig", "freeze"): "none | all (train the Siamese head only, on descriptors computed once per "
                                   "image; needs --no-distortions) | a tower stage: the stages before it stay fixed",
        ("TrainConfig", "init"): "start from this trained model (fine-tuning): a run folder or a shipped model's "
                                 "name (face-prior, lfw-view1); its architecture and preprocessing apply unless "
                                 "flags change them"}


def _flag(cls: type, name: str) -> str:
    return RENAME.get((cls.__name__, name), name).replace("_", "-")


def _element_type(f: dataclasses.Field) -> type:
    """The element type of a `tuple[X, ...]` field (annotations are strings under PEP 563)."""
    ann = str(f.type)
    return int if "tuple[int" in ann else float if "tuple[float" in ann else str


def add_config_flags(parser: argparse.ArgumentParser, cls: type, defaults: bool = True, base: Any = None,
                     only: tuple[str, ...] = ()) -> None:
    """One flag per dataclass field (or per field named in `only`); bools get --x/--no-x; tuples take several
    values. Unset flags stay None, so `config_from_args` keeps `base`'s value (shown as the default)."""
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if (cls.__name__, f.name) in SKIP or (only and f.name not in only):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        shown = getattr(base, f.name) if base is not None else default if defaults else "from the model"
        help_ = f"{cls.__name__}.{f.name} (default: {shown})"
        if (cls.__name__, f.name) in HELP:
            help_ = f"{help_}: {HELP[cls.__name__, f.name]}"
        kw: dict[str, Any] = {"dest": f"{cls.__name__}.{f.name}", "default": None, "help": help_}
        if not isinstance(default, bool):
            kw["metavar"] = f.name.upper()
        if isinstance(default, bool):
            kw["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, tuple):
            kw.update(nargs="+", type=_element_type(f))
        else:
            kw["type"] = type(default)
        group.add_argument(f"--{_flag(cls, f.name)}", **kw)


def config_from_args(cls: type, args: argparse.Namespace, base: Any = None) -> Any:
    """Build `cls` from parsed flags; unset flags keep `base`'s (or the dataclass') values."""
    changes = {f.name: getattr(args, f"{cls.__name__}.{f.name}") for f in dataclasses.fields(cls)
               if getattr(args, f"{cls.__name__}.{f.name}", None) is not None}
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
    return dataclasses.replace(base, **changes) if base is not None else cls(**changes)


def parse_align(text: str) -> dict[str, Any] | None:
    """--align haar | none | JSON -> the AlignConfig dict stored in PreprocessConfig.align (validated)."""
    from .faces import AlignConfig

    if text == "none":
        return None
    data = _json_flag("--align", text) if text.lstrip().startswith("{") else {"detector": text}
    return AlignConfig.from_dict(data).to_dict()


def check_device(device: str) -> str:
    """A usable torch device name, or a one-line error."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SiamfaceError(f"--device {device}: no CUDA device is available here (use --device cpu)")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise SiamfaceError(f"--device {device}: expected cpu, cuda, cuda:N or mps")
    return device


def _json_flag(flag: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SiamfaceError(f"{flag}: not valid JSON ({e}): {text!r}") from e


def _absolute(path: str) -> str:
    """Data paths are stored absolute in model.json, so a run can be evaluated from any directory."""
    return str(Path(path).expanduser().resolve()) if path else path


def _finite(obj: Any) -> Any:
    """NaN and infinities are not JSON numbers: print them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _print(obj: Any) -> None:
    print(json.dumps(_finite(obj), indent=2, default=str, allow_nan=False))


# ---- commands ------------------------------------------------------------------------------------------

def cmd_models(args: argparse.Namespace) -> None:
    from .models import list_models, model_spec, parameter_count

    rows = []
    for name in list_models():
        spec = model_spec(name)
        rows.append({"name": name, "parameters": parameter_count(name),
                     "input": f"{spec.preprocess.channels}x{spec.preprocess.size}x{spec.preprocess.size}",
                     "description": spec.description})
    if args.json:
        _print(rows)
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}} {r['parameters']:>12,}  {r['input']:<10} {r['description']}")


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run a `train` command line describes: `--config FILE` (or defaults), then `--init`'s architecture
    and preprocessing, then each flag on top, one field at a time."""
    from .data import data_root
    from .lineage import init_defaults
    from .models import default_preprocess

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
        mcfg = dataclasses.replace(mcfg, kwargs={**inherited, **_json_flag("--model-kwargs", args.model_kwargs)})
    pre = config_from_args(PreprocessConfig, args, base_pre if same_arch else default_preprocess(mcfg.name))
    if args.align:
        pre = dataclasses.replace(pre, align=parse_align(args.align))
    data = config_from_args(DataConfig, args, base.data if base else None)
    data = dataclasses.replace(data, **{k: _absolute(getattr(data, k)) for k in PATH_FIELDS})
    check_device(tcfg.device)
    return RunConfig(mcfg, pre, data, tcfg)


def cmd_train(args: argparse.Namespace) -> None:
    from .training import train

    meta = train(run_config_from_args(args), args.out, resume=args.resume)
    _print({"out": args.out, "status": meta["status"], "best_epoch": meta["epoch"],
            "train_seconds": meta.get("train_seconds"), "val": meta["val"], "calibration": meta.get("calibration")})


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluate import reasons_text, run_evaluation

    check_device(args.device)
    report = run_evaluation(args.model, split=args.split, pairs=args.pairs, protocol=args.protocol,
                            omniglot_runs=args.omniglot_runs, data=args.data, out=args.out, way=args.way,
                            tasks=args.tasks, n_pairs=args.n_pairs, seed=args.seed, device=args.device,
                            strict=args.strict)
    if report.get("pairs_skipped"):
        print(f"siamface: {report['pairs_skipped']} of {report['pairs_skipped'] + report['n_pairs']} pairs skipped "
              f"({reasons_text(report['skipped_reasons'])}); the metrics cover the other {report['n_pairs']} "
              "(--strict to fail instead)", file=sys.stderr)
    _print(report)


def cmd_verify(args: argparse.Namespace) -> None:
    from .verify import Verifier

    check_device(args.device)
    if args.pairs:
        _verify_batch(args)
        return
    if not (args.image_a and args.image_b):
        raise SiamfaceError("verify needs two images (A B) or --pairs FILE")
    v = Verifier(args.model, threshold=args.threshold, device=args.device, detect=args.detect, select=args.select,
                 far=args.far)
    _print(v.verify(args.image_a, args.image_b).to_dict())


def _verify_batch(args: argparse.Namespace) -> None:
    """`--pairs in.csv --out scores.csv`: every distinct image embedded once; a row per pair."""
    import csv
    import io
    import os
    from collections import Counter

    from .data.prepare import read_pairs
    from .evaluate import reasons_text
    from .files import atomic_write_bytes
    from .verify import Verifier

    out = Path(args.out or Path(args.pairs).with_suffix(".scores.csv"))
    if out.exists() and Path(args.pairs).exists() and os.path.samefile(out, args.pairs):
        raise SiamfaceError(f"--out {out}: that is the pairs file itself; the scores would overwrite it (choose "
                            "another --out)")
    v = Verifier(args.model, threshold=args.threshold, device=args.device, detect=args.detect, select=args.select,
                 far=args.far)
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
    _print({"pairs": len(rows), "scored": len(rows) - n_failed, "not_scored": failed, "out": str(out),
            "threshold": v.threshold, "threshold_source": v.threshold_source, "operating_point": v.operating_point,
            "model": v.name, "same": sum(bool(r["same"]) for r in rows)})
    if n_failed:
        summary = (f"{n_failed} of {len(rows)} pairs not scored ({reasons_text(failed)}); the reasons are in the "
                   f"error column of {out}")
        if args.strict:
            raise SiamfaceError(summary)
        print(f"siamface: {summary} (--strict to fail)", file=sys.stderr)


# ---- gallery: enroll, identify, verify-against, people ----------------------------------------------------

def _gallery_path(args: argparse.Namespace) -> Path:
    """--gallery, else $SIAMFACE_GALLERY; only enroll creates the file."""
    import os

    path = args.gallery or os.environ.get("SIAMFACE_GALLERY")
    if not path:
        raise SiamfaceError("no gallery: pass --gallery FILE or set SIAMFACE_GALLERY")
    if args.func is not cmd_enroll and not Path(path).is_file():
        raise SiamfaceError(f"{path}: no such gallery (enroll someone first)")
    return Path(path)


def _gallery(args: argparse.Namespace, model: str | None = None, check_model: bool = True) -> Any:
    """Open the gallery with --model, else the model that made it (when it can be found), else the shipped one."""
    from .checkpoint import resolve_run
    from .errors import ModelError
    from .gallery import Gallery
    from .gallery_db import connect
    from .verify import Verifier

    path = _gallery_path(args)
    if not check_model:
        return Gallery(path, check_model=False)
    if model is None and path.is_file():
        conn = connect(path)
        stored = dict(conn.execute("SELECT key, value FROM meta").fetchall()).get("model")
        conn.close()
        try:
            model = str(resolve_run(stored)) if stored else None
        except ModelError:
            model = None  # moved or deleted: the shipped model (the gallery refuses it if it is not the same)
    check_device(args.device)
    kwargs: dict[str, Any] = {"device": args.device, "detect": args.detect}
    if getattr(args, "threshold", None) is not None:
        kwargs["threshold"] = args.threshold
    if getattr(args, "far", None) is not None:
        kwargs["far"] = args.far
    verifier = Verifier(model, **kwargs)
    return Gallery(path, verifier, aggregate=getattr(args, "aggregate", "max"))


def cmd_enroll(args: argparse.Namespace) -> None:
    with _gallery(args, args.model) as g:
        _print(g.enroll(args.name, args.photos, select=args.select, new=args.new))


def cmd_identify(args: argparse.Namespace) -> None:
    with _gallery(args, args.model) as g:
        _print(g.identify(args.photo, k=args.k))


def cmd_verify_against(args: argparse.Namespace) -> None:
    with _gallery(args, args.model) as g:
        _print(g.verify_against(args.name, args.photo))


def cmd_people(args: argparse.Namespace) -> None:
    if args.action == "reembed":
        from .verify import Verifier

        check_device(args.device)
        with _gallery(args, check_model=False) as g:
            n = g.reembed(Verifier(args.model, device=args.device))
            _print({"reembedded": n, "model": g.model_info()})
        return
    with _gallery(args, check_model=False) as g:
        if args.action == "list":
            _print(g.people())
        elif args.action == "show":
            _print(g.person(args.name))
        elif args.action == "rename":
            g.rename(args.name, args.new_name)
            _print({"renamed": args.name, "to": args.new_name})
        else:
            g.delete(args.name)
            _print({"deleted": args.name})


def add_gallery_commands(sub: Any) -> None:
    """The gallery's subcommands (siamface/gallery.py); JSON out, one-line errors."""
    def common(p: argparse.ArgumentParser, model: bool = True) -> None:
        p.add_argument("--gallery", help="the gallery file (default: $SIAMFACE_GALLERY); created on first enroll")
        if model:
            p.add_argument("--model", default=None,
                           help="run folder or shipped model (default: the gallery's own, else the shipped face model)")
            p.add_argument("--no-detect", dest="detect", action="store_false",
                           help="photos are already face crops: no face detection")
            p.add_argument("--far", type=float, default=None,
                           help="operating point: the threshold calibrated for this false accept rate")
        p.add_argument("--device", default="cpu")

    e = sub.add_parser("enroll", help="enroll a person from one photo or more (adds photos to an existing name)")
    e.add_argument("name")
    e.add_argument("photos", nargs="+", metavar="PHOTO")
    e.add_argument("--select", choices=("largest", "central"), default=None,
                   help="which face to enroll from a photo with several (default: refuse such photos)")
    e.add_argument("--new", action="store_true", help="refuse if the name is already enrolled")
    common(e)
    e.set_defaults(func=cmd_enroll)

    i = sub.add_parser("identify", help="who is in this photo? top-k people per face, or unknown")
    i.add_argument("photo")
    i.add_argument("-k", type=int, default=5, help="candidates per face")
    i.set_defaults(func=cmd_identify)
    va = sub.add_parser("verify-against", help="is the person in this photo NAME? prints a verify verdict")
    va.add_argument("name")
    va.add_argument("photo")
    va.set_defaults(func=cmd_verify_against)
    for p in (i, va):
        p.add_argument("--aggregate", choices=("max", "mean"), default="max",
                       help="a person's score over their photos: the best or the mean")
        p.add_argument("--threshold", type=float, default=None, help="override the calibrated threshold")
        common(p)

    pe = sub.add_parser("people", help="list | show | rename | delete | reembed the gallery's people")
    acts = pe.add_subparsers(dest="action", required=True)
    common(acts.add_parser("list", help="everyone enrolled"), model=False)
    for act, h in (("show", "one person's enrollments"), ("delete", "delete a person, crops and embeddings")):
        a = acts.add_parser(act, help=h)
        a.add_argument("name")
        common(a, model=False)
    r = acts.add_parser("rename", help="rename a person")
    r.add_argument("name")
    r.add_argument("new_name")
    common(r, model=False)
    re = acts.add_parser("reembed", help="recompute every embedding with another model from the stored crops")
    re.add_argument("--model", required=True, help="run folder or shipped model to re-embed with")
    common(re, model=False)
    pe.set_defaults(func=cmd_people)


# ---- serve (the HTTP service and web page; needs the [serve] extra) -------------------------------------

def cmd_serve(args: argparse.Namespace) -> None:
    from .serve import require_extra

    require_extra()
    import uvicorn

    from .serve import Limits, Settings, create_app, open_resources

    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=int(args.max_mpx * 1e6),
                    timeout_s=args.timeout)
    settings = Settings.from_env(gallery=Path(args.gallery), model=args.model, far=args.far, limits=limits)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    resources = open_resources(settings)  # a bad model or gallery fails here, in one line, before listening
    mode = "read-write" if settings.api_key else "read-only (set SIAMFACE_API_KEY to allow enroll and delete)"
    print(f"siamface serve: http://{args.host}:{args.port}/ model {resources.verifier.name}, "
          f"gallery {args.gallery}, {mode}", file=sys.stderr)
    uvicorn.run(create_app(settings, resources), host=args.host, port=args.port, log_level=args.log_level)


def add_serve_parser(sub: Any) -> None:
    s = sub.add_parser("serve", help="HTTP service and web page (verify, enroll, identify); needs siamface[serve]")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--gallery", required=True, help="the gallery database file (SQLite; created if missing)")
    s.add_argument("--model", default=None, help="run folder or shipped model name (default: the shipped face model)")
    s.add_argument("--far", type=float, default=None, help="operating point: the threshold calibrated for this "
                                                          "false accept rate (1e-2, 1e-3, 1e-4)")
    s.add_argument("--max-upload-mb", type=float, default=10.0, help="largest accepted image file (MB)")
    s.add_argument("--max-mpx", type=float, default=40.0, help="largest accepted image (megapixels, from its header)")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds a request may take before a 504")
    s.add_argument("--threads", type=int, default=None,
                   help="torch threads per forward pass (default: torch's; 1 suits many concurrent requests)")
    s.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    s.set_defaults(func=cmd_serve)


# ---- parser --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="siamface", description="Siamese face verification (Koch et al. 2015).")
    p.add_argument("--version", action="version", version=f"siamface {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("models", help="list registered architectures with parameter counts and input size")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")
    m.set_defaults(func=cmd_models)

    t = sub.add_parser("train", help="train on an identity folder (--data) or a pairs file (--pairs-file)")
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

    v = sub.add_parser("verify", help="are two photos the same person? prints JSON")
    v.add_argument("image_a", nargs="?")
    v.add_argument("image_b", nargs="?")
    v.add_argument("--model", default=None, help="run folder of a trained model (default: the shipped face model)")
    v.add_argument("--pairs", help="batch mode: a CSV image_a,image_b,label (or LFW pairs file) to score")
    v.add_argument("--out", help="batch mode: the scores CSV to write (default: <pairs>.scores.csv)")
    v.add_argument("--threshold", type=float, default=None, help="override the calibrated threshold")
    v.add_argument("--far", type=float, default=None,
                   help="decide at the threshold calibrated for this false-accept rate (1e-2, 1e-3 or 1e-4, where "
                        "the model's validation pairs could resolve it) instead of the equal-error point")
    v.add_argument("--no-detect", dest="detect", action="store_false",
                   help="the images are already face crops: no face detection (centre square, resized)")
    v.add_argument("--select", choices=("largest", "central"), default=None,
                   help="which face to use when a photo has several (default: the model's setting)")
    v.add_argument("--device", default="cpu")
    v.add_argument("--strict", action="store_true",
                   help="batch mode: exit non-zero when a pair cannot be scored (its reason is in the error column "
                        "either way)")
    v.set_defaults(func=cmd_verify)
    add_gallery_commands(sub)
    add_serve_parser(sub)
    return p


def _warn(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    print(f"siamface: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _warn  # library warnings as one line, not Python's file:line form
    try:
        args.func(args)
    except (SiamfaceError, ValueError) as e:  # library errors and bad values: one line, no traceback
        print(f"siamface: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only folder, a full disk: the path and the errno text
        print(f"siamface: error: {e.filename or ''}{': ' if e.filename else ''}{os_reason(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("siamface: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
