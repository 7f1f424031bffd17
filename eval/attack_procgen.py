"""Observation attacks on the shipped Procgen PPO policies: none / random / FGSM / PGD /
APGD-CE / APGD-DLR / the value attack / ADR / the worst-case ensemble.

Attack names (``--methods``, ``--flip-methods``): the ``adr_rl.maximize`` methods
``random``, ``fgsm``, ``pgd``, ``adr``, ``adr_sync`` with the cross-entropy objective;
``apgd-ce`` and ``apgd-dlr`` (Auto-PGD, Croce & Hein 2020, with the cross-entropy or
the difference-of-logits-ratio loss, initial step ``2 * eps``); ``value`` (SA-PPO's critic
attack, ``-V(s')`` maximized by APGD; untargeted only); ``ensemble``
(``adr_rl.attack.WorstCaseAttack`` of ``--ensemble``, by default PGD + APGD-CE +
APGD-DLR + ADR: per observation the member that flips the action, else the largest
cross-entropy). The ensemble's member win counts are reported, and every ensemble
result is checked to be at least as strong as each of its members on every observation.

Three phases, each writing JSON (config, seeds, raw numbers, aggregates) under ``--out``:

- ``tune``: ADR variant pick (``adr`` vs ``adr_sync``) by action-flip rate on observations
  from levels disjoint from every reported one (``TUNE_LEVELS``), so the pick is not
  made on the reported data.
- ``flip``: a fixed set of ``--flip-obs`` observations per game (clean policy on unseen
  levels); action-flip rate (untargeted) and target hit rate (targeted) of every method
  at every eps and step count, PGD and ADR with the same objective, step size and steps.
- ``rollout``: episodes on unseen levels with the agent seeing attacked observations
  (sampled actions, as the model cards); mean return with a bootstrap 95% CI,
  action-flip rate, targeted success rate and attack time per step.

Usage (from the repository root): the 512-observation table, a rollout grid, the strong
attacks on the fixed observations, and a smoke run under runs/::

    python -m adr_rl_app.eval.attack_procgen --phases tune flip
    python -m adr_rl_app.eval.attack_procgen --phases rollout --eps 1 4 --steps 10 --episodes 48
    python -m adr_rl_app.eval.attack_procgen --phases flip --adr-method adr_sync --steps 10 \
        --flip-methods pgd apgd-ce apgd-dlr value ensemble
    python -m adr_rl_app.eval.attack_procgen --quick
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from tqdm import tqdm  # noqa: E402

from adr_rl.attack import (  # noqa: E402
    attack_adr_config,
)
from adr_rl_app.envs.procgen import UNSEEN_LEVELS, LevelSplit  # noqa: E402
from adr_rl_app.eval import cli  # noqa: E402
from adr_rl_app.eval.errors import UserError  # noqa: E402
from adr_rl_app.eval.loading import zoo_path  # noqa: E402
from adr_rl_app.eval.procgen_attacks import (  # noqa: E402
    ATTACK_NAMES,
    AUTOCAST,
    STRONG_ATTACKS,
    aggregate,
    applies,
    collect_observations,
    draw_returns_vs_eps,
    make_attack,
    play,
    shipped_policy,
)
from adr_rl_app.eval.runs import write_json, write_results  # noqa: E402
from adr_rl_app.eval.stats import bootstrap_mean_ci, paired_difference  # noqa: E402

#: Levels for the ADR-variant pick: unseen in training and disjoint from UNSEEN_LEVELS.
TUNE_LEVELS = LevelSplit(start_level=5_000_000, num_levels=1_000_000)


@dataclass
class Args:
    games: list[str] = field(default_factory=lambda: ["coinrun", "fruitbot"])
    """Procgen games; the policy is agents/zoo/ppo_<game><policy-suffix>.zip"""
    policy_suffix: str = ""
    """which shipped policy: '' the current ones (IMPALA CNN), '_nature' the NatureCNN ones
    they replaced (for the tables measured on those)"""
    phases: list[str] = field(default_factory=lambda: ["tune", "flip", "rollout"])
    """which parts to run: tune, flip, rollout; report re-prints a finished flip phase"""
    methods: list[str] = field(
        default_factory=lambda: [
            "none",
            "random",
            "fgsm",
            "pgd",
            "adr",
            "apgd-ce",
            "apgd-dlr",
            "value",
            "ensemble",
        ]
    )
    """attacks (module docstring: also apgd-ce, apgd-dlr, value, ensemble); 'adr' means the
    variant the tune phase picked (see --adr-method)"""
    adr_method: str = "auto"
    """ADR variant behind 'adr': adr, adr_sync, or auto (the tune phase's pick)"""
    eps: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0, 4.0, 5.0, 8.0])
    """L-inf radii in pixel levels (0..255) for the rollouts (3 and 5: RADIAL-RL's radii)"""
    steps: list[int] = field(default_factory=lambda: [10, 50])
    """iterations of PGD/ADR/random (FGSM takes one)"""
    modes: list[str] = field(default_factory=lambda: ["untargeted", "targeted"])
    """untargeted (cross-entropy vs the clean action) and/or targeted (least likely action)"""
    episodes: int = 50
    """episodes per setting and game, split evenly over the seeds"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """seeds of the level sequences, the action sampling and the attacks"""
    n_envs: int = 16
    """parallel envs per rollout"""
    max_episode_steps: int = 0
    """cap on an episode's length (0: Procgen's own limits); capped episodes count with
    the return they had and are reported as truncated"""
    flip_obs: int = 512
    """observations per game in the flip phase"""
    flip_eps: list[float] = field(default_factory=lambda: [1.0, 2.0])
    """radii of the flip phase"""
    flip_methods: list[str] = field(
        default_factory=lambda: [
            "random",
            "fgsm",
            "pgd",
            "adr",
            "adr_sync",
            "apgd-ce",
            "apgd-dlr",
            "value",
            "ensemble",
        ]
    )
    """attacks of the flip phase (both ADR variants; also apgd-ce, apgd-dlr, value, ensemble)"""
    ensemble: list[str] = field(default_factory=lambda: ["pgd", "apgd-ce", "apgd-dlr", "adr"])
    """members of the 'ensemble' attack ('adr': the picked variant), in order; APGD with
    both losses, as AutoAttack runs it (APGD-DLR flips CoinRun actions APGD-CE does not)"""
    flip_modes: list[str] = field(default_factory=lambda: ["untargeted"])
    """modes of the flip phase (targeted adds the target hit rate)"""
    tune_obs: int = 256
    """observations per game in the tune phase"""
    tune_steps: list[int] = field(default_factory=lambda: [10])
    """step counts of the tune phase"""
    batch: int = 128
    """observations per attack call in the flip and tune phases"""
    threads: int = 1
    """torch.set_num_threads"""
    autocast: str = "none"
    """the attacks' search in bf16 (``bf16``; 1.4-2.3x faster per iteration on a CPU with
    native bf16, and slightly weaker) or float32 (``none``); returned observations,
    actions and objectives are float32 either way (docs/attacks.md: how far they agree)"""
    resume: bool = True
    """rollout phase: keep the settings that --out's rollout.json already holds (same
    policies and rollout settings; anything else is an error) and run only the rest, so a
    grid can span several sessions; --no-resume starts over"""
    out: str = "results/attack_procgen"
    """output folder (flip results also go here)"""
    quick: bool = False
    """smoke run: one game, tiny budgets, output under runs/"""


def parse_args(argv: list[str] | None = None) -> Args:
    args = cli.parse_args(Args, __doc__, argv)
    if args.quick:
        args.games, args.eps, args.steps, args.episodes = args.games[:1], [2.0], [3], 2
        args.seeds, args.n_envs, args.max_episode_steps = [0], 2, 20
        args.flip_obs, args.tune_obs, args.flip_eps, args.batch = 16, 8, [2.0], 16
        args.tune_steps = [3]
        if args.out == Args.out:
            args.out = "runs/attack_procgen_quick"
    return args


def check_names(args: Args) -> None:
    for name in [*args.methods, *args.flip_methods, *args.ensemble]:
        if name != "none" and name not in ATTACK_NAMES:
            raise SystemExit(f"unknown attack {name!r}; choose from {', '.join(ATTACK_NAMES)}")
    if "ensemble" in args.ensemble or "none" in args.ensemble or not args.ensemble:
        raise SystemExit("--ensemble takes attack names other than 'ensemble' and 'none'")
    if args.autocast not in AUTOCAST:
        raise SystemExit(f"--autocast takes {' or '.join(AUTOCAST)}, got {args.autocast!r}")


# --------------------------------------------------------------------------------------
# fixed observation sets
# --------------------------------------------------------------------------------------
def attack_set(
    model: PPO,
    obs: np.ndarray,
    method: str,
    eps: float,
    steps: int,
    targeted: bool,
    seed: int,
    batch: int,
    config: Any = None,
    members: Sequence[str] = (),
    autocast: str = "none",
) -> dict[str, Any]:
    """Flip (or target-hit) rate of one attack over a fixed observation set, in batches.

    For the ensemble also: each member's win count, and ``ensemble_check``: observations
    where a member succeeds but the ensemble does not, or (none succeeding) a member's
    output scores higher on the common scale; both must be 0.
    """
    attack = make_attack(model, method, eps, steps, targeted, seed, members, config, autocast)
    flipped, success, objective, seconds = [], [], [], 0.0
    winners, missed, weaker = [], 0, 0
    for i in range(0, len(obs), batch):
        res = attack.perturb(obs[i : i + batch])
        flipped.append(res.flipped)
        success.append(res.success)
        objective.append(res.objective)
        seconds += res.seconds
        if res.winner is not None:
            assert res.member_success is not None and res.member_objectives is not None
            winners.append(res.winner)
            any_member = res.member_success.any(axis=0)
            missed += int((any_member & ~res.success).sum())
            none = ~any_member
            best = res.member_objectives[:, none].max(axis=0)
            weaker += int((res.objective[none] < best - 1e-6).sum())
    f, s = np.concatenate(flipped), np.concatenate(success)
    row = {
        "flip_rate": float(f.mean()),
        "success_rate": float(s.mean()),
        "mean_objective": float(np.concatenate(objective).mean()),
        "ms_per_obs": 1e3 * seconds / len(obs),
        "flipped": f.astype(int).tolist(),
        "succeeded": s.astype(int).tolist(),
    }
    if winners:
        w = np.concatenate(winners)
        row["members"] = list(members)
        row["wins"] = {m: int((w == j).sum()) for j, m in enumerate(members)}
        row["ensemble_check"] = {"missed_success": missed, "lower_objective": weaker}
    return row


def _set_flip_rates(
    model: PPO,
    obs: np.ndarray,
    args: Args,
    methods: list[str],
    eps_list: list[float],
    modes: list[str],
    steps_list: list[int],
    desc: str,
    members: Sequence[str] = (),
) -> list[dict[str, Any]]:
    rows = []
    combos = [
        (mode, eps, method, steps, seed)
        for mode in modes
        for eps in eps_list
        for method in methods
        if applies(method, mode)
        for steps in ([1] if method == "fgsm" else steps_list)
        for seed in args.seeds
    ]
    cache: dict[tuple[Any, ...], dict[str, Any]] = {}
    for mode, eps, method, steps, seed in tqdm(combos, desc=desc):
        key = (mode, eps, method, steps)
        if key in cache and seed_free(method, steps, members):
            r = {**cache[key], "reused_from_seed": cache[key]["seed"]}
        else:
            targeted = mode == "targeted"
            r = attack_set(
                model,
                obs,
                method,
                eps,
                steps,
                targeted,
                seed,
                args.batch,
                members=members,
                autocast=args.autocast,
            )
            r["seed"] = seed
            cache[key] = r
        rows.append({"mode": mode, "eps": eps, "method": method, "steps": steps, **r, "seed": seed})
    return rows


def seed_free(method: str, steps: int, members: Sequence[str] = ()) -> bool:
    """Whether the attack's result cannot depend on its seed (so one seed's run is
    reused for the others): FGSM, PGD and APGD (one run, no random start) draw nothing;
    ADR draws only for its noise kick, first applied at step ``perturb_freq`` (25), so
    shorter runs draw nothing (``tests/test_attack.py`` checks both); the ensemble is
    seed-free when all its members are."""
    if method in ("fgsm", "pgd", *STRONG_ATTACKS):
        return True
    if method == "ensemble":
        return all(seed_free(m, steps) for m in members)
    return method in ("adr", "adr_sync") and steps < attack_adr_config(method).perturb_freq


def run_tune(args: Args, out: Path) -> dict[str, Any]:
    """Pick the ADR variant on TUNE_LEVELS observations (disjoint from the reported ones)."""
    report: dict[str, Any] = {"levels": dataclasses.asdict(TUNE_LEVELS), "games": {}}
    score = {"adr": [], "adr_sync": []}
    for game in args.games:
        model = shipped_policy(game, args.policy_suffix)
        obs = collect_observations(model, game, args.tune_obs, TUNE_LEVELS, seed=1000)
        rows = _set_flip_rates(
            model,
            obs,
            args,
            ["adr", "adr_sync"],
            args.flip_eps,
            ["untargeted"],
            args.tune_steps,
            f"tune {game}",
        )
        for r in rows:
            score[r["method"]].append(r["flip_rate"])
            r.pop("flipped")
        report["games"][game] = rows
        report.setdefault("ablations", {})[game] = tune_ablations(model, obs, args)
    means = {m: float(np.mean(v)) for m, v in score.items()}
    # Ties go to adr_sync, the variant the random-network benchmark recommends.
    report["mean_flip_rate"] = means
    report["pick"] = "adr" if means["adr"] > means["adr_sync"] else "adr_sync"
    write_results(out / "tune.json", report)
    print(f"tune: mean flip rate {means}; ADR variant for 'adr': {report['pick']}")
    return report


#: ADR settings compared with PGD on the tuning observations: why ADR trails PGD here.
ABLATIONS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "pgd": ("pgd", None),
    "adr_sync": ("adr_sync", {}),
    "adr_sync, re-sync every 5 steps": ("adr_sync", {"resync_freq": 5}),
    "adr_sync, re-sync every 2 steps": ("adr_sync", {"resync_freq": 2}),
    "adr_sync, no consistency term": ("adr_sync", {"use_constraint": False}),
    "adr_sync, eta kick every 5 steps": ("adr_sync", {"perturb_freq": 5, "grad_threshold": 1e9}),
    # Gate temperature: alpha 200 puts the initial gates at sigmoid(+-2) instead of
    # sigmoid(+-20), so the eta gradient is no longer ~1e-5 and off units leak gradient.
    "adr_sync, 10x softer gates (alpha 200)": ("adr_sync", {"alpha": 200.0}),
    "adr_sync, alpha 200, re-sync every step": ("adr_sync", {"alpha": 200.0, "resync_freq": 1}),
}


def tune_ablations(model: PPO, obs: np.ndarray, args: Args) -> list[dict[str, Any]]:
    """Flip rate and mean objective (cross-entropy) of PGD and ADR variants, seed 0."""
    rows = []
    for eps in args.flip_eps:
        for steps in args.tune_steps:
            for name, (method, overrides) in ABLATIONS.items():
                cfg = None if overrides is None else attack_adr_config(method, **overrides)
                r = attack_set(model, obs, method, eps, steps, False, 0, args.batch, cfg)
                r.pop("flipped")
                rows.append({"name": name, "eps": eps, "steps": steps, **r})
                tqdm.write(
                    f"  {name:<40} eps={eps:g} steps={steps}: flip {r['flip_rate']:.4f}, "
                    f"mean cross-entropy {r['mean_objective']:.4f}"
                )
    return rows


def ensemble_members(args: Args, adr_variant: str) -> list[str]:
    return [adr_variant if m == "adr" else m for m in args.ensemble]


def run_flip(args: Args, out: Path, adr_variant: str = "adr_sync") -> dict[str, Any]:
    members = ensemble_members(args, adr_variant)
    report: dict[str, Any] = {
        "levels": dataclasses.asdict(UNSEEN_LEVELS),
        "ensemble": members,
        "autocast": args.autocast,
        "policies": {game: policy_identity(game, args.policy_suffix) for game in args.games},
        "games": {},
    }
    for game in args.games:
        model = shipped_policy(game, args.policy_suffix)
        obs = collect_observations(model, game, args.flip_obs, UNSEEN_LEVELS, seed=0)
        report["games"][game] = _set_flip_rates(
            model,
            obs,
            args,
            args.flip_methods,
            args.flip_eps,
            args.flip_modes,
            args.steps,
            f"flip {game}",
            members,
        )
    report["summary"] = summarize_flip(report)
    report["paired_vs_pgd"] = paired_vs_pgd(report)
    report["ensemble_check"] = check_ensemble(report)
    report["n_obs"] = args.flip_obs
    write_results(out / "flip.json", report)
    print_flip(report["summary"])
    print_paired(report["paired_vs_pgd"])
    print_ensemble(report["ensemble_check"])
    plot_flip(report, out)
    return report


def check_ensemble(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The ensemble is at least as strong as each member on every observation: per
    ensemble row, its own check (``attack_set``) and, for every member also run alone in
    the table (same mode, eps, steps and seed), the observations that member succeeds on
    and the ensemble does not. Every count must be 0."""
    out = []
    for game, rows in report["games"].items():
        for r in rows:
            if r["method"] != "ensemble":
                continue
            key = (r["mode"], r["eps"], r["steps"], r["seed"])
            alone = {}
            for m in r["members"]:
                match = [
                    q
                    for q in rows
                    if q["method"] == m and (q["mode"], q["eps"], q["steps"], q["seed"]) == key
                ]
                if match:
                    member = np.array(match[0]["succeeded"], dtype=bool)
                    ens = np.array(r["succeeded"], dtype=bool)
                    alone[m] = int((member & ~ens).sum())
            violations = sum(r["ensemble_check"].values()) + sum(alone.values())
            out.append(
                {
                    "game": game,
                    "mode": r["mode"],
                    "eps": r["eps"],
                    "steps": r["steps"],
                    "seed": r["seed"],
                    "wins": r["wins"],
                    "own_check": r["ensemble_check"],
                    "member_rows_beating_ensemble": alone,
                    "ok": violations == 0,
                }
            )
    return out


