"""Job functions for ``eval.sweep`` that have no home in another eval script.

A job function takes the parameters of one grid point (the sweep's ``fixed`` values
plus one value of every ``grid`` key) and returns a JSON-able dict with a float
``"metric"``, the number the sweep aggregates over seeds, plus any extra fields.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from adr_rl import maximize
from adr_rl_app.eval.random_relu import SHAPES, random_relu_net


def random_relu(params: dict[str, Any]) -> dict[str, Any]:
    """Maximize one random ReLU network of the paper's synthetic experiment.

    The network is ``eval.bench_random_relu``'s (weights and biases ``U(0, 1)`` with a
    random sign), seeded with ``seed``, maximized over ``[-1, 1]^n`` from ``x0 = 0``
    with ``maximize``'s default options for ``method`` (for ``adr`` these are the small
    network's reference values; the benchmark's per-shape configs and equal-evaluation
    step counts are not applied here).

    :param params: ``shape`` (small | large), ``method`` (any ``maximize`` method),
        ``steps`` (int), ``seed`` (int: the network's and the optimizer's seed).
    :return: ``metric`` (the best value found, under the real network), plus
        ``network_evaluations``, ``value_at_x0`` and ``wall_s``.
    """
    shape = params["shape"]
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {sorted(SHAPES)}, got {shape!r}")
    seed = int(params["seed"])
    net = random_relu_net(SHAPES[shape], seed)
    x0 = torch.zeros(1, SHAPES[shape][0])
    t0 = time.perf_counter()
    res = maximize(
        net, x0, lower=-1.0, upper=1.0, steps=params["steps"], method=params["method"], seed=seed
    )
    wall = time.perf_counter() - t0
    with torch.no_grad():
        start = float(net(x0).item())
    return {
        "metric": float(res.value.item()),
        "network_evaluations": res.network_evaluations,
        "value_at_x0": start,
        "wall_s": wall,
    }
