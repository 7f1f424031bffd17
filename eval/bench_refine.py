"""Speed of action refinement: latency at batch 1, throughput at batch 256, batched vs
one observation at a time, ADR vs GD at equal steps.

Latency does not depend on what the critic learned, only on its shape, so by default
the agent is a TD3 with the reference 400-300 networks built on the chosen env (pass
``--model`` to time a trained agent instead). Writes ``<out>/results.json`` and prints a
table.

    python -m adr_rl_app.eval.bench_refine                       # CPU (and CUDA when present)
    python -m adr_rl_app.eval.bench_refine --quick               # smoke run
"""

from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import TD3

from adr_rl import ActionRefiner
from adr_rl.optim.compiled import compiler_available
from adr_rl_app.eval import cli
from adr_rl_app.eval.loading import OFF_POLICY, load_model
from adr_rl_app.eval.runs import write_results


@dataclass
class Args:
    env: str = "Pendulum-v1"
    """Gymnasium env whose spaces shape the agent."""
    model: str = ""
    """Optional path of a trained TD3/SAC/TQC zip to time instead of the 400-300 TD3."""
    methods: list[str] = field(default_factory=lambda: ["none", "adr", "adr_sync", "gd", "cem"])
    """Refinement methods to time."""
    steps: int = 100
    """Optimizer steps per refinement (CEM: iterations of 64 samples, so steps // 32 of
    them match ADR's network evaluations)."""
    batch: int = 256
    """Batch for the throughput measurement."""
    repeats: int = 5
    """Timed calls per measurement (median reported)."""
    loop_size: int = 256
    """Observations refined one at a time for the batched-vs-loop ratio."""
    threads: int = 1
    """torch threads on CPU."""
    devices: list[str] = field(default_factory=list)
    """Devices to time (default: cpu, and cuda when present)."""
    compiled: bool = True
    """Also time adr and gd with compile=True (``<method>+compile``), where torch.compile
    can build (a C++ compiler on CPU); the first, compiling call is excluded."""
    out: str = "results/bench_refine"
    """Output folder."""
    quick: bool = False
    """Smoke run: 10 steps, 2 repeats, 32 observations in the loop."""


def parse_args(argv: list[str] | None = None) -> Args:
    args = cli.parse_args(Args, __doc__, argv)
    if args.quick:
        args.steps, args.repeats, args.loop_size = 10, 2, 32
        if args.out == Args.out:
            args.out = "runs/bench_refine_quick"
    return args


def build_agent(args: Args, device: str) -> Any:
    """``--model`` through the one loader, else an untrained TD3 of the paper's size."""
    if args.model:
        return load_model(args.model, allowed=OFF_POLICY, device=device)
    env = gym.make(args.env)
    return TD3("MlpPolicy", env, policy_kwargs={"net_arch": [400, 300]}, seed=0, device=device)


def steps_for(method: str, steps: int) -> int:
    """CEM at ADR's network evaluations: 64 samples per iteration vs 3 passes per step."""
    return max(1, 3 * steps // 64) if method == "cem" else steps


def timed(fn: Any, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def median_time(fn: Any, repeats: int, device: str) -> float:
    fn()  # warm-up
    return float(np.median([timed(fn, device) for _ in range(repeats)]))


def bench_device(args: Args, device: str) -> dict[str, Any]:
    model = build_agent(args, device)
    space = model.observation_space
    space.seed(0)
    obs = np.stack([space.sample() for _ in range(max(args.batch, args.loop_size))])
    runs = [(m, False) for m in args.methods]
    if args.compiled and compiler_available():
        runs += [(m, True) for m in ("adr", "gd") if m in args.methods]
    refiners = {
        method + ("+compile" if compile_step else ""): ActionRefiner(
            model,
            method=method,
            radius=0.25,
            steps=steps_for(method, args.steps),
            seed=0,
            compile=compile_step,
        )
        for method, compile_step in runs
    }
    for r in refiners.values():  # warm-up, and compile both batch sizes outside the timings
        r.predict(obs[:1]), r.predict(obs[: args.batch])
    # Latency and throughput: all methods interleaved in every round (medians), so that
    # the ratios between methods are not skewed by the machine's drift.
    one: dict[str, list[float]] = {name: [] for name in refiners}
    full: dict[str, list[float]] = {name: [] for name in refiners}
    for _ in range(args.repeats):
        for name, r in refiners.items():
            one[name].append(timed(lambda r=r: r.predict(obs[:1]), device))
            full[name].append(timed(lambda r=r: r.predict(obs[: args.batch]), device))
    out: dict[str, Any] = {}
    for name, refiner in refiners.items():
        loop_obs = obs[: args.loop_size]
        loop = median_time(
            lambda r=refiner, o=loop_obs: [r.predict(o[i : i + 1]) for i in range(len(o))],
            max(1, args.repeats // 2),
            device,
        )
        batched = median_time(lambda r=refiner, o=loop_obs: r.predict(o), args.repeats, device)
        out[name] = {
            "steps": refiner.steps,
            "latency_batch1_ms": float(np.median(one[name])) * 1e3,
            f"throughput_batch{args.batch}_actions_per_s": args.batch / np.median(full[name]),
            "one_at_a_time_actions_per_s": args.loop_size / loop,
            "batched_vs_one_at_a_time": loop / batched,
        }
    if "adr" in out and "gd" in out:
        out["adr_over_gd_latency_batch1"] = (
            out["adr"]["latency_batch1_ms"] / out["gd"]["latency_batch1_ms"]
        )
        key = f"throughput_batch{args.batch}_actions_per_s"
        out["gd_over_adr_throughput"] = out["gd"][key] / out["adr"][key]
    if "adr+compile" in out and "gd+compile" in out:
        adr_c, gd_c = out["adr+compile"], out["gd+compile"]
        out["adr_over_gd_latency_batch1_compiled"] = (
            adr_c["latency_batch1_ms"] / gd_c["latency_batch1_ms"]
        )
        out["adr_latency_speedup_compiled"] = (
            out["adr"]["latency_batch1_ms"] / adr_c["latency_batch1_ms"]
        )
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results: dict[str, Any] = {
        "config": dataclasses.asdict(args),
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": args.threads,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "devices": {},
    }
    for device in devices:
        results["devices"][device] = bench_device(args, device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_results(out / "results.json", results)
    key = f"throughput_batch{args.batch}_actions_per_s"
    for device, r in results["devices"].items():
        print(f"\n{device}: {args.env} TD3 400-300 critic, radius 0.25, {args.steps} steps")
        print(f"| method | latency @1 | throughput @{args.batch} | batched / one-at-a-time |")
        print("|---|---|---|---|")
        for method in [k for k in r if isinstance(r[k], dict)]:
            m = r[method]
            print(
                f"| {method} ({m['steps']} steps) | {m['latency_batch1_ms']:.2f} ms | "
                f"{m[key]:.0f} actions/s | {m['batched_vs_one_at_a_time']:.1f}x |"
            )
        if "adr_over_gd_latency_batch1" in r:
            print(
                f"  ADR/GD latency @1: {r['adr_over_gd_latency_batch1']:.2f}x; "
                f"GD/ADR throughput @{args.batch}: {r['gd_over_adr_throughput']:.2f}x"
            )
        if "adr_over_gd_latency_batch1_compiled" in r:
            print(
                f"  compiled: ADR/GD latency @1 {r['adr_over_gd_latency_batch1_compiled']:.2f}x; "
                f"ADR latency {r['adr_latency_speedup_compiled']:.2f}x lower than eager"
            )
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
