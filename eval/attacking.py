"""Observation attacks on any SB3 Procgen policy, shared by ``adr-rl attack`` and the demo.

Loads a user's PPO, A2C or DQN zip trained on a Procgen game (or the project's own,
``agents/zoo/ppo_<game>.zip``), checks its spaces against Procgen's (64x64 RGB frames,
15 actions), and plays episodes on levels unseen in training (``envs.procgen``'s
``UNSEEN_LEVELS``) with the agent seeing clean observations and then observations
attacked by each method at each eps (pixel levels, 0..255). PGD and ADR use the same
objective (untargeted: cross-entropy against the clean greedy action; ``--targeted``:
the clean policy's least likely action), step size and steps (``adr_rl.attack``).
Episodes are split evenly over the seeds; each seed fixes the level sequence, the
agent's action sampling and the attack's randomness.

Writes ``results.json``, ``returns.png`` and ``summary.md`` to the run folder.

    adr-rl attack agents/zoo/ppo_coinrun.zip --game coinrun --eps 2 8 --method pgd adr
    python -m adr_rl_app.eval.attack_model agents/zoo/ppo_coinrun.zip --game coinrun
"""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro

from adr_rl_app.eval import runs
from adr_rl_app.eval.errors import UserError
from adr_rl_app.eval.procgen_attacks import ATTACK_NAMES, AUTOCAST
from adr_rl_app.eval.stats import warn_if_few_episodes

# torch, SB3, Procgen and matplotlib load inside the functions that need them, after the
# flags have been checked, so a mistake is reported in well under a second.


@dataclass
class Args:
    model: tyro.conf.Positional[str]
    """SB3 model .zip: PPO, A2C or DQN trained on a Procgen game"""
    game: Annotated[str, tyro.conf.arg(help_behavior_hint="(required)")] = ""
    """Procgen game the policy plays, e.g. coinrun or fruitbot"""
    method: list[str] = field(default_factory=lambda: ["pgd", "adr"])
    """attacks, each compared with the clean policy: random, fgsm, pgd, adr, adr_sync, apgd-ce,
    apgd-dlr, value (PPO/A2C), ensemble"""
    ensemble: list[str] = field(default_factory=lambda: ["pgd", "apgd-ce", "adr_sync"])
    """members of the 'ensemble' attack, in order"""
    eps: list[float] = field(default_factory=lambda: [2.0])
    """L-inf radii in pixel levels (0..255)"""
    steps: int = 10
    """attack iterations (FGSM takes one)"""
    targeted: bool = False
    """push the policy toward its least likely clean action instead of away from its choice"""
    episodes: int = 20
    """episodes per setting, split evenly over the seeds"""
    seeds: list[int] = field(default_factory=lambda: [0])
    """seeds of the level sequences, the action sampling and the attacks"""
    n_envs: int = 8
    """parallel envs per rollout"""
    max_episode_steps: int = 0
    """cap on an episode's length (0: the game's own limit)"""
    autocast: str = "none"
    """bf16: the attacks' search in bf16 autocast (faster on a CPU with native bf16 or a GPU;
    returned observations, actions and objectives stay float32), none: float32"""
    device: str = "auto"
    """torch device: auto (CUDA when present), cpu or cuda"""
    threads: int = 0
    """torch threads on CPU (0: the optimizer runs small problems on 1 thread and leaves
    torch's setting otherwise)"""
    out: str = ""
    """output folder (default: a new runs/attack-<time>/)"""


def check_args(args: Args) -> None:
    """Everything that can be wrong with the request, before any episode is played."""
    from adr_rl_app.envs.games import PROCGEN_GAMES

    if not args.game:
        raise UserError("--game is required: the Procgen game the policy plays (e.g. coinrun)")
    if args.game not in PROCGEN_GAMES:
        raise UserError(
            f"--game {args.game!r} is not a Procgen game; choose from {', '.join(PROCGEN_GAMES)}"
        )
    for method in [*args.method, *args.ensemble]:
        if method != "none" and method not in ATTACK_NAMES:
            raise UserError(
                f"--method {method!r} is unknown; choose from {', '.join(ATTACK_NAMES)}"
            )
    if not args.ensemble or {"ensemble", "none"} & set(args.ensemble):
        raise UserError("--ensemble takes attack names other than 'ensemble' and 'none'")
    if args.targeted and "value" in args.method:
        raise UserError("--method value has no target: drop it or --targeted")
    for eps in args.eps:
        if not np.isfinite(eps) or eps < 0:
            raise UserError(f"--eps must be >= 0 (pixel levels), got {eps:g}")
    if args.autocast not in AUTOCAST:
        raise UserError(f"--autocast takes {' or '.join(AUTOCAST)}, got {args.autocast!r}")
    if args.steps < 1 or args.episodes < 1 or args.n_envs < 1 or not args.seeds:
        raise UserError("--steps, --episodes and --n-envs must be >= 1 and --seeds non-empty")


def check_procgen_spaces(model: Any, path: str) -> None:
    """Procgen frames (64x64 RGB uint8, channels first or last) and its 15 actions."""
    from gymnasium import spaces

    from adr_rl_app.envs.games import N_ACTIONS, OBS_SHAPE

    obs, act = model.observation_space, model.action_space
    frame = isinstance(obs, spaces.Box) and obs.dtype == np.uint8
    if not frame or tuple(obs.shape) not in (OBS_SHAPE, OBS_SHAPE[::-1]):
        raise UserError(
            f"{path}: the model's observation space {obs} does not match Procgen's "
            f"Box(0, 255, {OBS_SHAPE}, uint8)"
        )
    if not isinstance(act, spaces.Discrete) or int(act.n) != N_ACTIONS:
        raise UserError(
            f"{path}: the model's action space {act} does not match Procgen's Discrete({N_ACTIONS})"
        )


