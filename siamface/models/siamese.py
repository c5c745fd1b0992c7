"""The Siamese twin of Koch, Zemel & Salakhutdinov (2015): one tower, shared weights, an L1 head.

p(same) = sigmoid(sum_j a_j |h1_j - h2_j| + b). The model returns the logit; the sigmoid is applied
outside it (STYLE.md 6), so the loss can use the numerically stable `binary_cross_entropy_with_logits`.

The paper leaves the weights a_j free. With few training identities, about half of them turn positive
(a larger difference in that unit then argues for "same"), which fits those identities and hurts new ones:
on AT&T the free head ranked held-out pairs worse than an unweighted L1 distance of the same embeddings.
`head_weights="nonpositive"` keeps the paper's form with a_j = -softplus(w_j) <= 0: every unit can only
count a difference against "same", while its weight is still learned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HEAD_WEIGHTS = ("free", "nonpositive")


class L1Head(nn.Module):
    """The paper's head: a learned weighted sum of the absolute embedding differences, plus a bias."""

    def __init__(self, dim: int, weights: str = "free") -> None:
        super().__init__()
        if weights not in HEAD_WEIGHTS:
            raise ValueError(f"head_weights must be one of {HEAD_WEIGHTS}, got {weights!r}")
        self.fc = nn.Linear(dim, 1)
        self.weights = weights
        if weights == "nonpositive":
            self.reset_nonpositive()

    def reset_nonpositive(self) -> None:
        """a_j = -softplus(w_j) start equal, summing to -12.8 (-0.05 each at D=256), so a typical distance
        of sigmoid embeddings gives a logit of a few units; bias 0.5 (a zero distance says 'same')."""
        a0 = 12.8 / self.fc.in_features
        with torch.no_grad():
            self.fc.weight.fill_(float(torch.log(torch.expm1(torch.tensor(a0)))))
            self.fc.bias.fill_(0.5)

    def effective_weight(self) -> torch.Tensor:
        """The a_j of the paper's formula, shape (1, D)."""
        return -F.softplus(self.fc.weight) if self.weights == "nonpositive" else self.fc.weight

    def forward(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        return F.linear((e1 - e2).abs(), self.effective_weight(), self.fc.bias).squeeze(-1)


class SiameseNet(nn.Module):
    """Twin network: `embed` images once, `score` pairs of embeddings, `forward` = both for a pair batch."""

    def __init__(self, tower: nn.Module, embed_dim: int, in_channels: int, input_size: int,
                 head_weights: str = "free") -> None:
        super().__init__()
        self.tower = tower
        self.head = L1Head(embed_dim, head_weights)
        self.embed_dim = embed_dim
        self.in_channels = in_channels
        self.input_size = input_size
        self.pretrained_tower = False  # True when the factory loaded shipped tower weights (models/dlib_resnet)

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
