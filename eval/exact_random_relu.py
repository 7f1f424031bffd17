"""The true maximum of the random-network benchmark's small networks, or a proven bound.

``eval/reference_random_relu.py`` measures every method against a *best known* value
(4096 GD starts); nothing there says it is the maximum. This script computes, for the
benchmark's small networks (10-64-64-1, its reported seeds, the box ``[-1, 1]^10``),
the exact maximum with a certificate (:func:`adr_rl.certify.exact_maximize`, HiGHS,
relative gap ``--mip-rel-gap``, ``--time-limit`` seconds per network; by default
``strategy="split"``: branch and bound over the box with MILP leaves, which on seed 0
proved a far tighter bound in the same time than one MILP, whose own bound SciPy does not
return when it has no solution), warm-started by the best of ``--warm-starts`` short GD
runs in float64 (the API takes a point; the reference stores values only). Where a seed is
proven, the best known value becomes the true maximum and every method's gap is its
distance to it; where time runs out, the proven bound still caps every method's gap.

Soundness, checked on every seed (exit status 1 if violated): the proven upper bound is
at least every value any method or the reference found, and on a solved seed the MILP's
value is at least every heuristic's, both up to 1e-9 relative plus the float32 rounding
of the benchmark's values: its methods ran on the float32 network and stored values, not
points, so a method that found the maximum reports it rounded, up or down. The slack is
:data:`F32_MARGIN` times the largest float32 rounding seen at 4096 uniform points, the
warm start and the maximizer (:func:`float32_rounding`; ~2e-7 relative); the worst case
over the box (:func:`float32_error_bound`, thousands of times larger) is recorded too.
Every excess over the MILP's value, however small, is recorded beside the check.

``--large-time-limit`` also tries the large network (128-500-500-500-1) of one seed, to
report its status and proven bound (0 skips it).

    python -m adr_rl_app.eval.exact_random_relu   # reads and writes results/bench_random_relu/
"""

from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from adr_rl import maximize
from adr_rl.certify import as_affine_layers, crown_bounds, exact_maximize
from adr_rl.machine import machine_info
from adr_rl_app.eval import cli, runs
from adr_rl_app.eval.random_relu import SHAPES, random_relu_net

#: Soundness slack beyond float32 rounding, relative.
REL_TOL = 1e-9
#: The float32 slack of the soundness check, in units of the largest rounding observed.
F32_MARGIN = 4.0
#: A seed's reference counts as optimal within this relative distance of the maximum
#: (the MIP gap proves no more than this).
OPTIMAL_TOL = 1e-6
#: Relative distances to the true maximum that count as reaching it.
WITHIN = (1e-4, 1e-3)


@dataclass
class Args:
    results: str = "results/bench_random_relu/results.json"
    """the benchmark's results (its methods' per-seed values)"""
    reference: str = ""
    """the best known values (default: reference.json beside --results)"""
    seeds: int = 0
    """first N of the benchmark's small seeds (0: all it reported)"""
    time_limit: float = 100.0
    """seconds per network (wall clock; 20 networks take ~35 min with the large one)"""
    mip_rel_gap: float = 1e-6
    """relative gap to prove"""
    strategy: Literal["split", "milp", "auto"] = "split"
    """exact_maximize's strategy: split (branch and bound over the box, MILP leaves) or
    milp (one MILP; on seed 0 it returned only CROWN's bound, see docs/random-relu.md)"""
    warm_starts: int = 256
    """float64 GD starts whose best point warm-starts the MILP (0: none)"""
    warm_steps: int = 300
    """GD steps per warm start"""
    large_time_limit: float = 60.0
    """seconds for the large network of --large-seed (0: skip it)"""
    large_seed: int = 0
    """seed of the large network to try"""
    large_warm_starts: int = 16
    """float64 GD starts for the large network's warm start"""
    threads: int = 1
    """torch threads (HiGHS through SciPy takes no thread option)"""
    out: str = ""
    """output JSON (default: exact.json beside --results)"""


def parse_args(argv: list[str] | None = None) -> Args:
    return cli.parse_args(Args, __doc__, argv)


