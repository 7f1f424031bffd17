"""Paired comparison of two flip tables measured on the same fixed observations.

``attack_procgen --phases flip`` writes ``flip.json``: per game, attack, mode, eps and
steps, which of the fixed observations the attack flipped (untargeted) or sent to its
target (targeted). Two such tables of the same policy and observation set, run with one
setting changed, compare per observation: the change in success rate with a bootstrap
95% CI over observations, and how many observations only one of the two succeeds on.
Issue 13 uses it to check the attacks' search in bf16 against float32::

    python -m adr_rl_app.eval.compare_flip \\
        results/attack_procgen_impala/fruitbot/flip.json \\
        results/attack_procgen_impala/fruitbot/bf16_check/flip.json \\
        --labels float32 bf16 --out results/attack_procgen_impala/fruitbot/bf16_check

Rows present in only one table are left out; tables of different observation sets
(levels, count) or of different policies (where both name theirs) are an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tyro

from adr_rl_app.eval import cli
from adr_rl_app.eval.errors import UserError
from adr_rl_app.eval.runs import write_results
from adr_rl_app.eval.stats import paired_difference


@dataclass
class Args:
    a: tyro.conf.Positional[str]
    """the reference flip.json"""
    b: tyro.conf.Positional[str]
    """the flip.json to compare with it"""
    labels: list[str] = field(default_factory=lambda: ["a", "b"])
    """names of the two tables in the output"""
    out: str = ""
    """folder for compare.json and compare.md (default: print only)"""


def parse_args(argv: list[str] | None = None) -> Args:
    return cli.parse_args(Args, __doc__, argv)


Key = tuple[str, str, str, float, int]


def per_observation(report: dict[str, Any]) -> dict[Key, tuple[np.ndarray, float]]:
    """``(game, mode, method, eps, steps) -> (success per observation, averaged over the
    seeds; mean ms per observation)``."""
    groups: dict[Key, list[dict[str, Any]]] = {}
    for game, rows in report["games"].items():
        for r in rows:
            key = (game, r["mode"], r["method"], float(r["eps"]), int(r["steps"]))
            groups.setdefault(key, []).append(r)
    return {
        key: (
            np.mean([np.asarray(r["succeeded"], dtype=float) for r in rows], axis=0),
            float(np.mean([r["ms_per_obs"] for r in rows])),
        )
        for key, rows in groups.items()
    }


def check_same_observations(a: dict[str, Any], b: dict[str, Any]) -> None:
    """The two tables must be of the same observation set and, where named, policies."""
    for name in ("levels", "n_obs"):
        if a.get(name) != b.get(name):
            raise UserError(
                f"the tables hold different observation sets ({name}: {a.get(name)!r} vs "
                f"{b.get(name)!r}); compare flip tables of the same --flip-obs and levels"
            )
    pa, pb = a.get("policies") or {}, b.get("policies") or {}
    for game in set(pa) & set(pb):
        if pa[game] != pb[game]:
            raise UserError(
                f"the tables attack different {game} policies: {pa[game]} vs {pb[game]}"
            )


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per setting in both tables: rates, paired difference (b - a) and CI,
    observations only one succeeds on, and the time ratio."""
    check_same_observations(a, b)
    ra, rb = per_observation(a), per_observation(b)
    rows = []
    for key in sorted(set(ra) & set(rb)):
        (sa, ma), (sb, mb) = ra[key], rb[key]
        if sa.shape != sb.shape:
            raise UserError(f"{key}: {sa.size} observations in one table, {sb.size} in the other")
        game, mode, method, eps, steps = key
        rows.append(
            {
                "game": game,
                "mode": mode,
                "method": method,
                "eps": eps,
                "steps": steps,
                "rate_a": float(sa.mean()),
                "rate_b": float(sb.mean()),
                **paired_difference(sa, sb),
                "ms_a": ma,
                "ms_b": mb,
                "speedup": ma / mb if mb > 0 else None,
            }
        )
    return rows


def table(rows: list[dict[str, Any]], labels: list[str]) -> str:
    a, b = labels
    lines = [
        f"| game | mode | method | eps | steps | rate {a} | rate {b} | {b} - {a} [95% CI] | "
        f"only {a} / only {b} | ms/obs {a} / {b} | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        low, high = r["diff_ci95"]
        speedup = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        lines.append(
            f"| {r['game']} | {r['mode']} | {r['method']} | {r['eps']:g} | {r['steps']} | "
            f"{r['rate_a']:.3f} | {r['rate_b']:.3f} | {r['diff']:+.3f} [{low:+.3f}, {high:+.3f}] "
            f"| {r['only_a']} / {r['only_b']} | {r['ms_a']:.1f} / {r['ms_b']:.1f} | {speedup} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if len(args.labels) != 2:
        raise UserError(f"--labels takes two names, got {args.labels}")
    paths = [Path(args.a), Path(args.b)]
    for path in paths:
        if not path.is_file():
            raise UserError(f"{path} is not a file (pass two flip.json files)")
    a, b = (json.loads(p.read_text()) for p in paths)
    rows = compare(a, b)
    text = table(rows, args.labels)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_results(
            out / "compare.json", {"a": args.a, "b": args.b, "labels": args.labels, "rows": rows}
        )
        (out / "compare.md").write_text(text + "\n")
        print(f"wrote {out / 'compare.json'}")
    return rows


if __name__ == "__main__":
    main()
