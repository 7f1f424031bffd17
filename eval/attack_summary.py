"""One report over every attacked-rollout run: ADR vs PGD at the same eps and steps.

``eval.attack_procgen --phases rollout`` writes one ``rollout.json`` per run folder, and
the grid of the issue (methods x eps x steps x untargeted/targeted x games) was run in
several folders. This script gathers them, so that each ADR setting sits next to the
PGD setting with the same game, mode, eps and steps, with the difference of mean
returns and its bootstrap 95% CI (episodes resampled within each method). A negative
difference means ADR lowered the return more than PGD.

Writes ``<out>/summary.json``, ``<out>/summary.md`` (the tables it prints) and
``<out>/summary.png`` (return vs eps, one panel per game and mode).

    python -m adr_rl_app.eval.attack_summary            # every results/attack_procgen/rollout_*/
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from adr_rl_app.eval import cli  # noqa: E402
from adr_rl_app.eval.runs import write_results  # noqa: E402
from adr_rl_app.eval.stats import bootstrap_diff_ci, bootstrap_mean_ci  # noqa: E402

Key = tuple[str, str, str, float, int]  # game, method, mode, eps, steps


@dataclass
class Args:
    runs: list[str] = field(default_factory=list)
    """rollout folders (each with a rollout.json); default: <out>/rollout_*/"""
    out: str = "results/attack_procgen"
    """where summary.json, summary.md and summary.png go"""


def returns_of(row: dict[str, Any]) -> np.ndarray:
    """Every episode's return of one setting, over its seeds."""
    return np.concatenate([np.asarray(r["returns"], dtype=np.float64) for r in row["runs"]])


def gather(folders: list[Path]) -> tuple[dict[Key, dict[str, Any]], list[str]]:
    """``(game, method, mode, eps, steps) -> row`` over all folders, and the ADR variants.

    A setting run in two folders must have given the same episodes (the runs are seeded;
    the clean policy's row is in every folder); anything else is an error, not a choice.
    """
    rows: dict[Key, dict[str, Any]] = {}
    variants: list[str] = []
    for folder in folders:
        report = json.loads((folder / "rollout.json").read_text())
        variants.append(report["adr_variant"])
        for game, game_rows in report["games"].items():
            for row in game_rows:
                key = (game, row["method"], row["mode"], float(row["eps"]), int(row["steps"]))
                if key in rows:
                    if not np.array_equal(returns_of(rows[key]), returns_of(row)):
                        raise ValueError(f"{key} differs between two runs (in {folder})")
                    continue
                rows[key] = row | {"folder": str(folder)}
    return rows, sorted(set(variants))


def episodes_by_level(row: dict[str, Any]) -> dict[tuple[int, int, int], float] | None:
    """A setting's returns keyed by ``(seed, env, level)``, or ``None`` when its runs
    predate the level record (or a key repeats). A sub-env's level sequence depends on
    the seed only, so the key names the same episode start under every attack."""
    out: dict[tuple[int, int, int], float] = {}
    n = 0
    for run in row["runs"]:
        if "level_seeds" not in run:
            return None
        for env, level, ret in zip(run["env_ids"], run["level_seeds"], run["returns"], strict=True):
            out[(int(run["seed"]), int(env), int(level))] = float(ret)
            n += 1
    return out if len(out) == n else None