def float32_error_bound(net: nn.Sequential, lower: torch.Tensor, upper: torch.Tensor) -> float:
    """A bound on ``|fl32(f(x)) - f(x)|`` over the box, for any summation order.

    The benchmark stored float32 values and not the points, so a heuristic's value may
    exceed the float64 maximum by its rounding; this is how much it can, from the
    classic dot-product bound ``gamma_n |w| |h|`` propagated through 1-Lipschitz ReLUs,
    with ``|h|`` bounded by CROWN over the box.
    """
    layers = [m for m in net if isinstance(m, nn.Linear)]
    bounds = crown_bounds(as_affine_layers(net)[0], lower, upper)
    unit = 2.0**-24
    mag = torch.maximum(lower.abs(), upper.abs()).to(torch.float64)[0]  # |x|, x exact
    err = torch.zeros_like(mag)
    for i, linear in enumerate(layers):
        w = linear.weight.detach().to(torch.float64).abs()
        b = linear.bias.detach().to(torch.float64).abs()
        n = w.shape[1] + 1
        gamma = n * unit / (1 - n * unit)
        err = w @ err + gamma * (w @ (mag + err) + b)
        if i < len(layers) - 1:
            mag = bounds.upper[i][0].clamp_min(0.0)  # |relu(z)| <= max(0, u)
    return float(err.max())


