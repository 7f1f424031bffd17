"""The one episode loop of every evaluation: play an SB3 ``VecEnv`` until each env has
finished its quota of episodes.

Every evaluation (Procgen rollouts of a policy, attacked rollouts, refined control
episodes) is this loop with its own ``act``: the function that turns a batch of
observations into actions, told which envs still owe episodes (an attack perturbs only
those; a refiner records its Q gain only for those). Episodes are counted as in SB3's
``evaluate_policy``: each env has a fixed quota, so short episodes cannot crowd out long
ones, and only the first episodes of each env count. An episode longer than
``max_steps`` is counted when it reaches the cap (marked truncated) and its env then
waits, uncounted, for the episode's real end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from tqdm.auto import tqdm

#: ``act(obs, active, starts) -> actions``: ``obs`` the env's batch; ``active``
#: ``(n_envs,)`` bool, the envs whose current episode still counts; ``starts``
#: ``(n_envs,)`` bool, the envs whose observation begins an episode (for recurrent
#: policies' ``episode_start``).
Act = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def episode_quotas(n_episodes: int, n_envs: int) -> np.ndarray:
    """Episodes each env must finish, ``(n_envs,)`` int, summing to ``n_episodes``.

    The split is as even as possible (as in SB3's ``evaluate_policy``).
    """
    if n_episodes < 1 or n_envs < 1:
        raise ValueError(f"Need n_episodes >= 1 and n_envs >= 1, got {n_episodes}, {n_envs}.")
    return np.array([(n_episodes + i) // n_envs for i in range(n_envs)], dtype=np.int64)


@dataclass
class Episodes:
    """Per-episode results of :func:`play`, in the order the episodes finished.

    :param returns: ``(E,)`` float64, undiscounted returns.
    :param lengths: ``(E,)`` int64, lengths in env steps.
    :param truncated: ``(E,)`` bool, cut at ``max_steps``.
    :param env_ids: ``(E,)`` int64, which sub-env played each.
    :param infos: the env's ``info`` dict at each episode's end (e.g. Procgen's
        ``prev_level_seed``).
    """

    returns: np.ndarray
    lengths: np.ndarray
    truncated: np.ndarray
    env_ids: np.ndarray
    infos: list[dict[str, Any]] = field(default_factory=list)

    def by_env(self) -> np.ndarray:
        """Returns ordered by env, then by episode: ``(E,)`` float64 (for per-seed groups)."""
        order = np.argsort(self.env_ids, kind="stable")
        return self.returns[order]


def play(
    venv: VecEnv,
    act: Act,
    quotas: np.ndarray,
    *,
    max_steps: int = 0,
    desc: str = "",
    progress: bool = True,
) -> Episodes:
    """Step ``venv`` with ``act`` until every env has finished ``quotas[i]`` episodes.

    :param venv: an SB3 ``VecEnv`` that resets its envs itself (SB3's convention).
    :param act: ``(obs, active, starts) -> actions`` for the whole batch.
    :param quotas: ``(n_envs,)`` int, episodes to count per env.
    :param max_steps: cap on a counted episode's length (0: none).
    :param desc: label of the progress bar (over counted episodes).
    """
    n_envs = venv.num_envs
    quotas = np.asarray(quotas, dtype=np.int64)
    if quotas.shape != (n_envs,) or (quotas < 0).any():
        raise ValueError(f"quotas must be (n_envs,) = ({n_envs},) non-negative ints")
    counts = np.zeros(n_envs, dtype=np.int64)
    waiting = np.zeros(n_envs, dtype=bool)  # capped: wait for the episode's real end
    ep_ret, ep_len = np.zeros(n_envs), np.zeros(n_envs, dtype=np.int64)
    returns: list[float] = []
    lengths: list[int] = []
    truncated: list[bool] = []
    env_ids: list[int] = []
    infos: list[dict[str, Any]] = []
    obs = venv.reset()
    starts = np.ones(n_envs, dtype=bool)
    total = int(quotas.sum())
    with tqdm(total=total, desc=desc, unit="ep", leave=False, disable=not progress) as bar:
        while (counts < quotas).any():
            active = (counts < quotas) & ~waiting
            actions = act(obs, active, starts)
            obs, rewards, dones, step_infos = venv.step(np.asarray(actions))
            starts = np.asarray(dones, dtype=bool)
            ep_ret += rewards
            ep_len += 1
            for i in range(n_envs):
                counting = counts[i] < quotas[i] and not waiting[i]
                capped = max_steps > 0 and ep_len[i] >= max_steps and not dones[i]
                if counting and (dones[i] or capped):
                    returns.append(float(ep_ret[i]))
                    lengths.append(int(ep_len[i]))
                    truncated.append(bool(capped))
                    env_ids.append(i)
                    infos.append(dict(step_infos[i]))
                    counts[i] += 1
                    bar.update(1)
                    waiting[i] = capped
                if dones[i]:
                    ep_ret[i], ep_len[i], waiting[i] = 0.0, 0, False
    return Episodes(
        returns=np.asarray(returns, dtype=np.float64),
        lengths=np.asarray(lengths, dtype=np.int64),
        truncated=np.asarray(truncated, dtype=bool),
        env_ids=np.asarray(env_ids, dtype=np.int64),
        infos=infos,
    )
