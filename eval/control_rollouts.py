"""Refined episodes on the continuous-control tasks, shared by the refinement commands:
every seed's episodes side by side, one per env, and their summary row."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from adr_rl import ActionRefiner, network_evaluations
from adr_rl.optim import EXACT_METHODS
from adr_rl_app.envs.control import make_control_vec_env
from adr_rl_app.eval.episodes import play
from adr_rl_app.eval.stats import bootstrap_mean_ci, return_summary


def env_seeds(seeds: list[int], episodes: int) -> list[int]:
    """Episode ``i`` of seed ``s`` runs in an env seeded ``1000 * s + i``."""
    return [1000 * s + i for s in seeds for i in range(episodes)]


def rollout(
    refiner: ActionRefiner,
    env_id: str,
    seeds: list[int],
    episodes: int,
    max_episode_steps: int = 0,
) -> dict[str, Any]:
    """All seeds' episodes side by side (one per env); per-step diagnostics of the envs
    whose episode is still running."""
    env = make_control_vec_env(env_id, seeds=env_seeds(seeds, episodes))
    n = env.num_envs
    gain_sums, steps = np.zeros(n), np.zeros(n, dtype=int)
    gains: list[float] = []
    changed: list[float] = []
    times: list[float] = []

    def act(obs: np.ndarray, active: np.ndarray, starts: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        actions, _ = refiner.predict(obs, deterministic=True)
        times.append(time.perf_counter() - start)
        info = refiner.last_info
        assert info is not None
        gains.extend(info.q_gain[active].tolist())
        changed.extend(info.changed[active].tolist())
        gain_sums[active] += info.q_gain[active]
        steps[active] += 1
        return actions

    try:
        played = play(
            env,
            act,
            np.ones(n, dtype=np.int64),
            max_steps=max_episode_steps,
            desc=f"{refiner.method} {env_id}",
        )
    finally:
        env.close()
    order = np.argsort(played.env_ids)  # episode i of the list is env i's
    returns, lengths = played.returns[order], played.lengths[order]
    return {
        "returns": returns.tolist(),
        "lengths": lengths.tolist(),
        "seed_means": returns.reshape(len(seeds), episodes).mean(axis=1).tolist(),
        "q_gain_per_step": float(np.mean(gains)),
        "q_gain_per_episode": (gain_sums / np.maximum(steps, 1)).tolist(),
        "fraction_changed": float(np.mean(changed)),
        "ms_per_call": 1e3 * float(np.mean(times)),
        "batch": n,
        "calls": len(times),
    }


def summarize(refiner: ActionRefiner, radius: float, run: dict[str, Any]) -> dict[str, Any]:
    returns = np.asarray(run["returns"])
    episode_gains = np.asarray(run["q_gain_per_episode"])
    q_lo, q_hi = bootstrap_mean_ci(episode_gains)
    method, steps = refiner.method, refiner.steps
    evaluations: int | None = 0
    if method in EXACT_METHODS:  # milp solves each state exactly: no evaluation budget
        evaluations = None
    elif steps:
        evaluations = network_evaluations(method, steps, refiner.config)
    return {
        "method": method,
        "radius": radius,
        "optimizer_steps": steps,
        "critic_evaluations": evaluations,
        **return_summary(returns, np.asarray(run["lengths"])),
        "seed_means": run["seed_means"],
        "q_gain_per_step": run["q_gain_per_step"],
        "q_gain_per_episode": episode_gains.tolist(),
        "q_gain_ci95": [q_lo, q_hi],
        "fraction_changed": run["fraction_changed"],
        "ms_per_call": run["ms_per_call"],
        "ms_per_action": run["ms_per_call"] / run["batch"],
        "batch": run["batch"],
        "returns": returns.tolist(),
        "lengths": run["lengths"],
    }
