"""Does critic-guided action refinement pay on the shipped control agents?

For each agent, method and trust-region radius, roll the refined policy out and record
the episode return, the critic's Q gain per step, how often the refined action differs
from the actor's, and the wall time per step. Every method gets the same number of
critic evaluations per refinement (``--budget``; :func:`adr_rl.network_evaluations`
counts them), so the comparison is about where the evaluations go, not how many.

Episodes: ``--episodes`` per seed, all seeds' episodes side by side in one
``DummyVecEnv`` (one batched refinement per step for all of them: ADR's cost per call
hardly grows with the batch), episode ``i`` of seed ``s`` in an env seeded
``1000 * s + i``; the optimizer is seeded with ``--optimizer-seed``. Returns are
reported with a percentile-bootstrap 95% CI over all episodes, and per seed.

On 1-D action spaces (Pendulum-v1) it also measures how much of the achievable Q gain
each method captures: on states visited by the unrefined actor, the critic's maximum
over the trust region is found by a dense grid, and each method's Q is compared to it.

Writes ``<out>/results.json`` and ``<out>/returns.png``; prints a markdown table.

    python -m adr_rl_app.eval.refine_control   # all shipped agents (long: see docs/refinement.md)
    python -m adr_rl_app.eval.refine_control --quick          # smoke run

Shards (e.g. one agent x method x radius per process, on a many-core machine) are
combined with ``--merge a/results.json b/results.json ... --out DIR``.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from adr_rl import ActionRefiner, CEMConfig, MILPConfig, network_evaluations  # noqa: E402
from adr_rl.optim import EXACT_METHODS  # noqa: E402
from adr_rl_app.envs.control import make_control_vec_env  # noqa: E402
from adr_rl_app.eval import cli  # noqa: E402
from adr_rl_app.eval.control_rollouts import env_seeds, rollout, summarize
from adr_rl_app.eval.errors import UserError  # noqa: E402
from adr_rl_app.eval.loading import CONTROL_AGENTS, OFF_POLICY, load_model, zoo_path  # noqa: E402
from adr_rl_app.eval.runs import write_results  # noqa: E402
from adr_rl_app.eval.stats import bootstrap_mean_ci  # noqa: E402


@dataclass
class Args:
    agents: list[str] = field(default_factory=lambda: list(CONTROL_AGENTS))
    """Shipped agents, ``<algo>_<env id>`` in --zoo."""
    zoo: str = ""
    """Folder of the agents' zips (default: the shipped agents/zoo, wherever this runs)."""
    methods: list[str] = field(
        default_factory=lambda: ["none", "gd", "adam", "cem", "adr", "adr_sync"]
    )
    """Refinement methods ("none": the actor's action; "milp": the critic's exact maximum
    per state, CAQL-style, outside the evaluation budget)."""
    radii: list[float] = field(default_factory=lambda: [0.1, 0.25, 1.0])
    """Trust-region half-widths in the scaled action space [-1, 1]."""
    budget: int = 90
    """Critic evaluations per refinement, the same for every method."""
    cem_population: int = 30
    """CEM samples per iteration (budget // population iterations)."""
    milp_time_limit: float = 10.0
    """Seconds per state for ``milp`` (docs/certify.md: 200/200 states solved within 10 s
    for Pendulum, LunarLander and HalfCheetah at radius 0.1)."""
    critic: str = "min"
    """Critic to maximize: min (of the twin Qs), q1 or mean."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    """Evaluation seeds of the envs (episode i of seed s: env seed 1000 * s + i)."""
    optimizer_seed: int = 0
    """Seed of the refinement optimizer (ADR noise, CEM samples)."""
    episodes: int = 10
    """Episodes per seed (run as parallel envs)."""
    max_episode_steps: int = 0
    """Cap on episode length (0: the env's own limit)."""
    q_gap_states: int = 500
    """States for the dense-grid Q-gap measurement on 1-D action spaces (0: skip)."""
    q_gap_grid: int = 2001
    """Grid points over the trust region for the Q-gap measurement."""
    device: str = "cpu"
    """torch device of the agents."""
    threads: int = 1
    """torch threads."""
    out: str = "results/refine_control"
    """Output folder."""
    quick: bool = False
    """Smoke run: Pendulum TD3, 2 seeds x 2 episodes of 50 steps, radius 0.25."""
    merge: list[str] = field(default_factory=list)
    """Combine these shards' results.json files instead of evaluating."""


def parse_args(argv: list[str] | None = None) -> Args:
    args = cli.parse_args(Args, __doc__, argv)
    if args.quick:
        args.agents, args.seeds, args.episodes = ["td3_Pendulum-v1"], [0, 1], 2
        args.radii, args.max_episode_steps, args.q_gap_states = [0.25], 50, 64
        if args.out == Args.out:
            args.out = "runs/refine_control_quick"
    return args


def steps_for_budget(method: str, budget: int, cem: CEMConfig) -> int:
    """Most optimizer steps whose critic evaluations fit in ``budget`` (0 for the actor
    and for ``milp``, which solves each state exactly instead of iterating)."""
    if method == "none" or method in EXACT_METHODS:
        return 0
    per_step = network_evaluations(method, 1, cem if method == "cem" else None)
    steps = budget // per_step
    if steps < 1:
        raise ValueError(f"budget {budget} is below one {method} step ({per_step} evaluations)")
    return steps


def load_agent(name: str, zoo: str, device: str) -> tuple[Any, str]:
    """The agent ``<algo>_<env id>`` from ``--zoo`` (default: the shipped zoo) and its env id."""
    algo, _, env_id = name.partition("_")
    if algo not in OFF_POLICY:
        raise UserError(f"agent {name!r}: algorithm must be one of {', '.join(OFF_POLICY)}")
    path = Path(zoo) / f"{name}.zip" if zoo else zoo_path(name)
    return load_model(path, allowed=OFF_POLICY, device=device), env_id


def cem_config(args: Args) -> CEMConfig:
    """CEM at ``--cem-population`` samples, the best tenth as elites."""
    return CEMConfig(population=args.cem_population, elites=max(1, args.cem_population // 10))


def make_refiner(model: Any, method: str, radius: float, args: Args) -> ActionRefiner:
    cem = cem_config(args)
    return ActionRefiner(
        model,
        method=method,
        radius=radius,
        steps=steps_for_budget(method, args.budget, cem),
        critic=args.critic,  # type: ignore[arg-type]
        seed=args.optimizer_seed,
        config=cem if method == "cem" else milp_config(args) if method == "milp" else None,
    )


def milp_config(args: Args) -> MILPConfig:
    """The exact maximum per state, ``--milp-time-limit`` seconds each (past it, the best
    point found so far is the action)."""
    return MILPConfig(time_limit=args.milp_time_limit)


def visited_states(model: Any, env_id: str, args: Args) -> np.ndarray:
    """Observations of the unrefined actor's episodes (first seed), subsampled."""
    refiner = ActionRefiner(model, method="none")
    env = make_control_vec_env(env_id, seeds=env_seeds(args.seeds, args.episodes)[: args.episodes])
    obs, states = env.reset(), []
    for _ in range(args.max_episode_steps or env.envs[0].spec.max_episode_steps or 1000):
        states.append(obs)
        obs, _, dones, _ = env.step(refiner.predict(obs)[0])
        if dones.all():
            break
    states_arr = np.concatenate(states)
    rng = np.random.default_rng(0)
    keep = rng.choice(len(states_arr), min(args.q_gap_states, len(states_arr)), replace=False)
    return states_arr[np.sort(keep)]


def q_gap(model: Any, states: np.ndarray, radius: float, args: Args) -> dict[str, Any]:
    """Share of the dense-grid Q gain over the trust region each method captures (1-D)."""
    base = ActionRefiner(model, method="none", critic=args.critic)  # type: ignore[arg-type]
    obs, _ = base.policy.obs_to_tensor(states)
    actor, info = base.refine(obs)
    a0 = actor.reshape(-1)
    offsets = torch.linspace(-radius, radius, args.q_gap_grid, device=a0.device)
    grid = (a0[:, None] + offsets[None, :]).clamp(-1.0, 1.0)  # (S, G)
    q_grid = torch.stack(
        [base.q_values(obs, grid[:, g : g + 1]) for g in range(grid.shape[1])], dim=1
    )
    q_max = torch.maximum(q_grid.max(dim=1).values, torch.as_tensor(info.q_actor)).numpy()
    achievable = q_max - info.q_actor
    rows: dict[str, Any] = {"mean_achievable_gain": float(achievable.mean())}
    for method in args.methods:
        if method == "none":
            continue
        refiner = make_refiner(model, method, radius, args)
        _, r = refiner.refine(obs)
        captured = np.where(achievable > 1e-6, r.q_gain / np.maximum(achievable, 1e-12), 1.0)
        rows[method] = {
            "mean_gap_to_grid_max": float((q_max - r.q_refined).mean()),
            "mean_share_captured": float(captured.mean()),
            "share_within_1e-3": float((q_max - r.q_refined <= 1e-3).mean()),
        }
    return rows


def evaluate(args: Args, checkpoint: Path | None = None) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {
        "config": asdict(args),
        "platform": f"{platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)",
        "agents": {},
    }
    jobs = [
        (agent, method, radius)
        for agent in args.agents
        for method in args.methods
        for radius in ([0.0] if method == "none" else args.radii)
    ]
    models = {agent: load_agent(agent, args.zoo, args.device) for agent in args.agents}
    bar = tqdm(total=len(jobs), desc="refine_control", unit="setting")
    for agent in args.agents:
        model, env_id = models[agent]
        rows: list[dict[str, Any]] = []
        for _, method, radius in [j for j in jobs if j[0] == agent]:
            bar.set_postfix_str(f"{agent} {method} r={radius}")
            refiner = make_refiner(model, method, radius or 1.0, args)
            run = rollout(refiner, env_id, args.seeds, args.episodes, args.max_episode_steps)
            rows.append(summarize(refiner, radius, run))
            bar.update()
        entry: dict[str, Any] = {"env": env_id, "rows": rows}
        if model.action_space.shape == (1,) and args.q_gap_states > 0:
            states = visited_states(model, env_id, args)
            entry["q_gap"] = {str(r): q_gap(model, states, r, args) for r in args.radii}
            entry["q_gap_states"] = len(states)
        results["agents"][agent] = entry
        if checkpoint is not None:  # a later agent's failure keeps this one's rows
            write_results(checkpoint, results)
    bar.close()
    return results


def merge(paths: list[str], methods: list[str]) -> dict[str, Any]:
    """One result from shards of the same configuration (rows in method, radius order)."""
    shards = [json.loads(Path(p).read_text()) for p in paths]
    merged: dict[str, Any] = {
        "config": shards[0]["config"] | {"merged_from": len(shards)},
        "platform": shards[0]["platform"],
        "agents": {},
    }
    for shard in shards:
        for agent, entry in shard["agents"].items():
            into = merged["agents"].setdefault(agent, {"env": entry["env"], "rows": []})
            into["rows"] += entry["rows"]
            if "q_gap" in entry:
                into["q_gap_states"] = entry["q_gap_states"]
                for radius, rows in entry["q_gap"].items():
                    into.setdefault("q_gap", {}).setdefault(radius, {}).update(rows)
    order = {m: i for i, m in enumerate(methods)}
    for entry in merged["agents"].values():
        entry["rows"].sort(key=lambda r: (order.get(r["method"], len(order)), r["radius"]))
    merged["config"]["agents"] = list(merged["agents"])
    return merged


def table(results: dict[str, Any]) -> str:
    lines = [
        "| agent | method | radius | return (95% CI) | Q gain/step | changed | ms/call |",
        "|---|---|---|---|---|---|---|",
    ]
    for agent, entry in results["agents"].items():
        for r in entry["rows"]:
            lo, hi = r["ci95_low"], r["ci95_high"]
            radius = "-" if r["method"] == "none" else f"{r['radius']:g}"
            lines.append(
                f"| {agent} | {r['method']} | {radius} | {r['mean_return']:.1f} "
                f"[{lo:.1f}, {hi:.1f}] | {r['q_gain_per_step']:.3f} | "
                f"{r['fraction_changed']:.2f} | {r['ms_per_call']:.1f} |"
            )
    gaps = [(a, e) for a, e in results["agents"].items() if "q_gap" in e]
    if gaps:
        lines += ["", "| agent | radius | method | share of grid gain | gap to grid max |"]
        lines.append("|---|---|---|---|---|")
        for agent, entry in gaps:
            for radius, rows in entry["q_gap"].items():
                for method, g in rows.items():
                    if method == "mean_achievable_gain":
                        continue
                    lines.append(
                        f"| {agent} | {radius} | {method} | {g['mean_share_captured']:.3f} | "
                        f"{g['mean_gap_to_grid_max']:.4f} |"
                    )
    return "\n".join(lines)


def compact_table(results: dict[str, Any]) -> str:
    """Return (mean [95% CI]) per agent x method x radius, the unrefined actor first."""
    radii = sorted({r["radius"] for e in results["agents"].values() for r in e["rows"]} - {0.0})
    head = "| agent | method | " + " | ".join(f"radius {r:g}" for r in radii) + " |"
    lines = [head, "|---|---|" + "---|" * len(radii)]
    for agent, entry in results["agents"].items():
        methods = list(dict.fromkeys(r["method"] for r in entry["rows"]))
        for method in methods:
            cells = []
            for radius in radii:
                row = [
                    r
                    for r in entry["rows"]
                    if r["method"] == method and (method == "none" or r["radius"] == radius)
                ]
                if not row:
                    cells.append("")
                    continue
                lo, hi = row[0]["ci95_low"], row[0]["ci95_high"]
                cells.append(f"{row[0]['mean_return']:.1f} [{lo:.1f}, {hi:.1f}]")
            if method == "none":
                cells = [cells[0]] + ["(same)"] * (len(cells) - 1)
            lines.append(f"| {agent} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(results: dict[str, Any]) -> str:
    """Return change over the unrefined actor on the same episodes, one row per agent
    and radius, one column per method. Every method plays the same env seeds, so episode
    ``i`` of each row starts alike: the cell is the mean difference with a
    percentile-bootstrap 95% CI over the episode pairs."""
    rows_out: dict[tuple[str, float], dict[str, str]] = {}
    methods: list[str] = []
    for agent, entry in results["agents"].items():
        base = next((r for r in entry["rows"] if r["method"] == "none"), None)
        if base is None:
            continue
        for r in entry["rows"]:
            if r["method"] == "none" or len(r["returns"]) != len(base["returns"]):
                continue
            diff = np.asarray(r["returns"]) - np.asarray(base["returns"])
            lo, hi = bootstrap_mean_ci(diff)
            cell = f"{diff.mean():+.2f} [{lo:+.2f}, {hi:+.2f}]"
            rows_out.setdefault((agent, r["radius"]), {})[r["method"]] = cell
            methods += [r["method"]] if r["method"] not in methods else []
    lines = [
        "| agent | radius | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for (agent, radius), cells in rows_out.items():
        lines.append(
            f"| {agent} | {radius:g} | " + " | ".join(cells.get(m, "") for m in methods) + " |"
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    agents = list(results["agents"])
    fig, axes = plt.subplots(1, len(agents), figsize=(4.2 * len(agents), 3.6), squeeze=False)
    for ax, agent in zip(axes[0], agents, strict=True):
        rows = results["agents"][agent]["rows"]
        labels = [
            r["method"] if r["method"] == "none" else f"{r['method']}\n{r['radius']:g}"
            for r in rows
        ]
        means = np.array([r["mean_return"] for r in rows])
        ci = np.array([[r["ci95_low"], r["ci95_high"]] for r in rows])
        colors = [f"C{sorted({r['method'] for r in rows}).index(r['method'])}" for r in rows]
        # Points, not bars: the differences are small next to the returns themselves.
        for i, (m, c) in enumerate(zip(means, colors, strict=True)):
            ax.errorbar(
                i, m, yerr=[[m - ci[i, 0]], [ci[i, 1] - m]], fmt="o", color=c, capsize=2, lw=1
            )
        ax.axhline(rows[0]["mean_return"], color="gray", ls="--", lw=0.8)
        ax.set_xticks(range(len(rows)), labels, fontsize=6, rotation=90)
        ax.set_title(agent, fontsize=9)
        ax.set_ylabel("return (mean, 95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "results.partial.json"
    results = merge(args.merge, args.methods) if args.merge else evaluate(args, partial)
    partial.unlink(missing_ok=True)
    write_results(out / "results.json", results)
    plot(results, out / "returns.png")
    print(table(results))
    print()
    print(compact_table(results))
    print()
    print(paired_table(results))
    print(f"wrote {out / 'results.json'} and {out / 'returns.png'}")
    return results


if __name__ == "__main__":
    main()
