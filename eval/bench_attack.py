"""Cost of one attack iteration, ADR vs PGD, on an IMPALA-CNN PPO policy at batch 64.

Time per iteration does not depend on what the policy learned, only on its shape, so
the policy is a randomly initialized SB3 ``CnnPolicy`` with the IMPALA CNN on Procgen's
``(64, 64, 3) uint8`` observations and 15 actions. One iteration's cost is the slope
``(t(steps_hi) - t(steps_lo)) / (steps_hi - steps_lo)`` of whole attack calls, so set-up
(clean forward, ADR's self-check and initial gradient, rounding) is excluded; all
methods are timed interleaved in one run and the ratio is taken within it. Also timed:
the passes an iteration is made of (a forward without graph, a forward + backward to the
input), which bound the ratio from below: ADR needs one of each, PGD only the second.

    python -m adr_rl_app.eval.bench_attack                  # CPU
    python -m adr_rl_app.eval.bench_attack --device cuda    # on a GPU
    python -m adr_rl_app.eval.bench_attack --quick          # smoke run, under runs/
    python -m adr_rl_app.eval.bench_attack --compile        # the same with compile=True
    python -m adr_rl_app.eval.bench_attack --autocast none bf16  # float32 vs bf16 search

With ``--autocast none bf16`` every method is timed in both precisions in the same
rounds, and the bf16 speed-up per method is the ratio within the run.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticCnnPolicy
from tqdm import tqdm

from adr_rl.attack import ObservationAttack
from adr_rl.extractors import impala_cnn_policy_kwargs
from adr_rl.machine import cpu_model, machine_info, native_bf16
from adr_rl.surrogate import ReluSurrogate
from adr_rl_app.eval import cli
from adr_rl_app.eval.procgen_attacks import AUTOCAST, autocast_dtype
from adr_rl_app.eval.runs import write_results


@dataclass
class Args:
    device: str = "cpu"
    """torch device of the policy (cpu or cuda)"""
    batch: int = 64
    """observations per attack call"""
    methods: list[str] = field(default_factory=lambda: ["pgd", "adr", "adr_sync"])
    """methods to time; ratios are taken against pgd"""
    steps_lo: int = 2
    """short run, for the slope"""
    steps_hi: int = 12
    """long run, for the slope"""
    repeats: int = 5
    """timed rounds (median reported); methods interleaved within a round"""
    eps: float = 2.0
    """L-inf radius in pixel levels"""
    threads: int = 1
    """torch threads on CPU"""
    out: str = "results/bench_attack"
    """output folder"""
    quick: bool = False
    """smoke run: batch 4, 1 and 2 steps, one round, output under runs/"""
    compile: bool = False
    """time every method with compile=True (compiling calls excluded); output then goes
    to <out>/compiled unless --out is given"""
    autocast: list[str] = field(default_factory=lambda: ["none"])
    """precisions of the search to time (none, bf16: ObservationAttack(autocast=bf16));
    with bf16, output goes to <out>/autocast unless --out is given"""


def parse_args(argv: list[str] | None = None) -> Args:
    args = cli.parse_args(Args, __doc__, argv)
    if args.quick:
        args.batch, args.steps_lo, args.steps_hi, args.repeats = 4, 1, 2, 1
        if args.out == Args.out:
            args.out = "runs/bench_attack_quick"
    if args.compile and args.out == Args.out:
        args.out = f"{Args.out}/compiled"
    if "bf16" in args.autocast and args.out == Args.out:
        args.out = f"{Args.out}/autocast"
    if not args.autocast or set(args.autocast) - set(AUTOCAST):
        raise SystemExit(f"--autocast takes none and/or bf16, got {args.autocast}")
    if args.compile and "bf16" in args.autocast:
        raise SystemExit("--compile and --autocast bf16 do not go together")
    return args


def variant(method: str, autocast: str) -> str:
    """The name a method is reported under: ``pgd``, or ``pgd+bf16``."""
    return method if autocast == "none" else f"{method}+{autocast}"


def build_policy(device: str) -> ActorCriticCnnPolicy:
    torch.manual_seed(0)
    kwargs = impala_cnn_policy_kwargs()
    kwargs.pop("optimizer_kwargs")
    policy = ActorCriticCnnPolicy(
        spaces.Box(0, 255, (3, 64, 64), np.uint8), spaces.Discrete(15), lambda _: 5e-4, **kwargs
    )
    return policy.to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Any, device: str) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def pass_times(policy: ActorCriticCnnPolicy, obs: np.ndarray, device: str) -> dict[str, float]:
    """One forward without graph, one forward + backward to the input (seconds)."""
    x, _ = policy.obs_to_tensor(obs)
    x = x.float()

    def logits(z: torch.Tensor) -> torch.Tensor:
        fe = policy.pi_features_extractor
        return policy.action_net(policy.mlp_extractor.policy_net(fe(z / 255.0)))

    def forward() -> None:
        with torch.no_grad():
            logits(x)

    def forward_backward() -> None:
        z = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(logits(z).logsumexp(1).sum(), z)

    with ReluSurrogate([policy], relax=False):  # eval mode, frozen, then restored exactly
        forward(), forward_backward()  # warm-up
        return {
            "forward_nograd_s": float(np.median([timed(forward, device) for _ in range(5)])),
            "forward_backward_s": float(
                np.median([timed(forward_backward, device) for _ in range(5)])
            ),
        }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    policy = build_policy(args.device)
    obs = np.random.default_rng(0).integers(0, 256, (args.batch, 64, 64, 3), dtype=np.uint8)
    names = [variant(m, ac) for ac in args.autocast for m in args.methods]
    attacks = {
        (variant(m, ac), s): ObservationAttack(
            policy,
            eps=args.eps,
            steps=s,
            method=m,
            seed=0,
            compile=args.compile,
            autocast=autocast_dtype(ac),
        )
        for ac in args.autocast
        for m in args.methods
        for s in (args.steps_lo, args.steps_hi)
    }
    for a in attacks.values():  # warm-up (allocator, first-call costs)
        a.perturb(obs)
    times: dict[str, list[float]] = {f"{m}@{s}": [] for m, s in attacks}
    for _ in tqdm(range(args.repeats), desc="rounds"):
        for (m, s), a in attacks.items():
            times[f"{m}@{s}"].append(timed(lambda a=a: a.perturb(obs), args.device))
    med = {k: float(np.median(v)) for k, v in times.items()}
    per_iter = {
        m: (med[f"{m}@{args.steps_hi}"] - med[f"{m}@{args.steps_lo}"])
        / (args.steps_hi - args.steps_lo)
        for m in names
    }
    passes = pass_times(policy, obs, args.device)
    bound = (passes["forward_nograd_s"] + passes["forward_backward_s"]) / passes[
        "forward_backward_s"
    ]
    ratios = {
        variant(m, ac): per_iter[variant(m, ac)] / per_iter[variant("pgd", ac)]
        for ac in args.autocast
        for m in args.methods
        if m != "pgd" and variant("pgd", ac) in per_iter
    }
    bf16_speedup = (
        {m: per_iter[m] / per_iter[variant(m, "bf16")] for m in args.methods}
        if {"none", "bf16"} <= set(args.autocast)
        else {}
    )
    results = {
        "config": dataclasses.asdict(args),
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": args.threads,
            "cuda": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
            **machine_info(),
        },
        "policy": "SB3 ActorCriticCnnPolicy, IMPALA CNN (16, 32, 32), 256 features, random init",
        "call_seconds": times,
        "median_call_seconds": med,
        "seconds_per_iteration": per_iter,
        "ratio_to_pgd": ratios,
        "bf16_speedup": bf16_speedup,
        "passes": passes,
        "ratio_lower_bound_extra_forward": bound,
        "target_ratio": 1.5,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_results(out / "results.json", results)
    compiled = ", compile=True" if args.compile else ""
    print(f"{args.device}, IMPALA PPO policy, batch {args.batch}, eps {args.eps:g}{compiled}")
    print(f"CPU: {cpu_model()}, native bf16: {native_bf16()}, {args.threads} thread(s)")
    print("| method | ms per iteration | ratio to PGD (same precision) | bf16 speed-up |")
    print("|---|---|---|---|")
    for m in names:
        r = f"{ratios[m]:.2f}x" if m in ratios else "1.00x"
        up = f"{bf16_speedup[m]:.2f}x" if m in bf16_speedup else "-"
        print(f"| {m} | {1e3 * per_iter[m]:.1f} | {r} | {up} |")
    print(
        f"passes: forward (no graph) {1e3 * passes['forward_nograd_s']:.1f} ms, forward + "
        f"backward {1e3 * passes['forward_backward_s']:.1f} ms; ADR's extra real forward alone "
        f"gives {bound:.2f}x"
    )
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
