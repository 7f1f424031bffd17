"""Speed of PPO training on Procgen per numeric mode: env steps/s of real SB3 PPO.

Each (extractor, numerics) pair trains a fresh :class:`agents.fast_ppo.FastPPO` with
the Procgen recipe (64 envs x 256 steps, 3 epochs of 8 minibatches) for
``warmup + rollouts`` iterations on one game; an iteration is a rollout plus its
update, timed from one rollout start to the next (the first ``warmup`` iterations are
not counted). Everything runs in one process, one pair after another, so the ratios
compare modes on the same machine state. The JSON records the CPU model and flags.

    python -m adr_rl_app.eval.bench_train_procgen                      # full run (24 min, 2 cores)
    python -m adr_rl_app.eval.bench_train_procgen --quick              # smoke run
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from tqdm.auto import tqdm

from adr_rl.machine import machine_info, native_bf16
from adr_rl_app.agents.fast_ppo import RECIPE, make_procgen_ppo
from adr_rl_app.envs.procgen import make_procgen_vec_env, procgen_backend
from adr_rl_app.eval import cli
from adr_rl_app.eval.runs import write_json


@dataclass
class Args:
    game: str = "fruitbot"
    """Procgen game to train on."""
    extractors: list[str] = field(default_factory=lambda: ["impala", "nature"])
    """Feature extractors to time."""
    numerics: list[str] = field(default_factory=lambda: ["fp32", "fp32-cl", "bf16-cl"])
    """Numeric modes to time (bf16-cl is skipped where the CPU has no native bf16)."""
    rollouts: int = 2
    """Timed iterations (rollout + update) per pair."""
    warmup: int = 1
    """Untimed iterations first (allocator, oneDNN kernel selection)."""
    num_envs: int = RECIPE.num_envs
    """Envs per rollout (recipe: 64)."""
    num_steps: int = RECIPE.num_steps
    """Steps per env per rollout (recipe: 256)."""
    threads: int = 2
    """torch threads."""
    seed: int = 0
    """Seed of the models and the level sequence."""
    out: str = "results/bench_train_procgen"
    """Output folder (``results.json``)."""
    quick: bool = False
    """Smoke run: 4 envs x 32 steps, 1 timed iteration, no warm-up."""


class IterationTimer(BaseCallback):
    """Wall time at the start of every rollout (and at the end of training)."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[float] = []

    def _on_rollout_start(self) -> None:
        self.stamps.append(time.perf_counter())

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self.stamps.append(time.perf_counter())


def time_pair(args: Args, extractor: str, numerics: str) -> dict[str, Any]:
    """Env steps/s of ``warmup + rollouts`` PPO iterations in one mode."""
    recipe = dataclasses.replace(RECIPE, num_envs=args.num_envs, num_steps=args.num_steps)
    if (recipe.num_envs * recipe.num_steps) % recipe.num_minibatches:
        recipe = dataclasses.replace(recipe, num_minibatches=1)
    venv = make_procgen_vec_env(args.game, args.num_envs, seed=args.seed, monitor=False)
    model = make_procgen_ppo(venv, recipe, extractor=extractor, numerics=numerics, seed=args.seed)
    timer = IterationTimer()
    per_iteration = args.num_envs * args.num_steps
    model.learn(total_timesteps=(args.warmup + args.rollouts) * per_iteration, callback=timer)
    venv.close()
    walls = np.diff(timer.stamps)[args.warmup :]
    return {
        "extractor": extractor,
        "numerics": model.numerics_mode,
        "iterations": len(walls),
        "seconds_per_iteration": walls.tolist(),
        "steps_per_s": float(per_iteration / np.median(walls)),
    }


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: steps/s per pair and the ratio to fp32 of the same extractor."""
    base = {r["extractor"]: r["steps_per_s"] for r in rows if r["numerics"] == "fp32"}
    lines = [
        "| extractor | numerics | env steps/s | vs fp32 |",
        "|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["steps_per_s"] / base[r["extractor"]] if r["extractor"] in base else float("nan")
        lines.append(
            f"| {r['extractor']} | {r['numerics']} | {r['steps_per_s']:.0f} | {ratio:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = cli.parse_args(Args, __doc__, argv)
    if args.quick:
        args = dataclasses.replace(args, num_envs=4, num_steps=32, rollouts=1, warmup=0)
    torch.set_num_threads(args.threads)
    modes = [m for m in args.numerics if m != "bf16-cl" or native_bf16("cpu")]
    skipped = sorted(set(args.numerics) - set(modes))
    pairs = [(e, m) for e in args.extractors for m in modes]
    rows = [time_pair(args, e, m) for e, m in tqdm(pairs, desc="bench_train_procgen")]
    result = {
        "config": dataclasses.asdict(args),
        "machine": machine_info(),
        "procgen_backend": procgen_backend(),
        "skipped_numerics": skipped,
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", result)
    print(table(rows))
    if skipped:
        print(f"skipped (no native bf16 on {result['machine']['cpu_model']}): {skipped}")
    print(f"machine: {result['machine']['cpu_model']}, flags {result['machine']['cpu_flags']}")
    print(f"wrote {out / 'results.json'}")
    return result


if __name__ == "__main__":
    main()
