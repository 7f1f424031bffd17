"""How close does each method get to the best value known? A reference for the benchmark.

``eval/bench_random_relu.py`` ranks methods by their ratio to GD. On the small networks
(10 inputs) most methods end within a hair of each other, so wins and losses there may
say more about the last digits of a fixed-step iterate than about search. This script
computes, for the same networks and seeds, a *best known value*: the maximum over
``--starts`` batched GD runs from uniform points of the box (thousands of times the
benchmark's budget; a reference, not a competitor) and over every method's own result.
It then reports, per method, the median relative gap to it and the share of seeds
within 1e-4 and 1e-3 of it.

    python -m adr_rl_app.eval.reference_random_relu  # reads and writes results/bench_random_relu/
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from adr_rl import maximize
from adr_rl_app.eval import cli
from adr_rl_app.eval.random_relu import SHAPES, random_relu_net
from adr_rl_app.eval.runs import write_results


@dataclass
class Args:
    results: str = "results/bench_random_relu/results.json"
    """the benchmark's results (its per-seed values are compared with the reference)"""
    starts_small: int = 4096
    """uniform GD starts per small network"""
    starts_large: int = 256
    """uniform GD starts per large network"""
    steps: int = 3000
    """GD steps per start"""
    seed: int = 7
    """seed of the starts (the networks are the benchmark's)"""
    threads: int = 1
    """torch threads"""
    out: str = ""
    """output JSON (default: reference.json beside --results)"""


def parse_args(argv: list[str] | None = None) -> Args:
    return cli.parse_args(Args, __doc__, argv)


def best_of_starts(shape: str, seed: int, starts: int, steps: int, start_seed: int) -> float:
    """Best true value of GD from ``starts`` uniform points, all in one batched call."""
    net = random_relu_net(SHAPES[shape], seed)
    g = torch.Generator().manual_seed(start_seed * 100_003 + seed)
    x0 = torch.rand(starts, SHAPES[shape][0], generator=g) * 2 - 1
    res = maximize(net, x0, -1.0, 1.0, steps=steps, method="gd", seed=seed)
    return float(res.value.max())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    bench = json.loads(Path(args.results).read_text())
    report: dict[str, Any] = {"config": asdict(args), "shapes": {}}
    for shape, data in bench["shapes"].items():
        starts = args.starts_small if shape == "small" else args.starts_large
        rows = data["per_seed"]
        reference = []
        for row in tqdm(rows, desc=f"reference {shape}", unit="net"):
            found = max(run["value"] for run in row["runs"].values())
            ref = best_of_starts(shape, row["seed"], starts, args.steps, args.seed)
            reference.append({"seed": row["seed"], "starts": ref, "best_known": max(ref, found)})
        methods = list(rows[0]["runs"])
        summary = {}
        for method in methods:
            values = np.array([row["runs"][method]["value"] for row in rows])
            best = np.array([r["best_known"] for r in reference])
            gap = (best - values) / np.abs(best)
            summary[method] = {
                "median_gap": float(np.median(gap)),
                "within_1e-4": int(np.sum(gap <= 1e-4)),
                "within_1e-3": int(np.sum(gap <= 1e-3)),
                "seeds": len(rows),
            }
        starts_gap = [(r["best_known"] - r["starts"]) / abs(r["best_known"]) for r in reference]
        report["shapes"][shape] = {
            "reference": reference,
            "methods": summary,
            "starts_median_gap": float(np.median(starts_gap)),
        }
        print(f"\n{shape}: best known = max(GD from {starts} uniform starts, every method)")
        print("| method | median gap to best known | seeds within 1e-4 | within 1e-3 |")
        print("|---|---|---|---|")
        for method, s in summary.items():
            print(
                f"| {method} | {s['median_gap']:.2e} | {s['within_1e-4']}/{s['seeds']} | "
                f"{s['within_1e-3']}/{s['seeds']} |"
            )
    out = Path(args.out) if args.out else Path(args.results).with_name("reference.json")
    write_results(out, report)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
