"""Env factories: Procgen for SB3 2.x and Gymnasium (``envs.procgen``), and the
continuous-control tasks of the off-policy agents (``envs.control``).

Names are imported lazily, so control-only users need no ``procgen`` (and no old
``gym``) installed, and Procgen users no Box2D/MuJoCo.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {
    "CONTROL_ENVS": "adr_rl_app.envs.control",
    "make_control_env": "adr_rl_app.envs.control",
    "make_control_vec_env": "adr_rl_app.envs.control",
    "TRAIN_LEVELS": "adr_rl_app.envs.procgen",
    "UNSEEN_LEVELS": "adr_rl_app.envs.procgen",
    "LevelSplit": "adr_rl_app.envs.procgen",
    "ProcgenGymnasiumEnv": "adr_rl_app.envs.procgen",
    "ProcgenVecEnv": "adr_rl_app.envs.procgen",
    "level_split": "adr_rl_app.envs.procgen",
    "make_procgen_env": "adr_rl_app.envs.procgen",
    "make_procgen_vec_env": "adr_rl_app.envs.procgen",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'envs' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
