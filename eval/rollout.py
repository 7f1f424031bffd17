"""Roll out a policy on a Procgen game for N episodes and return per-episode returns and lengths.

Works with any SB3 model or any object with SB3's ``predict`` signature
(:class:`PredictPolicy`), e.g. an ``AttackedPolicy``; episodes are counted by the
shared loop of ``eval/episodes.py`` (a fixed quota per env, as SB3's
``evaluate_policy``).

Usage (from the repository root)::

    python -m adr_rl_app.eval.rollout --model agents/zoo/ppo_coinrun.zip --env coinrun \\
        --split unseen
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from adr_rl_app.envs.procgen import level_split
from adr_rl_app.eval import cli
from adr_rl_app.eval.procgen_rollouts import evaluate_model
from adr_rl_app.eval.runs import write_results


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

    torch.set_num_threads(args.threads)
    result, stats = evaluate_model(
        args.model,
        args.env,
        args.n_episodes,
        levels=level_split(args.split),
        n_envs=args.n_envs,
        seed=args.seed,
        deterministic=args.deterministic,
    )
    print(
        f"{args.env} {args.split}: mean return {stats['mean_return']:.2f} "
        f"[{stats['ci95_low']:.2f}, {stats['ci95_high']:.2f}] over {stats['n_episodes']} "
        f"episodes, mean length {stats['mean_length']:.0f}"
    )
    if args.out:
        write_results(Path(args.out), {"summary": stats, **result.to_dict()})


if __name__ == "__main__":
    main()