def paired_returns(a: dict[str, Any], b: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """Two settings' returns matched episode by episode (same seed, env and level), or
    ``None`` where they cannot be (a setting without level records, other episodes)."""
    ka, kb = episodes_by_level(a), episodes_by_level(b)
    if ka is None or kb is None or ka.keys() != kb.keys():
        return None
    keys = sorted(ka)
    return np.array([ka[k] for k in keys]), np.array([kb[k] for k in keys])


def compare(rows: dict[Key, dict[str, Any]]) -> list[dict[str, Any]]:
    """ADR next to PGD for every (game, mode, eps, steps) that has both."""
    out = []
    order = sorted(rows, key=lambda k: (k[0], k[2] != "untargeted", k[4], k[3]))
    for game, method, mode, eps, steps in order:
        adr = rows[(game, method, mode, eps, steps)]
        pgd = rows.get((game, "pgd", mode, eps, steps))
        if method != "adr" or pgd is None:
            continue
        matched = paired_returns(adr, pgd)
        if matched is not None:  # same levels: the CI of the mean per-episode difference
            a, p = matched
            low, high = bootstrap_mean_ci(a - p)
        else:
            a, p = returns_of(adr), returns_of(pgd)
            low, high = bootstrap_diff_ci(a, p)
        out.append(
            {
                "game": game,
                "mode": mode,
                "eps": eps,
                "steps": steps,
                "episodes": [int(p.size), int(a.size)],
                "pgd_return": float(p.mean()),
                "adr_return": float(a.mean()),
                "adr_minus_pgd": float(a.mean() - p.mean()),
                "diff_ci95": [low, high],
                "paired": matched is not None,
                "pgd_flip": pgd["flip_rate"],
                "adr_flip": adr["flip_rate"],
                "pgd_hit": pgd["success_rate"] if mode == "targeted" else None,
                "adr_hit": adr["success_rate"] if mode == "targeted" else None,
                "pgd_ms_per_obs": pgd["attack_ms_per_obs"],
                "adr_ms_per_obs": adr["attack_ms_per_obs"],
                "verdict": verdict(a.mean() - p.mean(), low, high),
            }
        )
    return out


def verdict(diff: float, low: float, high: float) -> str:
    """Whether ADR lowered the return at least as much as PGD, and how sure that is."""
    if high < 0:
        return "ADR lower (CI < 0)"
    if low > 0:
        return "PGD lower (CI > 0)"
    return ("ADR lower" if diff < 0 else "PGD lower" if diff > 0 else "equal") + ", CI spans 0"


def tally(pairs: list[dict[str, Any]]) -> dict[str, int]:
    """How many settings each way: ADR's mean return <= PGD's, and the sure ones."""
    return {
        "settings": len(pairs),
        "adr_at_least_as_low": sum(p["adr_minus_pgd"] <= 0 for p in pairs),
        "adr_lower_ci_excludes_0": sum(p["diff_ci95"][1] < 0 for p in pairs),
        "pgd_lower_ci_excludes_0": sum(p["diff_ci95"][0] > 0 for p in pairs),
    }


def _rate(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def markdown(pairs: list[dict[str, Any]], counts: dict[str, int], variants: list[str]) -> str:
    lines = [
        f"ADR (`{'`, `'.join(variants)}`) vs PGD, same game, mode, eps and steps; "
        "difference of mean returns (ADR - PGD, negative: ADR lowered the return more) "
        "with its bootstrap 95% CI; paired (the same levels, resampled as pairs) where both "
        "settings recorded their levels, else two independent samples.",
        "",
        "| game | mode | eps | steps | episodes | PGD return | ADR return | ADR - PGD [95% CI] "
        "| paired | flip PGD / ADR | target hit PGD / ADR | ms/obs PGD / ADR | reading |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in pairs:
        low, high = p["diff_ci95"]
        hit = f"{_rate(p['pgd_hit'])} / {_rate(p['adr_hit'])}" if p["mode"] == "targeted" else "-"
        ms = f"{p['pgd_ms_per_obs']:.1f} / {p['adr_ms_per_obs']:.1f}"
        flip = f"{_rate(p['pgd_flip'])} / {_rate(p['adr_flip'])}"
        paired = "yes" if p.get("paired") else "no"
        lines.append(
            f"| {p['game']} | {p['mode']} | {p['eps']:g} | {p['steps']} | "
            f"{p['episodes'][0]} / {p['episodes'][1]} | {p['pgd_return']:.2f} | "
            f"{p['adr_return']:.2f} | {p['adr_minus_pgd']:+.2f} [{low:+.2f}, {high:+.2f}] | "
            f"{paired} | {flip} | {hit} | {ms} | {p['verdict']} |"
        )
    lines += [
        "",
        f"ADR's mean return at most PGD's in {counts['adr_at_least_as_low']} of "
        f"{counts['settings']} settings; the CI excludes 0 in ADR's favour in "
        f"{counts['adr_lower_ci_excludes_0']}, in PGD's in {counts['pgd_lower_ci_excludes_0']}.",
    ]
    return "\n".join(lines)


COLORS = {"random": "tab:brown", "fgsm": "tab:green", "pgd": "tab:red", "adr": "tab:blue"}
OFFSETS = {"random": -0.06, "fgsm": -0.02, "pgd": 0.02, "adr": 0.06}  # log2 shifts, no overlap


def method_style(method: str, mode: str, steps: int) -> tuple[str, dict[str, Any], float]:
    """A colour per method, solid 10 steps (FGSM: 1), dashed 50, methods shifted apart."""
    ls = "--" if steps >= 50 else "-"
    options = {"ms": 4, "capsize": 2, "color": COLORS.get(method), "ls": ls}
    label = f"{method} ({steps} step{'s' if steps > 1 else ''})"
    return label, options, 2.0 ** OFFSETS.get(method, 0.0)


METHOD_ORDER = {"none": 0, "random": 1, "fgsm": 2, "pgd": 3, "adr": 4}


def settings_markdown(rows: dict[Key, dict[str, Any]]) -> str:
    """Every setting of every method (the clean policy once per game)."""
    lines = [
        "| game | mode | method | eps | steps | mean return [95% CI] | episodes (capped) "
        "| flip rate | target hit rate | attack ms/obs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(
        rows, key=lambda k: (k[0], k[2] != "untargeted", METHOD_ORDER.get(k[1], 9), k[4], k[3])
    )
    for key in order:
        r = rows[key]
        game, method, mode, eps, steps = key
        hit = _rate(r["success_rate"]) if mode == "targeted" else "-"
        ms = "-" if r["attack_ms_per_obs"] is None else f"{r['attack_ms_per_obs']:.1f}"
        lines.append(
            f"| {game} | {mode if method != 'none' else '-'} | {method} | {eps:g} | {steps} | "
            f"{r['mean_return']:.2f} [{r['ci95_low']:.2f}, {r['ci95_high']:.2f}] | "
            f"{r['n_episodes']} ({r['truncated']}) | {_rate(r['flip_rate'])} | {hit} | {ms} |"
        )
    return "\n".join(lines)


def plot(rows: dict[Key, dict[str, Any]], path: Path) -> None:
    """One panel per game and mode."""
    from adr_rl_app.eval.procgen_attacks import draw_returns_vs_eps

    games = sorted({k[0] for k in rows})
    modes = [m for m in ("untargeted", "targeted") if any(k[2] == m for k in rows)]
    fig, axes = plt.subplots(
        len(games), len(modes), figsize=(6.5 * len(modes), 4.5 * len(games)), squeeze=False
    )
    for i, game in enumerate(games):
        clean = [r for k, r in rows.items() if k[0] == game and k[1] == "none"]
        for j, mode in enumerate(modes):
            sel = [r for k, r in rows.items() if k[0] == game and k[1] != "none" and k[2] == mode]
            title = f"PPO {game}, {mode}, unseen levels"
            draw_returns_vs_eps(axes[i][j], clean[:1] + sel, title, method_style, legend_size=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = cli.parse_args(Args, __doc__, argv)
    out = Path(args.out)
    folders = [Path(f) for f in args.runs] or sorted(
        p.parent for p in out.glob("rollout_*/rollout.json")
    )
    if not folders:
        raise SystemExit(f"no rollout.json under {out}/rollout_*/; run eval.attack_procgen first")
    rows, variants = gather(folders)
    pairs = compare(rows)
    counts = tally(pairs)
    text = markdown(pairs, counts, variants)
    text += "\n\nEvery setting:\n\n" + settings_markdown(rows)
    summary = {
        "runs": [str(f) for f in folders],
        "adr_variants": variants,
        "pairs": pairs,
        "tally": counts,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_results(out / "summary.json", summary)
    (out / "summary.md").write_text(text + "\n")
    plot(rows, out / "summary.png")
    print(text)
    print(f"wrote {out / 'summary.json'}, summary.md and summary.png")


if __name__ == "__main__":
    main()
