"""The main job, `adr-rl demo`: ADR on the agents this project ships, in a few minutes.

Two parts, each on built-in defaults:

- Action refinement: the shipped TD3 Pendulum-v1 agent plays the same episodes with its
  actor's own action and with the action ADR finds by maximizing the critic within
  --radius of it (adr_rl_app.eval.refinement).
- Observation attacks: the shipped CoinRun PPO policy (IMPALA CNN) plays levels unseen in training
  with clean observations, and with observations attacked by PGD and by ADR within
  --eps pixel levels, same objective, step size and steps (adr_rl_app.eval.attacking).

Writes results.json (both parts' config, seeds, raw returns and aggregates), refine.png
(the return beside the critic's Q gain per step, with their spread), attack.png (the
return beside the flip rate of each method, linear axes) and summary.md to
runs/demo-<time>/, and prints the two tables. Uses CUDA when present.

    adr-rl demo              # 6 minutes on 2 CPU cores beside the test suite
    adr-rl demo --quick      # a few short episodes (smoke test)
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from adr_rl_app.eval import attacking, cli, refinement, runs  # noqa: E402
from adr_rl_app.eval.loading import resolve_device_and_threads, zoo_path  # noqa: E402

#: One colour and marker per method, the same in both plots.
STYLE = {
    "none": ("#7f7f7f", "o"),
    "pgd": ("#1f77b4", "s"),
    "adr": ("#d62728", "D"),
    "adr_sync": ("#ff7f0e", "^"),
}


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
    threads: int = 1
    """torch threads on CPU (0: torch's default). One by default: the demo's batches are
    small, and with a second thread it took 3.9x as long beside another CPU-bound process
    (352 s vs 91 s idle, 2 cores), with one thread 134 s vs 139 s"""
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


def refine_args(args: Args, device: str) -> refinement.Args:
    env_id = args.agent.partition("_")[2]
    return refinement.Args(
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


def attack_args(args: Args, device: str) -> attacking.Args:
    return attacking.Args(
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
    overlap = not (adr["ci95_low"] > none["ci95_high"] or adr["ci95_high"] < none["ci95_low"])
    clean, *attacks = attacked["rows"]
    under = ", ".join(
        f"under {r['method'].upper()} {r['mean_return']:.2f} [{r['ci95_low']:.2f}, "
        f"{r['ci95_high']:.2f}] ({r['flip_rate']:.0%} of greedy actions flipped)"
        for r in attacks
    )
    return (
        f"Refinement: ADR raised the critic's Q by {adr['q_gain_per_step']:.4f} per step and "
        f"changed the return by {adr['mean_return'] - none['mean_return']:+.2f} "
        f"({'within' if overlap else 'outside'} the episodes' 95% CIs).\n"
        f"Attack: clean return {clean['mean_return']:.2f} [{clean['ci95_low']:.2f}, "
        f"{clean['ci95_high']:.2f}]; {under}."
    )


def wilson_ci(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95% interval of a rate (observations taken as independent)."""
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _style(method: str) -> tuple[str, str]:
    return STYLE.get(method, ("#2ca02c", "v"))


def plot_refine(refined: dict[str, Any], path: Path) -> None:
    """Left: return per method (95% CI over episodes, episodes as dots). Right: the
    critic's Q gain per step over the actor's action (per-episode means as dots, their
    mean with a bootstrap 95% CI over episodes): the metric that differs."""
    rows = refined["rows"]
    fig, (ax_r, ax_q) = plt.subplots(1, 2, figsize=(8.5, 3.6))
    rng = np.random.default_rng(0)
    for i, row in enumerate(rows):
        color, marker = _style(row["method"])
        for ax, values, (lo, hi), mean, fmt in (
            (ax_r, row["returns"], [row["ci95_low"], row["ci95_high"]], row["mean_return"], ".2f"),
            (
                ax_q,
                row["q_gain_per_episode"],
                row["q_gain_ci95"],
                row["q_gain_per_step"],
                ".4f",
            ),
        ):
            values = np.asarray(values, dtype=np.float64)
            jitter = rng.uniform(-0.18, 0.18, values.size)
            ax.scatter(i + jitter, values, s=10, color=color, alpha=0.3)
            ax.errorbar(
                i,
                mean,
                yerr=[[max(mean - lo, 0.0)], [max(hi - mean, 0.0)]],
                fmt=marker,
                color=color,
                capsize=5,
                markersize=8,
                label=f"{row['method']}: {mean:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]",
            )
    names = [r["method"] for r in rows]
    for ax in (ax_r, ax_q):
        ax.set_xticks(range(len(rows)), names)
        ax.set_xlim(-0.6, len(rows) - 0.4)
        ax.legend(fontsize=7, loc="best")
    ax_r.axhline(rows[0]["mean_return"], color="grey", linestyle="--", linewidth=1)
    ax_r.set_ylabel("episode return (mean, 95% CI; dots: episodes)")
    ax_q.axhline(0.0, color="grey", linestyle="--", linewidth=1)
    ax_q.set_ylabel("Q gain per step (refined - actor's)")
    ax_q.set_title("critic's Q gain (dots: episodes; bar: 95% CI)", fontsize=9)
    ax_r.set_title(
        f"{refined['algorithm'].upper()} {refined['env']}, radius "
        f"{refined['config']['radius']:g}, {rows[0]['n_episodes']} episodes",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_attack(attacked: dict[str, Any], path: Path) -> None:
    """Return (95% CI over episodes) and flip rate (Wilson 95% CI over attacked
    observations) per method, side by side on linear axes."""
    rows = attacked["rows"]
    fig, (ax_r, ax_f) = plt.subplots(1, 2, figsize=(8.5, 3.6))
    labels = []
    for i, row in enumerate(rows):
        color, marker = _style(row["method"])
        label = row["method"] if row["method"] == "none" else f"{row['method']} eps {row['eps']:g}"
        labels.append(label)
        mean, lo, hi = row["mean_return"], row["ci95_low"], row["ci95_high"]
        ax_r.bar(i, mean, width=0.6, color=color, alpha=0.35, edgecolor=color)
        ax_r.errorbar(
            i,
            mean,
            yerr=[[mean - lo], [hi - mean]],
            fmt=marker,
            color=color,
            capsize=5,
            markersize=7,
            label=f"{label}: {mean:.2f} [{lo:.2f}, {hi:.2f}]",
        )
        rate, n = row.get("flip_rate"), int(row.get("attacked_obs") or 0)
        if rate is None or n == 0:
            ax_f.text(i, 0.3, "n/a\n(clean)", ha="center", va="bottom", fontsize=8, color=color)
            continue
        flo, fhi = wilson_ci(rate * n, n)
        ax_f.bar(i, rate, width=0.6, color=color, alpha=0.35, edgecolor=color)
        ax_f.errorbar(
            i,
            rate,
            yerr=[[rate - flo], [fhi - rate]],
            fmt=marker,
            color=color,
            capsize=5,
            markersize=7,
            label=f"{label}: {rate:.3f} ({n} obs)",
        )
    for ax in (ax_r, ax_f):
        ax.set_xticks(range(len(rows)), labels)
        ax.set_xlim(-0.6, len(rows) - 0.4)
    ax_r.legend(fontsize=7, loc="lower left")
    ax_f.legend(fontsize=7, loc="upper left")
    ax_r.set_ylabel("episode return (mean, 95% CI)")
    ax_f.set_ylabel("flip rate (greedy action changed)")
    ax_f.set_ylim(0, 1.2)
    ax_r.set_title(
        f"{attacked['algorithm'].upper()} {attacked['game']}, unseen levels, "
        f"{rows[0]['n_episodes']} episodes per setting",
        fontsize=9,
    )
    ax_f.set_title("flip rate (Wilson 95% CI over observations)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: Args) -> dict[str, Any]:
    device = resolve_device_and_threads(args.device, args.threads)
    start = time.perf_counter()
    print(f"[1/2] action refinement: {args.agent}, none vs ADR (radius {args.radius:g})")
    refined = refinement.evaluate(refine_args(args, device))
    print(f"[2/2] observation attacks: ppo_{args.game}, clean vs PGD vs ADR (eps {args.eps:g})")
    attacked = attacking.evaluate(attack_args(args, device))
    results = {
        "config": asdict(args) | {"device": device},
        "platform": f"{platform.machine()}, torch {torch.__version__}, {device}",
        "seconds": time.perf_counter() - start,
        "refine": refined,
        "attack": attacked,
    }
    out = runs.output_dir(args.out, "demo")
    runs.write_results(out / "results.json", results)
    plot_refine(refined, out / "refine.png")
    plot_attack(attacked, out / "attack.png")
    summary = "\n\n".join(
        [
            refinement.table(refined),
            attacking.table(attacked),
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
