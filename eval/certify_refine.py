"""How far from the critic's true maximum do the refinement methods stop? (issue 15)

For each shipped off-policy agent and trust-region radius, on states visited by the
unrefined actor, the exact maximum of the pessimistic critic ``min(Q1, Q2)`` over the
trust region ``[a - r, a + r] ∩ [-1, 1]`` (SB3's scaled action space, ``a`` the actor's
action) is computed with a certificate (:func:`adr_rl.certify.exact_maximize`: MILP or
input-splitting branch and bound, HiGHS, relative MIP gap ``--mip-rel-gap``, time limit
``--time-limit`` per state). Each heuristic (``--methods``, run by
:func:`adr_rl.maximize` with ``--budget`` critic evaluations each,
:func:`adr_rl.network_evaluations`) is scored by its share of the exact achievable Q
gain ``max - Q(a)``.

Reported per agent x radius:

- the exact achievable gain (mean) and each method's share of it (mean, bootstrap 95% CI,
  over the states solved to optimality), and the share of states where it reaches the
  maximum (within 1e-4 relative);
- the bound's tightness: CROWN's upper bound minus the true maximum;
- the share of states whose trust region lies inside one linear region of both critics
  (there the maximum is at a corner; :func:`adr_rl.certify.box_in_one_region`) and the
  share of hidden units CROWN proves stable over the trust region;
- solve times (median, p95, max), time-outs counted, and the share certified within the
  time limit;
- soundness: the proven upper bound is at least every method's value, and the exact
  value is at least every heuristic's on every solved state (up to the MIP gap). Any
  violation is counted, written, and makes the script exit with an error.

All values are compared in float64 on the critics' weights (the heuristics' actions
are re-scored), so float32 rounding cannot fake a violation.

Writes ``results.json``, ``summary.md`` and ``certify_refine.png`` to the run folder
(``--out``, default ``runs/certify_refine-<time>``) and prints the table.

    python -m adr_rl_app.eval.certify_refine --agents td3_Pendulum-v1 td3_LunarLanderContinuous-v3
    python -m adr_rl_app.eval.certify_refine --quick          # smoke run: 5 Pendulum states
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from adr_rl import CEMConfig, maximize, network_evaluations  # noqa: E402
from adr_rl.certify import (  # noqa: E402
    as_affine_layers,
    box_in_one_region,
    exact_maximize,
    linear_region_radius,
    stable_unit_share,
)
from adr_rl.certify.network import objective_value  # noqa: E402
from adr_rl_app.envs.control import make_control_vec_env  # noqa: E402
from adr_rl_app.eval import cli, runs  # noqa: E402
from adr_rl_app.eval.loading import CONTROL_AGENTS, load_model, zoo_path  # noqa: E402
from adr_rl_app.eval.stats import bootstrap_mean_ci  # noqa: E402

#: Reaching the maximum: within this relative distance of it.
REACHED = 1e-4


@dataclass
class Args:
    agents: list[str] = field(default_factory=lambda: list(CONTROL_AGENTS))
    """Shipped agents, ``<algo>_<env id>`` in agents/zoo."""
    radii: list[float] = field(default_factory=lambda: [0.1, 0.25, 1.0])
    """Trust-region half-widths in the scaled action space [-1, 1]."""
    skip: list[str] = field(default_factory=lambda: ["td3_HalfCheetah-v5:1.0"])
    """``agent:radius`` cases left out (HalfCheetah at radius 1 does not solve in time)."""
    states: int = 200
    """States per agent, visited by the unrefined actor (subsampled, seeded)."""
    episodes: int = 4
    """Episodes of the unrefined actor the states are drawn from."""
    seed: int = 0
    """Seed of the episodes (env seeds ``1000 * seed + i``) and of the subsampling."""
    methods: list[str] = field(default_factory=lambda: ["gd", "adam", "cem", "adr", "adr_sync"])
    """Heuristics, names of :func:`adr_rl.maximize` methods."""
    budget: int = 90
    """Critic evaluations per refinement, the same for every method (as eval.refine_control)."""
    cem_population: int = 30
    """CEM samples per iteration (budget // population iterations, the best tenth elites)."""
    optimizer_seed: int = 0
    """Seed of the heuristics (ADR noise, CEM samples)."""
    time_limit: float = 10.0
    """Seconds per state for the exact solver (issue 15: certified within 10 s)."""
    mip_rel_gap: float = 1e-6
    """Relative MIP gap at which the solver stops (HiGHS's default 1e-4 is too loose)."""
    bounds: str = "crown"
    """Pre-activation bounds for the big-M constants: crown, crown_lp or interval."""
    strategy: str = "auto"
    """Exact solver: milp, split (branch and bound over the box) or auto (split up to 3-D)."""
    warm_start: bool = False
    """Give the solver the best heuristic action per state (a cut-off, and the fallback
    on a time-out). Off by default: the soundness check "exact >= every heuristic" is
    only informative without it."""
    chunk: int = 10
    """States per exact-solver call (progress and checkpoints between chunks)."""
    threads: int = 1
    """torch threads."""
    out: str = ""
    """Run folder (default: runs/certify_refine-<time>)."""
    quick: bool = False
    """Smoke run: td3_Pendulum-v1, 5 states of 1 episode, radius 0.25 (unless given)."""


def parse_args(argv: list[str] | None = None) -> Args:
    args = cli.parse_args(Args, __doc__, argv)
    if args.quick:  # smoke settings, where the flags were not given
        defaults = Args()
        quick = {"agents": ["td3_Pendulum-v1"], "states": 5, "radii": [0.25], "episodes": 1}
        for name, value in quick.items():
            if getattr(args, name) == getattr(defaults, name):
                setattr(args, name, value)
    return args


def steps_for_budget(method: str, budget: int, cem: CEMConfig) -> int:
    """Most optimizer steps whose critic evaluations fit in ``budget``."""
    per_step = network_evaluations(method, 1, cem if method == "cem" else None)
    if budget < per_step:
        raise ValueError(f"budget {budget} is below one {method} step ({per_step} evaluations)")
    return budget // per_step


def visited_states(model: Any, env_id: str, args: Args) -> np.ndarray:
    """``(states, obs_dim)``: observations of the unrefined actor's episodes, subsampled."""
    seeds = [1000 * args.seed + i for i in range(args.episodes)]
    env = make_control_vec_env(env_id, seeds=seeds)
    obs, states = env.reset(), []
    done = np.zeros(env.num_envs, dtype=bool)
    while not done.all():
        states.append(obs[~done])
        actions, _ = model.predict(obs, deterministic=True)
        obs, _, dones, _ = env.step(actions)
        done |= dones
    env.close()
    pool = np.concatenate(states)
    rng = np.random.default_rng(args.seed)
    keep = rng.choice(len(pool), min(args.states, len(pool)), replace=False)
    return pool[np.sort(keep)]


def critic_inputs(model: Any, states: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Critic features ``(S, d_f)``, actor actions ``(S, d_a)`` in [-1, 1], Q networks."""
    policy = model.policy
    policy.set_training_mode(False)
    with torch.no_grad():
        obs, _ = policy.obs_to_tensor(states)
        actions = policy._predict(obs, deterministic=True).reshape(len(states), -1).clamp(-1, 1)
        features = policy.critic.extract_features(obs, policy.critic.features_extractor)
    return features, actions, list(policy.critic.q_networks)


def run_heuristics(
    q_networks: list, features: torch.Tensor, a0: torch.Tensor, radius: float, args: Args
) -> dict[str, torch.Tensor]:
    """Each method's refined actions ``(S, d_a)`` at equal critic evaluations."""

    def q_min(actions: torch.Tensor) -> torch.Tensor:
        k = actions.shape[0] // features.shape[0]  # CEM stacks k copies of the batch
        u = torch.cat([features.repeat(k, 1) if k > 1 else features, actions], dim=1)
        return torch.minimum(q_networks[0](u), q_networks[1](u)).reshape(-1)

    cem = CEMConfig(population=args.cem_population, elites=max(1, args.cem_population // 10))
    lo, hi = (a0 - radius).clamp_min(-1.0), (a0 + radius).clamp_max(1.0)
    out = {}
    for method in args.methods:
        res = maximize(
            q_min,
            a0,
            lower=lo,
            upper=hi,
            steps=steps_for_budget(method, args.budget, cem),
            method=method,
            seed=args.optimizer_seed,
            network=q_networks,
            # ActionRefiner's defaults: an L2 step of radius / 5 for the normalized steps
            lr=radius / 5 if method in ("adr", "adr_sync", "gd") else None,
            config=cem if method == "cem" else None,
        )
        out[method] = res.x.detach()
    return out


def solve_case(model: Any, states: np.ndarray, radius: float, args: Args) -> dict[str, Any]:
    """Exact maxima, heuristics, bounds and regions on every state at one radius."""
    features, a0, q_networks = critic_inputs(model, states)
    lo, hi = (a0 - radius).clamp_min(-1.0), (a0 + radius).clamp_max(1.0)
    layers = as_affine_layers(q_networks, prefix=features, x_dim=a0.shape[1])
    q_actor = objective_value(layers, a0.double())
    refined = run_heuristics(q_networks, features, a0, radius, args)
    values = {m: objective_value(layers, x.double()) for m, x in refined.items()}
    n = len(states)
    stacked = torch.stack([refined[m] for m in values])  # (methods, S, d_a)
    best = torch.stack(list(values.values())).argmax(dim=0)
    warm = stacked[best, torch.arange(n)].double() if args.warm_start else None
    exact: dict[str, list] = {k: [] for k in ("value", "ub", "relax", "time", "status", "unst")}
    for start in tqdm(range(0, n, args.chunk), desc=f"r={radius:g}", leave=False):
        rows = slice(start, start + args.chunk)
        res = exact_maximize(
            q_networks,
            lo[rows].double(),
            hi[rows].double(),
            prefix=features[rows],
            time_limit=args.time_limit,
            mip_rel_gap=args.mip_rel_gap,
            bounds=args.bounds,
            strategy=args.strategy,
            warm_start=None if warm is None else warm[rows],
        )
        exact["value"] += res.value.tolist()
        exact["ub"] += res.upper_bound.tolist()
        exact["relax"] += res.relaxation_bound.tolist()
        exact["time"] += res.solve_time.tolist()
        exact["status"] += res.status
        exact["unst"] += torch.stack(res.n_unstable, dim=1).tolist()  # (rows, nets, layers)
    one_region = box_in_one_region(
        q_networks, a0.double(), lo.double(), hi.double(), prefix=features
    )
    stable = stable_unit_share(q_networks, lo.double(), hi.double(), prefix=features)
    radius_inf = linear_region_radius(q_networks, a0, "inf", prefix=features).radius
    return {
        "q_actor": q_actor.tolist(),
        "exact_value": exact["value"],
        "upper_bound": exact["ub"],
        "crown_bound": exact["relax"],
        "solve_time": exact["time"],
        "status": exact["status"],
        "n_unstable": exact["unst"],
        "one_region": one_region.tolist(),
        "stable_share": stable.tolist(),
        "region_radius_inf": radius_inf.tolist(),
        "methods": {m: v.tolist() for m, v in values.items()},
        "actions_dim": int(a0.shape[1]),
    }


def summarize(case: dict[str, Any], args: Args) -> dict[str, Any]:
    """Aggregates and soundness counts of one agent x radius."""
    q0 = np.asarray(case["q_actor"])
    best = np.asarray(case["exact_value"])
    ub = np.asarray(case["upper_bound"])
    times = np.asarray(case["solve_time"])
    solved = np.asarray([s == "optimal" for s in case["status"]])
    rel_gap = (ub - best) / np.maximum(1.0, np.abs(best))
    certified = solved & (rel_gap <= args.mip_rel_gap * 1.01) & (times <= args.time_limit)
    achievable = best - q0
    tol = args.mip_rel_gap * np.maximum(1.0, np.abs(ub)) + 1e-9
    out: dict[str, Any] = {
        "states": int(q0.size),
        "solved": int(solved.sum()),
        "time_outs": int(sum(s == "time_limit" for s in case["status"])),
        "other_status": int(sum(s not in ("optimal", "time_limit") for s in case["status"])),
        "certified_within_limit_share": float(certified.mean()),
        "solve_time_median": float(np.median(times)),
        "solve_time_p95": float(np.quantile(times, 0.95)),
        "solve_time_max": float(times.max()),
        "mean_achievable_gain": float(achievable[solved].mean()) if solved.any() else None,
        "crown_tightness_mean": float((np.asarray(case["crown_bound"]) - best)[solved].mean())
        if solved.any()
        else None,
        "crown_tightness_median": float(np.median((np.asarray(case["crown_bound"]) - best)[solved]))
        if solved.any()
        else None,
        "one_region_share": float(np.mean(case["one_region"])),
        "stable_unit_share_mean": float(np.mean(case["stable_share"])),
        "region_radius_inf_median": float(np.median(case["region_radius_inf"])),
        "unstable_mean_per_layer": np.asarray(case["n_unstable"]).mean(axis=0).tolist(),
        "violations": {"upper_bound": 0, "exact_below_heuristic": 0},
        "methods": {},
    }
    for method, vals in case["methods"].items():
        v = np.asarray(vals)
        out["violations"]["upper_bound"] += int((v > ub + tol).sum())
        out["violations"]["exact_below_heuristic"] += int((solved & (v > best + tol)).sum())
        share = np.where(achievable > 1e-9, (v - q0) / np.maximum(achievable, 1e-12), 1.0)
        share = share[solved]
        row: dict[str, Any] = {"share_captured": None, "share_ci95": None, "reached_share": None}
        if share.size:
            row["share_captured"] = float(share.mean())
            row["share_ci95"] = list(bootstrap_mean_ci(share, seed=args.seed))
            reached = (best - v) <= REACHED * np.maximum(1.0, np.abs(best))
            row["reached_share"] = float(reached[solved].mean())
            row["mean_gap_to_max"] = float((best - v)[solved].mean())
        out["methods"][method] = row
    out["violations"]["upper_bound"] += int((best > ub + tol).sum())
    return out


def table(results: dict[str, Any], methods: list[str]) -> str:
    head = (
        "| agent | radius | solved | certified <= limit | time med / p95 / max (s) | "
        "achievable gain | CROWN - max | one region | stable units | "
        + " | ".join(f"{m} share [95% CI]" for m in methods)
        + " |"
    )
    lines = [head, "|" + "---|" * (9 + len(methods))]
    for agent, entry in results["agents"].items():
        for radius, case in entry["radii"].items():
            s = case["summary"]
            gain = "-" if s["mean_achievable_gain"] is None else f"{s['mean_achievable_gain']:.4g}"
            tight = "-" if s["crown_tightness_mean"] is None else f"{s['crown_tightness_mean']:.3g}"
            cells = []
            for m in methods:
                r = s["methods"].get(m, {})
                if r.get("share_captured") is None:
                    cells.append("-")
                else:
                    lo, hi = r["share_ci95"]
                    cells.append(f"{r['share_captured']:.3f} [{lo:.3f}, {hi:.3f}]")
            lines.append(
                f"| {agent} | {radius} | {s['solved']}/{s['states']} ({s['time_outs']} t/o) | "
                f"{s['certified_within_limit_share']:.3f} | {s['solve_time_median']:.2f} / "
                f"{s['solve_time_p95']:.2f} / {s['solve_time_max']:.2f} | {gain} | {tight} | "
                f"{s['one_region_share']:.3f} | {s['stable_unit_share_mean']:.3f} | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(lines)


def plot(results: dict[str, Any], methods: list[str], path: Path) -> None:
    cases = [
        (agent, radius, case["summary"])
        for agent, entry in results["agents"].items()
        for radius, case in entry["radii"].items()
    ]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.5 * len(cases) + 2.5), squeeze=False)
    ax, tax = axes[0]
    height = 0.8 / max(len(methods), 1)
    for j, method in enumerate(methods):
        ys, xs, errs = [], [], []
        for i, (_, _, s) in enumerate(cases):
            r = s["methods"].get(method, {})
            if r.get("share_captured") is None:
                continue
            lo, hi = r["share_ci95"]
            ys.append(i + j * height)
            xs.append(r["share_captured"])
            errs.append([r["share_captured"] - lo, hi - r["share_captured"]])
        if ys:
            ax.errorbar(xs, ys, xerr=np.asarray(errs).T, fmt="o", ms=3, capsize=2, label=method)
    labels = [f"{a}\nr={r}" for a, r, _ in cases]
    ax.set_yticks(np.arange(len(cases)) + 0.4 - height / 2, labels, fontsize=7)
    ax.set_xlabel("share of the exact achievable Q gain (mean, 95% CI)")
    ax.axvline(1.0, color="gray", lw=0.8, ls="--")
    ax.legend(fontsize=7)
    data = [np.asarray(results["agents"][a]["radii"][r]["solve_time"]) for a, r, _ in cases]
    tax.boxplot(data, orientation="horizontal", whis=(5, 95))
    tax.set_yticks(np.arange(1, len(cases) + 1), labels, fontsize=7)
    tax.set_xscale("log")
    tax.set_xlabel("exact solve time per state (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    run_dir = runs.output_dir(args.out, "certify_refine")
    results: dict[str, Any] = {
        "config": asdict(args),
        "platform": f"{platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)",
        "agents": {},
    }
    skip = set(args.skip)
    for agent in args.agents:
        env_id = agent.partition("_")[2]
        model = load_model(zoo_path(agent), allowed=("td3", "sac", "ddpg"), device="cpu")
        states = visited_states(model, env_id, args)
        entry: dict[str, Any] = {
            "env": env_id,
            "states": len(states),
            "observations": states.tolist(),  # to re-solve any single state later
            "radii": {},
        }
        results["agents"][agent] = entry
        for radius in args.radii:
            if f"{agent}:{radius:g}" in skip or f"{agent}:{radius}" in skip:
                continue
            start = time.perf_counter()
            case = solve_case(model, states, radius, args)
            case["wall_s"] = time.perf_counter() - start
            case["summary"] = summarize(case, args)
            entry["radii"][f"{radius:g}"] = case
            s = case["summary"]
            print(
                f"{agent} r={radius:g}: solved {s['solved']}/{s['states']}, "
                f"median {s['solve_time_median']:.2f} s, violations {s['violations']}",
                flush=True,
            )
            runs.write_results(run_dir / "results.partial.json", results)
    runs.write_results(run_dir / "results.json", results)
    (run_dir / "results.partial.json").unlink(missing_ok=True)
    plot(results, args.methods, run_dir / "certify_refine.png")
    runs.finish(run_dir, table(results, args.methods))
    bad = {
        f"{agent} r={radius}": case["summary"]["violations"]
        for agent, entry in results["agents"].items()
        for radius, case in entry["radii"].items()
        if any(case["summary"]["violations"].values())
    }
    if bad:
        print(f"SOUNDNESS VIOLATIONS: {bad}", file=sys.stderr)
        raise SystemExit(1)
    return results


if __name__ == "__main__":
    main()
