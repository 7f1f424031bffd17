"""Procgen learning curves: SB3's training logs, OpenAI's reference runs, and the plot.

Every Procgen training artefact (model cards, the tracked training folders, the
training-run comparison of issue 13) draws its curve here, over OpenAI's own PPO runs
with the IMPALA CNN (Cobbe et al. 2020), so that "are we on track" is read the same way
everywhere.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: How titles and legends spell a Procgen game.
GAME_TITLES = {"coinrun": "CoinRun", "fruitbot": "FruitBot"}


def read_progress(run_dirs: list[str]) -> tuple[list[int], list[float], float]:
    """Learning curve from SB3 ``progress.csv`` files of consecutive (resumed) runs.

    :return: env steps, mean training return of the last 100 episodes at those
        steps, and the summed wall time of the runs in seconds.
    """
    points: dict[int, float] = {}
    wall = 0.0
    for run in run_dirs:
        path = Path(run) / "progress.csv"
        if not path.exists():
            continue
        elapsed = 0.0
        with path.open() as f:
            for row in csv.DictReader(f):
                if row.get("rollout/ep_rew_mean"):
                    points[int(row["time/total_timesteps"])] = float(row["rollout/ep_rew_mean"])
                if row.get("time/time_elapsed"):
                    elapsed = max(elapsed, float(row["time/time_elapsed"]))
        wall += elapsed
    steps = sorted(points)
    return steps, [points[s] for s in steps], wall


#: OpenAI's per-run PPO learning curves (IMPALA CNN, easy, 200 training levels; Cobbe et
#: al. 2020, from openai/train-procgen's published progress logs): game, split, run,
#: timesteps, eprewmean (mean return of the last 100 episodes).
OPENAI_CURVES = (
    Path(__file__).resolve().parent / "reference" / "openai_procgen_ppo_impala_easy200.csv"
)


def openai_curves(game: str, path: Path = OPENAI_CURVES) -> dict[str, dict[str, np.ndarray]]:
    """``{split: {"steps": (T,), "runs": (R, T)}}`` of OpenAI's runs on ``game``."""
    runs: dict[str, dict[str, dict[int, float]]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            if row["game"] != game:
                continue
            curve = runs.setdefault(row["split"], {}).setdefault(row["run"], {})
            curve[int(row["timesteps"])] = float(row["eprewmean"])
    out = {}
    for split, by_run in runs.items():
        steps = sorted(set.intersection(*(set(c) for c in by_run.values())))
        out[split] = {
            "steps": np.array(steps),
            "runs": np.array([[c[t] for t in steps] for c in by_run.values()]),
        }
    return out


def reference_at_marks(game: str, marks: list[int]) -> dict[str, Any]:
    """OpenAI's runs per split at the marks: mean, min and max over their runs, each run
    interpolated linearly between its log points (every 262,144 steps)."""
    table: dict[str, Any] = {}
    for split, ref in openai_curves(game).items():
        steps = ref["steps"]
        cells: list[dict[str, float] | None] = []
        for mark in marks:
            if not steps.size or not steps.min() <= mark <= steps.max():
                cells.append(None)
                continue
            vals = [float(np.interp(mark, steps, run)) for run in ref["runs"]]
            cells.append({"mean": float(np.mean(vals)), "min": min(vals), "max": max(vals)})
        table[split] = cells
    return table


def plot_learning_curve(
    steps: list[int],
    returns: list[float],
    title: str,
    path: Path,
    references: dict[str, float],
    game: str | None = None,
    test_points: list[tuple[int, float, float, float]] | None = None,
    extra_curves: dict[str, tuple[list[int], list[float]]] | None = None,
    label: str = "ours, training levels (mean of last 100 episodes)",
    x_max: float | None = None,
) -> None:
    """Mean training return vs env steps over OpenAI's train and test curves (mean and
    min-max of their runs, when ``game`` has them), with our unseen-level evaluations
    ``(steps, mean, ci_low, ci_high)`` as points and horizontal reference lines. OpenAI's
    curves are drawn up to ``x_max`` (default: 3M steps or 15 % past ours)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    xmax = max(steps) if steps else 1
    ref_end = x_max if x_max is not None else max(xmax * 1.15, 3e6)
    if game is not None and OPENAI_CURVES.exists():
        curves = openai_curves(game)
        for split, color in (("train", "tab:green"), ("test", "tab:red")):
            ref = curves.get(split)
            if ref is None:
                continue
            keep = ref["steps"] <= ref_end
            x, r = ref["steps"][keep], ref["runs"][:, keep]
            ax.fill_between(x, r.min(0), r.max(0), color=color, alpha=0.15, linewidth=0)
            ax.plot(
                x,
                r.mean(0),
                color=color,
                linewidth=1,
                linestyle="--",
                label=f"OpenAI PPO IMPALA, {split} levels ({len(r)} runs, mean and range)",
            )
    ax.plot(steps, returns, color="tab:blue", label=label)
    colors = ("tab:orange", "black", "tab:brown", "tab:pink", "tab:gray")
    for i, (name, (x, y)) in enumerate((extra_curves or {}).items()):
        ax.plot(x, y, linewidth=1, label=name, color=colors[i % len(colors)])
    if test_points:
        xs = [p[0] for p in test_points]
        ys = [p[1] for p in test_points]
        err = [[p[1] - p[2] for p in test_points], [p[3] - p[1] for p in test_points]]
        ax.errorbar(
            xs,
            ys,
            yerr=err,
            fmt="o",
            color="tab:purple",
            capsize=3,
            label="ours, unseen levels (95% CI)",
        )
    for name, value in references.items():
        ax.axhline(value, linestyle=":", linewidth=1, color="gray")
        ax.annotate(name, (0, value), fontsize=7, color="gray", va="bottom")
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
