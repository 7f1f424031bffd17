"""The paper's synthetic problem: random ReLU networks of two shapes, and the step
counts that give every method the same network evaluations (shared by the random-network
benchmark, the exact reference, the tuning script and the sweep jobs)."""

from __future__ import annotations

import torch
from torch import nn

from adr_rl.optim import network_evaluations

#: Layer widths of the paper's two random networks (input ... output).
SHAPES = {"small": (10, 64, 64, 1), "large": (128, 500, 500, 500, 1)}


def random_relu_net(sizes: tuple[int, ...], seed: int) -> nn.Sequential:
    """The paper's random network: every weight and bias is ``U(0, 1)`` times a random sign."""
    g = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        linear = nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            for p in (linear.weight, linear.bias):
                magnitude = torch.rand(p.shape, generator=g)
                sign = torch.where(torch.rand(p.shape, generator=g) < 0.5, -1.0, 1.0)
                p.copy_(magnitude * sign)
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def steps_for(method: str, adr_steps: int) -> int:
    """Steps that give ``method`` the network evaluations of ``adr_steps`` ADR steps."""
    return network_evaluations("adr", adr_steps) // network_evaluations(method, 1)
