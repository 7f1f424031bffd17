"""Hyper-parameters of the off-policy control agents, in one place (rl-zoo3 style).

Values follow rl-baselines3-zoo's tuned ``hyperparams/<algo>.yml`` for each env, so the
shipped agents are comparable with the zoo's published scores (noted per entry).
``noise_std`` adds Gaussian action noise (TD3); everything else is passed to the SB3
constructor as is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def linear_schedule(initial: float) -> Callable[[float], float]:
    """rl-zoo3's ``lin_<value>``: decays linearly to 0 over the planned steps."""

    def schedule(progress_remaining: float) -> float:
        return progress_remaining * initial

    schedule.__qualname__ = f"lin_{initial:g}"
    return schedule


_TD3_MUJOCO: dict[str, Any] = dict(
    n_timesteps=1_000_000,
    learning_starts=10_000,
    noise_std=0.1,
    train_freq=1,
    gradient_steps=1,
    learning_rate=1e-3,
    batch_size=256,
    policy_kwargs=dict(net_arch=[400, 300]),
)

# rl-zoo3's td3 settings for Pendulum, LunarLanderContinuous and BipedalWalker: one
# round of updates per episode, as many gradient steps as the episode had env steps.
_TD3_EPISODIC: dict[str, Any] = dict(
    buffer_size=200_000,
    gamma=0.98,
    learning_rate=1e-3,
    learning_starts=10_000,
    train_freq=(1, "episode"),
    gradient_steps=-1,
    noise_std=0.1,
    policy_kwargs=dict(net_arch=[400, 300]),
)

HYPERPARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "td3": {
        # rl-zoo3 td3 Pendulum-v1; its published agent scores -195.99 +/- 119.03.
        "Pendulum-v1": dict(_TD3_EPISODIC, n_timesteps=20_000),
        # rl-zoo3 td3 LunarLanderContinuous (v2 in the zoo; v3 differs only in bug fixes).
        "LunarLanderContinuous-v3": dict(_TD3_EPISODIC, n_timesteps=300_000),
        # rl-zoo3 td3 BipedalWalker-v3.
        "BipedalWalker-v3": dict(_TD3_EPISODIC, n_timesteps=1_000_000),
        # rl-zoo3 td3 MuJoCo defaults (HalfCheetah, Hopper, Walker2d, Ant).
        "HalfCheetah-v5": _TD3_MUJOCO,
        "Hopper-v5": _TD3_MUJOCO,
    },
    "sac": {
        # rl-zoo3 sac Pendulum-v1.
        "Pendulum-v1": dict(
            n_timesteps=20_000,
            learning_rate=1e-3,
            policy_kwargs=dict(net_arch=[256, 256]),
        ),
        # rl-zoo3 sac LunarLanderContinuous: learning rate lin_7.3e-4.
        "LunarLanderContinuous-v3": dict(
            n_timesteps=500_000,
            batch_size=256,
            learning_rate=linear_schedule(7.3e-4),
            buffer_size=1_000_000,
            ent_coef="auto",
            gamma=0.99,
            tau=0.01,
            train_freq=1,
            gradient_steps=1,
            learning_starts=10_000,
            policy_kwargs=dict(net_arch=[400, 300]),
        ),
        # rl-zoo3 sac BipedalWalker-v3 (gSDE exploration).
        "BipedalWalker-v3": dict(
            n_timesteps=500_000,
            learning_rate=7.3e-4,
            buffer_size=300_000,
            batch_size=256,
            ent_coef="auto",
            gamma=0.98,
            tau=0.02,
            train_freq=64,
            gradient_steps=64,
            learning_starts=10_000,
            use_sde=True,
            policy_kwargs=dict(log_std_init=-3, net_arch=[400, 300]),
        ),
        # rl-zoo3 sac MuJoCo defaults: SB3's SAC defaults, 10k random steps first.
        "HalfCheetah-v5": dict(n_timesteps=1_000_000, learning_starts=10_000),
        "Hopper-v5": dict(n_timesteps=1_000_000, learning_starts=10_000),
    },
}


# Published scores of rl-zoo3's agents trained with the same hyper-parameters, for the
# model cards (mean +/- std of the episode return, as their model cards report them).
REFERENCE_SCORES: dict[tuple[str, str], str] = {
    ("td3", "Pendulum-v1"): "-195.99 +/- 119.03 (rl-zoo3, sb3/td3-Pendulum-v1)",
}


def hyperparams(algo: str, env_id: str) -> dict[str, Any]:
    """A copy of the hyper-parameters for ``algo`` on ``env_id``."""
    try:
        config = HYPERPARAMS[algo][env_id]
    except KeyError:
        known = {a: sorted(envs) for a, envs in HYPERPARAMS.items()}
        raise KeyError(f"no hyper-parameters for {algo} on {env_id}; known: {known}") from None
    return {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
