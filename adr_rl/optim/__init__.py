"""``maximize``: batched input optimization of ReLU networks, ADR and its baselines.

The package reads in the order the data flows:

- :mod:`~adr_rl.optim.configs`: method names, config dataclasses, cost per step;
- :mod:`~adr_rl.optim.problem`: the batch of box problems and its best-iterate record;
- :mod:`~adr_rl.optim.baselines`: gradient ascent variants, CEM, random search;
- :mod:`~adr_rl.optim.adr`: ADR's iteration (docs/method.md);
- :mod:`~adr_rl.optim.compiled`: the same iterations as ``torch.compile``'d graphs;
- :mod:`~adr_rl.optim.api`: :func:`maximize`, which checks its inputs and dispatches.
"""

from __future__ import annotations

from adr_rl.optim.api import maximize
from adr_rl.optim.compiled import CompileError, compiler_available
from adr_rl.optim.configs import (
    COMPILED_METHODS,
    METHODS,
    AdamConfig,
    ADRConfig,
    CEMConfig,
    Method,
    PerturbedGDConfig,
    RestartGDConfig,
    adr_sync_config,
    network_evaluations,
)
from adr_rl.optim.problem import MaximizeResult

__all__ = [
    "COMPILED_METHODS",
    "METHODS",
    "ADRConfig",
    "AdamConfig",
    "CEMConfig",
    "CompileError",
    "MaximizeResult",
    "Method",
    "PerturbedGDConfig",
    "RestartGDConfig",
    "adr_sync_config",
    "compiler_available",
    "maximize",
    "network_evaluations",
]
