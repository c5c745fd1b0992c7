"""Images -> embeddings -> scores: the one place a model's tower and head run at inference.

Every caller (verify, evaluate, training's validation, the gallery) decodes each distinct image once into
an `ImageStore`, embeds it once, and scores pairs from the embedding matrix with the Siamese head.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import threads
from .config import PreprocessConfig
from .data import ImageStore
from .errors import ImageError, NoFaceError, SiamfaceError
from .models import SiameseNet
from .preprocess import load_input, normalize


def autocast(device: str, enabled: bool) -> Any:
    """bf16 autocast on CPU (AVX-512 BF16 / AMX), bf16 on CUDA; a no-op when disabled."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


@torch.no_grad()
def embed_batches(
    model: SiameseNet, images: torch.Tensor, pre: PreprocessConfig, batch_size: int = 256,
    device: str = "cpu", bf16: bool = False,
) -> torch.Tensor:
    """Embed uint8 (N, C, H, W) images in batches, in eval mode; returns float32 (N, D) on the CPU."""
    threads.apply()
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = normalize(images[start : start + batch_size].to(device), pre)
        with autocast(device, bf16):
            out.append(model.embed(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.embed_dim)


@torch.no_grad()
def probability(model: SiameseNet, e1: torch.Tensor, e2: torch.Tensor) -> np.ndarray:
    """p(same) of pairs of embeddings by the Siamese head, its weighted sum and sigmoid taken in float64: near
    p = 1 float32 keeps too few distinct values to tell thresholds for FARs of 1e-5 and below apart, and a
    float32 sum rounds differently with the batch's size, so a pair would score differently in a search of
    a thousand rows than of a million."""
    head = model.head
    device = next(head.parameters()).device
    d = (e1.to(device) - e2.to(device)).abs().double()
    logit = F.linear(d, head.effective_weight().double(), head.fc.bias.double()).squeeze(-1)
    return torch.sigmoid(logit).cpu().numpy()


def score_indices(model: SiameseNet, emb: torch.Tensor, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """p(same) for rows i[k], j[k] of an embedding matrix."""
    return probability(model, emb[torch.as_tensor(i)], emb[torch.as_tensor(j)])


def store_for(paths: Sequence[Path], pre: PreprocessConfig, progress: bool = False,
              fallback: bool = True, errors: dict[Path, SiamfaceError] | None = None) -> ImageStore:
    """Decode each distinct path once with the model's preprocessing (alignment included). A protocol may
    not drop pairs, so by default a central box stands in where no face is found (faces.central_box);
    fallback=False raises NoFaceError instead (verify). With `errors`, an image that cannot be used
    (ImageError, NoFaceError) is left out of the store and its error recorded there instead of raised."""
    unique = list(dict.fromkeys(Path(p) for p in paths))

    def load(p: Path) -> np.ndarray | None:
        try:
            return load_input(p, pre, fallback=fallback)
        except (ImageError, NoFaceError) as e:
            if errors is None:
                raise
            errors[p] = e
            return None

    return ImageStore.from_paths(unique, pre.channels, pre.size, crop=pre.crop, progress=progress, loader=load)
