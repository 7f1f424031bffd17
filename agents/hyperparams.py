"""Hyper-parameters of the off-policy control agents, in one place (rl-zoo3 style).

Values follow rl-baselines3-zoo's tuned ``hyperparams/<algo>.yml`` for each env, so the
shipped agents are comparable with the zoo's published scores (noted per entry).
``noise_std`` adds Gaussian action noise (TD3); everything else is passed to the SB3
constructor as is.
"""

from __future__ import annotations

from typing import Any

HYPERPARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "td3": {
        # rl-zoo3 td3 Pendulum-v1; its published agent scores -195.99 +/- 119.03.
        "Pendulum-v1": dict(
            n_timesteps=20_000,
            buffer_size=200_000,
            gamma=0.98,
            learning_rate=1e-3,
            learning_starts=10_000,
            train_freq=(1, "episode"),
            gradient_steps=-1,
            noise_std=0.1,
            policy_kwargs=dict(net_arch=[400, 300]),
        ),
    },
    "sac": {
        # rl-zoo3 sac Pendulum-v1.
        "Pendulum-v1": dict(
            n_timesteps=20_000,
            learning_rate=1e-3,
            policy_kwargs=dict(net_arch=[256, 256]),
        ),
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
        return dict(HYPERPARAMS[algo][env_id])
    except KeyError:
        known = {a: sorted(envs) for a, envs in HYPERPARAMS.items()}
        raise KeyError(f"no hyper-parameters for {algo} on {env_id}; known: {known}") from None
