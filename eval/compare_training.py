"""Compare Procgen training runs with each other and with OpenAI's reference curves.

Each run is a tracked training folder (``agents/zoo/training/<name>``, exported by
``agents/export_training.py``) whose ``segments/*/progress.csv`` hold SB3's training
log. The script reads each run's mean training return (SB3's ``ep_rew_mean``, the last
100 episodes), draws all runs over OpenAI's train and test curves (3 runs, mean and
range), and tabulates every run and OpenAI's runs at fixed step marks. Issue 13 uses it
to check that bf16 autocast does not change learning (fp32 and bf16 from one seed) and
that the baselines init fixed the slow start.

    python -m adr_rl_app.eval.compare_training --game fruitbot --runs \\
        agents/zoo/training/ppo_fruitbot_impala agents/zoo/training/ppo_fruitbot_impala_fp32 \\
        --labels bf16-cl fp32-cl --out results/fruitbot_numerics

Step marks beyond a run's last log are left empty (``null``), never extrapolated. Each
cell is the mean of the logged returns in the window ``(mark - window, mark]``, so one
noisy 100-episode mean does not decide the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adr_rl_app.eval import cli
from adr_rl_app.eval.errors import UserError
from adr_rl_app.eval.learning_curves import (
    GAME_TITLES,
    openai_curves,
    plot_learning_curve,
    read_progress,
    reference_at_marks,
)
from adr_rl_app.eval.runs import finish, output_dir, write_results


@dataclass
class Args:
    runs: list[str] = field(default_factory=list)
    """tracked training folders, each with segments/*/progress.csv"""
    labels: list[str] = field(default_factory=list)
    """one legend label per run (default: the folder names)"""
    game: str = "fruitbot"
    """the Procgen game, for OpenAI's reference curves"""
    marks: list[int] = field(default_factory=lambda: [250_000, 500_000, 750_000, 1_000_000])
    """env steps at which the table compares the runs"""
    window: int = 98_304
    """each cell averages the logged returns in (mark - window, mark] (6 PPO iterations)"""
    out: str = ""
    """output folder (default: a fresh runs/compare_training-<time>/)"""


def read_run(run: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """A tracked training folder's env steps, training returns and wall time (s)."""
    segments = sorted(p for p in (run / "segments").glob("*") if p.is_dir())
    if not segments:
        raise UserError(f"{run} has no segments/*/progress.csv (export a run into it first)")
    steps, returns, wall = read_progress([str(p) for p in segments])
    return np.asarray(steps), np.asarray(returns), wall


def at_marks(
    steps: np.ndarray, values: np.ndarray, marks: list[int], window: int
) -> list[float | None]:
    """The mean of ``values`` logged in ``(mark - window, mark]`` per mark; ``None`` where
    the log has not reached the mark or has no point in the window."""
    out: list[float | None] = []
    for mark in marks:
        inside = (steps > mark - window) & (steps <= mark)
        reached = steps.size > 0 and steps.max() >= mark
        out.append(float(values[inside].mean()) if reached and inside.any() else None)
    return out


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def summary_table(result: dict[str, Any]) -> str:
    """Markdown: one row per run and per OpenAI split, one column per mark."""
    marks = result["marks"]
    head = "| run | " + " | ".join(f"{m / 1e6:g}M" for m in marks) + " |"
    lines = [head, "|---|" + "---|" * len(marks)]
    curves = openai_curves(result["config"]["game"])
    for run in result["runs"]:
        lines.append(f"| {run['label']} (train) | " + " | ".join(map(_fmt, run["at_marks"])) + " |")
    for split, cells in result["openai"].items():
        row = [
            "" if c is None else f"{c['mean']:.2f} [{c['min']:.2f}, {c['max']:.2f}]" for c in cells
        ]
        n = len(curves[split]["runs"])
        lines.append(f"| OpenAI ({split}; mean [min, max] of {n}) | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = cli.parse_args(Args, __doc__, argv)
    if not args.runs:
        raise UserError("--runs needs at least one tracked training folder")
    labels = args.labels or [Path(r).name for r in args.runs]
    if len(labels) != len(args.runs):
        raise UserError(f"{len(args.runs)} --runs but {len(labels)} --labels; give one per run")
    if not args.marks or args.window <= 0:
        raise UserError("--marks must not be empty and --window must be positive")
    runs = []
    for path, label in zip(args.runs, labels, strict=True):
        steps, returns, wall = read_run(Path(path))
        runs.append(
            {
                "label": label,
                "path": path,
                "num_timesteps": int(steps.max()) if steps.size else 0,
                "wall_time_s": wall,
                "at_marks": at_marks(steps, returns, args.marks, args.window),
                "curve": {"steps": steps.tolist(), "returns": returns.tolist()},
            }
        )
    result = {
        "config": {"game": args.game, "window": args.window},
        "marks": args.marks,
        "runs": runs,
        "openai": reference_at_marks(args.game, args.marks),
    }
    out = output_dir(args.out, "compare_training")
    write_results(out / "results.json", result)
    first, rest = runs[0], runs[1:]
    plot_learning_curve(
        first["curve"]["steps"],
        first["curve"]["returns"],
        f"{GAME_TITLES.get(args.game, args.game)}: training return of {len(runs)} runs "
        "over OpenAI's",
        out / "curves.png",
        {},
        game=args.game,
        extra_curves={r["label"]: (r["curve"]["steps"], r["curve"]["returns"]) for r in rest},
        label=first["label"],
        x_max=max(r["num_timesteps"] for r in runs) * 1.05,
    )
    finish(out, summary_table(result))
    return result


if __name__ == "__main__":
    main()
