"""Does refining exploration actions during training speed TD3's learning?

The ADR paper's deep-RL experiment (issue 17): plain TD3 against TD3 whose exploration
actions are, with probability ``--probability`` after ``--warmup`` steps, replaced by the
action an optimizer finds for the target critic's first Q network over the whole action
box (``adr_rl/exploration.py``). Variants: ``plain``, ``adr`` (the paper's refiner),
``gd`` (the simple alternative) and optionally ``adr_sync``, every refiner with the same
critic passes per refinement (``--evaluations``; :func:`adr_rl.network_evaluations`:
300 passes = ADR's T = 100 steps = GD's 150 steps).

Each (task, variant, seed) run is its own folder ``<out>/<task>/<variant>/seed<k>/``
with its checkpoint (model and replay buffer, rewritten after every evaluation), its
learning curve so far (``curve.json``) and ``done.json`` once finished. Rerunning skips
finished runs and resumes unfinished ones from their last evaluation (the refinement's
random stream restarts from its seed then, so a resumed run is not bit-identical to an
uninterrupted one). Several processes may share one ``--out`` (each claims a run with a
lock file), e.g. one per core.

Training: rl-zoo3's TD3 hyper-parameters (``agents/hyperparams.py``), replay buffer capped
at the run's steps; the seed seeds the agent, the training env and the refinement. Every
``--eval-freq`` steps the deterministic actor plays ``--eval-episodes`` episodes on env
seeds ``10_000 + i``, the same for every run, so seeds are paired across variants.

Writes ``<out>/results.json`` (config, per-seed curves and timings, aggregates),
``<out>/learning_curves.png`` (mean over seeds and a percentile-bootstrap 95% CI) and
``<out>/summary.md`` (returns at fixed budgets, paired differences to plain TD3, wall
time per env step); prints the tables.

    python -m adr_rl_app.eval.refine_training --tasks Pendulum-v1          # 3 seeds x 3 variants
    python -m adr_rl_app.eval.refine_training --quick                      # smoke run (~1 min)
    python -m adr_rl_app.eval.refine_training --report-only                # tables from what exists
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
from stable_baselines3 import TD3  # noqa: E402
from stable_baselines3.common.evaluation import evaluate_policy  # noqa: E402
from stable_baselines3.common.noise import NormalActionNoise  # noqa: E402

from adr_rl.exploration import ExplorationRefinement, RefinedTD3, RefinementStats  # noqa: E402
from adr_rl_app.agents.hyperparams import hyperparams  # noqa: E402
from adr_rl_app.envs.control import make_control_env, make_control_vec_env  # noqa: E402
from adr_rl_app.eval import cli  # noqa: E402
from adr_rl_app.eval.runs import finish, write_json, write_results  # noqa: E402
from adr_rl_app.eval.stats import bootstrap_mean_ci  # noqa: E402

#: Env steps per task (issue 17: Pendulum 20k, the others at least 200k).
TASK_STEPS: dict[str, int] = {
    "Pendulum-v1": 20_000,
    "LunarLanderContinuous-v3": 200_000,
    "HalfCheetah-v5": 200_000,
    "Hopper-v5": 200_000,
}
VARIANTS = ("plain", "adr", "gd", "adr_sync")
EVAL_SEED = 10_000


@dataclass
class Args:
    tasks: list[str] = field(
        default_factory=lambda: ["Pendulum-v1", "LunarLanderContinuous-v3", "HalfCheetah-v5"]
    )
    """Gymnasium env ids (with TD3 hyper-parameters in agents/hyperparams.py)."""
    variants: list[str] = field(default_factory=lambda: ["plain", "adr", "gd"])
    """plain (TD3), adr, gd, adr_sync (TD3 with exploration refined by that method)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Paired seeds: seed k of every variant shares the agent's initial weights and env."""
    steps: int = 0
    """Env steps per run (0: TASK_STEPS per task)."""
    eval_freq: int = 0
    """Steps between evaluations (0: 2,000 on Pendulum-v1, else 10,000)."""
    eval_episodes: int = 10
    """Episodes per evaluation (deterministic actor)."""
    probability: float = 0.25
    """Chance per env step that the exploration action is refined (paper: 0.1-0.25)."""
    warmup: int = 5_000
    """Env steps before the first refinement (paper: 5,000; also waits for learning_starts)."""
    evaluations: int = 300
    """Critic passes per refinement for every method (300: ADR's T = 100, GD's 150 steps)."""
    radius: float = 2.0
    """Trust region around the exploration action, scaled space (paper: 2, the whole box)."""
    critic: Literal["target", "online"] = "target"
    """Critic refined against: target (paper) or online."""
    q: Literal["q1", "min", "mean"] = "q1"
    """Q network(s): q1 (paper), min or mean."""
    learning_starts: int = -1
    """Override the config's learning_starts (-1: keep rl-zoo3's)."""
    compile: bool = False
    """Run each refinement compiled (``maximize(compile=True)``): the same iterates up to
    float rounding, 2-3x less refining time on critic-sized MLPs; each point of a run's
    curve records whether it was on."""
    threads: int = 1
    """torch threads per process."""
    quick: bool = False
    """Smoke run: Pendulum-v1, 2 seeds, 600 steps, learning from step 100."""
    report_only: bool = False
    """Do not train: aggregate the runs that exist under --out."""
    out: str = "runs/refine-training"
    """Folder of the runs and the results (fixed, so reruns resume)."""


