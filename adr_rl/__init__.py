"""adr-rl: Activation-Descent Regularization (ADR) for input optimization of ReLU
networks, applied to deep RL (critic-guided action refinement, adversarial
observations).

>>> from adr_rl import maximize
>>> res = maximize(net, x0, lower=-1.0, upper=1.0, steps=3000, method="adr", seed=0)
>>> res.x, res.value  # best input per problem, true objective there
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adr_rl.attack import AttackResult, ObservationAttack, WorstCaseAttack
    from adr_rl.certify import ExactResult, exact_maximize, linear_region_radius
    from adr_rl.exploration import ExplorationRefinement, RefinedDDPG, RefinedSAC, RefinedTD3
    from adr_rl.online import AttackedPolicy, AttackedVecEnv, AttackStats
    from adr_rl.optim import (
        COMPILED_METHODS,
        EXACT_METHODS,
        METHODS,
        AdamConfig,
        ADRConfig,
        APGDConfig,
        CEMConfig,
        CompileError,
        MaximizeResult,
        MILPConfig,
        PerturbedGDConfig,
        RestartGDConfig,
        adr_sync_config,
        maximize,
        network_evaluations,
    )
    from adr_rl.refine import ActionRefiner, RefineInfo
    from adr_rl.surrogate import NonReluNetworkError, ReluSurrogate, find_relus

# Public name -> module. Imported on first use, so `import adr_rl` (and the `adr-rl`
# command's --help) stays fast; `from adr_rl import maximize` works as usual.
_EXPORTS = {
    "AttackedPolicy": "adr_rl.online",
    "AttackedVecEnv": "adr_rl.online",
    "AttackStats": "adr_rl.online",
    "AttackResult": "adr_rl.attack",
    "ObservationAttack": "adr_rl.attack",
    "WorstCaseAttack": "adr_rl.attack",
    "CompileError": "adr_rl.optim",
    "COMPILED_METHODS": "adr_rl.optim",
    "METHODS": "adr_rl.optim",
    "AdamConfig": "adr_rl.optim",
    "ADRConfig": "adr_rl.optim",
    "EXACT_METHODS": "adr_rl.optim",
    "MILPConfig": "adr_rl.optim",
    "ExactResult": "adr_rl.certify",
    "ExplorationRefinement": "adr_rl.exploration",
    "RefinedDDPG": "adr_rl.exploration",
    "RefinedSAC": "adr_rl.exploration",
    "RefinedTD3": "adr_rl.exploration",
    "exact_maximize": "adr_rl.certify",
    "linear_region_radius": "adr_rl.certify",
    "APGDConfig": "adr_rl.optim",
    "CEMConfig": "adr_rl.optim",
    "MaximizeResult": "adr_rl.optim",
    "PerturbedGDConfig": "adr_rl.optim",
    "RestartGDConfig": "adr_rl.optim",
    "adr_sync_config": "adr_rl.optim",
    "maximize": "adr_rl.optim",
    "network_evaluations": "adr_rl.optim",
    "ActionRefiner": "adr_rl.refine",
    "RefineInfo": "adr_rl.refine",
    "NonReluNetworkError": "adr_rl.surrogate",
    "ReluSurrogate": "adr_rl.surrogate",
    "find_relus": "adr_rl.surrogate",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'adr_rl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = [
    "COMPILED_METHODS",
    "EXACT_METHODS",
    "ExactResult",
    "ExplorationRefinement",
    "RefinedDDPG",
    "RefinedSAC",
    "RefinedTD3",
    "MILPConfig",
    "exact_maximize",
    "linear_region_radius",
    "METHODS",
    "ActionRefiner",
    "AttackResult",
    "AttackStats",
    "AttackedPolicy",
    "AttackedVecEnv",
    "ObservationAttack",
    "RefineInfo",
    "WorstCaseAttack",
    "ADRConfig",
    "APGDConfig",
    "AdamConfig",
    "CEMConfig",
    "CompileError",
    "MaximizeResult",
    "NonReluNetworkError",
    "PerturbedGDConfig",
    "ReluSurrogate",
    "RestartGDConfig",
    "adr_sync_config",
    "find_relus",
    "maximize",
    "network_evaluations",
]

__version__ = "0.1.0"