def load_checked(args: Args, device: str) -> Any:
    from adr_rl_app.eval.loading import ON_PROCGEN, load_model

    model = load_model(args.model, ON_PROCGEN, device)
    check_procgen_spaces(model, args.model)
    return model


def prepare(args: Args) -> tuple[str, Any]:
    """Check the request, pick the device and threads, load the model: ``(device, model)``."""
    check_args(args)
    from adr_rl_app.eval.loading import resolve_device_and_threads

    device = resolve_device_and_threads(args.device, args.threads)
    model = load_checked(args, device)
    warn_if_few_episodes(max(1, args.episodes // len(args.seeds)) * len(args.seeds))
    return device, model


def settings(args: Args) -> list[tuple[str, float, int]]:
    """(method, eps, steps), the clean policy first."""
    out = [("none", 0.0, 0)]
    for eps in dict.fromkeys(args.eps):
        for method in dict.fromkeys(m for m in args.method if m != "none"):
            out.append((method, float(eps), 1 if method == "fgsm" else args.steps))
    return out


def play_setting(model: Any, method: str, eps: float, steps: int, args: Args) -> dict[str, Any]:
    """All seeds' episodes of one setting, aggregated (``eval.attack_procgen``'s rollout)."""
    from adr_rl_app.eval.procgen_attacks import aggregate, make_attack, play

    per_seed = max(1, args.episodes // len(args.seeds))
    runs_ = []
    for seed in args.seeds:
        attack = None
        if method != "none":
            try:
                attack = make_attack(
                    model,
                    method,
                    eps,
                    steps,
                    args.targeted,
                    seed,
                    members=args.ensemble,
                    autocast=args.autocast,
                )
            except ValueError as err:  # e.g. the value attack on a DQN
                raise UserError(f"--method {method}: {err}") from err
        desc = f"{method} eps={eps:g} seed={seed}"
        runs_.append(
            play(
                model, attack, args.game, per_seed, seed, args.n_envs, args.max_episode_steps, desc
            )
        )
    row = {"method": method, "eps": eps, "steps": steps, **aggregate(runs_), "runs": runs_}
    if row["wins"] is not None:  # member index -> name
        row["wins"] = {m: row["wins"].get(str(j), 0) for j, m in enumerate(args.ensemble)}
    return row


def evaluate(args: Args) -> dict[str, Any]:
    """Clean and attacked returns on the same levels; no files written."""
    device, model = prepare(args)
    import torch

    from adr_rl.machine import machine_info

    rows = []
    for method, eps, steps in settings(args):
        row = play_setting(model, method, eps, steps, args)
        rows.append(row)
        flip = f" flip rate {row['flip_rate']:.3f}" if row["flip_rate"] is not None else ""
        print(
            f"{method:>8} eps={eps:<4g}: return {row['mean_return']:7.2f} "
            f"[{row['ci95_low']:.2f}, {row['ci95_high']:.2f}]{flip}"
        )
    return {
        "config": dataclasses.asdict(args) | {"device": device},
        "algorithm": type(model).__name__.lower(),
        "game": args.game,
        "mode": "targeted" if args.targeted else "untargeted",
        "platform": f"{platform.machine()}, torch {torch.__version__}, {device}",
        "machine": machine_info(),
        "rows": rows,
    }


def table(results: dict[str, Any]) -> str:
    """Markdown: one row per setting, the clean policy first."""
    success = "target hit rate" if results["mode"] == "targeted" else "flip rate"
    lines = [
        f"{results['mode'].capitalize()} attacks on "
        f"{results['algorithm'].upper()} {results['game']} "
        f"({results['rows'][0]['n_episodes']} episodes per setting, unseen levels)",
        "",
        f"| method | eps | steps | return [95% CI] | {success} | attack ms/obs |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        rate = row["success_rate"] if results["mode"] == "targeted" else row["flip_rate"]
        ms = row["attack_ms_per_obs"]
        lines.append(
            f"| {row['method']} | {row['eps']:g} | {row['steps']} | {row['mean_return']:.2f} "
            f"[{row['ci95_low']:.2f}, {row['ci95_high']:.2f}] | "
            f"{'-' if rate is None else f'{rate:.3f}'} | {'-' if ms is None else f'{ms:.1f}'} |"
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Return vs eps per method with 95% CIs; the grey band is the clean policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from adr_rl_app.eval.procgen_attacks import draw_returns_vs_eps

    rows = [r | {"mode": results["mode"]} for r in results["rows"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    title = f"{results['algorithm'].upper()} {results['game']}, unseen levels, attacked"
    draw_returns_vs_eps(ax, rows, title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: Args) -> dict[str, Any]:
    """``adr-rl attack``: evaluate, then write the run folder and print the table."""
    results = evaluate(args)
    runs.write_run(args.out, "attack", results, table(results), {"returns.png": plot})
    return results


def sweep_job(params: dict[str, Any]) -> dict[str, Any]:
    """One cell of ``adr-rl sweep``: one method at one eps and seed.

    ``params``: model, game, method, eps, steps, targeted, episodes, seed, device
    (optional: n_envs, max_episode_steps). ``metric`` is the mean return.
    """
    params = dict(params)
    method, seed, eps = params.pop("method"), int(params.pop("seed")), float(params.pop("eps"))
    args = Args(method=[method], eps=[eps], seeds=[seed], threads=1, **params)
    _, model = prepare(args)
    if method == "none":
        row = play_setting(model, "none", 0.0, 0, args)
    else:
        row = play_setting(model, method, eps, 1 if method == "fgsm" else args.steps, args)
    return {"metric": row["mean_return"], **row}