def budgets(args: Args, task: str) -> tuple[int, int]:
    """(env steps, evaluation interval) of a task's runs."""
    steps = args.steps or TASK_STEPS.get(task, 200_000)
    freq = args.eval_freq or (2_000 if task == "Pendulum-v1" else 10_000)
    return steps, min(freq, steps)


def refinement_for(args: Args, variant: str, seed: int) -> ExplorationRefinement | None:
    if variant == "plain":
        return None
    return ExplorationRefinement(
        method=variant,
        probability=args.probability,
        warmup=args.warmup,
        evaluations=args.evaluations,
        radius=args.radius,
        critic=args.critic,
        q=args.q,
        seed=seed,
        compile=args.compile,
    )


# --------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------
def _claim(run_dir: Path) -> bool:
    """Take the run's lock (``owner.pid``) unless a live process holds it."""
    lock = run_dir / "owner.pid"
    run_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text() or 0)
                os.kill(pid, 0)
                return False  # alive: someone else's run
            except (ValueError, ProcessLookupError):
                lock.unlink(missing_ok=True)  # stale lock of a killed process
                continue
            except PermissionError:
                return False
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def _build(args: Args, task: str, variant: str, seed: int, steps: int, run_dir: Path) -> Any:
    env = make_control_env(task, seed=seed)
    refinement = refinement_for(args, variant, seed)
    checkpoint = run_dir / "latest.zip"
    if checkpoint.exists():
        if refinement is None:
            model = TD3.load(checkpoint, env=env, device="cpu")
        else:
            model = RefinedTD3.load(checkpoint, env=env, device="cpu", refinement=refinement)
        model.load_replay_buffer(run_dir / "latest_replay_buffer.pkl")
        return model
    config = hyperparams("td3", task)
    config.pop("n_timesteps")
    noise_std = config.pop("noise_std")
    dim = env.action_space.shape[0]
    config["action_noise"] = NormalActionNoise(np.zeros(dim), noise_std * np.ones(dim))
    # A buffer larger than the run never fills: same algorithm, less memory and disk.
    config["buffer_size"] = min(config.get("buffer_size", 1_000_000), steps)
    if args.learning_starts >= 0:
        config["learning_starts"] = args.learning_starts
    kwargs = dict(seed=seed, verbose=0, device="cpu", **config)
    if refinement is None:
        return TD3("MlpPolicy", env, **kwargs)
    return RefinedTD3("MlpPolicy", env, refinement=refinement, **kwargs)


def _evaluate(model: Any, task: str, episodes: int) -> list[float]:
    env = make_control_vec_env(task, seeds=[EVAL_SEED + i for i in range(episodes)])
    returns, _ = evaluate_policy(
        model, env, n_eval_episodes=episodes, deterministic=True, return_episode_rewards=True
    )
    env.close()
    return [float(r) for r in returns]


def _save_checkpoint(model: Any, run_dir: Path) -> None:
    for name, save in (
        ("latest.zip", model.save),
        ("latest_replay_buffer.pkl", model.save_replay_buffer),
    ):
        tmp = run_dir / f"tmp_{name}"
        save(tmp)
        os.replace(tmp, run_dir / name)


