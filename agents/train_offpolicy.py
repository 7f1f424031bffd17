"""Train an SB3 off-policy agent (TD3 or SAC) on a control task and write its model card.

One experiment per run, CleanRL style: hyper-parameters come from
``agents/hyperparams.py``; the trained agent is saved to ``agents/zoo/<algo>_<env>.zip``
(no replay buffer) with ``<algo>_<env>.md``, its clean return over ``--eval-episodes``
episodes (mean, std, bootstrap 95% CI), the command, seed, steps and wall time.
A learning curve (``--eval-freq``, 5 episodes each) is saved beside it as PNG + JSON.
The latest checkpoint (model, and the replay buffer unless ``--no-replay-buffer``) is
kept in ``runs/<run name>/`` every ``--checkpoint-freq`` steps; ``--resume PATH``
continues from one. ``--max-minutes`` stops training on a wall-clock budget (the agent
is evaluated and shipped as it is; the card says how many steps it got).

``--refine-method adr`` trains with refined exploration (``adr_rl/exploration.py``, the ADR
paper's deep-RL experiment): after ``--refine-warmup`` steps, each exploration action is
replaced, with probability ``--refine-probability``, by the action the optimizer finds for
the critic. The agent is then saved as ``<algo>_<env>_refine-<method>.zip`` (still a plain
SB3 zip: ``TD3.load`` reads it), and its card and learning curve record the settings.

    python -m adr_rl_app.agents.train_offpolicy --algo td3 --env Pendulum-v1 --seed 0
    python -m adr_rl_app.agents.train_offpolicy --algo td3 --env Pendulum-v1 --refine-method adr \
        --refine-probability 0.25 --refine-warmup 5000 --refine-steps 100
"""

from __future__ import annotations

import json
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from stable_baselines3 import SAC, TD3  # noqa: E402
from stable_baselines3.common.callbacks import (  # noqa: E402
    BaseCallback,
    CallbackList,
    EvalCallback,
)
from stable_baselines3.common.evaluation import evaluate_policy  # noqa: E402
from stable_baselines3.common.noise import NormalActionNoise  # noqa: E402

from adr_rl.exploration import ExplorationRefinement, refined_algorithm  # noqa: E402
from adr_rl_app.agents.callbacks import LatestCheckpointCallback, TimeLimitCallback, TqdmCallback  # noqa: E402
from adr_rl_app.agents.hyperparams import REFERENCE_SCORES, hyperparams  # noqa: E402
from adr_rl_app.envs.control import make_control_env  # noqa: E402
from adr_rl_app.eval import cli  # noqa: E402
from adr_rl_app.eval.stats import bootstrap_mean_ci  # noqa: E402

ALGOS = {"td3": TD3, "sac": SAC}
# The refinement flags' defaults are the library's (the paper's TD3 experiment).
_REFINE = ExplorationRefinement()


@dataclass
class Args:
    algo: str = "td3"
    """td3 or sac."""
    env: str = "Pendulum-v1"
    """Gymnasium env id with hyper-parameters in agents/hyperparams.py."""
    seed: int = 0
    """Seed of the agent and the training env."""
    total_timesteps: int = 0
    """Override the config's n_timesteps (0: use the config)."""
    eval_episodes: int = 20
    """Episodes of the clean (deterministic) evaluation in the model card."""
    eval_seed: int = 1000
    """Seed of the evaluation env (disjoint from training)."""
    threads: int = 1
    """torch threads."""
    device: str = "auto"
    """torch device of the networks: auto (CUDA when present), cpu, cuda."""
    max_minutes: float = 0.0
    """Stop training after this many minutes of wall time (0: no limit)."""
    eval_freq: int = 10_000
    """Steps between the learning curve's evaluations (5 episodes each; 0: none)."""
    checkpoint_freq: int = 50_000
    """Steps between (over-)writes of the latest checkpoint under runs/."""
    no_replay_buffer: bool = False
    """Do not save the replay buffer with the checkpoints (it can be large)."""
    resume: str = ""
    """Checkpoint zip to continue from (its replay buffer is loaded when present)."""
    out: str = "agents/zoo"
    """Folder of the shipped agent and its model card."""
    refine_method: str = ""
    """Refined exploration with this adr_rl.maximize method (adr, gd, adr_sync, ...);
    empty or none: plain training."""
    refine_probability: float = _REFINE.probability
    """Chance per env step that the exploration action is refined (paper: 0.1-0.25)."""
    refine_warmup: int = _REFINE.warmup
    """Env steps before the first refinement (also waits for learning_starts)."""
    refine_steps: int = _REFINE.steps
    """Optimizer iterations per refinement (paper: 100)."""
    refine_evaluations: int = 0
    """Critic passes per refinement instead of --refine-steps (0: use the steps)."""
    refine_radius: float = _REFINE.radius
    """Trust-region half-width around the exploration action, scaled space (2: the box)."""
    refine_critic: Literal["target", "online"] = _REFINE.critic
    """Critic refined against: target (paper) or online."""
    refine_q: Literal["q1", "min", "mean"] = _REFINE.q
    """Q network(s): q1 (paper), min or mean."""


