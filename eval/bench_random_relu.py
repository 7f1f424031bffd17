"""The paper's synthetic experiment: maximize random ReLU networks over [-1, 1]^n.

Random networks of the two reference shapes (10-64-64-1 and 128-500-500-500-1,
``|w| ~ U(0, 1)`` with a random sign, biases alike) are maximized from ``x0 = 0``
with ADR, its ablations and the baselines. ADR-type methods run ``T`` steps; every
other method gets the same number of network evaluations (forward + backward
passes, see ``adr_rl.network_evaluations``), so it runs ``1.5 T`` gradient steps.

Writes ``<out>/results.json`` (config, per-seed values and times, aggregates),
``<out>/curves.png`` (best value vs network evaluations, median and IQR over seeds,
normalized by GD's final value) and prints the table that docs/random-relu.md shows.

    python -m adr_rl_app.eval.bench_random_relu                     # docs/random-relu.md
    adr-rl bench random-relu --quick             # a 1-minute smoke run, under runs/
    python -m adr_rl_app.eval.bench_random_relu --timing-only       # the speed measurements alone
"""

from __future__ import annotations

import dataclasses
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from adr_rl import ADRConfig, adr_sync_config, maximize, network_evaluations
from adr_rl.optim import PerturbedGDConfig, RestartGDConfig
from adr_rl.optim.compiled import compiler_available
from adr_rl.surrogate import ReluSurrogate
from adr_rl_app.eval import cli
from adr_rl_app.eval.random_relu import SHAPES, random_relu_net, steps_for
from adr_rl_app.eval.runs import write_results

# docs/method.md, "Reference hyper-parameters": the large network's values differ.
PAPER_ADR = {
    "small": ADRConfig(lr_eta=1.0, lr_c=1e-2, noise_scale=0.1, grad_threshold=1e-4),
    "large": ADRConfig(lr_eta=1.25, lr_c=1e-4, noise_scale=0.35, grad_threshold=1e-2),
}


def variants(shape: str) -> dict[str, tuple[str, Any]]:
    """Reported name -> (method, config) for one network shape."""
    paper = PAPER_ADR[shape]
    sync = adr_sync_config()
    return {
        "adr": ("adr", paper),
        "adr_sync": ("adr_sync", sync),
        "adr-no_constraint": ("adr", dataclasses.replace(paper, use_constraint=False)),
        "adr-no_eta_step": ("adr", dataclasses.replace(paper, use_eta_step=False)),
        "adr-no_noise": ("adr", dataclasses.replace(paper, use_noise=False)),
        "adr_sync-no_resync": ("adr_sync", dataclasses.replace(sync, resync_freq=0)),
        "adr_sync-no_scale": ("adr_sync", dataclasses.replace(sync, objective_scale="none")),
        "adr_sync-no_constraint": ("adr_sync", dataclasses.replace(sync, use_constraint=False)),
        "adr_sync-no_eta_step": ("adr_sync", dataclasses.replace(sync, use_eta_step=False)),
        "adr_sync-no_noise": ("adr_sync", dataclasses.replace(sync, use_noise=False)),
        "gd": ("gd", None),
        "adam": ("adam", None),
        "restart_gd": ("restart_gd", RestartGDConfig()),
        "perturbed_gd": ("perturbed_gd", PerturbedGDConfig()),
        "random": ("random", None),
    }


@dataclass
class Args:
    shapes: list[str] = field(default_factory=lambda: ["small", "large"])
    """Network shapes to run (small: 10-64-64-1, large: 128-500-500-500-1)."""
    seeds_small: int = 20
    """Number of small networks (seeds seed_offset .. seed_offset + n - 1)."""
    seeds_large: int = 5
    """Number of large networks."""
    seed_offset: int = 0
    """First seed. Reported runs use 0; hyper-parameters were tuned on seeds >= 1000."""
    steps: int = 3000
    """ADR iterations T; other methods get the same network evaluations."""
    methods: list[str] = field(default_factory=list)
    """Subset of the variant names to run (default: all)."""
    timing_batches: list[int] = field(default_factory=lambda: [1, 256])
    """Batch sizes for the per-iteration time ratio ADR/GD."""
    timing_steps: int = 200
    """Iterations per timing measurement."""
    threads: int = 1
    """torch threads (1 keeps timings comparable on a shared machine)."""
    out: str = "results/bench_random_relu"
    """Output folder."""
    quick: bool = False
    """Smoke run: 3 small seeds, 1 large, T = 300."""
    timing_only: bool = False
    """Only the speed measurements (ADR/GD per iteration, batched vs looped), written to
    <out>/timing.json; the optimization results in results.json are left as they are."""
    compiled: bool = True
    """Also time both methods with compile=True (skipped where torch.compile cannot
    build, e.g. no C++ compiler); compilation itself is excluded."""


