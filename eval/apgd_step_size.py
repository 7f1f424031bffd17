"""Is APGD's initial step size why APGD-CE trails PGD at 10 steps on CoinRun?

Croce & Hein's APGD starts with a step of ``2 * eps`` and halves it at checkpoints, a
schedule tuned for 100 iterations. At 10 iterations the IMPALA CoinRun policy's flip
table has APGD-CE below PGD (step ``0.25 * eps``) at eps 1 and 2 (docs/attacks.md). This
runs both methods at several step sizes on the flip phase's fixed observations (512 per
game, every 4th frame of the clean policy on unseen levels, seed 0; untargeted
cross-entropy; float32) and compares each with PGD at its default step, per
observation: the flip-rate difference with a bootstrap 95% CI over observations and how
many observations only one of the two flips. Both attacks start at the clean
observation, so one attack seed decides everything.

    python -m adr_rl_app.eval.apgd_step_size --games coinrun fruitbot \
        --out results/attack_procgen_impala/apgd_step_size

Writes ``results.json`` (per variant the flips per observation, time per observation),
``summary.md`` and ``flip_vs_step.png`` (flip rate against the initial step, in units of
eps, per method and eps).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from adr_rl_app.eval import cli  # noqa: E402
from adr_rl_app.eval.runs import finish, write_results  # noqa: E402
from adr_rl_app.eval.stats import bootstrap_mean_ci, paired_difference  # noqa: E402


@dataclass
class Args:
    games: list[str] = field(default_factory=lambda: ["coinrun"])
    """Procgen games; the policy is agents/zoo/ppo_<game>.zip"""
    eps: list[float] = field(default_factory=lambda: [1.0, 2.0])
    """L-inf radii in pixel levels"""
    steps: int = 10
    """iterations of every attack"""
    pgd_steps: list[float] = field(default_factory=lambda: [0.25, 2.0])
    """PGD's step sizes in units of eps (0.25 = 2.5 * eps / 10, PGD's default at 10 steps)"""
    apgd_steps: list[float] = field(default_factory=lambda: [2.0, 1.0, 0.5, 0.25])
    """APGD-CE's initial step sizes in units of eps (2.0 is Croce & Hein's default)"""
    n_obs: int = 512
    """observations per game"""
    batch: int = 128
    """observations per attack call"""
    threads: int = 1
    """torch.set_num_threads"""
    out: str = "runs/apgd_step_size"
    """output folder"""
    quick: bool = False
    """smoke run: 16 observations, one eps, 3 steps"""


def parse_args(argv: list[str] | None = None) -> Args:
    args = cli.parse_args(Args, __doc__, argv)
    if args.quick:
        args.n_obs, args.batch, args.eps, args.steps = 16, 16, [2.0], 3
        if args.out == Args.out:
            args.out = "runs/apgd_step_size_quick"
    if not args.pgd_steps or 0.25 not in args.pgd_steps:
        raise SystemExit("--pgd-steps must include 0.25, the reference PGD (its default step)")
    return args


def flips(model: Any, obs: np.ndarray, method: str, eps: float, step: float, args: Args):
    """Which observations the attack flips, and its milliseconds per observation."""
    from adr_rl.attack import ObservationAttack

    attack = ObservationAttack(
        model, eps=eps, steps=args.steps, method=method, step_size=step * eps, seed=0
    )
    start = time.perf_counter()
    out = [attack.perturb(obs[i : i + args.batch]).flipped for i in range(0, len(obs), args.batch)]
    return np.concatenate(out), 1000 * (time.perf_counter() - start) / len(obs)


def run_game(args: Args, game: str) -> list[dict[str, Any]]:
    from adr_rl_app.envs.procgen import UNSEEN_LEVELS
    from adr_rl_app.eval.procgen_attacks import collect_observations, shipped_policy

    model = shipped_policy(game)
    obs = collect_observations(model, game, args.n_obs, UNSEEN_LEVELS, seed=0)
    variants = [("pgd", s) for s in args.pgd_steps] + [("apgd", s) for s in args.apgd_steps]
    rows = []
    for eps in args.eps:
        for method, step in tqdm(variants, desc=f"{game} eps={eps:g}"):
            flipped, ms = flips(model, obs, method, eps, step, args)
            low, high = bootstrap_mean_ci(flipped.astype(np.float64))
            rows.append(
                {
                    "game": game,
                    "eps": eps,
                    "method": method,
                    "step_over_eps": step,
                    "flip_rate": float(flipped.mean()),
                    "flip_ci95": [low, high],
                    "ms_per_obs": ms,
                    "flipped": flipped.astype(int).tolist(),
                }
            )
        reference = next(
            r
            for r in rows
            if r["eps"] == eps and r["method"] == "pgd" and r["step_over_eps"] == 0.25
        )
        for r in rows:
            if r["eps"] == eps:
                r["vs_pgd"] = paired_difference(reference["flipped"], r["flipped"])
    return rows


def summary(rows: list[dict[str, Any]], steps: int) -> str:
    lines = [
        f"{steps} steps; method - PGD (step 0.25 eps) per observation, bootstrap 95% CI",
        "",
        "| game | eps | method | initial step / eps | flip rate | - PGD [95% CI] "
        "| only it / only PGD | ms/obs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r["vs_pgd"]
        lines.append(
            f"| {r['game']} | {r['eps']:g} | {r['method']} | {r['step_over_eps']:g} | "
            f"{r['flip_rate']:.3f} | {d['diff']:+.3f} [{d['diff_ci95'][0]:+.3f}, "
            f"{d['diff_ci95'][1]:+.3f}] | {d['only_b']} / {d['only_a']} | {r['ms_per_obs']:.1f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Per game and eps: each variant's flip rate minus PGD's (default step) on the same
    observations, with the paired 95% CI; the marginal CIs would hide the difference."""
    panels = sorted({(r["game"], r["eps"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (game, eps) in zip(axes[0], panels, strict=True):
        for method, colour in (("pgd", "#1f77b4"), ("apgd", "#2ca02c")):
            sel = sorted(
                (r for r in rows if (r["game"], r["eps"], r["method"]) == (game, eps, method)),
                key=lambda r: r["step_over_eps"],
            )
            x = [r["step_over_eps"] for r in sel]
            y = np.array([r["vs_pgd"]["diff"] for r in sel])
            ci = np.array([r["vs_pgd"]["diff_ci95"] for r in sel])
            err = np.stack([y - ci[:, 0], ci[:, 1] - y])
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=colour, label=method.upper())
        ax.axhline(0.0, color="#7f7f7f", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("step size / eps (APGD: its initial step)")
        ax.set_ylabel("flip rate - PGD's at 0.25 eps")
        ax.set_title(f"{game}, eps {eps:g} (paired 95% CI)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for game in args.games for r in run_game(args, game)]
    write_results(out / "results.json", {"config": vars(args), "rows": rows})
    plot(rows, out / "flip_vs_step.png")
    finish(out, summary(rows, args.steps))


if __name__ == "__main__":
    main()
