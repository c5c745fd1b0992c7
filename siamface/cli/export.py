"""`siamface export --format onnx MODEL --out DIR`: the tower, the head and the face detector as ONNX."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import SiamfaceError
from .flags import print_json


def cmd_export(args: argparse.Namespace) -> None:
    from ..export import export_onnx

    images = [Path(p) for p in args.check_images]
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise SiamfaceError(f"--check-images: no such file: {', '.join(missing)}")
    print_json(export_onnx(args.model, args.out, images=images, detector=not args.no_detector))


def add_export_parser(sub: Any) -> None:
    x = sub.add_parser("export", help="export a model to ONNX (tower, head, face detector); needs siamface[onnx]")
    x.add_argument("model", help="run folder or shipped model name (e.g. dlib-twin)")
    x.add_argument("--format", choices=("onnx",), default="onnx", help="the only format so far: onnx")
    x.add_argument("--out", required=True, help="folder to write tower.onnx, head.onnx, mmod.onnx, onnx.json")
    x.add_argument("--check-images", nargs="*", default=[], metavar="PHOTO",
                   help="real photos whose aligned faces check onnxruntime against torch (default: random inputs)")
    x.add_argument("--no-detector", action="store_true", help="leave out dlib's MMOD detector network")
    x.set_defaults(func=cmd_export)
