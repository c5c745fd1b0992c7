"""Frozen towers: fine-tune only the top of a pretrained tower, or only the Siamese head above it.

`--freeze all` trains the L1 head alone (a_j and b of p = sigmoid(sum_j a_j |h1_j - h2_j| + b)) on a
pretrained tower's descriptors; `--freeze NAME` freezes every tower parameter registered before the stage
`NAME` and trains the rest. Frozen layers stay in eval mode (their batch-norm statistics do not move), and
with the whole tower frozen each image's descriptor is computed once (`FrozenDescriptors`), not once per
epoch: training the head on 10,000 faces then costs one pass of the tower.
"""

from __future__ import annotations

import numpy as np
import torch

from .config import PreprocessConfig
from .embed import embed_batches
from .errors import SiamfaceError
from .models import SiameseNet

NONE, ALL = "none", "all"


def stages(model: SiameseNet) -> list[str]:
    """The tower's top-level parameter groups, in order: the names --freeze accepts besides none and all."""
    return list(dict.fromkeys(name.split(".")[0] for name, _ in model.tower.named_parameters()))


def freeze_tower(model: SiameseNet, freeze: str) -> int:
    """Turn off gradients of the frozen part of the tower; returns how many tensors were frozen."""
    if freeze == NONE:
        return 0
    names = [name for name, _ in model.tower.named_parameters()]
    if freeze == ALL:
        cut = len(names)
    else:
        cut = next((i for i, n in enumerate(names) if n == freeze or n.startswith(freeze + ".")), -1)
        if cut < 0:
            raise SiamfaceError(f"--freeze {freeze}: the tower has no such stage; use none, all or one of "
                                f"{', '.join(stages(model))}")
    frozen = set(names[:cut])
    for name, p in model.tower.named_parameters():
        if name in frozen:
            p.requires_grad_(False)
    return len(frozen)


def keep_frozen_in_eval(model: SiameseNet) -> None:
    """After model.train(): layers whose weights are all frozen go back to eval mode (fixed statistics)."""
    for module in model.tower.modules():
        own = list(module.parameters(recurse=False))
        if own and not any(p.requires_grad for p in own):
            module.eval()


class FrozenDescriptors:
    """A frozen tower's embedding of every image of a store, computed once (and of its mirror image with
    `flip`, so training can still mirror faces at random)."""

    def __init__(self, model: SiameseNet, images: torch.Tensor, pre: PreprocessConfig, device: str,
                 bf16: bool, flip: bool, chunk: int = 512) -> None:
        self.table = embed_batches(model, images, pre, device=device, bf16=bf16).to(device)
        self.mirror = torch.cat([embed_batches(model, images[i:i + chunk].flip(-1), pre, device=device, bf16=bf16)
                                 for i in range(0, len(images), chunk)]).to(device) if flip else None

    def __call__(self, idx: np.ndarray, gen: torch.Generator | None) -> torch.Tensor:
        """Embeddings of images idx; with flip, each row is the mirror image's with probability 1/2."""
        rows = torch.as_tensor(idx, device=self.table.device)
        emb = self.table[rows]
        if self.mirror is not None and gen is not None:
            mirrored = (torch.rand(len(rows), generator=gen) < 0.5).to(emb.device)
            emb = torch.where(mirrored[:, None], self.mirror[rows], emb)
        return emb