def train_run(args: Args, task: str, variant: str, seed: int, run_dir: Path) -> str:
    """Train (or resume) one run to its budget; returns what happened."""
    if (run_dir / "done.json").exists():
        return "done before"
    if not _claim(run_dir):
        return "held by another process"
    try:
        steps, freq = budgets(args, task)
        curve_path = run_dir / "curve.json"
        curve: dict[str, Any] = (
            json.loads(curve_path.read_text())
            if curve_path.exists() and (run_dir / "latest.zip").exists()
            else {"task": task, "variant": variant, "seed": seed, "points": []}
        )
        model = _build(args, task, variant, seed, steps, run_dir)
        resumed = bool(curve["points"])
        if not resumed:  # the untrained agent: the curve's first point
            curve["points"].append(_point(0, model, _evaluate(model, task, args.eval_episodes)))
        elif curve["points"][-1]["env_steps"] < model.num_timesteps:
            # Killed between the checkpoint and the curve's write: evaluate the checkpoint.
            budget = min((model.num_timesteps // freq) * freq, steps)
            point = _point(budget, model, _evaluate(model, task, args.eval_episodes))
            curve["points"].append(point)
        while model.num_timesteps < steps:
            target = min((model.num_timesteps // freq + 1) * freq, steps)
            before = _stats(model)
            start = time.perf_counter()
            model.learn(target - model.num_timesteps, reset_num_timesteps=False)
            seconds = time.perf_counter() - start
            returns = _evaluate(model, task, args.eval_episodes)
            after = _stats(model)
            point = _point(target, model, returns)
            point["train_seconds"] = seconds
            point["compiled"] = args.compile and variant != "plain"
            point |= {k: after[k] - before[k] for k in after}
            curve["points"].append(point)
            _save_checkpoint(model, run_dir)
            write_json(curve_path, curve)
            print(
                f"{task} {variant} seed {seed}: {model.num_timesteps} steps, return "
                f"{np.mean(returns):.1f}, {seconds:.0f} s"
                + (f", {point['refined']} refined" if variant != "plain" else ""),
                flush=True,
            )
        write_json(run_dir / "done.json", {"env_steps": int(model.num_timesteps)})
        return "resumed and finished" if resumed else "finished"
    finally:
        (run_dir / "owner.pid").unlink(missing_ok=True)


def _point(budget: int, model: Any, returns: list[float]) -> dict[str, Any]:
    return {
        "budget": budget,
        "env_steps": int(model.num_timesteps),
        "returns": returns,
        "mean": float(np.mean(returns)),
    }


def _stats(model: Any) -> dict[str, float]:
    # A plain TD3 has no refinement: its totals are a fresh RefinementStats' zeros.
    stats = getattr(model, "refinement_stats", None) or RefinementStats()
    return {
        "refined": stats.refined,
        "eligible": stats.eligible,
        "q_gain_sum": stats.q_gain_sum,
        "refine_seconds": stats.seconds,
        "refined_coordinates": stats.coordinates,
        "at_bound": stats.at_bound,
    }


# --------------------------------------------------------------------------------------
# aggregation
# --------------------------------------------------------------------------------------
def _ci(values: np.ndarray) -> list[float]:
    return list(bootstrap_mean_ci(values)) if len(values) > 1 else [float(values[0])] * 2


def aggregate(args: Args, out: Path) -> dict[str, Any]:
    """Per task and variant: the curve's mean over seeds with a bootstrap CI, the paired
    difference to plain TD3 at fixed budgets, and the wall time per env step."""
    runs: dict[str, dict[str, dict[int, dict]]] = {}
    for task in args.tasks:
        for variant in args.variants:
            for seed in args.seeds:
                path = out / task / variant / f"seed{seed}" / "curve.json"
                if path.exists():
                    curve = json.loads(path.read_text())
                    curve["finished"] = (path.parent / "done.json").exists()
                    runs.setdefault(task, {}).setdefault(variant, {})[seed] = curve
    tasks: dict[str, Any] = {}
    for task, variants in runs.items():
        steps, freq = budgets(args, task)
        # Quarters of the run, on the evaluation grid.
        fixed = sorted({min(steps, (steps * q // 4) // freq * freq) for q in (1, 2, 3, 4)} - {0})
        entry: dict[str, Any] = {"steps": steps, "fixed_budgets": fixed, "variants": {}}
        plain = variants.get("plain", {})
        for variant, seeds in variants.items():
            by_budget: dict[int, dict[int, float]] = {}
            for seed, curve in seeds.items():
                for p in curve["points"]:
                    by_budget.setdefault(p["budget"], {})[seed] = p["mean"]
            curve_rows = []
            for budget in sorted(by_budget):
                vals = np.array(list(by_budget[budget].values()))
                curve_rows.append(
                    {
                        "budget": budget,
                        "n_seeds": len(vals),
                        "mean": float(vals.mean()),
                        "ci95": _ci(vals),
                    }
                )
            at_budget = {}
            for budget in fixed:
                row = next((r for r in curve_rows if r["budget"] == budget), None)
                if row is None:
                    continue
                diffs = [
                    v - _mean_at(plain[s], budget)
                    for s, v in by_budget[budget].items()
                    if s in plain and _mean_at(plain[s], budget) is not None
                ]
                at_budget[str(budget)] = row | (
                    {
                        "paired_diff_vs_plain": float(np.mean(diffs)),
                        "paired_diff_ci95": _ci(np.array(diffs)),
                        "n_pairs": len(diffs),
                    }
                    if variant != "plain" and diffs
                    else {}
                )
            entry["variants"][variant] = {
                "curve": curve_rows,
                "at_budget": at_budget,
                "auc_mean_return": _auc(seeds),
                "timing": _timing(seeds),
                "timing_by_mode": {
                    mode: t
                    for mode, flag in (("eager", False), ("compiled", True))
                    if (t := _timing(seeds, flag)) is not None
                },
                "seeds": {str(s): c for s, c in seeds.items()},
            }
        base = (entry["variants"].get("plain", {}).get("timing") or {}).get("ms_per_env_step")
        for v in entry["variants"].values():
            for t in [v["timing"], *v["timing_by_mode"].values()]:
                if t and base:
                    t["overhead_vs_plain"] = t["ms_per_env_step"] / base - 1
        tasks[task] = entry
    return {
        "config": asdict(args),
        "machine": f"{platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)",
        "tasks": tasks,
    }


def _mean_at(curve: dict, budget: int) -> float | None:
    return next((p["mean"] for p in curve["points"] if p["budget"] == budget), None)


def _auc(seeds: dict[int, dict]) -> dict[str, Any] | None:
    """Mean return over a finished run's evaluations (the area under its learning curve):
    mean over seeds and its CI."""
    vals = [np.mean([p["mean"] for p in c["points"]]) for c in seeds.values() if c["finished"]]
    if not vals:
        return None
    return {"mean": float(np.mean(vals)), "ci95": _ci(np.array(vals)), "n_seeds": len(vals)}


def _timing(seeds: dict[int, dict], compiled: bool | None = None) -> dict[str, float] | None:
    """Training wall time per env step (evaluations excluded) and the refinement's part,
    averaged over all the run's env steps (the random warm-up included); ``compiled``
    keeps only the evaluation intervals trained with (True) or without (False)
    ``--compile``, ``None`` all of them."""
    train = refine = env_steps = refined = eligible = gain = coordinates = at_bound = 0.0
    for curve in seeds.values():
        points = curve["points"]
        for prev, p in zip(points, points[1:], strict=False):
            if compiled is not None and p.get("compiled", False) != compiled:
                continue
            train += p.get("train_seconds", 0.0)
            refine += p.get("refine_seconds", 0.0)
            env_steps += p["env_steps"] - prev["env_steps"]
            refined += p.get("refined", 0)
            eligible += p.get("eligible", 0)
            gain += p.get("q_gain_sum", 0.0)
            coordinates += p.get("refined_coordinates", 0)
            at_bound += p.get("at_bound", 0)
    if env_steps == 0:
        return None
    return {
        "ms_per_env_step": 1e3 * train / env_steps,
        "refine_ms_per_env_step": 1e3 * refine / env_steps,
        "refined_share": refined / eligible if eligible else 0.0,
        "mean_q_gain": gain / refined if refined else 0.0,
        "refined_actions": int(refined),
        # Only the intervals that logged it (runs from session 11 on).
        "at_bound_share": at_bound / coordinates if coordinates else None,
    }


def summary_table(results: dict[str, Any]) -> str:
    lines = []
    for task, entry in results["tasks"].items():
        fixed = entry["fixed_budgets"]
        lines.append(f"### {task} ({entry['steps']:,} steps)\n")
        head = " | ".join(f"return @ {b:,} [95% CI]" for b in fixed)
        lines.append(
            f"| variant | seeds done/started | {head} | diff vs plain @ {fixed[-1]:,} [95% CI] | "
            "mean over curve | ms / env step | overhead vs plain | refining ms / step | "
            "refined share | refined coords at bound |"
        )
        lines.append("|" + "---|" * (len(fixed) + 9))
        for variant, v in entry["variants"].items():
            cells = []
            for b in fixed:
                row = v["at_budget"].get(str(b))
                cells.append(
                    f"{row['mean']:.1f} [{row['ci95'][0]:.1f}, {row['ci95'][1]:.1f}]"
                    if row
                    else "-"
                )
            last = v["at_budget"].get(str(fixed[-1]), {})
            diff = (
                f"{last['paired_diff_vs_plain']:+.1f} [{last['paired_diff_ci95'][0]:+.1f}, "
                f"{last['paired_diff_ci95'][1]:+.1f}]"
                if "paired_diff_vs_plain" in last
                else "-"
            )
            auc = v["auc_mean_return"]
            t = v["timing"] or {}
            modes = v["timing_by_mode"] if variant != "plain" else {}
            refining = (
                " / ".join(
                    f"{m['refine_ms_per_env_step']:.2f} ({name})" for name, m in modes.items()
                )
                if len(modes) > 1
                else f"{t.get('refine_ms_per_env_step', float('nan')):.2f}"
            )
            overhead = (
                " / ".join(
                    f"{100 * m['overhead_vs_plain']:+.0f}% ({name})" for name, m in modes.items()
                )
                if len(modes) > 1 and all("overhead_vs_plain" in m for m in modes.values())
                else f"{100 * t.get('overhead_vs_plain', float('nan')):+.0f}%"
            )
            done = sum(c["finished"] for c in v["seeds"].values())
            lines.append(
                f"| {variant} | {done}/{len(v['seeds'])} | {' | '.join(cells)} | {diff} | "
                + (
                    f"{auc['mean']:.1f} [{auc['ci95'][0]:.1f}, {auc['ci95'][1]:.1f}]"
                    if auc
                    else "-"
                )
                + f" | {t.get('ms_per_env_step', float('nan')):.2f} | {overhead} | {refining} | "
                f"{t.get('refined_share', float('nan')):.3f} | "
                + (f"{t['at_bound_share']:.3f} |" if t.get("at_bound_share") is not None else "- |")
            )
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    tasks = list(results["tasks"].items())
    if not tasks:
        return
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.5), squeeze=False)
    for ax, (task, entry) in zip(axes[0], tasks, strict=True):
        for variant, v in entry["variants"].items():
            x = [r["budget"] for r in v["curve"]]
            mean = [r["mean"] for r in v["curve"]]
            lo = [r["ci95"][0] for r in v["curve"]]
            hi = [r["ci95"][1] for r in v["curve"]]
            ax.plot(x, mean, label=f"{variant} ({len(v['seeds'])} seeds)")
            ax.fill_between(x, lo, hi, alpha=0.2)
        ax.set_title(task)
        ax.set_xlabel("env steps")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
        ax.set_ylabel("return (deterministic actor)")
        ax.legend(fontsize=8)
    fig.suptitle("TD3 with refined exploration: mean over seeds, bootstrap 95% CI", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = cli.parse_args(Args, __doc__, argv)
    if args.quick:
        args.tasks, args.seeds = ["Pendulum-v1"], args.seeds[:2]
        args.steps, args.eval_freq, args.eval_episodes = args.steps or 600, 200, 2
        args.learning_starts, args.warmup, args.evaluations = 100, 200, 30
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    for variant in args.variants:  # fail on bad settings before any training
        refinement_for(args, variant, 0)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        # Seed-major order: a partial sweep has complete pairs of variants.
        for task in args.tasks:
            for seed in args.seeds:
                for variant in args.variants:
                    run_dir = out / task / variant / f"seed{seed}"
                    status = train_run(args, task, variant, seed, run_dir)
                    print(f"{task} {variant} seed {seed}: {status}", flush=True)
    results = aggregate(args, out)
    write_results(out / "results.json", results)
    plot(results, out / "learning_curves.png")
    finish(out, summary_table(results))


if __name__ == "__main__":
    main()
