"""ONNX export (`siamface export --format onnx MODEL --out DIR`): the tower, the head and the face detector.

Writes three ONNX graphs (torch's dynamo exporter; needs the `onnx` extra) and a manifest:

- `tower.onnx`: `images` float32 (batch, C, S, S), already normalised by the model's preprocessing
  (`siamface.preprocess.normalize`) -> `embeddings` (batch, D). The batch axis is dynamic. A tower with an
  inference copy (`fused()`, dlib's ResNet with its affines folded) is exported as that copy.
- `head.onnx`: `e1`, `e2` (batch, D) -> `logits` (batch,); p(same) = sigmoid(logits), as in the paper.
- `mmod.onnx`: dlib's MMOD detector network, `canvas` float32 (batch, 3, H, W) -> `scores` (batch, 1, h, w),
  every axis but the channels dynamic (the pyramid, the decoding and NMS stay in numpy: faces/mmod.py).
- `model.json` (the model's card, thresholds included) and `onnx.json` (what each file takes and returns,
  the preprocessing, the parity measured against torch, versions).

Every graph is checked with `onnx.checker` and run by onnxruntime against torch before it is kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import warnings
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import __version__
from .card import META
from .checkpoint import LoadedModel, load_model, resolve_run
from .errors import SiamfaceError
from .files import atomic_write_bytes, atomic_write_json, check_output_folder
from .models import SiameseNet

MANIFEST = "onnx.json"
TOWER, HEAD, MMOD = "tower.onnx", "head.onnx", "mmod.onnx"
TOLERANCE = 1e-4  # max abs difference onnxruntime vs torch, fp32, that an export must meet
EXTRA = "ONNX needs the onnx extra: pip install 'siamface[onnx]' (onnx, onnxruntime, onnxscript)"


def require_onnx() -> None:
    """Import check for the optional dependencies, with the install command when they are missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise SiamfaceError(f"{EXTRA} ({e})") from None


class _Tower(nn.Module):
    def __init__(self, model: SiameseNet) -> None:
        super().__init__()
        fused = getattr(model.tower, "fused", None)
        self.tower = fused() if fused is not None else model.tower

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.tower(images)


