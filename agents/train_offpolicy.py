"""Train an SB3 off-policy agent (TD3 or SAC) on a control task and write its model card.

One experiment per run, CleanRL style: hyper-parameters come from
``agents/hyperparams.py``; the trained agent is saved to ``agents/zoo/<algo>_<env>.zip``
(no replay buffer) with ``<algo>_<env>.md``, its clean return over ``--eval-episodes``
episodes (mean, std, bootstrap 95% CI), the command, seed, steps and wall time.
Checkpoints (model + replay buffer) go to ``runs/<run name>/`` every
``--checkpoint-freq`` steps; ``--resume PATH`` continues from one.

    python -m agents.train_offpolicy --algo td3 --env Pendulum-v1 --seed 0
"""

from __future__ import annotations

import json
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import SAC, TD3
from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.noise import NormalActionNoise

from agents.callbacks import TqdmCallback
from agents.hyperparams import REFERENCE_SCORES, hyperparams
from eval import cli
from eval.stats import bootstrap_mean_ci

ALGOS = {"td3": TD3, "sac": SAC}


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
    checkpoint_freq: int = 10_000
    """Steps between checkpoints under runs/."""
    resume: str = ""
    """Checkpoint zip to continue from (its replay buffer is loaded when present)."""
    out: str = "agents/zoo"
    """Folder of the shipped agent and its model card."""


def parse_args() -> Args:
    return cli.parse_args(Args, __doc__)


def main() -> None:
    args = parse_args()
    assert args.algo in ALGOS, f"--algo must be one of {sorted(ALGOS)}"
    torch.set_num_threads(args.threads)
    config = hyperparams(args.algo, args.env)
    steps = args.total_timesteps or config.pop("n_timesteps")
    config.pop("n_timesteps", None)
    noise_std = config.pop("noise_std", None)
    env = gym.make(args.env)
    env.reset(seed=args.seed)
    if noise_std is not None:
        dim = env.action_space.shape[0]
        config["action_noise"] = NormalActionNoise(np.zeros(dim), noise_std * np.ones(dim))
    run = f"{args.env}__{args.algo}__{args.seed}__{int(time.time())}"
    algo = ALGOS[args.algo]
    if args.resume:
        model = algo.load(args.resume, env=env)
        buffer = Path(args.resume).with_name(
            Path(args.resume).stem.replace("model", "replay_buffer") + ".pkl"
        )
        if buffer.exists():
            model.load_replay_buffer(buffer)
    else:
        model = algo("MlpPolicy", env, seed=args.seed, verbose=0, device="cpu", **config)
    checkpoints = CheckpointCallback(
        args.checkpoint_freq, f"runs/{run}", name_prefix="model", save_replay_buffer=True
    )
    total = model.num_timesteps + steps if args.resume else steps
    start = time.time()
    model.learn(
        steps,
        callback=CallbackList([checkpoints, TqdmCallback(total)]),
        reset_num_timesteps=not args.resume,
    )
    wall = time.time() - start

    eval_env = gym.make(args.env)
    eval_env.reset(seed=args.eval_seed)
    returns, lengths = evaluate_policy(
        model,
        eval_env,
        n_eval_episodes=args.eval_episodes,
        deterministic=True,
        return_episode_rewards=True,
    )
    returns = np.asarray(returns, dtype=float)
    lo, hi = bootstrap_mean_ci(returns)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{args.algo}_{args.env}"
    model.save(out / name)
    card = {
        "algo": args.algo,
        "env": args.env,
        "seed": args.seed,
        "env_steps": int(model.num_timesteps),
        "wall_time_s": wall,
        "device": f"CPU ({platform.machine()}), {args.threads} torch thread(s)",
        "command": "python -m agents.train_offpolicy " + shlex.join(sys.argv[1:]),
        "hyperparams": {k: str(v) for k, v in hyperparams(args.algo, args.env).items()},
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
        f"| env steps | {card['env_steps']:,} |\n| wall time | {wall / 60:.1f} min |\n"
        f"| device | {card['device']} |\n"
        "| hyper-parameters | `agents/hyperparams.py` (rl-zoo3) |\n\n"
        f"Clean return over {args.eval_episodes} episodes (deterministic actor, eval seed "
        f"{args.eval_seed}): **{returns.mean():.1f}** +/- {returns.std():.1f} (std), "
        f"95% bootstrap CI [{lo:.1f}, {hi:.1f}].\n\n"
        f"Reference: {REFERENCE_SCORES.get((args.algo, args.env), 'none recorded')}.\n"
    )
    print(
        json.dumps(card["eval"] | {"env_steps": card["env_steps"], "wall_time_s": wall}, indent=1)
    )


if __name__ == "__main__":
    main()