def parse_args(argv: list[str] | None = None) -> Args:
    return cli.parse_args(Args, __doc__, argv)


def refinement_of(args: Args) -> ExplorationRefinement | None:
    """The refinement settings the flags ask for (``None``: plain training); seeded with
    ``--seed``."""
    if args.refine_method.lower() in ("", "none"):
        return None
    try:
        return ExplorationRefinement(
            method=args.refine_method,
            probability=args.refine_probability,
            warmup=args.refine_warmup,
            steps=args.refine_steps,
            evaluations=args.refine_evaluations or None,
            radius=args.refine_radius,
            critic=args.refine_critic,
            q=args.refine_q,
            seed=args.seed,
        )
    except ValueError as exc:
        raise SystemExit(f"--refine-*: {exc}") from None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.algo not in ALGOS:
        raise SystemExit(f"--algo must be one of {sorted(ALGOS)}, got {args.algo!r}")
    refinement = refinement_of(args)
    torch.set_num_threads(args.threads)
    config = hyperparams(args.algo, args.env)
    steps = args.total_timesteps or config.pop("n_timesteps")
    config.pop("n_timesteps", None)
    noise_std = config.pop("noise_std", None)
    env = make_control_env(args.env, seed=args.seed)
    if noise_std is not None:
        dim = env.action_space.shape[0]
        config["action_noise"] = NormalActionNoise(np.zeros(dim), noise_std * np.ones(dim))
    variant = args.algo if refinement is None else f"{args.algo}-refine-{refinement.method}"
    run = f"{args.env}__{variant}__{args.seed}__{int(time.time())}"
    algo = ALGOS[args.algo] if refinement is None else refined_algorithm(args.algo)
    extra = {} if refinement is None else {"refinement": refinement}
    if args.resume:
        model = algo.load(args.resume, env=env, device=args.device, **extra)
        buffer = Path(args.resume).with_name(Path(args.resume).stem + "_replay_buffer.pkl")
        if buffer.exists():
            model.load_replay_buffer(buffer)
    else:
        model = algo(
            "MlpPolicy", env, seed=args.seed, verbose=0, device=args.device, **config, **extra
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{args.algo}_{args.env}" + (
        "" if refinement is None else f"_refine-{refinement.method}"
    )
    checkpoint = LatestCheckpointCallback(
        Path("runs") / run / "latest.zip",
        args.checkpoint_freq,
        save_replay_buffer=not args.no_replay_buffer,
    )
    callbacks: list[BaseCallback] = [checkpoint]
    if args.eval_freq > 0:
        curve_env = make_control_env(args.env, seed=args.eval_seed + 1)
        callbacks.append(
            EvalCallback(
                curve_env,
                n_eval_episodes=5,
                eval_freq=args.eval_freq,
                log_path=str(Path("runs") / run),
                deterministic=True,
                verbose=0,
            )
        )
    if args.max_minutes > 0:
        callbacks.append(TimeLimitCallback(args.max_minutes * 60.0))
    total = model.num_timesteps + steps if args.resume else steps
    callbacks.append(TqdmCallback(total))
    start = time.time()
    model.learn(steps, callback=CallbackList(callbacks), reset_num_timesteps=not args.resume)
    wall = time.time() - start
    checkpoint.save(model)  # the final state, for --resume

    eval_env = make_control_env(args.env, seed=args.eval_seed)
    returns, lengths = evaluate_policy(
        model,
        eval_env,
        n_eval_episodes=args.eval_episodes,
        deterministic=True,
        return_episode_rewards=True,
    )
    returns = np.asarray(returns, dtype=float)
    lo, hi = bootstrap_mean_ci(returns)
    model.save(out / name, exclude=["replay_buffer"])
    refine_card = _refinement_card(model, refinement, wall)
    curve = _save_learning_curve(Path("runs") / run / "evaluations.npz", out / name, refine_card)
    card = {
        "algo": args.algo,
        "env": args.env,
        "seed": args.seed,
        "env_steps": int(model.num_timesteps),
        "wall_time_s": wall,
        "planned_steps": int(total),
        "stopped_by_time_limit": bool(model.num_timesteps < total),
        "device": _describe_device(model.device, args.threads),
        "command": "python -m adr_rl_app.agents.train_offpolicy " + shlex.join(sys.argv[1:]),
        "hyperparams": {
            k: getattr(v, "__qualname__", str(v))
            for k, v in hyperparams(args.algo, args.env).items()
        },
        "refinement": refine_card,
        "learning_curve": curve,
        "eval": {
            "episodes": args.eval_episodes,
            "seed": args.eval_seed,
            "deterministic": True,
            "returns": returns.tolist(),
            "mean": float(returns.mean()),
            "std": float(returns.std()),
            "ci95": [lo, hi],
        },
    }
    (out / f"{name}.json").write_text(json.dumps(card, indent=1))
    (out / f"{name}.md").write_text(
        f"# {args.algo.upper()} on {args.env}: `{name}.zip`\n\n"
        f"| | |\n|---|---|\n"
        f"| command | `{card['command']}` |\n| seed | {args.seed} |\n"
        f"| env steps | {card['env_steps']:,} of the planned {total:,}"
        f"{' (stopped by the wall-time budget)' if card['stopped_by_time_limit'] else ''} |\n"
        f"| wall time | {wall / 60:.1f} min |\n"
        f"| device | {card['device']} |\n"
        "| hyper-parameters | `agents/hyperparams.py` (rl-zoo3) |\n"
        f"| refined exploration | {_describe_refinement(refine_card)} |\n\n"
        f"Clean return over {args.eval_episodes} episodes (deterministic actor, eval seed "
        f"{args.eval_seed}): **{returns.mean():.1f}** +/- {returns.std():.1f} (std), "
        f"95% bootstrap CI [{lo:.1f}, {hi:.1f}].\n\n"
        f"Reference: {REFERENCE_SCORES.get((args.algo, args.env), 'none recorded')}.\n"
        + (f"\n![learning curve]({name}_learning_curve.png)\n" if curve else "")
    )
    print(
        json.dumps(card["eval"] | {"env_steps": card["env_steps"], "wall_time_s": wall}, indent=1)
    )


