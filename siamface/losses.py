"""Pair losses for the Siamese head: binary cross-entropy on listed pairs, or on every pair of a batch.

`all_pairs_bce` scores all n(n-1)/2 pairs of a class-balanced batch with the paper's L1 head: one tower
pass per image gives thousands of same/different pairs instead of n/2, with positives and negatives
weighted equally (as the paper's balanced pair sets do). With `within_group`, only different pairs from
the same group (Omniglot: the same alphabet) count, matching the within-alphabet one-shot task.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .models import SiameseNet


def smooth(targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    return targets * (1 - smoothing) + 0.5 * smoothing


def pair_bce(logits: torch.Tensor, same: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Mean BCE of logits against 0/1 labels (computed in float32)."""
    return F.binary_cross_entropy_with_logits(logits.float(), smooth(same.float(), smoothing))


def all_pairs_bce(model: SiameseNet, emb: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor | None = None,
                  smoothing: float = 0.0) -> torch.Tensor:
    """Balanced BCE over every pair i < j of a batch of embeddings with identity labels."""
    i, j = torch.triu_indices(len(emb), len(emb), 1, device=emb.device)
    same = labels[i] == labels[j]
    diff = ~same if groups is None else ~same & (groups[i] == groups[j])
    keep = same | diff
    i, j, same = i[keep], j[keep], same[keep]
    loss = F.binary_cross_entropy_with_logits(model.score(emb[i], emb[j]).float(), smooth(same.float(), smoothing),
                                              reduction="none")
    if not bool(same.any()) or bool(same.all()):
        return loss.mean()
    return 0.5 * loss[same].mean() + 0.5 * loss[~same].mean()
