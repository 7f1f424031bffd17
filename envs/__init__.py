"""Env factories: Procgen for SB3 2.x and Gymnasium (``envs.procgen``)."""

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
    "TRAIN_LEVELS",
    "UNSEEN_LEVELS",
    "LevelSplit",
    "ProcgenGymnasiumEnv",
    "ProcgenVecEnv",
    "level_split",
    "make_procgen_env",
    "make_procgen_vec_env",
]
