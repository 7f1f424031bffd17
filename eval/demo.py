"""The main job, ``adr-rl demo``: ADR on the agents this project ships, in a few minutes.

Two parts, each on built-in defaults:

- Action refinement: the shipped TD3 Pendulum-v1 agent plays the same episodes with its
  actor's own action and with the action ADR finds by maximizing the critic within
  ``--radius`` of it (``eval.refine_model``).
- Observation attacks: the shipped CoinRun PPO policy plays levels unseen in training
  with clean observations, and with observations attacked by PGD and by ADR within
  ``--eps`` pixel levels, same objective, step size and steps (``eval.attack_model``).

Writes ``results.json`` (both parts' config, seeds, raw returns and aggregates),
``refine.png``, ``attack.png`` and ``summary.md`` to ``runs/demo-<time>/``, and prints
the two tables. Uses CUDA when present.

    adr-rl demo              # about 3 minutes on 2 CPU cores
    adr-rl demo --quick      # a few short episodes (smoke test)
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from eval import attack_model, cli, refine_model, runs
from eval.loading import resolve_device, zoo_path


@dataclass
class Args:
    agent: str = "td3_Pendulum-v1"
    """shipped off-policy agent, agents/zoo/<agent>.zip (<algo>_<env id>)"""
    radius: float = 0.25
    """refinement trust region, half-width in the scaled action space [-1, 1]"""
    refine_steps: int = 30
    """ADR steps per refinement"""
    refine_episodes: int = 10
    """episodes with and without refinement (same seeds)"""
    game: str = "coinrun"
    """Procgen game of the shipped PPO policy, agents/zoo/ppo_<game>.zip"""
    eps: float = 8.0
    """attack radius in pixel levels (0..255)"""
    attack_steps: int = 10
    """PGD and ADR iterations"""
    attack_episodes: int = 24
    """episodes per attack setting (clean, PGD, ADR), unseen levels"""
    max_episode_steps: int = 400
    """cap on a CoinRun episode's length (an unfinished episode counts with return 0)"""
    seed: int = 0
    """seed of the episodes and the optimizers"""
    device: str = "auto"
    """torch device: auto (CUDA when present), cpu or cuda"""
    threads: int = 0
    """torch threads on CPU (0: torch's default)"""
    quick: bool = False
    """a few short episodes only (smoke test; numbers mean little)"""
    out: str = ""
    """output folder (default: a new runs/demo-<time>/)"""


def parse_args(argv: list[str] | None = None) -> Args:
    args = cli.parse_args(Args, __doc__, argv)
    if args.quick:
        args.refine_episodes, args.refine_steps = 2, 5
        args.attack_episodes, args.attack_steps, args.max_episode_steps = 2, 2, 40
    return args


def refine_args(args: Args, device: str) -> refine_model.Args:
    env_id = args.agent.partition("_")[2]
    return refine_model.Args(
        model=str(zoo_path(args.agent)),
        env=env_id,
        method=["adr"],
        radius=args.radius,
        steps=args.refine_steps,
        episodes=args.refine_episodes,
        seeds=[args.seed],
        max_episode_steps=40 if args.quick else 0,
        device=device,
    )


def attack_args(args: Args, device: str) -> attack_model.Args:
    return attack_model.Args(
        model=str(zoo_path(f"ppo_{args.game}")),
        game=args.game,
        method=["pgd", "adr"],
        eps=[args.eps],
        steps=args.attack_steps,
        episodes=args.attack_episodes,
        seeds=[args.seed],
        n_envs=min(12, args.attack_episodes),
        max_episode_steps=args.max_episode_steps,
        device=device,
    )


def reading(refined: dict[str, Any], attacked: dict[str, Any]) -> str:
    """Two sentences that say what the numbers show, CIs included."""
    none, adr = refined["rows"][0], refined["rows"][1]
    overlap = not (
        adr["return_ci95"][0] > none["return_ci95"][1]
        or adr["return_ci95"][1] < none["return_ci95"][0]
    )
    clean, *attacks = attacked["rows"]
    under = ", ".join(
        f"under {r['method'].upper()} {r['mean_return']:.2f} [{r['ci95_low']:.2f}, "
        f"{r['ci95_high']:.2f}] ({r['flip_rate']:.0%} of greedy actions flipped)"
        for r in attacks
    )
    return (
        f"Refinement: ADR raised the critic's Q by {adr['q_gain_per_step']:.4f} per step and "
        f"changed the return by {adr['return_mean'] - none['return_mean']:+.2f} "
        f"({'within' if overlap else 'outside'} the episodes' 95% CIs).\n"
        f"Attack: clean return {clean['mean_return']:.2f} [{clean['ci95_low']:.2f}, "
        f"{clean['ci95_high']:.2f}]; {under}."
    )


def run(args: Args) -> dict[str, Any]:
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print(f"[1/2] action refinement: {args.agent}, none vs ADR (radius {args.radius:g})")
    refined = refine_model.evaluate(refine_args(args, device))
    print(f"[2/2] observation attacks: ppo_{args.game}, clean vs PGD vs ADR (eps {args.eps:g})")
    attacked = attack_model.evaluate(attack_args(args, device))
    results = {
        "config": asdict(args) | {"device": device},
        "platform": f"{platform.machine()}, torch {torch.__version__}, {device}",
        "seconds": time.perf_counter() - start,
        "refine": refined,
        "attack": attacked,
    }
    out = runs.output_dir(args.out, "demo")
    runs.write_json(out / "results.json", results)
    refine_model.plot(refined, out / "refine.png")
    attack_model.plot(attacked, out / "attack.png")
    summary = "\n\n".join(
        [
            refine_model.table(refined),
            attack_model.table(attacked),
            reading(refined, attacked),
            f"({results['seconds']:.0f} s on {device})",
        ]
    )
    runs.finish(out, summary)
    return results


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
