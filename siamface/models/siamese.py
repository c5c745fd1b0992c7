"""The Siamese twin of Koch, Zemel & Salakhutdinov (2015): one tower, shared weights, an L1 head.

p(same) = sigmoid(sum_j a_j |h1_j - h2_j| + b). The model returns the logit; the sigmoid is applied
outside it (STYLE.md 6), so the loss can use the numerically stable `binary_cross_entropy_with_logits`.
"""

from __future__ import annotations

import torch
from torch import nn


class L1Head(nn.Module):
    """The paper's head: a learned weighted sum of the absolute embedding differences, plus a bias."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, 1)

    def forward(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        return self.fc((e1 - e2).abs()).squeeze(-1)


class SiameseNet(nn.Module):
    """Twin network: `embed` images once, `score` pairs of embeddings, `forward` = both for a pair batch."""

    def __init__(self, tower: nn.Module, embed_dim: int, in_channels: int, input_size: int) -> None:
        super().__init__()
        self.tower = tower
        self.head = L1Head(embed_dim)
        self.embed_dim = embed_dim
        self.in_channels = in_channels
        self.input_size = input_size

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, D) embeddings."""
        return self.tower(x)

    def score(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        """Logits of 'same' for aligned rows of two embedding batches; symmetric in (e1, e2)."""
        return self.head(e1, e2)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of image pairs; both sides go through the tower in one batched pass."""
        e = self.embed(torch.cat([x1, x2]))
        e1, e2 = e.split(len(x1))
        return self.score(e1, e2)
