"""Action refinement on any SB3 off-policy agent, shared by ``adr-rl refine`` and the demo.

Loads a user's TD3, SAC, DDPG (stable-baselines3) or TQC (sb3-contrib) zip, checks it
against the env, and plays the same episodes with the actor's own action and with each
refinement method (the critic's ``Q(s, a)`` maximized over ``[a - r, a + r]`` in SB3's
scaled action space). Episode ``i`` of seed ``s`` runs in an env seeded ``1000 s + i``,
so every method sees the same starts. Reports the mean return with a bootstrap 95% CI
over episodes, per-seed means, the critic's gain per step and the time per call.

Writes ``results.json``, ``returns.png`` and ``summary.md`` to the run folder.

    adr-rl refine agents/zoo/td3_Pendulum-v1.zip --env Pendulum-v1 --method adr gd
    python -m adr_rl_app.eval.refine_model agents/zoo/td3_Pendulum-v1.zip --env Pendulum-v1
"""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import tyro

from adr_rl.optim.configs import COMPILED_METHODS, EXACT_METHODS, METHODS, network_evaluations
from adr_rl_app.eval import runs
from adr_rl_app.eval.errors import UserError
from adr_rl_app.eval.stats import warn_if_few_episodes

if TYPE_CHECKING:
    from adr_rl import ActionRefiner

# torch, SB3, Gymnasium and matplotlib load inside the functions that need them, after
# the flags have been checked, so a mistake is reported in well under a second.


@dataclass
class Args:
    model: tyro.conf.Positional[str]
    """SB3 model .zip: TD3, SAC, DDPG or TQC"""
    env: Annotated[str, tyro.conf.arg(help_behavior_hint="(required)")] = ""
    """Gymnasium env id the agent acts in, e.g. Pendulum-v1"""
    method: list[str] = field(default_factory=lambda: ["adr"])
    """refinement methods, each compared with the actor's own action: adr, adr_sync, gd,
    pgd, apgd, fgsm, adam, restart_gd, perturbed_gd, cem, random, or milp (the certified
    maximum)"""
    radius: float = 0.25
    """trust-region half-width in SB3's scaled action space [-1, 1]"""
    steps: int = 30
    """optimizer steps per refinement (ignored when --budget is set)"""
    budget: int = 0
    """critic evaluations per refinement, the same for every method (0: use --steps)"""
    critic: str = "min"
    """critic to maximize: min (of the twin Qs), q1 or mean"""
    episodes: int = 10
    """episodes per seed, played side by side (one batched refinement per env step)"""
    seeds: list[int] = field(default_factory=lambda: [0])
    """evaluation seeds (episode i of seed s: env seed 1000 * s + i); also the optimizer's"""
    max_episode_steps: int = 0
    """cap on an episode's length (0: the env's own limit)"""
    device: str = "auto"
    """torch device: auto (CUDA when present), cpu or cuda"""
    threads: int = 0
    """torch threads on CPU (0: the optimizer runs small problems on 1 thread and leaves
    torch's setting otherwise)"""
    compile: bool = False
    """run each optimizer iteration as one torch.compile'd graph (adr, adr_sync, gd, pgd;
    needs a C++ compiler on CPU): the first refinement compiles, the rest are faster"""
    out: str = ""
    """output folder (default: a new runs/refine-<time>/)"""


def check_args(args: Args) -> None:
    """Everything that can be wrong with the request, before any episode is played."""
    if not args.env:
        raise UserError("--env is required: the Gymnasium env id the agent acts in")
    from adr_rl_app.eval.loading import check_env_id

    check_env_id(args.env)
    for method in args.method:
        if method != "none" and method not in (*METHODS, *EXACT_METHODS):
            choices = ", ".join((*METHODS, *EXACT_METHODS))
            raise UserError(f"--method {method!r} is unknown; choose from {choices}")
        if args.compile and method not in ("none", *COMPILED_METHODS):
            raise UserError(
                f"--compile supports {', '.join(COMPILED_METHODS)}; --method {method!r} runs "
                "without it, drop one of the two"
            )
    if not args.radius > 0:
        raise UserError(f"--radius must be > 0, got {args.radius}")
    if args.steps < 1 or args.budget < 0:
        raise UserError("--steps must be >= 1 and --budget >= 0")
    if args.episodes < 1 or not args.seeds:
        raise UserError("--episodes must be >= 1 and --seeds non-empty")
    if args.critic not in ("min", "q1", "mean"):
        raise UserError(f"--critic must be min, q1 or mean, got {args.critic!r}")


def steps_of(method: str, args: Args) -> int:
    """Optimizer steps: ``--steps``, or as many as fit in ``--budget`` evaluations."""
    if method == "none" or method in EXACT_METHODS:
        return 0  # an exact solve has no step budget
    if not args.budget:
        return args.steps
    steps = args.budget // network_evaluations(method, 1)
    if steps < 1:
        raise UserError(f"--budget {args.budget} is below one {method} step")
    return steps