def parse_args(argv: list[str] | None = None) -> Args:
    args = cli.parse_args(Args, __doc__, argv)
    if args.quick:
        args.seeds_small, args.seeds_large, args.steps = 3, 1, 300
        args.timing_steps = 50
        if args.out == Args.out:  # never overwrite the committed full results
            args.out = "runs/bench_random_relu_quick"
    return args


def run_seed(shape: str, seed: int, names: list[str], steps: int) -> dict[str, Any]:
    net = random_relu_net(SHAPES[shape], seed)
    x0 = torch.zeros(1, SHAPES[shape][0])
    out: dict[str, Any] = {}
    for name in names:
        method, config = variants(shape)[name]
        n = steps_for(method, steps)
        t0 = time.perf_counter()
        res = maximize(
            net,
            x0,
            -1.0,
            1.0,
            steps=n,
            method=method,
            seed=seed,
            config=config,
            record_history=True,
        )
        wall = time.perf_counter() - t0
        hist = res.history[:, 0].numpy()
        per_eval = network_evaluations(method, 1)
        # Best-so-far on a common grid of network evaluations (for the plot).
        grid = np.linspace(0, network_evaluations("adr", steps), 101)
        idx = np.minimum((grid / per_eval).astype(int), len(hist) - 1)
        out[name] = {
            "value": float(res.value.item()),
            "steps": n,
            "network_evaluations": res.network_evaluations,
            "wall_s": wall,
            "s_per_step": wall / max(n, 1),
            "curve": hist[idx].tolist(),
        }
    return out


def time_per_step(
    shape: str, batch: int, steps: int, seed: int = 12345, compiled: bool = False
) -> dict[str, float]:
    """Seconds per iteration of ADR and GD at one batch size, measured back to back;
    with ``compiled``, also both with ``compile=True`` in the same interleaved rounds."""
    net = random_relu_net(SHAPES[shape], seed)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(batch, SHAPES[shape][0], generator=g) * 2 - 1
    runs = [("adr", False), ("gd", False)]
    if compiled:
        runs += [("adr", True), ("gd", True)]
        for method, _ in runs[2:]:  # compile outside the timed rounds
            maximize(net, x0, -1.0, 1.0, steps=2, method=method, seed=0, compile=True)
    times: dict[tuple[str, bool], list[float]] = {run: [] for run in runs}
    for _ in range(3):  # interleaved repeats, min is the least noisy estimate
        for method, comp in runs:
            t0 = time.perf_counter()
            maximize(net, x0, -1.0, 1.0, steps=steps, method=method, seed=0, compile=comp)
            times[(method, comp)].append((time.perf_counter() - t0) / steps)
    adr, gd = min(times[("adr", False)]), min(times[("gd", False)])
    passes = pass_times(net, x0, steps)
    out = {
        "adr_s_per_step": adr,
        "gd_s_per_step": gd,
        "ratio_adr_gd": adr / gd,
        **passes,
        # ADR does what GD does plus one forward without graph (scoring), so this is the
        # ratio an ADR step would have if its gates, consistency term and eta update
        # were free; the rest of the measured ratio is their cost.
        "ratio_if_only_extra_forward": (gd + passes["forward_nograd_s"]) / gd,
    }
    if compiled:
        adr_c, gd_c = min(times[("adr", True)]), min(times[("gd", True)])
        out.update(
            adr_compiled_s_per_step=adr_c,
            gd_compiled_s_per_step=gd_c,
            ratio_adr_gd_compiled=adr_c / gd_c,
            adr_speedup_compiled=adr / adr_c,
        )
    return out


