"""Continuous-control tasks for the off-policy agents and action refinement.

One factory for the Gymnasium tasks the project trains and refines on, so training,
evaluation and tests build them the same way (seeding, episode statistics, vectorized
form). Box2D tasks need ``box2d`` + ``pygame`` and MuJoCo tasks need ``mujoco``: the
``control`` extra (``pip install -e ".[control]"``) installs both; a missing one gives an
error that names the extra instead of Gymnasium's import trace.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

#: Tasks with agents or hyper-parameters in this project, and what each one needs.
CONTROL_ENVS: dict[str, str] = {
    "Pendulum-v1": "classic control",
    "LunarLanderContinuous-v3": "box2d",
    "BipedalWalker-v3": "box2d",
    "HalfCheetah-v5": "mujoco",
    "Hopper-v5": "mujoco",
}


def _check(env_id: str) -> None:
    """Any registered Gymnasium id (a user's agent may act in an env of their own)."""
    if env_id not in gym.registry:
        raise ValueError(
            f"unknown env id {env_id!r}: not in Gymnasium's registry; the project's tasks "
            f"are {sorted(CONTROL_ENVS)}"
        )


def make_control_env(env_id: str, seed: int | None = None, **kwargs: Any) -> gym.Env:
    """One Gymnasium env in SB3's ``Monitor`` (true episode returns for
    ``evaluate_policy``), reset with ``seed``."""
    _check(env_id)
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.DependencyNotInstalled as exc:
        raise ImportError(
            f"{env_id} needs {CONTROL_ENVS.get(env_id, 'an extra package')}: "
            f"pip install -e '.[control]' ({exc})"
        ) from exc
    env = Monitor(env)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def make_control_vec_env(
    env_id: str, n_envs: int = 1, seed: int = 0, seeds: Sequence[int] | None = None
) -> VecEnv:
    """Copies of the env in a ``DummyVecEnv``, env ``i`` seeded ``seeds[i]`` (default
    ``seed + i``), each in SB3's ``Monitor`` so ``evaluate_policy`` reads true returns.

    Each env is reset with its seed when built; later resets continue its own random
    stream, so a run is reproducible whatever the episode lengths."""
    _check(env_id)
    seeds = list(seeds) if seeds is not None else [seed + i for i in range(n_envs)]
    return DummyVecEnv([functools.partial(make_control_env, env_id, s) for s in seeds])