def float32_rounding(net: nn.Sequential, points: torch.Tensor, samples: int = 4096) -> float:
    """The largest ``|fl32(f(x)) - f(x)|`` seen at ``points`` and ``samples`` uniform
    points of ``[-1, 1]^d``: the typical scale of the benchmark's rounding."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(samples, points.shape[1], generator=g) * 2 - 1
    x = torch.cat([x, points.float()])
    with torch.no_grad():
        err = net(x).double() - copy.deepcopy(net).double()(x.double())
    return float(err.abs().max())


def warm_start_point(
    net64: nn.Module, dim: int, starts: int, steps: int, seed: int
) -> torch.Tensor:
    """``(1, d)`` float64: the best point of ``starts`` GD runs from uniform points."""
    g = torch.Generator().manual_seed(1_000_003 + seed)
    x0 = torch.rand(starts, dim, generator=g, dtype=torch.float64) * 2 - 1
    res = maximize(net64, x0, -1.0, 1.0, steps=steps, method="gd", seed=seed)
    return res.x[int(res.value.argmax())][None].detach()


def solve_seed(
    sizes: tuple[int, ...],
    seed: int,
    time_limit: float,
    mip_rel_gap: float = 1e-6,
    warm_starts: int = 256,
    warm_steps: int = 300,
    strategy: str = "split",
) -> dict[str, Any]:
    """The exact maximum of ``random_relu_net(sizes, seed)`` over ``[-1, 1]^d``.

    Values are the float32 weights evaluated in float64; ``value_float32`` is the float32
    network at the same point (what the benchmark's numbers are).
    """
    net = random_relu_net(sizes, seed)
    d = sizes[0]
    lo, hi = -torch.ones(1, d, dtype=torch.float64), torch.ones(1, d, dtype=torch.float64)
    start = time.perf_counter()
    warm, warm_value = None, None
    if warm_starts > 0:
        net64 = copy.deepcopy(net).double()
        warm = warm_start_point(net64, d, warm_starts, warm_steps, seed)
        with torch.no_grad():
            warm_value = float(net64(warm).item())
    warm_s = time.perf_counter() - start
    res = exact_maximize(
        net,
        lo,
        hi,
        time_limit=time_limit,
        mip_rel_gap=mip_rel_gap,
        warm_start=warm,
        strategy=strategy,
    )
    with torch.no_grad():
        value32 = float(net(res.x.float()).item())
    seen = res.x if warm is None else torch.cat([res.x, warm])
    return {
        "seed": seed,
        "strategy": res.info["strategy"],
        "status": res.status[0],
        "value": float(res.value[0]),
        "upper_bound": float(res.upper_bound[0]),
        "gap": float(res.gap[0]),
        "rel_gap": float(res.rel_gap[0]),
        "solve_s": float(res.solve_time[0]),
        "warm_start_s": warm_s,
        "warm_start_value": warm_value,
        "crown_bound": float(res.relaxation_bound[0]),
        "solver_bound": float(res.info["solver_bound"][0]),
        "n_unstable": res.n_unstable[0][0].tolist(),
        "value_float32": value32,
        "float32_rounding": float32_rounding(net, seen),
        "float32_error_bound": float32_error_bound(net, lo, hi),
        "x": res.x[0].tolist(),
    }


def soundness(row: dict[str, Any], found: dict[str, float]) -> list[str]:
    """Violations on one seed: a value found above the proven upper bound, or (solved
    seeds) above the MILP's value, beyond 1e-9 relative plus the float32 slack."""
    slack = F32_MARGIN * row["float32_rounding"]
    out = []
    for name, v in found.items():
        tol = REL_TOL * max(1.0, abs(v)) + slack
        if v > row["upper_bound"] + tol:
            out.append(f"seed {row['seed']}: {name} {v!r} > upper bound {row['upper_bound']!r}")
        if row["status"] == "optimal" and v > row["value"] + tol:
            out.append(f"seed {row['seed']}: {name} {v!r} > exact value {row['value']!r}")
    return out


def rel_below(best: float, v: float) -> float:
    """How far ``v`` lies below ``best``, relative (negative: above it)."""
    return (best - v) / abs(best)


def method_summary(rows: list[dict[str, Any]], methods: list[str]) -> dict[str, dict[str, Any]]:
    """Per method (and the reference's best known value): on the proven seeds, the median
    relative gap to the true maximum and the seeds within each of :data:`WITHIN` of it;
    on every seed, the median gap to the proven upper bound (a bound on its true gap)."""
    proven = [r for r in rows if r["status"] == "optimal"]
    out: dict[str, dict[str, Any]] = {}
    for method in [*methods, "best_known"]:
        gaps = np.array([r["gap_to_max"][method] for r in proven])
        entry: dict[str, Any] = {"proven_seeds": len(proven), "seeds": len(rows)}
        entry["median_gap"] = float(np.median(gaps)) if len(gaps) else None
        entry["max_gap"] = float(np.max(gaps)) if len(gaps) else None
        for tol in WITHIN:
            entry[f"within_{tol:.0e}"] = int(np.sum(gaps <= tol))
        bound_gaps = [r["gap_to_bound"][method] for r in rows]
        entry["median_gap_to_bound"] = float(np.median(bound_gaps)) if rows else None
        out[method] = entry
    return out


def markdown(rows: list[dict[str, Any]], summary: dict[str, dict[str, Any]]) -> str:
    """The per-seed table and the per-method table."""
    lines = [
        "| seed | status | best found | proven upper bound | CROWN bound | best known "
        "| best known: gap to max / to bound | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["status"] == "optimal":
            ref = f"{r['gap_to_max']['best_known']:.1e} (max)"
        else:
            ref = f"<= {r['gap_to_bound']['best_known']:.3g} (bound)"
        lines.append(
            f"| {r['seed']} | {r['status']} | {r['value']:.6f} | {r['upper_bound']:.4f} | "
            f"{r['crown_bound']:.4f} | {r['best_known']:.6f} | {ref} | {r['solve_s']:.0f} |"
        )
    lines += [
        "",
        "| method | proven seeds: median gap to max | within 1e-4 | within 1e-3 "
        "| all seeds: median gap to bound |",
        "|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        med = "-" if s["median_gap"] is None else f"{s['median_gap']:.1e}"
        n = s["proven_seeds"]
        bound = "-" if s["median_gap_to_bound"] is None else f"{s['median_gap_to_bound']:.3g}"
        lines.append(
            f"| {method} | {med} | {s['within_1e-04']}/{n} | {s['within_1e-03']}/{n} | {bound} |"
        )
    return "\n".join(lines)


def compare(
    row: dict[str, Any], method_runs: dict[str, Any], best_known: float
) -> dict[str, float]:
    """Annotate ``row`` with every value found and its gap to the MILP's value (the
    maximum on a solved seed) and to the proven bound; returns the values found (the
    methods' and the reference's) for the soundness check."""
    found = {m: float(run["value"]) for m, run in method_runs.items()}
    found["best_known"] = best_known
    row["best_known"] = best_known
    row["gap_to_max"] = {m: rel_below(row["value"], v) for m, v in found.items()}
    row["gap_to_bound"] = {m: rel_below(row["upper_bound"], v) for m, v in found.items()}
    row["above_value"] = {m: v - row["value"] for m, v in found.items() if v > row["value"]}
    row["best_known_optimal"] = None
    if row["status"] == "optimal":  # within the proven gap, up to the float32 rounding
        slack = F32_MARGIN * row["float32_rounding"] / abs(row["value"])
        row["best_known_optimal"] = bool(row["gap_to_max"]["best_known"] <= OPTIMAL_TOL + slack)
    return found


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    results_path = Path(args.results)
    bench = json.loads(results_path.read_text())
    ref_path = Path(args.reference) if args.reference else results_path.with_name("reference.json")
    reference = json.loads(ref_path.read_text())["shapes"]
    per_seed = bench["shapes"]["small"]["per_seed"]
    per_seed = per_seed[: args.seeds] if args.seeds else per_seed
    best = {r["seed"]: r["best_known"] for r in reference["small"]["reference"]}
    methods = list(per_seed[0]["runs"])
    rows: list[dict[str, Any]] = []
    violations: list[str] = []
    start = time.perf_counter()
    bar = tqdm(per_seed, desc="exact small", unit="net")
    for bench_row in bar:
        row = solve_seed(
            SHAPES["small"],
            bench_row["seed"],
            args.time_limit,
            args.mip_rel_gap,
            args.warm_starts,
            args.warm_steps,
            args.strategy,
        )
        found = compare(row, bench_row["runs"], best[bench_row["seed"]])
        violations += soundness(row, found)
        rows.append(row)
        bar.set_postfix(status=row["status"], gap=f"{row['rel_gap']:.1e}")
    summary = method_summary(rows, methods)
    report: dict[str, Any] = {
        "config": asdict(args),
        "machine": machine_info(),
        "small": {"per_seed": rows, "methods": summary},
        "wall_s": time.perf_counter() - start,
    }
    if args.large_time_limit > 0:
        large = solve_seed(
            SHAPES["large"],
            args.large_seed,
            args.large_time_limit,
            args.mip_rel_gap,
            args.large_warm_starts,
            args.warm_steps,
            args.strategy,
        )
        bench_large = {r["seed"]: r for r in bench["shapes"]["large"]["per_seed"]}
        best_large = {r["seed"]: r["best_known"] for r in reference["large"]["reference"]}
        if args.large_seed in bench_large:
            found = compare(
                large, bench_large[args.large_seed]["runs"], best_large[args.large_seed]
            )
            violations += soundness(large, found)
        report["large"] = large
        report["wall_s"] = time.perf_counter() - start
    report["violations"] = violations
    out = Path(args.out) if args.out else results_path.with_name("exact.json")
    runs.write_json(out, report)
    proven = sum(r["status"] == "optimal" for r in rows)
    optimal_ref = sum(bool(r["best_known_optimal"]) for r in rows)
    print(
        f"\nsmall: {proven}/{len(rows)} seeds proven optimal (relative gap <= "
        f"{args.mip_rel_gap:g}, {args.time_limit:g} s each, strategy {args.strategy}); the "
        f"best known value is the maximum on {optimal_ref}/{proven} of them"
    )
    print(markdown(rows, summary))
    if "large" in report:
        lg = report["large"]
        print(
            f"\nlarge seed {lg['seed']}: {lg['status']}, best found {lg['value']:.4f}, best "
            f"known {lg.get('best_known', float('nan')):.4f}, proven upper bound "
            f"{lg['upper_bound']:.6g} (CROWN {lg['crown_bound']:.6g}), relative gap "
            f"{lg['rel_gap']:.3g}, {lg['solve_s']:.0f} s"
        )
    print(f"\nsoundness: {len(violations)} violations; wrote {out} ({report['wall_s']:.0f} s)")
    if violations:
        print("\n".join(violations), file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
