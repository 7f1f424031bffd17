"""``maximize``: batched input optimization of ReLU networks, ADR and its baselines.

The package reads in the order the data flows:

- :mod:`~adr_rl.optim.configs`: method names, config dataclasses, cost per step;
- :mod:`~adr_rl.optim.problem`: the batch of box problems and its best-iterate record;
- :mod:`~adr_rl.optim.baselines`: gradient ascent variants, Auto-PGD, CEM, random search;
- :mod:`~adr_rl.optim.adr`: ADR's iteration (docs/method.md);
- :mod:`~adr_rl.optim.compiled`: the same iterations as ``torch.compile``'d graphs;
- :mod:`~adr_rl.optim.api`: :func:`maximize`, which checks its inputs and dispatches.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adr_rl.optim.api import maximize
    from adr_rl.optim.compiled import CompileError, compiler_available
    from adr_rl.optim.configs import (
        COMPILED_METHODS,
        EXACT_METHODS,
        METHODS,
        AdamConfig,
        ADRConfig,
        APGDConfig,
        CEMConfig,
        Method,
        MILPConfig,
        PerturbedGDConfig,
        RestartGDConfig,
        adr_sync_config,
        network_evaluations,
    )
    from adr_rl.optim.problem import MaximizeResult

# Public name -> module, imported on first use: the configs and method names need no
# torch, so a command line can check its flags against them before torch loads.
_EXPORTS = {
    "maximize": "adr_rl.optim.api",
    "CompileError": "adr_rl.optim.compiled",
    "compiler_available": "adr_rl.optim.compiled",
    "COMPILED_METHODS": "adr_rl.optim.configs",
    "EXACT_METHODS": "adr_rl.optim.configs",
    "MILPConfig": "adr_rl.optim.configs",
    "METHODS": "adr_rl.optim.configs",
    "AdamConfig": "adr_rl.optim.configs",
    "ADRConfig": "adr_rl.optim.configs",
    "APGDConfig": "adr_rl.optim.configs",
    "CEMConfig": "adr_rl.optim.configs",
    "Method": "adr_rl.optim.configs",
    "PerturbedGDConfig": "adr_rl.optim.configs",
    "RestartGDConfig": "adr_rl.optim.configs",
    "adr_sync_config": "adr_rl.optim.configs",
    "network_evaluations": "adr_rl.optim.configs",
    "MaximizeResult": "adr_rl.optim.problem",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'adr_rl.optim' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = [
    "COMPILED_METHODS",
    "EXACT_METHODS",
    "MILPConfig",
    "METHODS",
    "ADRConfig",
    "APGDConfig",
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
