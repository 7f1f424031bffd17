"""Env factories: Procgen for SB3 2.x and Gymnasium (``envs.procgen``), and the
continuous-control tasks of the off-policy agents (``envs.control``).

Names are imported lazily, so control-only users need no ``procgen`` (and no old
``gym``) installed, and Procgen users no Box2D/MuJoCo.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {
    "CONTROL_ENVS": "envs.control",
    "make_control_env": "envs.control",
    "make_control_vec_env": "envs.control",
    "TRAIN_LEVELS": "envs.procgen",
    "UNSEEN_LEVELS": "envs.procgen",
    "LevelSplit": "envs.procgen",
    "ProcgenGymnasiumEnv": "envs.procgen",
    "ProcgenVecEnv": "envs.procgen",
    "level_split": "envs.procgen",
    "make_procgen_env": "envs.procgen",
    "make_procgen_vec_env": "envs.procgen",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'envs' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
