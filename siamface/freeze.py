"""Frozen towers: fine-tune only the top of a pretrained tower, or only the Siamese head above it.

`--freeze all` trains the L1 head alone (a_j and b of p = sigmoid(sum_j a_j |h1_j - h2_j| + b)) on a
pretrained tower's descriptors; `--freeze NAME` freezes every tower parameter registered before the stage
`NAME` and trains the rest. Frozen layers stay in eval mode (their batch-norm statistics do not move), and
with the whole tower frozen each image's descriptor is computed once (`FrozenDescriptors`), not once per
epoch: training the head on 10,000 faces then costs one pass of the tower.
"""

from __future__ import annotations

import hashlib

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
            raise SiamfaceError(f"freeze {freeze!r}: the tower has no such stage; use none, all or one of "
                                f"{', '.join(stages(model))}", option="freeze")
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


_MEMO: dict[tuple[str, bytes], torch.Tensor] | None = None


def keep_descriptors() -> None:
    """Remember every frozen-tower embedding in this process (keyed by the tower's weights and the image's
    bytes), so runs that share images and a tower (the ten LFW View 2 folds) embed each face once."""
    global _MEMO
    if _MEMO is None:
        _MEMO = {}


def _fingerprint(model: SiameseNet) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name, t in model.tower.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def embed_frozen(model: SiameseNet, images: torch.Tensor, pre: PreprocessConfig, device: str, bf16: bool,
                 mirror: bool = False, chunk: int = 512) -> torch.Tensor:
    """Embeddings of uint8 images (mirrored left-right with `mirror`) by a frozen tower, a chunk at a time,
    through the process memo when `keep_descriptors` turned it on."""
    tower = f"{_fingerprint(model)}:{bf16}" if _MEMO is not None else ""
    out = [torch.zeros(0, model.embed_dim)]
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk]
        x = x.flip(-1) if mirror else x
        if _MEMO is None:
            out.append(embed_batches(model, x, pre, device=device, bf16=bf16))
            continue
        keys = [(tower, hashlib.blake2b(img.numpy().tobytes(), digest_size=16).digest()) for img in x]
        first = {k: i for i, k in reversed(list(enumerate(keys)))}  # a chunk may hold one image twice
        missing = sorted(i for k, i in first.items() if k not in _MEMO)
        if missing:
            new = embed_batches(model, x[torch.as_tensor(missing)], pre, device=device, bf16=bf16)
            _MEMO.update({keys[i]: e for i, e in zip(missing, new)})
        out.append(torch.stack([_MEMO[k] for k in keys]))
    return torch.cat(out)


class FrozenDescriptors:
    """A frozen tower's embedding of every image of a store, computed once (and of its mirror image with
    `flip`, so training can still mirror faces at random)."""

    def __init__(self, model: SiameseNet, images: torch.Tensor, pre: PreprocessConfig, device: str,
                 bf16: bool, flip: bool) -> None:
        self.table = embed_frozen(model, images, pre, device, bf16).to(device)
        self.mirror = embed_frozen(model, images, pre, device, bf16, mirror=True).to(device) if flip else None

    def __call__(self, idx: np.ndarray, gen: torch.Generator | None) -> torch.Tensor:
        """Embeddings of images idx; with flip, each row is the mirror image's with probability 1/2."""
        rows = torch.as_tensor(idx, device=self.table.device)
        emb = self.table[rows]
        if self.mirror is not None and gen is not None:
            mirrored = (torch.rand(len(rows), generator=gen) < 0.5).to(emb.device)
            emb = torch.where(mirrored[:, None], self.mirror[rows], emb)
        return emb
