"""Optimisers and schedules of the training loop, as pure functions of the step or the epoch.

'koch' is the paper's regime (Koch et al. 2015, section 3.2): SGD with a learning rate, momentum and L2
weight per layer, the learning rate x0.99 per epoch and momentum rising linearly; 'adamw' is a modern
default with a linear warm-up and a cosine decay. `seed_for` derives each epoch's randomness from the seed.
"""

from __future__ import annotations

import math

import torch

from .config import TrainConfig
from .losses import CosineClassifier
from .models import SiameseNet


def cosine_lr(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up to `base`, then cosine decay to 1% of it."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def koch_momentum(epoch: int, start: float, end: float, ramp_epochs: int) -> float:
    """Momentum rises linearly from `start` to the layer's final value over `ramp_epochs` (paper: slope unstated)."""
    return start + (end - start) * min(1.0, epoch / max(1, ramp_epochs))


def seed_for(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2**63 - 1)


# ---- optimiser -----------------------------------------------------------------------------------------

def _layers(model: SiameseNet) -> list[torch.nn.Module]:
    """Parametric leaf layers in order (conv, linear, batch norm): the paper's 'layers' for per-layer values."""
    return [m for m in model.modules() if not list(m.children()) and list(m.parameters(recurse=False))]


def _per_layer(values: tuple[float, ...], n: int, default: float, name: str) -> list[float]:
    if not values:
        return [default] * n
    if len(values) != n:
        raise ValueError(f"train.{name} has {len(values)} values but the model has {n} layers")
    return list(values)


def make_optimizer(model: SiameseNet, cfg: TrainConfig, classifier: CosineClassifier | None = None
                   ) -> torch.optim.Optimizer:
    """'koch': SGD with one group per layer (lr_j, mu_j, lambda_j); 'adamw': decay on weights only
    (not on the identity prototypes of `classifier`, normalised in the loss, nor on a non-positive head,
    whose stored w_j give a_j = -softplus(w_j): decay would pull every a_j to -0.69, not to 0)."""
    constrained = model.head.fc if model.head.weights == "nonpositive" else None
    if cfg.regime == "koch":
        layers = _layers(model)
        lrs = _per_layer(cfg.layer_lr, len(layers), cfg.lr, "layer_lr")
        mus = _per_layer(cfg.layer_momentum, len(layers), cfg.momentum_end, "layer_momentum")
        l2s = _per_layer(cfg.layer_l2, len(layers), cfg.weight_decay, "layer_l2")
        l2s = [0.0 if m is constrained else l2 for m, l2 in zip(layers, l2s)]
        groups = [{"params": list(m.parameters(recurse=False)), "lr": lr, "base_lr": lr, "momentum": cfg.momentum_start,
                   "final_momentum": mu, "weight_decay": l2} for m, lr, mu, l2 in zip(layers, lrs, mus, l2s)]
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum_start)
    skip = {id(constrained.weight)} if constrained is not None else set()
    decay = [p for p in model.parameters() if p.ndim > 1 and id(p) not in skip]
    no_decay = [p for p in model.parameters() if p.ndim <= 1 or id(p) in skip]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if classifier is not None:
        groups.append({"params": list(classifier.parameters()), "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=cfg.lr)


def set_epoch_hparams(opt: torch.optim.Optimizer, cfg: TrainConfig, epoch: int) -> None:
    """Koch: lr_j <- lr_j * 0.99^epoch, momentum ramp. AdamW: set per step by `cosine_lr`."""
    if cfg.regime != "koch":
        return
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * cfg.lr_decay**epoch
        g["momentum"] = koch_momentum(epoch, cfg.momentum_start, g["final_momentum"], cfg.momentum_epochs)
