"""`siamface` command line: a thin translator from flags to library calls, JSON out, one-line errors.

One module per group of commands (`run`: models, train, evaluate, verify; `gallery`; `serve`); `flags`
generates the training flags from the config dataclasses. `python -m siamface` works too.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

from .. import __version__, threads
from ..errors import SiamfaceError
from ..files import os_reason
from .export import add_export_parser
from .flags import RENAME, SKIP, add_config_flags, config_from_args, parse_align
from .gallery import add_gallery_commands
from .run import add_run_commands, run_config_from_args
from .serve import add_serve_parser
from .watch import add_watch_parser

__all__ = ["RENAME", "SKIP", "add_config_flags", "build_parser", "config_from_args", "main", "parse_align",
           "run_config_from_args"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="siamface", description="Siamese face verification (Koch et al. 2015).")
    p.add_argument("--version", action="version", version=f"siamface {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    add_run_commands(sub)
    add_gallery_commands(sub)
    add_serve_parser(sub)
    add_export_parser(sub)
    add_watch_parser(sub)
    return p


# Library arguments (an error's `option`) -> what to pass on the command line; library messages never name flags.
OPTION_FLAGS = {
    "select": "--select largest or --select central",
    "detect": "--no-detect if the photos already are face crops",
    "resume": "--resume, or another --out",
    "out": "--out",
    "device": "--device",
    "model": "--model",
    "threshold": "--threshold",
    "far": "--far",
    "crops_dir": "--crops-dir",
    "data": "--data",
    "init": "--init",
    "freeze": "--freeze",
    "distortions": "--no-distortions",
    "val_way": "--val-way, or --n-val for more validation identities",
    "src": "--src",
    "n_val": "--n-val and --n-test: with a few people, e.g. --n-val 3 --val-way 3 --n-test 0",
}


def with_hint(error: BaseException, args: argparse.Namespace | None = None) -> str:
    """The error's message, with the flag that resolves it (its `option`) when there is one."""
    option = getattr(error, "option", None)
    if option == "reembed":
        gallery, model = getattr(args, "gallery", None) or "GALLERY", getattr(args, "model", None) or "MODEL"
        return f"{error} (siamface people reembed --gallery {gallery} --model {model})"
    return f"{error} ({OPTION_FLAGS[option]})" if option in OPTION_FLAGS else str(error)


def _warn(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    print(f"siamface: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    threads.process_defaults()  # before anything imports torch (siamface.threads: one thread per worker)
    args = build_parser().parse_args(argv)
    warnings.showwarning = _warn  # library warnings as one line, not Python's file:line form
    try:
        args.func(args)
    except (SiamfaceError, ValueError) as e:  # library errors and bad values: one line, no traceback
        print(f"siamface: error: {with_hint(e, args)}", file=sys.stderr)
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
