"""Roll out a policy on a Procgen game for N episodes and return per-episode returns and lengths.

Works with any SB3 model or any object with SB3's ``predict`` signature
(:class:`PredictPolicy`), e.g. an ``AttackedPolicy``. Episodes are counted like SB3's ``evaluate_policy``: each env
gets a fixed quota (``n_episodes`` split as evenly as possible), so short
episodes cannot crowd out long ones, and only the first episodes of each env
that finish count.

Usage (from the repository root)::

    python -m adr_rl_app.eval.rollout --model agents/zoo/ppo_coinrun.zip --env coinrun \\
        --split unseen
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from tqdm import tqdm

from adr_rl_app.envs.procgen import TRAIN_LEVELS, LevelSplit, level_split, make_procgen_vec_env
from adr_rl_app.eval import cli
from adr_rl_app.eval.stats import bootstrap_mean_ci


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


def episode_quotas(n_episodes: int, n_envs: int) -> np.ndarray:
    """Episodes each env must finish, ``(n_envs,)`` int, summing to ``n_episodes``.

    The split is as even as possible (as in SB3's ``evaluate_policy``).
    """
    if n_episodes < 1 or n_envs < 1:
        raise ValueError(f"Need n_episodes >= 1 and n_envs >= 1, got {n_episodes}, {n_envs}.")
    return np.array([(n_episodes + i) // n_envs for i in range(n_envs)], dtype=np.int64)


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
    quotas = episode_quotas(n_episodes, n_envs)
    venv = make_procgen_vec_env(
        env_name, n_envs, distribution_mode=distribution_mode, levels=levels, seed=seed
    )
    counts = np.zeros(n_envs, dtype=np.int64)
    returns: list[float] = []
    lengths: list[int] = []
    level_seeds: list[int] = []
    env_ids: list[int] = []
    try:
        obs = venv.reset()
        state: tuple[np.ndarray, ...] | None = None
        episode_start = np.ones(n_envs, dtype=bool)
        desc = f"{env_name} levels {levels.start_level}+{levels.num_levels}"
        with tqdm(total=n_episodes, desc=desc, unit="ep", disable=not progress_bar) as bar:
            while (counts < quotas).any():
                actions, state = policy.predict(
                    obs, state=state, episode_start=episode_start, deterministic=deterministic
                )
                obs, _, dones, infos = venv.step(np.asarray(actions))
                episode_start = dones
                for i in np.flatnonzero(dones):
                    if counts[i] >= quotas[i]:
                        continue
                    episode = infos[i]["episode"]
                    returns.append(float(episode["r"]))
                    lengths.append(int(episode["l"]))
                    level_seeds.append(int(infos[i].get("prev_level_seed", -1)))
                    env_ids.append(int(i))
                    counts[i] += 1
                    bar.update(1)
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
        returns=np.asarray(returns, dtype=np.float64),
        lengths=np.asarray(lengths, dtype=np.int64),
        level_seeds=np.asarray(level_seeds, dtype=np.int64),
        env_ids=np.asarray(env_ids, dtype=np.int64),
        config=config,
    )


def summarize(result: RolloutResult, seed: int = 0) -> dict[str, float]:
    """Mean return with its bootstrap 95% CI, std, and mean length."""
    low, high = bootstrap_mean_ci(result.returns, seed=seed)
    return {
        "n_episodes": int(result.returns.size),
        "mean_return": float(result.returns.mean()),
        "ci95_low": low,
        "ci95_high": high,
        "std_return": float(result.returns.std()),
        "mean_length": float(result.lengths.mean()),
    }


@dataclass
class Args:
    model: str = ""
    """SB3 PPO/A2C/DQN .zip; empty: a uniformly random policy"""
    env: str = "coinrun"
    """Procgen game"""
    split: Literal["train", "unseen"] = "unseen"
    """levels: the training levels or the unseen ones (envs.procgen)"""
    n_episodes: int = 100
    """episodes in all, split evenly over the envs"""
    n_envs: int = 16
    """parallel envs"""
    seed: int = 0
    """seed of the level sequence, the action sampling and the bootstrap"""
    deterministic: bool = False
    """argmax actions instead of sampling"""
    out: str = ""
    """write the per-episode results as JSON here"""
    threads: int = 1
    """torch.set_num_threads"""


def main(argv: list[str] | None = None) -> None:
    args = cli.parse_args(Args, "Roll out an SB3 policy on a Procgen game.", argv)

    import torch
    from stable_baselines3.common.utils import set_random_seed

    from adr_rl_app.eval.loading import ON_PROCGEN, load_model

    torch.set_num_threads(args.threads)
    set_random_seed(args.seed)
    policy: PredictPolicy = (
        load_model(args.model, ON_PROCGEN, purpose="rollouts support")
        if args.model
        else RandomPolicy(seed=args.seed)
    )
    result = rollout(
        policy,
        args.env,
        args.n_episodes,
        levels=level_split(args.split),
        n_envs=args.n_envs,
        seed=args.seed,
        deterministic=args.deterministic,
    )
    stats = summarize(result, seed=args.seed)
    print(
        f"{args.env} {args.split}: mean return {stats['mean_return']:.2f} "
        f"[{stats['ci95_low']:.2f}, {stats['ci95_high']:.2f}] over {stats['n_episodes']} "
        f"episodes, mean length {stats['mean_length']:.0f}"
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"summary": stats, **result.to_dict()}, f)


if __name__ == "__main__":
    main()
