"""Pair losses for the Siamese head: binary cross-entropy on listed pairs, or on every pair of a batch.

`all_pairs_bce` scores all n(n-1)/2 pairs of a class-balanced batch with the paper's L1 head: one tower
pass per image gives thousands of same/different pairs instead of n/2, with positives and negatives
weighted equally (as the paper's balanced pair sets do). With `within_group`, only different pairs from
the same group (Omniglot: the same alphabet) count, matching the within-alphabet one-shot task.

`cosface` is an optional identity loss on the tower alone (Wang et al. 2018, "CosFace"): each training
identity gets a learned prototype and embeddings are pulled to their own prototype by a cosine margin.
It shapes the embedding with every identity at once; the decision stays the Siamese L1 head, trained by
the pair loss, and the prototypes are thrown away after training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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


class CosineClassifier(nn.Module):
    """One learned prototype per training identity, for `cosface`; used only during training."""

    def __init__(self, n_classes: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, dim) * 0.01)


def cosface(emb: torch.Tensor, labels: torch.Tensor, classifier: CosineClassifier, margin: float,
            scale: float) -> torch.Tensor:
    """Large-margin cosine loss: cross-entropy of s * (cos(z, w_c) - m [c = label]) over identities.

    Sigmoid embeddings live in (0, 1)^D; they are centred (2e - 1) before the cosine so that directions,
    not the positive orthant, carry identity. Computed in float32.
    """
    z = F.normalize(2.0 * emb.float() - 1.0, dim=1)
    cos = z @ F.normalize(classifier.weight.float(), dim=1).T
    logits = scale * (cos - margin * F.one_hot(labels, cos.shape[1]).float())
    return F.cross_entropy(logits, labels)
