"""Procgen episodes of a policy, shared by the model cards, the rollout command and the
tests: any object with SB3's ``predict`` plays ``n_episodes`` on a level set, counted by
the shared loop of ``eval/episodes.py`` (a fixed quota per env, as SB3's
``evaluate_policy``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from adr_rl_app.envs.procgen import TRAIN_LEVELS, LevelSplit, make_procgen_vec_env
from adr_rl_app.eval.episodes import episode_quotas, play
from adr_rl_app.eval.stats import return_summary


class PredictPolicy(Protocol):
    """Anything with SB3's ``predict``: observations ``(N, 64, 64, 3) uint8 in [0, 255]``
    in, actions ``(N,)`` int in ``[0, 15)`` and the recurrent state out."""

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]: ...


class RandomPolicy:
    """Uniformly random actions, seeded; the baseline of the model cards.

    :param n_actions: Number of discrete actions (15 in Procgen).
    :param seed: Seed of its own generator (no global random state).
    """

    def __init__(self, n_actions: int = 15, seed: int = 0) -> None:
        self.n_actions = n_actions
        self.rng = np.random.default_rng(seed)

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        n = observation.shape[0] if observation.ndim == 4 else 1
        return self.rng.integers(0, self.n_actions, size=n), None


@dataclass
class RolloutResult:
    """Per-episode results of :func:`rollout`, in the order episodes finished.

    :param returns: ``(n_episodes,)`` float64, undiscounted episode returns.
    :param lengths: ``(n_episodes,)`` int64, episode lengths in env steps.
    :param level_seeds: ``(n_episodes,)`` int64, the level each episode played.
    :param env_ids: ``(n_episodes,)`` int64, which sub-env played it.
    """

    returns: np.ndarray
    lengths: np.ndarray
    level_seeds: np.ndarray
    env_ids: np.ndarray
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: arrays as lists."""
        return {
            "returns": self.returns.tolist(),
            "lengths": self.lengths.tolist(),
            "level_seeds": self.level_seeds.tolist(),
            "env_ids": self.env_ids.tolist(),
            "config": self.config,
        }


def rollout(
    policy: PredictPolicy,
    env_name: str,
    n_episodes: int,
    *,
    levels: LevelSplit = TRAIN_LEVELS,
    distribution_mode: str = "easy",
    n_envs: int = 16,
    seed: int = 0,
    deterministic: bool = False,
    progress_bar: bool = True,
) -> RolloutResult:
    """Play ``n_episodes`` episodes of a Procgen game with ``policy``.

    The env batch is seeded with ``seed``, so the same policy (with seeded
    sampling) plays the same levels again. With ``deterministic=False`` SB3
    samples actions from the policy's distribution, the usual way Procgen agents
    are evaluated (Cobbe et al. 2020); the sampling uses torch's global
    generator, so seed it (``stable_baselines3.common.utils.set_random_seed``) for
    exact repeats.

    :param policy: SB3 model or anything with its ``predict``.
    :param env_name: Procgen game, e.g. ``"coinrun"``.
    :param n_episodes: Episodes to count.
    :param levels: Level set, e.g. ``envs.procgen.UNSEEN_LEVELS``.
    :param distribution_mode: Procgen difficulty.
    :param n_envs: Parallel envs; capped at ``n_episodes`` so every env has a quota.
    :param seed: Seed of the level sequence.
    :param deterministic: Passed to ``predict``.
    :param progress_bar: Show a tqdm bar over finished episodes.
    """
    n_envs = min(n_envs, n_episodes)
    venv = make_procgen_vec_env(
        env_name, n_envs, distribution_mode=distribution_mode, levels=levels, seed=seed
    )
    state: list[Any] = [None]  # the policy's recurrent state, carried between calls

    def act(obs: np.ndarray, active: np.ndarray, starts: np.ndarray) -> np.ndarray:
        actions, state[0] = policy.predict(
            obs, state=state[0], episode_start=starts, deterministic=deterministic
        )
        return np.asarray(actions)

    desc = f"{env_name} levels {levels.start_level}+{levels.num_levels}"
    try:
        episodes = play(
            venv, act, episode_quotas(n_episodes, n_envs), desc=desc, progress=progress_bar
        )
    finally:
        venv.close()
    config = {
        "env_name": env_name,
        "n_episodes": n_episodes,
        "levels": asdict(levels),
        "distribution_mode": distribution_mode,
        "n_envs": n_envs,
        "seed": seed,
        "deterministic": deterministic,
    }
    return RolloutResult(
        returns=episodes.returns,
        lengths=episodes.lengths,
        level_seeds=np.array(
            [int(info.get("prev_level_seed", -1)) for info in episodes.infos], dtype=np.int64
        ),
        env_ids=episodes.env_ids,
        config=config,
    )


def summarize(result: RolloutResult, seed: int = 0) -> dict[str, float | int]:
    """The return metric (:func:`~adr_rl_app.eval.stats.return_summary`) of a rollout."""
    return return_summary(result.returns, result.lengths, seed=seed)


def evaluate_model(
    model: str,
    env_name: str,
    n_episodes: int,
    *,
    levels: LevelSplit,
    n_envs: int = 16,
    seed: int = 0,
    deterministic: bool = False,
) -> tuple[RolloutResult, dict[str, float | int]]:
    """Seed, load an SB3 model file (empty: a uniformly random policy), play it and
    summarize: what ``eval.rollout`` prints and a training export records. The seed is
    set before loading because building the policy draws from torch's generator."""
    from stable_baselines3.common.utils import set_random_seed

    from adr_rl_app.eval.loading import ON_PROCGEN, load_model

    set_random_seed(seed)
    policy: PredictPolicy = (
        load_model(model, ON_PROCGEN, purpose="rollouts support")
        if model
        else RandomPolicy(seed=seed)
    )
    result = rollout(
        policy,
        env_name,
        n_episodes,
        levels=levels,
        n_envs=n_envs,
        seed=seed,
        deterministic=deterministic,
    )
    return result, summarize(result, seed=seed)