def load_checked(args: Args, device: str) -> Any:
    """The user's model, refused unless its spaces are the env's."""
    from adr_rl_app.envs.control import make_control_env
    from adr_rl_app.eval.loading import OFF_POLICY, check_spaces, load_model

    model = load_model(args.model, OFF_POLICY, device, "refinement needs a critic Q(s, a):")
    try:
        env = make_control_env(args.env)
    except ImportError as exc:
        raise UserError(str(exc)) from exc
    try:
        check_spaces(model, env.observation_space, env.action_space, args.env)
    finally:
        env.close()
    return model


def prepare(args: Args) -> tuple[str, Any]:
    """Check the request, pick the device and threads, load the model: ``(device, model)``."""
    check_args(args)
    from adr_rl_app.eval.loading import resolve_device_and_threads

    device = resolve_device_and_threads(args.device, args.threads)
    model = load_checked(args, device)
    warn_if_few_episodes(args.episodes * len(args.seeds), "method")
    return device, model


def make_refiner(model: Any, method: str, args: Args) -> ActionRefiner:
    """``method`` at ``--radius`` and its steps, seeded with the first seed."""
    from adr_rl import ActionRefiner

    return ActionRefiner(
        model,
        method=method,
        radius=args.radius,
        steps=steps_of(method, args),
        critic=args.critic,  # type: ignore[arg-type]
        seed=args.seeds[0],
        compile=args.compile,
    )


def evaluate(args: Args) -> dict[str, Any]:
    """Unrefined and refined returns on the same episodes; no files written."""
    device, model = prepare(args)
    import torch

    from adr_rl.machine import machine_info
    from adr_rl_app.eval.control_rollouts import rollout, summarize

    methods = ["none"] + [m for m in dict.fromkeys(args.method) if m != "none"]
    rows = []
    for method in methods:
        refiner = make_refiner(model, method, args)
        run = rollout(refiner, args.env, args.seeds, args.episodes, args.max_episode_steps)
        row = summarize(refiner, 0.0 if method == "none" else args.radius, run)
        rows.append(row)
        lo, hi = row["ci95_low"], row["ci95_high"]
        print(
            f"{method:>12}: return {row['mean_return']:9.2f} [{lo:.2f}, {hi:.2f}] "
            f"Q gain/step {row['q_gain_per_step']:.4f}"
        )
    return {
        "config": dataclasses.asdict(args) | {"device": device},
        "algorithm": type(model).__name__.lower(),
        "env": args.env,
        "platform": f"{platform.machine()}, torch {torch.__version__}, {device}",
        "machine": machine_info(),
        "rows": rows,
    }


def table(results: dict[str, Any]) -> str:
    """Markdown: one row per method, the unrefined actor first."""
    base = results["rows"][0]["mean_return"]
    lines = [
        f"Refinement of {results['algorithm'].upper()} on {results['env']} "
        f"({results['rows'][0]['n_episodes']} episodes per method)",
        "",
        "| method | radius | steps | return [95% CI] | vs actor | Q gain/step | ms/call |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lo, hi = row["ci95_low"], row["ci95_high"]
        lines.append(
            f"| {row['method']} | {row['radius']:g} | {row['optimizer_steps']} | "
            f"{row['mean_return']:.2f} [{lo:.2f}, {hi:.2f}] | "
            f"{row['mean_return'] - base:+.2f} | {row['q_gain_per_step']:.4f} | "
            f"{row['ms_per_call']:.1f} |"
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Mean return with its 95% CI per method; the dashed line is the actor's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(rows), 3.4))
    for i, row in enumerate(rows):
        lo, hi = row["ci95_low"], row["ci95_high"]
        mean = row["mean_return"]
        ax.errorbar(i, mean, yerr=[[mean - lo], [hi - mean]], fmt="o", capsize=4)
    ax.axhline(rows[0]["mean_return"], color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(rows)), [r["method"] for r in rows])
    ax.set_ylabel("episode return (95% CI)")
    ax.set_title(
        f"{results['algorithm'].upper()} {results['env']}, radius {results['config']['radius']:g}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: Args) -> dict[str, Any]:
    """``adr-rl refine``: evaluate, then write the run folder and print the table."""
    results = evaluate(args)
    runs.write_run(args.out, "refine", results, table(results), {"returns.png": plot})
    return results


def sweep_job(params: dict[str, Any]) -> dict[str, Any]:
    """One cell of ``adr-rl sweep``: one method at one radius and seed.

    ``params``: model, env, method, radius, steps, episodes, seed, device (optional:
    budget, critic, max_episode_steps). ``metric`` is the method's mean return.
    """
    params = dict(params)
    method, seed = params.pop("method"), int(params.pop("seed"))
    args = Args(method=[method], seeds=[seed], threads=1, **params)
    _, model = prepare(args)
    from adr_rl_app.eval.control_rollouts import rollout, summarize

    refiner = make_refiner(model, method, args)
    run_ = rollout(refiner, args.env, [seed], args.episodes, args.max_episode_steps)
    row = summarize(refiner, args.radius, run_)
    return {"metric": row["mean_return"], **row}