def print_ensemble(checks: list[dict[str, Any]]) -> None:
    if not checks:
        return
    print("| game | mode | eps | steps | seed | member wins | at least each member |")
    print("|---|---|---|---|---|---|---|")
    for c in checks:
        wins = ", ".join(f"{m} {n}" for m, n in c["wins"].items())
        verdict = "yes" if c["ok"] else f"NO: {c['own_check']} {c['member_rows_beating_ensemble']}"
        print(
            f"| {c['game']} | {c['mode']} | {c['eps']:g} | {c['steps']} | {c['seed']} | "
            f"{wins} | {verdict} |"
        )
    bad = [c for c in checks if not c["ok"]]
    if bad:
        raise SystemExit(f"ensemble check failed in {len(bad)} settings (see above)")


def run_report(out: Path) -> None:
    """Re-print (and re-summarize) the tables of a finished flip phase from its JSON."""
    report = json.loads((out / "flip.json").read_text())
    report["summary"] = summarize_flip(report)
    report["paired_vs_pgd"] = paired_vs_pgd(report)
    report["ensemble_check"] = check_ensemble(report)
    write_results(out / "flip.json", report)
    print_flip(report["summary"])
    print_paired(report["paired_vs_pgd"])
    print_ensemble(report["ensemble_check"])


