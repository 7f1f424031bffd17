"""Env factories: Procgen for SB3 2.x and Gymnasium (``envs.procgen``), and the
continuous-control tasks of the off-policy agents (``envs.control``)."""

from envs.control import CONTROL_ENVS, make_control_env, make_control_vec_env
from envs.procgen import (
    TRAIN_LEVELS,
    UNSEEN_LEVELS,
    LevelSplit,
    ProcgenGymnasiumEnv,
    ProcgenVecEnv,
    level_split,
    make_procgen_env,
    make_procgen_vec_env,
)

__all__ = [
    "CONTROL_ENVS",
    "make_control_env",
    "make_control_vec_env",
    "TRAIN_LEVELS",
    "UNSEEN_LEVELS",
    "LevelSplit",
    "ProcgenGymnasiumEnv",
    "ProcgenVecEnv",
    "level_split",
    "make_procgen_env",
    "make_procgen_vec_env",
]
