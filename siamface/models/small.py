"""Towers sized for a 2-core CPU: a plain conv-BN stack (Omniglot, tests) and a residual net for faces.

Both end like Koch's tower in a sigmoid embedding, so the decision is always the paper's twin + L1 +
weighted sigmoid head; batch norm before the sigmoid keeps it out of saturation. The head sees spatial
layout through a flattened final map (faces are aligned, so position carries identity information).

`embedding="l2"` replaces the sigmoid by a fixed-length, zero-centred vector (batch norm, then L2
normalisation). A sigmoid code lives in one corner of the space, so a cosine identity loss
(train.id_loss) shapes angles that the L1 head, blind to that common offset, cannot read; on a sphere
around the origin, small L1 and small angle agree.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .siamese import SiameseNet

EMBEDDINGS = ("sigmoid", "l2")
# Radius of an "l2" embedding per sqrt(dimension), so each unit spreads like a trained sigmoid code (0.17
# measured on resface64, rounded up) and the L1 head's initialisation suits either embedding.
L2_SPREAD = 0.2


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """He et al. (2016) basic residual block: two 3x3 conv-BN with an identity or 1x1 shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(cin, cout, stride),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class EmbeddingHead(nn.Module):
    """Flattened feature map -> dropout -> linear -> batch norm -> sigmoid (a Koch-style embedding), or
    -> L2 normalisation to radius L2_SPREAD * sqrt(dim) (embedding="l2")."""

    def __init__(self, in_features: int, dim: int, dropout: float, embedding: str = "sigmoid") -> None:
        super().__init__()
        if embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {embedding!r}")
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, dim)
        self.bn = nn.BatchNorm1d(dim)
        self.embedding = embedding
        self.radius = L2_SPREAD * math.sqrt(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.bn(self.fc(self.drop(x.flatten(1))))
        if self.embedding == "sigmoid":
            return torch.sigmoid(z)
        return F.normalize(z.float(), dim=1).to(z.dtype) * self.radius


def _flat_size(features: nn.Module, in_channels: int, size: int) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, in_channels, size, size)).numel())


class ConvTower(nn.Module):
    """Blocks of conv3x3-BN-ReLU-maxpool2 (the few-shot 'Conv-4' family), then the embedding head."""

    def __init__(
        self, in_channels: int, input_size: int, widths: tuple[int, ...], embed_dim: int, dropout: float,
        embedding: str = "sigmoid",
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        cin = in_channels
        for w in widths:
            blocks += [conv_bn(cin, w), nn.MaxPool2d(2)]
            cin = w
        self.features = nn.Sequential(*blocks)
        self.head = EmbeddingHead(_flat_size(self.features, in_channels, input_size), embed_dim, dropout, embedding)
        self.out_features = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ResTower(nn.Module):
    """A small ResNet: 3x3 stem, one stride-2 stage per width, flattened final map, embedding head."""

    def __init__(
        self,
        in_channels: int,
        input_size: int,
        widths: tuple[int, ...],
        blocks: tuple[int, ...],
        embed_dim: int,
        dropout: float,
        embedding: str = "sigmoid",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(in_channels, widths[0])]
        cin = widths[0]
        for w, n in zip(widths, blocks):
            layers.append(BasicBlock(cin, w, stride=2))
            layers += [BasicBlock(w, w) for _ in range(n - 1)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = EmbeddingHead(_flat_size(self.features, in_channels, input_size), embed_dim, dropout, embedding)
        self.out_features = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _head_parameters(flat: int, embed_dim: int) -> int:
    """EmbeddingHead (linear + batch norm) and the L1 head."""
    return flat * embed_dim + embed_dim + 2 * embed_dim + embed_dim + 1


def conv_parameters(in_channels: int = 1, input_size: int = 52, widths: tuple[int, ...] = (64, 64, 64, 64),
                    embed_dim: int = 256, **_: object) -> int:
    """The parameter count of `conv_siamese(...)` by formula (no weights built; tested equal to the real count)."""
    total, cin, side = 0, in_channels, input_size
    for w in widths:
        total += cin * w * 9 + 2 * w  # conv3x3 without bias, batch norm
        cin, side = w, side // 2
    return total + _head_parameters(cin * side * side, embed_dim)


def res_parameters(in_channels: int = 1, input_size: int = 64, widths: tuple[int, ...] = (32, 64, 128, 256),
                   blocks: tuple[int, ...] = (1, 1, 1, 1), embed_dim: int = 256, **_: object) -> int:
    """The parameter count of `res_siamese(...)` by formula (no weights built; tested equal to the real count)."""
    total, cin, side = in_channels * widths[0] * 9 + 2 * widths[0], widths[0], input_size
    for w, n in zip(widths, blocks):
        total += cin * w * 9 + 2 * w + w * w * 9 + 2 * w + cin * w + 2 * w  # stride-2 block with its 1x1 shortcut
        total += (n - 1) * 2 * (w * w * 9 + 2 * w)
        cin, side = w, (side - 1) // 2 + 1
    return total + _head_parameters(cin * side * side, embed_dim)


def conv_siamese(
    in_channels: int = 1,
    input_size: int = 52,
    widths: tuple[int, ...] = (64, 64, 64, 64),
    embed_dim: int = 256,
    dropout: float = 0.0,
    head_weights: str = "free",
    embedding: str = "sigmoid",
) -> SiameseNet:
    tower = ConvTower(in_channels, input_size, tuple(widths), embed_dim, dropout, embedding)
    return SiameseNet(tower, embed_dim, in_channels, input_size, head_weights)


def res_siamese(
    in_channels: int = 1,
    input_size: int = 64,
    widths: tuple[int, ...] = (32, 64, 128, 256),
    blocks: tuple[int, ...] = (1, 1, 1, 1),
    embed_dim: int = 256,
    dropout: float = 0.2,
    head_weights: str = "free",
    embedding: str = "sigmoid",
) -> SiameseNet:
    if len(widths) != len(blocks):
        raise ValueError(f"widths {widths} and blocks {blocks} must have the same length")
    tower = ResTower(in_channels, input_size, tuple(widths), tuple(blocks), embed_dim, dropout, embedding)
    return SiameseNet(tower, embed_dim, in_channels, input_size, head_weights)