def _describe_device(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, {threads} torch CPU thread(s)"
    return f"CPU ({platform.machine()}), {threads} torch thread(s)"


def _refinement_card(model: Any, refinement: ExplorationRefinement | None, wall: float) -> dict:
    """The refinement settings and what they cost, for the card and the curve's JSON."""
    if refinement is None:
        return {"enabled": False}
    stats = model.refinement_stats
    return {
        "enabled": True,
        "settings": refinement.as_dict(),
        "eligible_steps": stats.eligible,
        "refined_actions": stats.refined,
        "share": stats.share,
        "mean_q_gain": stats.mean_q_gain,
        "seconds": stats.seconds,
        "share_of_wall_time": stats.seconds / wall if wall > 0 else 0.0,
        # The counts are not saved with checkpoints: after --resume, this invocation's.
        "counted_over": "this invocation",
    }


def _describe_refinement(card: dict) -> str:
    if not card["enabled"]:
        return "none (plain training)"
    s = card["settings"]
    return (
        f"`{s['method']}`, probability {s['probability']}, after {s['warmup']:,} steps, "
        f"{s['n_steps']} steps ({s['critic_evaluations']} critic passes), radius "
        f"{s['radius']}, {s['critic']} critic {s['q']}; {card['refined_actions']:,} actions "
        f"refined ({100 * card['share']:.1f}% of eligible steps), mean Q gain "
        f"{card['mean_q_gain']:.3g}, {card['seconds']:.0f} s refining"
    )


def _save_learning_curve(npz: Path, stem: Path, refinement: dict | None = None) -> dict | None:
    """Plot EvalCallback's curve (mean and std over its 5 episodes) to ``<stem>_learning_curve``
    (PNG, and JSON with the refinement settings)."""
    if not npz.exists():
        return None
    data = np.load(npz)
    steps, results = data["timesteps"], data["results"]
    mean, std = results.mean(axis=1), results.std(axis=1)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(steps, mean)
    ax.fill_between(steps, mean - std, mean + std, alpha=0.3)
    ax.set_xlabel("env steps")
    ax.set_ylabel("return (5 episodes, deterministic)")
    ax.set_title(stem.name)
    fig.tight_layout()
    fig.savefig(stem.with_name(stem.name + "_learning_curve.png"), dpi=100)
    plt.close(fig)
    curve = {
        "timesteps": steps.tolist(),
        "mean": mean.tolist(),
        "std": std.tolist(),
        "refinement": refinement,
    }
    (stem.with_name(stem.name + "_learning_curve.json")).write_text(json.dumps(curve))
    return {"points": len(steps), "file": stem.name + "_learning_curve.json"}


if __name__ == "__main__":
    main()
