"""The plain way to train Koch et al. (2015)'s Siamese network, kept as a yardstick for siamface's fast path.

Public reimplementations of "Siamese Neural Networks for One-shot Image Recognition" train like this: fp32,
contiguous NCHW tensors, each image distorted on its own (a Python loop, as in a DataLoader worker), and the
twin towers run once per side of each pair (`model.embed(x1)`, `model.embed(x2)`). `reference_pair_loss`
computes the loss of `siamface.step.Step.pair_loss` that way; `benchmarks/speed.py` times both and
`tests/test_reference.py` checks that, distortions off, they compute the same loss.

Differences by design: the reference ignores `cfg.bf16` and `cfg.channels_last` (always fp32, contiguous)
and embeds an image once per appearance in the batch; with batch norm in training mode each tower call
normalises with its own side's statistics, as the plain implementations do.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from siamface.augment import apply_affine, sample_params
from siamface.config import PreprocessConfig, TrainConfig
from siamface.models import SiameseNet
from siamface.preprocess import normalize
from siamface.training import affine_for

__all__ = ["reference_pair_loss", "reference_step"]


def _one_image(images: torch.Tensor, k: int, pre: PreprocessConfig, cfg: TrainConfig,
               gen: torch.Generator | None) -> torch.Tensor:
    """Image k as a float (1, C, H, W) tensor, distorted (and flipped) on its own, then normalised."""
    x = images[k : k + 1].to(cfg.device).float() / 255.0
    if gen is not None and cfg.distortions:
        x = apply_affine(x, sample_params(1, affine_for(pre), gen))
    if gen is not None and cfg.flip and bool(torch.rand(1, generator=gen) < 0.5):
        x = x.flip(-1)
    return normalize(x, pre).contiguous()


def reference_pair_loss(
    model: SiameseNet, images_uint8: torch.Tensor, batch_rows: np.ndarray, pre: PreprocessConfig,
    cfg: TrainConfig, gen: torch.Generator | None,
) -> torch.Tensor:
    """BCE of a batch of [i, j, same] rows, the plain way: per-image augmentation, two tower passes, fp32."""
    x1 = torch.cat([_one_image(images_uint8, int(i), pre, cfg, gen) for i in batch_rows[:, 0]])
    x2 = torch.cat([_one_image(images_uint8, int(j), pre, cfg, gen) for j in batch_rows[:, 1]])
    logits = model.score(model.embed(x1), model.embed(x2))
    y = torch.as_tensor(batch_rows[:, 2], dtype=torch.float32, device=cfg.device)
    y = y * (1 - cfg.label_smoothing) + 0.5 * cfg.label_smoothing
    return F.binary_cross_entropy_with_logits(logits.float(), y)


def reference_step(
    model: SiameseNet, opt: torch.optim.Optimizer, images_uint8: torch.Tensor, batch_rows: np.ndarray,
    pre: PreprocessConfig, cfg: TrainConfig, gen: torch.Generator | None,
) -> float:
    """One plain SGD step on a batch of pairs; returns the loss."""
    loss = reference_pair_loss(model, images_uint8, batch_rows, pre, cfg, gen)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.item())
