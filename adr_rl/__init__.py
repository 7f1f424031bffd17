"""adr-rl: Activation-Descent Regularization (ADR) for input optimization of ReLU
networks, applied to deep RL (critic-guided action refinement, adversarial
observations).

>>> from adr_rl import maximize
>>> res = maximize(net, x0, lower=-1.0, upper=1.0, steps=3000, method="adr", seed=0)
>>> res.x, res.value  # best input per problem, true objective there
"""

from adr_rl.attack import AttackedPolicy, AttackedVecEnv, AttackResult, ObservationAttack
from adr_rl.optim import (
    METHODS,
    AdamConfig,
    ADRConfig,
    CEMConfig,
    MaximizeResult,
    PerturbedGDConfig,
    RestartGDConfig,
    adr_sync_config,
    maximize,
    network_evaluations,
)
from adr_rl.refine import ActionRefiner, RefineInfo
from adr_rl.surrogate import NonReluNetworkError, ReluSurrogate, find_relus

__all__ = [
    "METHODS",
    "ActionRefiner",
    "AttackResult",
    "AttackedPolicy",
    "AttackedVecEnv",
    "ObservationAttack",
    "RefineInfo",
    "ADRConfig",
    "AdamConfig",
    "CEMConfig",
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