def pass_times(net: nn.Module, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Seconds of one forward without graph and one forward + backward to the input."""

    def forward() -> None:
        with torch.no_grad():
            net(x)

    def forward_backward() -> None:
        z = x.detach().requires_grad_(True)
        torch.autograd.grad(net(z).sum(), z)

    out = {}
    with ReluSurrogate([net], relax=False):  # frozen (input gradients only), then restored
        for name, fn in (("forward_nograd_s", forward), ("forward_backward_s", forward_backward)):
            fn()
            best = math.inf
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(repeats):
                    fn()
                best = min(best, (time.perf_counter() - t0) / repeats)
            out[name] = best
    return out


def time_batched(
    shape: str, batch: int, steps: int, method: str = "adr", seed: int = 54321
) -> dict[str, float]:
    """One call over ``batch`` problems vs ``batch`` one-problem calls (same work)."""
    net = random_relu_net(SHAPES[shape], seed)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(batch, SHAPES[shape][0], generator=g) * 2 - 1
    t0 = time.perf_counter()
    maximize(net, x0, -1.0, 1.0, steps=steps, method=method, seed=0)
    batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(batch):
        maximize(net, x0[i : i + 1], -1.0, 1.0, steps=steps, method=method, seed=0)
    looped = time.perf_counter() - t0
    return {"batched_s": batched, "looped_s": looped, "speedup": looped / batched}


def aggregate(per_seed: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, float]]:
    gd = np.array([s["gd"]["value"] for s in per_seed])
    agg: dict[str, dict[str, float]] = {}
    for name in names:
        v = np.array([s[name]["value"] for s in per_seed])
        ratio = v / gd
        agg[name] = {
            "median_ratio_to_gd": float(np.median(ratio)),
            "iqr_ratio_to_gd": [float(np.quantile(ratio, 0.25)), float(np.quantile(ratio, 0.75))],
            "mean_ratio_to_gd": float(np.mean(ratio)),
            "wins_vs_gd": int(np.sum(v > gd * (1 + 1e-6))),
            "ties_vs_gd": int(np.sum(np.abs(v - gd) <= 1e-6 * np.abs(gd))),
            "losses_vs_gd": int(np.sum(v < gd * (1 - 1e-6))),
            "win_rate_vs_gd": float(np.mean(v > gd * (1 + 1e-6))),
            "s_per_step": float(np.median([s[name]["s_per_step"] for s in per_seed])),
        }
    return agg


def head_to_head(per_seed: list[dict[str, Any]], a: str, b: str) -> dict[str, float]:
    va = np.array([s[a]["value"] for s in per_seed])
    vb = np.array([s[b]["value"] for s in per_seed])
    tol = 1e-6 * np.abs(vb)
    return {
        "median_ratio": float(np.median(va / vb)),
        "wins": int(np.sum(va > vb + tol)),
        "ties": int(np.sum(np.abs(va - vb) <= tol)),
        "losses": int(np.sum(va < vb - tol)),
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(results["shapes"])
    fig, axes = plt.subplots(1, len(shapes), figsize=(6.5 * len(shapes), 4.5), squeeze=False)
    for ax, shape in zip(axes[0], shapes, strict=True):
        per_seed = results["shapes"][shape]["per_seed"]
        evals = np.linspace(0, network_evaluations("adr", results["config"]["steps"]), 101)
        for name in results["config"]["methods"]:
            if name not in per_seed[0]["runs"]:
                continue
            curves = np.array([s["runs"][name]["curve"] for s in per_seed])
            gd_final = np.array([s["runs"]["gd"]["value"] for s in per_seed])[:, None]
            rel = curves / gd_final
            med = np.median(rel, axis=0)
            lo, hi = np.quantile(rel, 0.25, axis=0), np.quantile(rel, 0.75, axis=0)
            if "-" in name:
                continue  # ablations are in the table; the plot shows the methods
            style = "-"
            ax.plot(evals, med, style, label=name, lw=2 if name in ("adr", "adr_sync") else 1.2)
            ax.fill_between(evals, lo, hi, alpha=0.12)
        ax.set_title(f"{shape}: {'-'.join(map(str, SHAPES[shape]))}, {len(per_seed)} seeds")
        ax.set_xlabel("network evaluations (forward + backward passes)")
        ax.set_ylabel("best value / GD's final value (median, IQR)")
        ax.set_ylim(0.8, None)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    all_names = list(variants("small"))
    names = args.methods or all_names
    for required in ("gd",):
        if required not in names:
            names.append(required)
    unknown = sorted(set(names) - set(all_names))
    assert not unknown, f"unknown methods {unknown}; choose from {all_names}"
    if args.timing_only:
        run_timing(args, out)
        return
    config = dataclasses.asdict(args) | {"methods": names}
    config["paper_adr"] = {k: dataclasses.asdict(v) for k, v in PAPER_ADR.items()}
    config["adr_sync"] = dataclasses.asdict(adr_sync_config())
    results: dict[str, Any] = {
        "config": config,
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": args.threads,
        },
        "shapes": {},
    }
    n_seeds = {"small": args.seeds_small, "large": args.seeds_large}
    for shape in args.shapes:
        seeds = list(range(args.seed_offset, args.seed_offset + n_seeds[shape]))
        per_seed = []
        for seed in tqdm(seeds, desc=f"{shape} networks"):
            per_seed.append({"seed": seed, "runs": run_seed(shape, seed, names, args.steps)})
        runs = [s["runs"] for s in per_seed]
        timing = shape_timing(shape, args)
        results["shapes"][shape] = {
            "per_seed": per_seed,
            "aggregate": aggregate(runs, names),
            "head_to_head": {
                f"{a}_vs_{b}": head_to_head(runs, a, b)
                for a in ("adr", "adr_sync")
                for b in ("gd", "adam", "restart_gd", "perturbed_gd")
                if a in names and b in names
            },
            "timing": timing,
        }
    if "small" in args.shapes:
        results["batched_vs_looped"] = batched_timing(args)
    write_results(out / "results.json", results)
    plot(results, out / "curves.png")
    print_table(results)
    print(f"wrote {out / 'results.json'} and {out / 'curves.png'}")


def shape_timing(shape: str, args: Args) -> dict[str, dict[str, float]]:
    """ADR vs GD per step (and the network's passes) at every ``--timing-batches`` size."""
    compiled = args.compiled and compiler_available()
    return {
        f"batch_{b}": time_per_step(shape, b, args.timing_steps, compiled=compiled)
        for b in args.timing_batches
    }


def batched_timing(args: Args) -> dict[str, float]:
    """256 small-network problems in one call vs one at a time."""
    return time_batched("small", 256, max(args.timing_steps // 4, 10))


def run_timing(args: Args, out: Path) -> None:
    """The speed half of the benchmark alone (seconds, not the 3000-step runs)."""
    timing: dict[str, Any] = {
        "config": dataclasses.asdict(args),
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
        "shapes": {},
    }
    for shape in tqdm(args.shapes, desc="timing"):
        timing["shapes"][shape] = shape_timing(shape, args)
    if "small" in args.shapes:
        timing["batched_vs_looped"] = batched_timing(args)
    write_results(out / "timing.json", timing)
    for shape, per_batch in timing["shapes"].items():
        for b, t in per_batch.items():
            print(
                f"{shape} {b}: ADR {t['adr_s_per_step'] * 1e3:.3f} ms/step, "
                f"GD {t['gd_s_per_step'] * 1e3:.3f} ms/step, ADR/GD {t['ratio_adr_gd']:.2f}x; "
                f"forward (no graph) {t['forward_nograd_s'] * 1e3:.3f} ms, forward + backward "
                f"{t['forward_backward_s'] * 1e3:.3f} ms: the extra forward alone would give "
                f"{t['ratio_if_only_extra_forward']:.2f}x"
            )
            if "ratio_adr_gd_compiled" in t:
                print(
                    f"{shape} {b} compiled: ADR {t['adr_compiled_s_per_step'] * 1e3:.3f} ms/step, "
                    f"GD {t['gd_compiled_s_per_step'] * 1e3:.3f} ms/step, ADR/GD "
                    f"{t['ratio_adr_gd_compiled']:.2f}x; ADR {t['adr_speedup_compiled']:.2f}x "
                    "faster than eager"
                )
    if "batched_vs_looped" in timing:
        speedup = timing["batched_vs_looped"]["speedup"]
        print(f"batched vs looped (small, 256 problems): {speedup:.1f}x")
    print(f"wrote {out / 'timing.json'}")


def print_table(results: dict[str, Any]) -> None:
    for shape, r in results["shapes"].items():
        n, steps = len(r["per_seed"]), results["config"]["steps"]
        print(f"\n{shape} ({'-'.join(map(str, SHAPES[shape]))}), {n} seeds, T={steps}")
        print("| method | median ratio to GD [IQR] | wins/ties/losses vs GD | s/step |")
        print("|---|---|---|---|")
        for name, a in r["aggregate"].items():
            lo, hi = a["iqr_ratio_to_gd"]
            wtl = f"{a['wins_vs_gd']}/{a['ties_vs_gd']}/{a['losses_vs_gd']}"
            print(
                f"| {name} | {a['median_ratio_to_gd']:.4f} [{lo:.3f}, {hi:.3f}] | {wtl} | "
                f"{a['s_per_step'] * 1e3:.2f} ms |"
            )
        for key, h in r["head_to_head"].items():
            wtl = f"{h['wins']}/{h['ties']}/{h['losses']}"
            print(f"  {key}: median ratio {h['median_ratio']:.4f}, W/T/L {wtl}")
        for key, t in r["timing"].items():
            print(
                f"  time per step ADR/GD at {key}: {t['ratio_adr_gd']:.2f}x "
                f"({t['adr_s_per_step'] * 1e3:.3f} vs {t['gd_s_per_step'] * 1e3:.3f} ms)"
            )
            if "ratio_adr_gd_compiled" in t:
                print(f"  compiled, ADR/GD at {key}: {t['ratio_adr_gd_compiled']:.2f}x")
    if "batched_vs_looped" in results:
        b = results["batched_vs_looped"]
        print(f"  batched (256 problems, one call) vs 256 calls: {b['speedup']:.1f}x faster")


if __name__ == "__main__":
    main()