def summarize_flip(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Mean over seeds per (game, mode, eps, method, steps), with a bootstrap CI over
    observations of the seed-averaged per-observation success."""
    out = []
    for game, rows in report["games"].items():
        keys = sorted({(r["mode"], r["eps"], r["method"], r["steps"]) for r in rows})
        for mode, eps, method, steps in keys:
            sel = [
                r
                for r in rows
                if (r["mode"], r["eps"], r["method"], r["steps"]) == (mode, eps, method, steps)
            ]
            metric = "flip_rate" if mode == "untargeted" else "success_rate"
            per_obs = np.mean([r["flipped"] for r in sel], axis=0) if mode == "untargeted" else None
            vals = [r[metric] for r in sel]
            item = {
                "game": game,
                "mode": mode,
                "eps": eps,
                "method": method,
                "steps": steps,
                "metric": metric,
                "mean": float(np.mean(vals)),
                "per_seed": vals,
                "ms_per_obs": float(np.mean([r["ms_per_obs"] for r in sel])),
            }
            if per_obs is not None:
                item["ci95"] = list(bootstrap_mean_ci(per_obs))
            out.append(item)
    return out


def paired_vs_pgd(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every other attack vs PGD on the same observations, same eps and steps:
    per-observation flip difference (seed-averaged) with a bootstrap CI, and how many
    observations only one of the two flips."""
    out = []
    for game, rows in report["games"].items():

        def per_obs(method: str, eps: float, steps: int, rows=rows) -> np.ndarray | None:
            sel = [
                r["flipped"]
                for r in rows
                if (r["mode"], r["method"], r["eps"], r["steps"])
                == ("untargeted", method, eps, steps)
            ]
            return np.mean(sel, axis=0) if sel else None

        keys = sorted({(r["eps"], r["steps"]) for r in rows if r["method"] == "pgd"})
        others = [m for m in ATTACK_NAMES if m not in ("pgd", "random", "fgsm")]
        for eps, steps in keys:
            pgd = per_obs("pgd", eps, steps)
            for method in others:
                other = per_obs(method, eps, steps)
                if pgd is None or other is None:
                    continue
                paired = paired_difference(pgd, other)
                out.append(
                    {
                        "game": game,
                        "eps": eps,
                        "steps": steps,
                        "method": method,
                        "flip": float(other.mean()),
                        "pgd_flip": float(pgd.mean()),
                        "diff": paired["diff"],
                        "diff_ci95": paired["diff_ci95"],
                        "only_method": paired["only_b"],
                        "only_pgd": paired["only_a"],
                    }
                )
    return out


def print_paired(paired: list[dict[str, Any]]) -> None:
    print(
        "| game | eps | steps | method | its flip | PGD flip | method - PGD [95% CI] | "
        "only it flips | only PGD flips |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for p in paired:
        flip = p.get("flip", p.get("adr_flip"))  # flip.json before the strong attacks
        only = p.get("only_method", p.get("only_adr"))
        print(
            f"| {p['game']} | {p['eps']:g} | {p['steps']} | {p['method']} | {flip:.3f} | "
            f"{p['pgd_flip']:.3f} | {p['diff']:+.3f} [{p['diff_ci95'][0]:+.3f}, "
            f"{p['diff_ci95'][1]:+.3f}] | {only} | {p['only_pgd']} |"
        )


def print_flip(summary: list[dict[str, Any]]) -> None:
    print("| game | mode | eps | method | steps | rate (mean over seeds) | per seed | ms/obs |")
    print("|---|---|---|---|---|---|---|---|")
    for s in summary:
        seeds = ", ".join(f"{v:.3f}" for v in s["per_seed"])
        ci = f" [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]" if "ci95" in s else ""
        print(
            f"| {s['game']} | {s['mode']} | {s['eps']:g} | {s['method']} | {s['steps']} | "
            f"{s['mean']:.3f}{ci} | {seeds} | {s['ms_per_obs']:.1f} |"
        )


def policy_identity(game: str, suffix: str = "") -> dict[str, str]:
    """The shipped policy's file name and SHA-256, so results on another policy are never
    mixed into a resumed grid."""
    path = zoo_path(f"ppo_{game}{suffix}")
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def resumable_report(path: Path, fresh: dict[str, Any]) -> dict[str, Any]:
    """``fresh`` with the finished rows of ``path`` (an earlier run into the same folder).

    Every setting that decides a row's numbers must match; a different policy, seed list,
    episode count, cap or ADR variant is an error that names the difference, never a
    silently mixed table."""
    if not path.exists():
        return fresh
    old = json.loads(path.read_text())
    keys = [k for k in fresh if k not in ("games", "policies")]
    diffs = [f"{k}: {old.get(k)!r} there, {fresh[k]!r} now" for k in keys if old.get(k) != fresh[k]]
    for game in old.get("games", {}):
        then, now = old.get("policies", {}).get(game), fresh["policies"].get(game)
        # The weights decide, not the file name: the NatureCNN zips were renamed to
        # ppo_<game>_nature.zip when the IMPALA policies shipped.
        if now is not None and (then or {}).get("sha256") != now["sha256"]:
            diffs.append(f"policy of {game}: {then!r} there, {now!r} now")
    if diffs:
        raise UserError(
            f"{path} holds rollouts measured differently ({'; '.join(diffs)}); "
            "pass another --out, or --no-resume to start over"
        )
    return {**fresh, "games": old["games"], "policies": {**old["policies"], **fresh["policies"]}}


#: Finished seeds of settings not yet in ``rollout.json``: a setting whose seeds take
#: hours (the ensemble, 50-step ADR) then spans sessions one seed at a time.
PARTIAL_FILE = "rollout_partial.json"


def setting_key(
    game: str, policy_sha256: str, method: str, mode: str, eps: float, steps: int
) -> str:
    """The partial file's key: the policy is part of it, so seeds played on another
    policy are never mixed into a setting."""
    return f"{game}|{policy_sha256[:16]}|{method}|{mode}|{eps:g}|{steps}"


def load_partial(out: Path) -> dict[str, list[dict[str, Any]]]:
    """Finished seed runs of unfinished settings, by :func:`setting_key`."""
    path = out / PARTIAL_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def save_partial(out: Path, partial: dict[str, list[dict[str, Any]]]) -> None:
    path = out / PARTIAL_FILE
    if partial:
        write_json(path, partial)  # atomic
    elif path.exists():
        path.unlink()


def run_rollout(args: Args, out: Path, adr_variant: str) -> dict[str, Any]:
    per_seed = max(1, args.episodes // len(args.seeds))
    members = ensemble_members(args, adr_variant)
    settings: list[tuple[str, str, float, int]] = [("none", "untargeted", 0.0, 0)]
    for mode in args.modes:
        for eps in args.eps:
            for method in args.methods:
                if method == "none" or not applies(method, mode):
                    continue
                for steps in [1] if method == "fgsm" else args.steps:
                    settings.append((method, mode, eps, steps))
    report: dict[str, Any] = {
        "adr_variant": adr_variant,
        "ensemble": members,
        "episodes_per_seed": per_seed,
        "seeds": list(args.seeds),
        "n_envs": args.n_envs,
        "max_episode_steps": args.max_episode_steps,
        "autocast": args.autocast,
        "policies": {game: policy_identity(game, args.policy_suffix) for game in args.games},
        "games": {},
    }
    if args.resume:
        report = resumable_report(out / "rollout.json", report)
    for game in args.games:
        model = shipped_policy(game, args.policy_suffix)
        rows = list(report["games"].get(game, []))
        done = {(r["method"], r["mode"], r["eps"], r["steps"]) for r in rows}
        todo = [s for s in settings if s not in done]
        if len(todo) < len(settings):
            tqdm.write(f"{game}: {len(settings) - len(todo)} settings already in rollout.json")
        partial = load_partial(out) if args.resume else {}
        sha = report["policies"][game]["sha256"]
        for method, mode, eps, steps in tqdm(todo, desc=f"rollout {game}"):
            key = setting_key(game, sha, method, mode, eps, steps)
            runs = [r for r in partial.get(key, []) if r.get("seed") in args.seeds]
            if runs:
                tqdm.write(f"{key}: seeds {[r['seed'] for r in runs]} already in {PARTIAL_FILE}")
            for seed in args.seeds:
                if any(r.get("seed") == seed for r in runs):
                    continue
                attack = None
                if method != "none":
                    name = adr_variant if method == "adr" else method
                    targeted = mode == "targeted"
                    attack = make_attack(
                        model, name, eps, steps, targeted, seed, members, autocast=args.autocast
                    )
                runs.append(
                    play(
                        model,
                        attack,
                        game,
                        per_seed,
                        seed,
                        args.n_envs,
                        args.max_episode_steps,
                        f"{method} {mode} eps={eps:g} seed={seed}",
                    )
                )
                partial[key] = runs
                save_partial(out, partial)
            runs.sort(key=lambda r: list(args.seeds).index(r["seed"]))
            row = {
                "method": method,
                "mode": mode,
                "eps": eps,
                "steps": steps,
                **aggregate(runs),
                "runs": runs,
            }
            if row["wins"] is not None:  # member index -> name
                row["wins"] = {m: row["wins"].get(str(j), 0) for j, m in enumerate(members)}
                missed = sum(r["ensemble_missed"] for r in runs)
                if missed:
                    raise SystemExit(
                        f"ensemble check failed: {missed} observations where a "
                        "member flips and the ensemble does not"
                    )
            rows.append(row)
            tqdm.write(
                f"{game} {method:>8} {mode:>10} eps={eps:<3g} steps={steps:<3} "
                f"return {row['mean_return']:6.2f} [{row['ci95_low']:.2f}, {row['ci95_high']:.2f}]"
                + (f" flip {row['flip_rate']:.3f}" if row["flip_rate"] is not None else "")
                + (f" wins {row['wins']}" if row["wins"] else "")
            )
            report["games"][game] = rows
            write_results(out / "rollout.json", report)
            partial.pop(key, None)
            save_partial(out, partial)
    plot_returns(report, out)
    print_rollout(report)
    return report


def print_rollout(report: dict[str, Any]) -> None:
    print(
        "| game | method | mode | eps | steps | mean return [95% CI] | episodes (capped) | "
        "flip rate | target hit rate | attack ms/obs | ensemble wins |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for game, rows in report["games"].items():
        for r in rows:
            flip = f"{r['flip_rate']:.3f}" if r["flip_rate"] is not None else "-"
            hit = f"{r['success_rate']:.3f}" if r["mode"] == "targeted" else "-"
            ms = f"{r['attack_ms_per_obs']:.1f}" if r["attack_ms_per_obs"] is not None else "-"
            wins = ", ".join(f"{m} {n}" for m, n in (r.get("wins") or {}).items()) or "-"
            print(
                f"| {game} | {r['method']} | {r['mode']} | {r['eps']:g} | {r['steps']} | "
                f"{r['mean_return']:.2f} [{r['ci95_low']:.2f}, {r['ci95_high']:.2f}] | "
                f"{r['n_episodes']} ({r['truncated']}) | {flip} | {hit} | {ms} | {wins} |"
            )


def plot_returns(report: dict[str, Any], out: Path) -> None:
    """Mean return (95% CI) vs eps, one panel per game, one line per method/mode/steps."""
    games = list(report["games"])
    fig, axes = plt.subplots(1, len(games), figsize=(6 * len(games), 4), squeeze=False)
    for ax, game in zip(axes[0], games, strict=True):
        title = f"PPO {game}, unseen levels, attacked observations"
        draw_returns_vs_eps(ax, report["games"][game], title)
    fig.tight_layout()
    fig.savefig(out / "returns_vs_eps.png", dpi=110)
    plt.close(fig)


def plot_flip(report: dict[str, Any], out: Path) -> None:
    games = list(report["games"])
    fig, axes = plt.subplots(1, len(games), figsize=(6 * len(games), 4), squeeze=False)
    for ax, game in zip(axes[0], games, strict=True):
        summ = [s for s in report["summary"] if s["game"] == game]
        keys = sorted({(s["method"], s["mode"], s["steps"]) for s in summ})
        for method, mode, steps in keys:
            sel = sorted(
                (s for s in summ if (s["method"], s["mode"], s["steps"]) == (method, mode, steps)),
                key=lambda s: s["eps"],
            )
            ax.plot(
                [s["eps"] for s in sel],
                [s["mean"] for s in sel],
                marker="o",
                ls="-" if mode == "untargeted" else "--",
                label=f"{method} ({steps}), {'flip' if mode == 'untargeted' else 'hit'}",
            )
        ax.set_xlabel("eps (pixel levels of 255)")
        ax.set_ylabel("rate over the observation set")
        ax.set_title(f"{game}: {report['n_obs']} fixed observations")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "flip_vs_eps.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_names(args)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "config": dataclasses.asdict(args),
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "threads": args.threads,
        },
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    # A resumable folder is filled by several invocations: keep each one's settings.
    config = out / f"config_{'_'.join(args.phases)}.json"
    previous = json.loads(config.read_text()) if config.exists() else None
    history = previous.get("invocations", [previous]) if previous else []
    write_results(config, {"invocations": [*history, meta]})
    variant = args.adr_method
    if "tune" in args.phases:
        variant_pick = run_tune(args, out)["pick"]
        variant = variant_pick if variant == "auto" else variant
    if variant == "auto":
        tune = next(
            (d / "tune.json" for d in (out, out.parent) if (d / "tune.json").exists()),
            out / "tune.json",
        )
        variant = json.loads(tune.read_text())["pick"] if tune.exists() else "adr_sync"
    if "flip" in args.phases:
        run_flip(args, out, variant)
    if "report" in args.phases:
        run_report(out)
    if "rollout" in args.phases:
        run_rollout(args, out, variant)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
