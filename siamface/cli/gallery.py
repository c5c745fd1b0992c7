"""`siamface enroll | identify | verify-against | people`: a gallery of people (siamface.gallery)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import SiamfaceError
from .flags import add_keep_crops_flags, add_runtime_flag, check_device, print_json


def _gallery_path(args: argparse.Namespace) -> str | Path:
    """--gallery, else $SIAMFACE_GALLERY: a file (only enroll creates it) or a postgresql:// URL."""
    import os

    from ..gallery_store import is_url, location_of

    path = args.gallery or os.environ.get("SIAMFACE_GALLERY")
    if not path:
        raise SiamfaceError("no gallery: pass --gallery FILE (or a postgresql:// URL) or set SIAMFACE_GALLERY")
    if args.func is not cmd_enroll and not is_url(path) and not Path(path).is_file():
        raise SiamfaceError(f"{path}: no such gallery (enroll someone first)")
    return location_of(path)


def _gallery(args: argparse.Namespace, model: str | None = None, check_model: bool = True) -> Any:
    """Open the gallery with --model, else the model that made it (Gallery.open finds it), else the shipped one."""
    from ..gallery import Gallery

    path = _gallery_path(args)
    if not check_model:
        return Gallery(path, check_model=False)
    check_device(args.device)
    kwargs: dict[str, Any] = {"device": args.device, "detect": args.detect, "runtime": args.runtime}
    if getattr(args, "threshold", None) is not None:
        kwargs["threshold"] = args.threshold
    if getattr(args, "far", None) is not None:
        kwargs["far"] = args.far
    return Gallery.open(path, model, aggregate=getattr(args, "aggregate", "max"),
                        keep_crops=getattr(args, "keep_crops", None), crops_dir=getattr(args, "crops_dir", None),
                        **kwargs)


def _print(args: argparse.Namespace, answer: dict[str, Any], compact: Any) -> None:
    from .compact import print_compact

    if args.full:
        print_json(answer)
    else:
        print_compact(compact(answer))


def cmd_enroll(args: argparse.Namespace) -> None:
    from .compact import enroll_answer

    with _gallery(args, args.model) as g:
        _print(args, g.enroll(args.name, args.photos, select=args.select, new=args.new).to_dict(), enroll_answer)


def cmd_identify(args: argparse.Namespace) -> None:
    from .compact import identify_answer

    if args.fpir is not None and (args.far is not None or args.threshold is not None):
        raise SiamfaceError("--fpir decides by the share of strangers matched to someone; --far and --threshold by "
                            "a pairwise point: give one of them")
    with _gallery(args, args.model) as g:
        _print(args, g.identify(args.photo, k=args.k, fpir=args.fpir).to_dict(),
               lambda a: identify_answer(a, args.photo))


def cmd_verify_against(args: argparse.Namespace) -> None:
    from .compact import verify_against_answer

    with _gallery(args, args.model) as g:
        answer = g.verify_against(args.name, args.photo).to_dict()
        _print(args, answer, lambda a: verify_against_answer(a, args.photo))


def cmd_people(args: argparse.Namespace) -> None:
    if args.action == "reembed":
        from ..verify import Verifier

        check_device(args.device)
        with _gallery(args, check_model=False) as g:
            n = g.reembed(Verifier(args.model, device=args.device))
            print_json({"reembedded": n, "model": g.model_info()})
        return
    with _gallery(args, check_model=False) as g:
        if args.action == "list":
            print_json([p.to_dict() for p in g.people()])
        elif args.action == "show":
            print_json(g.person(args.name).to_dict())
        elif args.action == "rename":
            g.rename(args.name, args.new_name)
            print_json({"renamed": args.name, "to": args.new_name})
        else:
            g.delete(args.name)
            print_json({"deleted": args.name})


def add_gallery_commands(sub: Any) -> None:
    """The gallery's subcommands (siamface/gallery.py); JSON out, one-line errors."""
    def common(p: argparse.ArgumentParser, model: bool = True) -> None:
        p.add_argument("--gallery", help="the gallery file (created on first enroll) or a postgresql:// URL "
                                         "(default: $SIAMFACE_GALLERY)")
        if model:
            p.add_argument("--model", default=None,
                           help="a shipped model's name or a run folder (default: the gallery's own, else dlib-twin)")
            p.add_argument("--full", action="store_true",
                           help="print the whole report (every box, eyes, landmarks), not one line per face")
            p.add_argument("--no-detect", dest="detect", action="store_false",
                           help="photos are already face crops: no face detection")
            p.add_argument("--far", type=float, default=None,
                           help="operating point: the threshold calibrated for this false accept rate")
            add_runtime_flag(p)
        p.add_argument("--device", default="cpu")

    e = sub.add_parser("enroll", help="enroll a person from one photo or more (adds photos to an existing name)")
    e.add_argument("name")
    e.add_argument("photos", nargs="+", metavar="PHOTO")
    e.add_argument("--select", choices=("largest", "central"), default=None,
                   help="which face to enroll from a photo with several (default: refuse such photos)")
    e.add_argument("--new", action="store_true", help="refuse if the name is already enrolled")
    add_keep_crops_flags(e)
    common(e)
    e.set_defaults(func=cmd_enroll)

    i = sub.add_parser("identify", help="who is in this photo? top-k people per face, or unknown")
    i.add_argument("photo")
    i.add_argument("-k", type=int, default=5, help="candidates per face")
    i.add_argument("--fpir", type=float, default=None,
                   help="the share of strangers allowed to match someone in this gallery (default 0.01); the "
                        "threshold follows the gallery's size, measured on its own people where they resolve it")
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
