"""A registry of Siamese architectures (timm style): `create_model(name, **overrides)`, `list_models()`.

Every entry returns a `SiameseNet` with the one contract `embed`, `score`, `forward` (logits), and carries
a default `PreprocessConfig` (input size, channels, normalisation) that is saved with its weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ..config import PreprocessConfig
from ..errors import ModelError
from .dlib_resnet import dlib_parameters, dlib_siamese
from .koch import KochTower, koch_parameters, koch_siamese
from .siamese import L1Head, SiameseNet
from .small import conv_parameters, conv_siamese, res_parameters, res_siamese


@dataclass(frozen=True)
class ModelSpec:
    factory: Callable[..., SiameseNet]
    defaults: dict[str, Any]
    preprocess: PreprocessConfig
    description: str
    parameters: Callable[..., int]  # the factory's parameter count by formula, from the same keyword arguments


_REGISTRY: dict[str, ModelSpec] = {
    "dlib_resnet": ModelSpec(
        # mean 0, std 1: the tower takes [0, 1] RGB and applies dlib's per-channel (x - mean) / 256 itself
        dlib_siamese, {}, PreprocessConfig(size=150, channels=3, mean=0.0, std=1.0),
        "dlib's face descriptor (ResNet-29, Davis E. King, CC0) on 150x150 RGB chips, 128-d, converted weights",
        dlib_parameters,
    ),
    "koch2015": ModelSpec(
        koch_siamese, {}, PreprocessConfig(size=105, channels=1),
        "Koch et al. (2015) exactly: 4 conv layers, fc 4096 sigmoid, L1 head (38.95M parameters)",
        koch_parameters,
    ),
    "koch_half": ModelSpec(
        koch_siamese, {"widths": (32, 64, 64, 128), "fc": 1024}, PreprocessConfig(size=105, channels=1),
        "Koch's layout at half width and a 1024-d embedding, for CPU training on Omniglot",
        koch_parameters,
    ),
    "conv4": ModelSpec(
        conv_siamese, {}, PreprocessConfig(size=52, channels=1, mean=0.5, std=0.5),
        "four conv3x3-BN-ReLU-pool blocks of 64 at 52x52 grey, 256-d sigmoid embedding (Omniglot on CPU)",
        conv_parameters,
    ),
    "resface64": ModelSpec(
        res_siamese, {}, PreprocessConfig(size=64, channels=1, mean=0.5, std=0.25),
        "small ResNet (32-64-128-256) at 64x64 grey, 256-d sigmoid embedding (faces on a 2-core CPU)",
        res_parameters,
    ),
    "resface96": ModelSpec(
        res_siamese, {"input_size": 96, "widths": (32, 64, 128, 256), "blocks": (1, 2, 2, 1)},
        PreprocessConfig(size=96, channels=1, mean=0.5, std=0.25),
        "deeper small ResNet at 96x96 grey, 256-d sigmoid embedding (faces, CPU or GPU)",
        res_parameters,
    ),
    "tiny": ModelSpec(
        conv_siamese, {"input_size": 32, "widths": (8, 16), "embed_dim": 16},
        PreprocessConfig(size=32, channels=1, mean=0.5, std=0.5),
        "two conv blocks at 32x32 and a 16-d embedding: for tests, trains in seconds",
        conv_parameters,
    ),
}

_INPUT_KEYS = ("in_channels", "input_size")


def list_models() -> list[str]:
    """Registered architecture names."""
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    """The registry entry for `name`; an unknown name raises ModelError listing the valid ones."""
    if name not in _REGISTRY:
        raise ModelError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    return _REGISTRY[name]


def default_preprocess(name: str, **overrides: Any) -> PreprocessConfig:
    """The preprocessing a model was designed for, with optional field overrides."""
    return replace(model_spec(name).preprocess, **overrides)


def _factory_kwargs(spec: ModelSpec, preprocess: PreprocessConfig | None, overrides: dict[str, Any]) -> dict[str, Any]:
    pre = preprocess or spec.preprocess
    return {**spec.defaults, "in_channels": pre.channels, "input_size": pre.size, **overrides}


def create_model(name: str, preprocess: PreprocessConfig | None = None, **overrides: Any) -> SiameseNet:
    """Build a registered model. Input size and channels follow `preprocess` (default: the model's own)."""
    spec = model_spec(name)
    try:
        return spec.factory(**_factory_kwargs(spec, preprocess, overrides))
    except (TypeError, ValueError) as e:
        raise ModelError(f"bad options for model {name!r}: {e}") from e


def state_dict_mismatch(model: nn.Module, state: Mapping[str, torch.Tensor], limit: int = 4) -> str:
    """How a state dict does not fit a model ('' when it does): missing and unexpected keys and the
    tensors whose shapes differ, first `limit` of each. torch's own message is several lines long."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [f"{k} is {tuple(own[k].shape)} in the model, {tuple(state[k].shape)} in the weights"
              for k in own if k in state and own[k].shape != state[k].shape]

    def some(items: list[str]) -> str:
        return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")

    parts = [f"missing {some(missing)}" if missing else "", f"unexpected {some(extra)}" if extra else "",
             f"shapes differ: {some(shapes)}" if shapes else ""]
    return "; ".join(p for p in parts if p)


def count_parameters(model: SiameseNet) -> int:
    return sum(p.numel() for p in model.parameters())


def parameter_count(name: str, preprocess: PreprocessConfig | None = None, **overrides: Any) -> int:
    """The parameter count of `create_model(name, preprocess, **overrides)` by its factory's formula, without
    building any weight (`siamface models` would otherwise initialise koch2015's 39M parameters)."""
    spec = model_spec(name)
    try:
        return spec.parameters(**_factory_kwargs(spec, preprocess, overrides))
    except TypeError as e:
        raise ModelError(f"bad options for model {name!r}: {e}") from e


__all__ = [
    "KochTower", "L1Head", "ModelSpec", "SiameseNet", "count_parameters", "create_model",
    "default_preprocess", "list_models", "model_spec", "parameter_count", "state_dict_mismatch",
]
