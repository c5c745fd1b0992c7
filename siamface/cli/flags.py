"""Flags generated from the config dataclasses, one per field (`--batch-size` is `TrainConfig.batch_size`),
so the CLI cannot drift from the library; and the small helpers every command shares (JSON out)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from ..config import AlignConfig
from ..errors import SiamfaceError
from .help_text import FIELD_HELP, GROUP_HELP

# Config fields that get a different flag name, or none (set by a dedicated flag).
RENAME = {("DataConfig", "root"): "data", ("ModelConfig", "name"): "model"}
SKIP = {("PreprocessConfig", "align"), ("ModelConfig", "kwargs")}
HELP = {("TrainConfig", "freeze"): "none | all (train the Siamese head only, on descriptors computed once per "
                                   "image; needs --no-distortions) | a tower stage: the stages before it stay fixed",
        ("TrainConfig", "init"): "start from this trained model (fine-tuning): a run folder or a shipped model's "
                                 "name (dlib-resnet, dlib-twin, face-prior, lfw-view1); its architecture and "
                                 "preprocessing apply unless flags change them"}


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
    group = parser.add_argument_group(f"{cls.__name__}: {GROUP_HELP.get(cls.__name__, '')}".rstrip(": "))
    for f in dataclasses.fields(cls):
        if (cls.__name__, f.name) in SKIP or (only and f.name not in only):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        shown = getattr(base, f.name) if base is not None else default if defaults else "from the model"
        sentence = HELP.get((cls.__name__, f.name)) or FIELD_HELP.get((cls.__name__, f.name), "")
        help_ = f"{sentence} (default: {shown})" if sentence else f"{cls.__name__}.{f.name} (default: {shown})"
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


def parse_align(text: str) -> AlignConfig | None:
    """--align haar | none | JSON -> PreprocessConfig.align (validated)."""
    if text == "none":
        return None
    data = json_flag("--align", text) if text.lstrip().startswith("{") else {"detector": text}
    return AlignConfig.from_dict(data)


def check_device(device: str) -> str:
    """A usable torch device name, or a one-line error."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SiamfaceError(f"--device {device}: no CUDA device is available here (use --device cpu)")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise SiamfaceError(f"--device {device}: expected cpu, cuda, cuda:N or mps")
    return device


def json_flag(flag: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SiamfaceError(f"{flag}: not valid JSON ({e}): {text!r}") from e


def absolute_path(path: str) -> str:
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


def print_json(obj: Any) -> None:
    print(json.dumps(_finite(obj), indent=2, default=str, allow_nan=False))


def add_runtime_flag(parser: argparse.ArgumentParser) -> None:
    """`--runtime torch|onnx`: what embeds the faces (onnx: onnxruntime, the `onnx` extra; same decisions)."""
    parser.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                        help="embed with torch (default) or onnxruntime (needs siamface[onnx]; the tower is exported "
                             "once and cached in $SIAMFACE_CACHE/onnx)")


def add_keep_crops_flags(parser: argparse.ArgumentParser) -> None:
    """`--keep-crops db|dir|none` and `--crops-dir`: where enrollments keep their aligned face crop."""
    parser.add_argument("--keep-crops", choices=("db", "dir", "none"), default=None,
                        help="where enrollments keep the aligned face crop that re-embedding needs: in the database "
                             "(db, the default), as PNG files (dir: --crops-dir, else FILE.crops beside a gallery "
                             "file) or not at all (none: the gallery cannot be re-embedded); recorded in the gallery "
                             "for later enrollments (default: as recorded)")
    parser.add_argument("--crops-dir", default=None,
                        help="the folder of --keep-crops dir (needed for a postgresql:// gallery: one folder every "
                             "replica mounts)")
