"""Evaluate a PPO policy on Procgen and write its model card (JSON + markdown + learning curve).

Plays ``--n-episodes`` episodes on unseen levels and on the training levels with
the policy, and with a uniformly random policy, and reports each mean return with
a percentile-bootstrap 95% CI. Usage (from the repository root)::

    python -m adr_rl_app.eval.eval_procgen_policy \\
        --model agents/zoo/ppo_coinrun.zip --env coinrun \\
        --run-dirs runs/coinrun__ppo_procgen__1__1795377617 \\
        --card agents/zoo/ppo_coinrun.md --curve agents/zoo/ppo_coinrun_learning_curve.png
    python -m adr_rl_app.eval.eval_procgen_policy \\
        --model agents/zoo/ppo_fruitbot.zip --env fruitbot \\
        --training-dir agents/zoo/training/ppo_fruitbot_impala \\
        --card agents/zoo/ppo_fruitbot.md --curve agents/zoo/ppo_fruitbot_learning_curve.png

The policy rows are ``procgen_rollouts.evaluate_model``'s seeded evaluation, the numbers
``eval.rollout`` and ``export_training --evaluate-episodes`` give for the same seed. The
card also names the training machine (from the runs' ``machine.json``) and OpenAI's runs
at the same step count.

Writes ``<out-dir>/eval.json`` (config, seeds, raw per-episode numbers,
aggregates) and ``<out-dir>/learning_curve.png``, the card and the curve where
asked, and prints a short table.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adr_rl_app.envs.procgen import TRAIN_LEVELS, UNSEEN_LEVELS
from adr_rl_app.eval import cli
from adr_rl_app.eval.errors import UserError
from adr_rl_app.eval.learning_curves import (
    plot_learning_curve,
    read_progress,
    reference_at_marks,
)
from adr_rl_app.eval.loading import load_model
from adr_rl_app.eval.procgen_rollouts import evaluate_model
from adr_rl_app.eval.runs import write_results

#: Published PPO references (IMPALA CNN, 25M steps, easy mode, test levels):
#: Cobbe et al. 2020 (Fig. 2 / App. I) and CleanRL's ppo_procgen.py benchmark.
PUBLISHED_REFERENCE = {"coinrun": "8.5-9.5", "fruitbot": "27-30"}


@dataclass
class Args:
    model: str = ""
    """SB3 PPO .zip to evaluate"""
    env: str = "coinrun"
    """Procgen game"""
    n_episodes: int = 200
    """episodes per split (>= 100 for the model card)"""
    n_envs: int = 16
    """parallel envs per rollout"""
    seed: int = 0
    """seed of the level sequences, of action sampling and of the bootstrap"""
    deterministic: bool = False
    """argmax actions instead of sampling (Procgen agents are usually evaluated sampling)"""
    run_dirs: list[str] = field(default_factory=list)
    """training run folders (their progress.csv, command.txt, args.json) in order"""
    training_dir: str = ""
    """tracked training folder (agents/zoo/training/<name>, from export_training): its
    segments are the run folders, and its evaluations.json adds points to the curve"""
    out_dir: str = ""
    """where eval.json and learning_curve.png go (default runs/eval/<env>__<time>)"""
    card: str = ""
    """markdown model card to write (e.g. agents/zoo/ppo_coinrun.md)"""
    curve: str = ""
    """learning curve PNG to write beside the card"""
    resume_command: str = ""
    """command that continues training, printed in the card"""
    notes: str = ""
    """free text appended to the card (e.g. why training stopped where it did)"""
    threads: int = 1
    """torch.set_num_threads"""


def parse_args(argv: list[str] | None = None) -> Args:
    return cli.parse_args(Args, __doc__, argv)


def _mean_ci(summary: dict[str, Any]) -> tuple[float, float, float]:
    return summary["mean_return"], summary["ci95_low"], summary["ci95_high"]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_card(path: Path, report: dict[str, Any], curve: str) -> None:
    train = report["training"]
    rows = [
        ("PPO", "unseen", report["results"]["ppo_unseen"]),
        ("PPO", "train", report["results"]["ppo_train"]),
        ("random", "unseen", report["results"]["random_unseen"]),
        ("random", "train", report["results"]["random_train"]),
    ]
    env = report["config"]["env"]
    config = report["config"]
    levels = {"unseen": config["unseen_levels"], "train": config["train_levels"]}
    lines = [
        f"# PPO on Procgen {env} (easy mode): `{Path(report['config']['model']).name}`",
        "",
        "| | |",
        "|---|---|",
        "| algorithm | Stable-Baselines3 PPO, `CnnPolicy`, CleanRL `ppo_procgen.py` "
        "hyper-parameters |",
        f"| features extractor | {train.get('extractor', '?')} |",
        f"| training command | `{train.get('command', '?')}` |",
        f"| training seed | {train.get('seed', '?')} |",
        f"| env steps | {train.get('num_timesteps', '?'):,} |",
        f"| wall time | {train.get('wall_time_h', 0):.2f} h |",
        f"| training machine | {train.get('machine_text') or report['config']['device']} |",
        f"| evaluated on | {report['config'].get('eval_machine', '?')} |",
        f"| training levels | {levels['train']['num_levels']} levels from "
        f"{levels['train']['start_level']} |",
        "",
        f"## Returns ({report['config']['n_episodes']} episodes per row, "
        f"{'argmax' if report['config']['deterministic'] else 'sampled'} actions, "
        f"eval seed {report['config']['seed']})",
        "",
        "| policy | levels | mean return | 95% CI (bootstrap) | std | mean length |",
        "|---|---|---|---|---|---|",
    ]
    for policy, split, s in rows:
        lv = levels[split]
        lines.append(
            f"| {policy} | {split} ({lv['start_level']}+, {lv['num_levels']}) "
            f"| {s['mean_return']:.2f} | [{s['ci95_low']:.2f}, {s['ci95_high']:.2f}] "
            f"| {s['std_return']:.2f} | {s['mean_length']:.0f} |"
        )
    steps = train.get("num_timesteps")
    for split, cell in (report.get("openai_at_steps") or {}).items():
        if cell:
            lines.append(
                f"| OpenAI PPO IMPALA at {steps:,} steps (their runs, interpolated; "
                f"mean, range) | {split} | {cell['mean']:.2f} | "
                f"[{cell['min']:.2f}, {cell['max']:.2f}] | | |"
            )
    lines += [
        "| published PPO (IMPALA CNN, 25M steps; Cobbe et al. 2020, CleanRL) | test "
        f"| {PUBLISHED_REFERENCE.get(env, '?')} | | | |",
        "",
        f"![learning curve]({curve})" if curve else "",
        "",
        "## Use",
        "",
        "```python",
        "from stable_baselines3 import PPO",
        "from adr_rl_app.envs.procgen import UNSEEN_LEVELS",
        "from adr_rl_app.eval.procgen_rollouts import rollout",
        "",
        f'model = PPO.load("agents/zoo/{Path(report["config"]["model"]).name}", device="cpu")',
        f'result = rollout(model, "{env}", 100, levels=UNSEEN_LEVELS, seed=0)',
        "```",
        "",
        "## Reproduce",
        "",
        "```bash",
        "python -m adr_rl_app.eval.eval_procgen_policy "
        f"--model {report['config']['model']} --env {env} "
        f"--n-episodes {report['config']['n_episodes']} --seed {report['config']['seed']}",
        "```",
    ]
    if report.get("resume_command"):
        lines += [
            "",
            "## Continue training",
            "",
            "```bash",
            report["resume_command"],
            "```",
        ]
    if report.get("notes"):
        lines += ["", report["notes"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def machine_text(machine: dict[str, Any], numerics: str | None) -> str:
    """One line of a training run's ``machine.json``: CPU, cores, threads, numerics."""
    bf16 = "native bf16" if machine.get("cpu_native_bf16") else "no native bf16"
    threads = machine.get("torch_threads", "?")
    return (
        f"{machine.get('cpu_model', '?')} ({bf16}), {machine.get('cpu_count', '?')} cores, "
        f"{threads} torch thread{'s' if threads != 1 else ''}, "
        f"numerics {numerics or machine.get('numerics', '?')}"
    )