class _Head(nn.Module):
    def __init__(self, model: SiameseNet) -> None:
        super().__init__()
        self.head = model.head

    def forward(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        return self.head(e1, e2)


def onnx_bytes(module: nn.Module, example: tuple[torch.Tensor, ...], names: list[str], outputs: list[str],
               dynamic: dict[int, str] | list[dict[int, str]]) -> bytes:
    """One module as a checked ONNX model (bytes); `dynamic`: per input, {axis: name} of its dynamic axes."""
    require_onnx()
    import onnx

    per_input = dynamic if isinstance(dynamic, list) else [dynamic] * len(example)
    shapes = tuple({axis: torch.export.Dim(name, min=1) for axis, name in d.items()} for d in per_input)
    module = module.eval().float()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # it lists the torchvision ops it skips
    with torch.no_grad(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():  # the exporter chats about its own internals
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", ".*The axis name", UserWarning)
        program = torch.onnx.export(module, example, input_names=names, output_names=outputs,
                                    dynamic_shapes=shapes, dynamo=True, verbose=False)
        program.optimize()
    proto = program.model_proto
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def session(model: bytes | str | Path, threads: int = 0) -> Any:
    """An onnxruntime CPU session (threads 0: onnxruntime's default)."""
    require_onnx()
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def max_diff(onnx_model: bytes, module: nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    """Max abs difference between onnxruntime's first output and torch's on the same inputs."""
    got = session(onnx_model).run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    with torch.no_grad():
        want = module.eval()(*inputs.values()).numpy()
    if got.shape != want.shape:
        raise SiamfaceError(f"ONNX output shape {got.shape} differs from torch's {want.shape}")
    return float(np.abs(got - want).max())


def tower_onnx(model: SiameseNet) -> bytes:
    """The model's tower (its inference copy where it has one) with a dynamic batch axis."""
    x = torch.rand(2, model.in_channels, model.input_size, model.input_size)
    return onnx_bytes(_Tower(model), (x,), ["images"], ["embeddings"], {0: "batch"})


def head_onnx(model: SiameseNet) -> bytes:
    e1, e2 = torch.rand(2, model.embed_dim), torch.rand(2, model.embed_dim)  # two tensors: one would be traced
    return onnx_bytes(_Head(model), (e1, e2), ["e1", "e2"], ["logits"], {0: "batch"})


def mmod_onnx() -> tuple[bytes, nn.Module]:
    """dlib's MMOD detector network with dynamic batch, height and width."""
    from .faces.mmod import MMODDetector

    net = MMODDetector.load().net.to(memory_format=torch.contiguous_format)
    canvas = torch.rand(1, 3, 200, 240)
    return onnx_bytes(net, (canvas,), ["canvas"], ["scores"], {0: "batch", 2: "height", 3: "width"}), net


def parity_inputs(loaded: LoadedModel, images: list[Path]) -> torch.Tensor:
    """The model's normalised inputs for real images: decoded and aligned by its own preprocessing."""
    from .preprocess import load_input, normalize

    return normalize(torch.from_numpy(np.stack([load_input(p, loaded.preprocess) for p in images])),
                     loaded.preprocess)


def export_onnx(model: str | Path, out: str | Path, images: list[Path] | None = None,
                detector: bool = True) -> dict[str, Any]:
    """Export a model to ONNX in `out` (see the module docstring); returns the manifest. `images`: real
    photos whose aligned faces check the tower and the head (and whose detector canvases check MMOD) against
    torch; every difference must stay within TOLERANCE or nothing is written."""
    require_onnx()
    out = Path(out)
    check_output_folder(out, create=False)  # a refused export leaves no folder behind
    loaded = load_model(model)
    net = loaded.model.eval()
    files = {TOWER: tower_onnx(net), HEAD: head_onnx(net)}
    x = parity_inputs(loaded, images) if images else torch.rand(3, net.in_channels, net.input_size, net.input_size)
    emb = _Tower(net)(x).detach()
    parity = {TOWER: max_diff(files[TOWER], _Tower(net), {"images": x}),
              HEAD: max_diff(files[HEAD], _Head(net), {"e1": emb, "e2": emb.roll(1, 0)})}
    if detector:
        files[MMOD], mmod = mmod_onnx()
        parity[MMOD] = max_diff(files[MMOD], mmod, {"canvas": _canvas(images[0] if images else None)})
    bad = {k: v for k, v in parity.items() if not v <= TOLERANCE}
    if bad:
        raise SiamfaceError(f"ONNX export of {model}: onnxruntime differs from torch by {bad} (limit {TOLERANCE})")
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        atomic_write_bytes(out / name, data)
    atomic_write_bytes(out / META, (resolve_run(model) / META).read_bytes())
    manifest = _manifest(loaded, files, parity, len(images or []))
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def _canvas(image: Path | None) -> torch.Tensor:
    """MMOD's input canvas for a real photo (dlib's tiled pyramid), or noise of a canvas's scale."""
    if image is None:
        return torch.rand(1, 3, 240, 200) * 255 - 128
    from .data import load_image
    from .faces.mmod import MMODDetector

    rgb = load_image(image, channels=3).transpose(1, 2, 0)  # (C, H, W) -> dlib's (H, W, C)
    canvas, _ = MMODDetector.load().canvas(np.ascontiguousarray(rgb))
    return torch.from_numpy(np.ascontiguousarray(canvas))[None].float()


def _manifest(loaded: LoadedModel, files: dict[str, bytes], parity: dict[str, float], n_images: int
              ) -> dict[str, Any]:
    import onnx
    import onnxruntime

    card = loaded.card
    shapes = {TOWER: {"inputs": {"images": ["batch", card.preprocess.channels, card.preprocess.size,
                                            card.preprocess.size]}, "outputs": {"embeddings": ["batch", "D"]}},
              HEAD: {"inputs": {"e1": ["batch", "D"], "e2": ["batch", "D"]}, "outputs": {"logits": ["batch"]},
                     "note": "p(same) = sigmoid(logits)"},
              MMOD: {"inputs": {"canvas": ["batch", 3, "height", "width"]},
                     "outputs": {"scores": ["batch", 1, "h", "w"]},
                     "note": "dlib's tiled pyramid in, score map out (siamface.faces.mmod decodes it)"}}
    return {
        "model": card.model.name, "weights_sha256": card.weights_sha256, "embed_dim": loaded.model.embed_dim,
        "preprocess": asdict(card.preprocess),
        "input": "tower.onnx takes float32 x = (u - mean) / std, u = uint8 pixels / 255 (1 - that if invert)",
        "files": {name: {**shapes[name], "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                         "max_abs_diff_vs_torch": parity[name]} for name, data in files.items()},
        "parity": {"tolerance": TOLERANCE, "images": n_images or "random inputs (no images given)"},
        "versions": {"siamface": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__},
        "cpu_count": os.cpu_count(),
    }


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of an export folder; SiamfaceError naming the file when it is not one."""
    try:
        return json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SiamfaceError(f"{Path(folder) / MANIFEST}: not a siamface ONNX export ({e})") from None
