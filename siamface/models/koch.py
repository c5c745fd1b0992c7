"""The paper's network, exactly (Koch et al. 2015, section 3.1 and Figure 4), and a half-size variant.

105x105x1 -> conv64@10 -> pool -> conv128@7 -> pool -> conv128@4 -> pool -> conv256@4 -> fc4096+sigmoid.
38,951,745 parameters with the L1 head. Initialisation as in section 3.2: conv weights N(0, 0.01^2),
all biases N(0.5, 0.01^2), fully connected weights N(0, 0.2^2).
"""

from __future__ import annotations

import torch
from torch import nn

from .siamese import SiameseNet


def _conv(cin: int, cout: int, k: int, pool: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k), nn.ReLU(inplace=True)]
    return layers + [nn.MaxPool2d(2)] if pool else layers


class KochTower(nn.Module):
    """The convolutional twin. `widths` and `kernels` default to the paper's; `fc` is the embedding size."""

    def __init__(
        self,
        in_channels: int = 1,
        widths: tuple[int, ...] = (64, 128, 128, 256),
        kernels: tuple[int, ...] = (10, 7, 4, 4),
        fc: int = 4096,
        input_size: int = 105,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin, side = in_channels, input_size
        for i, (w, k) in enumerate(zip(widths, kernels)):
            pool = i < len(widths) - 1
            layers += _conv(cin, w, k, pool)
            cin, side = w, (side - k + 1) // (2 if pool else 1)
        if side < 1:
            raise ValueError(f"input_size {input_size} is too small for kernels {kernels}")
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin * side * side, fc)
        self.out_features = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(self.features(x).flatten(1)))


def koch_init_(model: nn.Module) -> None:
    """The paper's initialisation: conv W ~ N(0, 1e-2), FC W ~ N(0, 0.2), every bias ~ N(0.5, 1e-2)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 1e-2)
            nn.init.normal_(m.bias, 0.5, 1e-2)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.2)
            nn.init.normal_(m.bias, 0.5, 1e-2)


def koch_parameters(in_channels: int = 1, input_size: int = 105, head_weights: str = "free",
                    widths: tuple[int, ...] = (64, 128, 128, 256), kernels: tuple[int, ...] = (10, 7, 4, 4),
                    fc: int = 4096) -> int:
    """The parameter count of `koch_siamese(...)` by formula (no weights built; tested equal to the real count)."""
    total, cin, side = 0, in_channels, input_size
    for i, (w, k) in enumerate(zip(widths, kernels)):
        pool = i < len(widths) - 1
        total += cin * w * k * k + w
        cin, side = w, (side - k + 1) // (2 if pool else 1)
    return total + cin * side * side * fc + fc + fc + 1  # tower fc, then the L1 head's weights and bias


def koch_siamese(in_channels: int = 1, input_size: int = 105, head_weights: str = "free",
                 **tower_kwargs: object) -> SiameseNet:
    tower = KochTower(in_channels=in_channels, input_size=input_size, **tower_kwargs)  # type: ignore[arg-type]
    net = SiameseNet(tower, tower.out_features, in_channels, input_size, head_weights)
    koch_init_(net)
    if head_weights == "nonpositive":
        net.head.reset_nonpositive()
    return net