def tracked_segments(training_dir: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """A tracked training folder's run folders in training order, and its evaluations."""
    index = training_dir / "training.json"
    if not index.exists():
        raise UserError(f"{training_dir} has no training.json (export a run into it first)")
    segments = json.loads(index.read_text())["segments"]
    evals_path = training_dir / "evaluations.json"
    evals = json.loads(evals_path.read_text()) if evals_path.exists() else []
    return [str(training_dir / "segments" / name) for name in segments], evals


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    out_dir = Path(args.out_dir or f"runs/eval/{args.env}__{int(time.time())}")
    out_dir.mkdir(parents=True, exist_ok=True)

    run_dirs, evaluations = list(args.run_dirs), []
    if args.training_dir:
        segments, evaluations = tracked_segments(Path(args.training_dir))
        run_dirs = run_dirs or segments
    model = load_model(args.model, allowed=("ppo",), device="cpu")
    results: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    for name, path, levels in (
        ("ppo_unseen", args.model, UNSEEN_LEVELS),
        ("ppo_train", args.model, TRAIN_LEVELS),
        ("random_unseen", "", UNSEEN_LEVELS),
        ("random_train", "", TRAIN_LEVELS),
    ):
        # The seeded evaluation of eval.rollout and export_training: the same numbers.
        result, results[name] = evaluate_model(
            path,
            args.env,
            args.n_episodes,
            levels=levels,
            n_envs=args.n_envs,
            seed=args.seed,
            deterministic=args.deterministic,
        )
        raw[name] = result.to_dict()

    steps, curve_returns, wall = read_progress(run_dirs)
    training: dict[str, Any] = {
        "num_timesteps": int(model.num_timesteps),
        "wall_time_h": wall / 3600,
        "final_train_return": curve_returns[-1] if curve_returns else None,
    }
    if run_dirs:
        first, last = Path(run_dirs[0]), Path(run_dirs[-1])
        if (first / "command.txt").exists():
            training["command"] = (first / "command.txt").read_text().strip()
        if (first / "args.json").exists():
            run_args = json.loads((first / "args.json").read_text())
            training["seed"] = run_args.get("seed")
            training["extractor"] = {"nature": "SB3 NatureCNN", "impala": "IMPALA CNN"}.get(
                run_args.get("extractor"), run_args.get("extractor")
            )
            training["numerics"] = run_args.get("numerics")
        if (last / "machine.json").exists():
            training["machine"] = json.loads((last / "machine.json").read_text())
            training["machine_text"] = machine_text(training["machine"], training.get("numerics"))
        training["run_dirs"] = run_dirs
    report = {
        "config": {
            **dataclasses.asdict(args),
            "device": f"CPU ({cpu_name()}, {os.cpu_count()} cores shared with other jobs), "
            "torch threads 1",
            "eval_machine": f"{cpu_name()}, {args.threads} torch "
            f"thread{'s' if args.threads != 1 else ''}",
            "unseen_levels": dataclasses.asdict(UNSEEN_LEVELS),
            "train_levels": dataclasses.asdict(TRAIN_LEVELS),
        },
        "training": training,
        "results": results,
        "episodes": raw,
        "learning_curve": {"steps": steps, "mean_train_return": curve_returns},
        "openai_at_steps": {
            split: cells[0]
            for split, cells in reference_at_marks(args.env, [int(model.num_timesteps)]).items()
        },
        "resume_command": args.resume_command,
        "notes": args.notes,
    }
    write_results(out_dir / "eval.json", report)
    refs = {
        "random (unseen)": results["random_unseen"]["mean_return"],
        f"PPO eval, unseen ({model.num_timesteps:,} steps)": results["ppo_unseen"]["mean_return"],
    }
    title = f"PPO on Procgen {args.env} (easy, 200 training levels)"
    if steps:
        test = [
            (int(e["num_timesteps"]), e["mean_return"], e["ci95_low"], e["ci95_high"])
            for e in evaluations
            if e.get("split") == "unseen" and e["num_timesteps"] != model.num_timesteps
        ]
        test.append((int(model.num_timesteps), *_mean_ci(results["ppo_unseen"])))
        for target in [out_dir / "learning_curve.png", *([Path(args.curve)] if args.curve else [])]:
            plot_learning_curve(
                steps, curve_returns, title, target, refs, game=args.env, test_points=test
            )
    if args.card:
        curve_rel = Path(args.curve).name if args.curve and steps else ""
        write_card(Path(args.card), report, curve_rel)

    print(f"{'policy':<16}{'mean':>8}{'95% CI':>18}{'episodes':>10}")
    for name, s in results.items():
        ci = f"[{s['ci95_low']:.2f}, {s['ci95_high']:.2f}]"
        print(f"{name:<16}{s['mean_return']:>8.2f}{ci:>18}{s['n_episodes']:>10}")
    print(f"wrote {out_dir / 'eval.json'}" + (f" and {args.card}" if args.card else ""))


if __name__ == "__main__":
    main()
