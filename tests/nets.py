"""Small networks shared by the optimizer tests."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def mlp(
    sizes=(4, 16, 16, 1), seed: int = 0, inplace: bool = False, dtype=torch.float32
) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU(inplace=inplace))
    return nn.Sequential(*layers).to(dtype)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.relu0 = nn.ReLU()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(self.relu1(self.conv0(self.relu0(x))))


class SmallResNet(nn.Module):
    """IMPALA-like: conv, max-pool, residual blocks, a dense head; all ReLUs are modules."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.block = ResidualBlock(8)
        self.relu = nn.ReLU()
        self.head = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.pool(self.conv(x)))
        return self.head(self.relu(x).flatten(1))


class SharedReluNet(nn.Module):
    """One nn.ReLU module called at two places."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.l1, self.l2, self.l3 = nn.Linear(3, 8), nn.Linear(8, 8), nn.Linear(8, 1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l3(self.act(self.l2(self.act(self.l1(x)))))


class FunctionalReluNet(nn.Module):
    """Has an nn.ReLU module but also calls F.relu: ADR cannot see the latter."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.l1, self.l2, self.l3 = nn.Linear(3, 8), nn.Linear(8, 8), nn.Linear(8, 1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l3(F.relu(self.l2(self.act(self.l1(x)))))
