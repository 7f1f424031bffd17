"""Train SB3 PPO on a Procgen game with CleanRL's ``ppo_procgen.py`` hyper-parameters.

Usage (from the repository root)::

    adr-rl train ppo-procgen --env fruitbot --total-timesteps 25000000
    adr-rl train ppo-procgen --env fruitbot --resume runs/<run>/checkpoints/latest.zip

The hyper-parameters follow CleanRL's ``ppo_procgen.py`` (itself Cobbe et al.
2020, Table 2 of "Leveraging Procedural Generation to Benchmark RL"): 64 envs x
256 steps, 3 epochs of 8 minibatches, lr 5e-4 annealed linearly, gamma 0.999,
GAE lambda 0.95, clip 0.2 (policy and value; the value clipped as in baselines, the
larger of the clipped and unclipped errors), entropy 0.01, value 0.5 on half the
squared error (SB3's ``vf_coef`` 0.25), max grad norm 0.5, rewards normalized by a
running std of the discounted return and clipped to [-10, 10]. Training levels are
``envs.procgen.TRAIN_LEVELS`` (levels 0-199, easy mode).

Writes under ``runs/<env>__<exp>__<seed>__<time>/``: TensorBoard events and
``progress.csv`` (SB3 logger), ``monitor.csv`` (every training episode), and
``checkpoints/latest.zip`` + ``checkpoints/latest_vecnormalize.pkl`` every
``--checkpoint-freq`` env steps and at the end, which ``--resume`` continues from.
``kill <pid>`` (SIGTERM) stops a run cleanly: it saves a last checkpoint first.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import VecNormalize

from adr_rl.machine import machine_info
from adr_rl_app.agents.callbacks import LatestCheckpointCallback, TqdmCallback
from adr_rl_app.agents.fast_ppo import (
    RECIPE,
    FastPPO,
    ProcgenRecipe,
    ValueLoss,
    make_procgen_ppo,
)
from adr_rl_app.envs.procgen import TRAIN_LEVELS, make_procgen_vec_env
from adr_rl_app.eval import cli


@dataclass
class Args:
    exp_name: str = "ppo_procgen"
    """name of this experiment, part of the run name"""
    env: str = "coinrun"
    """Procgen game (e.g. coinrun, fruitbot)"""
    extractor: str = "impala"
    """features extractor: impala (IMPALA CNN, Cobbe et al.'s agent) or nature (SB3
    NatureCNN: faster, learns far less on Procgen)"""
    numerics: str = "auto"
    """training numerics: auto (bf16-cl where the device has native bf16, else fp32-cl),
    fp32 (SB3's default), fp32-cl (channels-last), bf16-cl (channels-last + bf16 autocast
    in the extractor); the saved zip is plain fp32 either way"""
    seed: int = 1
    """seed of PyTorch, SB3 and the training level sequence"""
    total_timesteps: int = 25_000_000
    """total env steps, counted across resumes (CleanRL / Cobbe et al.: 25M)"""
    num_envs: int = RECIPE.num_envs
    """number of parallel envs (CleanRL: 64)"""
    num_steps: int = RECIPE.num_steps
    """steps per env per rollout (CleanRL: 256)"""
    learning_rate: float = RECIPE.learning_rate
    """Adam learning rate (CleanRL: 5e-4)"""
    anneal_lr: bool = RECIPE.anneal_lr
    """anneal the learning rate linearly to 0 over total_timesteps (CleanRL: True)"""
    gamma: float = RECIPE.gamma
    """discount factor (CleanRL: 0.999)"""
    gae_lambda: float = RECIPE.gae_lambda
    """GAE lambda (CleanRL: 0.95)"""
    num_minibatches: int = RECIPE.num_minibatches
    """minibatches per epoch (CleanRL: 8)"""
    update_epochs: int = RECIPE.update_epochs
    """epochs per rollout (CleanRL: 3)"""
    clip_coef: float = RECIPE.clip_coef
    """PPO clip range, also used for the value clip (CleanRL: 0.2, clip_vloss=True)"""
    ent_coef: float = RECIPE.ent_coef
    """entropy coefficient (CleanRL: 0.01)"""
    vf_coef: float | None = None
    """value loss coefficient in SB3's loss, vf_coef * MSE (CleanRL's 0.5 multiplies 0.5 *
    MSE, so it is 0.25 here); default: 0.25 for a new run, the checkpoint's own with
    --resume (given with --resume, it replaces the checkpoint's)"""
    max_grad_norm: float = RECIPE.max_grad_norm
    """gradient clipping norm (CleanRL: 0.5)"""
    value_loss: ValueLoss | None = None
    """value loss: max (baselines' and CleanRL's clip_vloss, the larger of the clipped and
    unclipped squared errors), clipped (SB3's, the clipped prediction's error) or
    unclipped; default: max for a new run, the checkpoint's own with --resume (given with
    --resume, it replaces the checkpoint's)"""
    norm_reward: bool = True
    """normalize rewards by a running std of returns, clip to [-10, 10] (CleanRL: True)"""
    distribution_mode: str = "easy"
    """Procgen difficulty (Cobbe et al. generalization protocol: easy)"""
    num_levels: int = TRAIN_LEVELS.num_levels
    """number of training levels (protocol: 200)"""
    start_level: int = TRAIN_LEVELS.start_level
    """first training level (protocol: 0)"""
    checkpoint_freq: int = 262_144
    """env steps between checkpoints (rounded up to whole rollouts)"""
    resume: str = ""
    """path of a checkpoint .zip to continue from (its vecnormalize .pkl is read beside it)"""
    threads: int = 1
    """torch.set_num_threads"""
    device: str = "cpu"
    """torch device"""
    runs_dir: str = "runs"
    """folder of the run folders"""
    progress_bar: bool = True
    """show a tqdm progress bar"""


def parse_args(argv: list[str] | None = None) -> Args:
    return cli.parse_args(Args, __doc__, argv)


class StopOnSignalCallback(BaseCallback):
    """End ``learn`` at the next env step after SIGTERM or SIGINT, so the final checkpoint is saved.

    ``kill <pid>`` then stops a background run cleanly instead of losing the
    steps since the last periodic checkpoint.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stop_requested = False

    def _request_stop(self, signum: int, frame: object) -> None:
        print(f"signal {signum}: stopping after this step", flush=True)
        self.stop_requested = True

    def _on_training_start(self) -> None:
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)

    def _on_step(self) -> bool:
        return not self.stop_requested


def make_run_dir(runs_dir: Path, prefix: str) -> Path:
    """A new, empty ``runs_dir/<prefix>__<unix time>`` folder.

    Two runs started in the same second (say an fp32 and a bf16 twin) must not share a
    folder: their monitor files and checkpoints would overwrite each other. The later
    one gets ``-2``, ``-3``, ... appended.
    """
    runs_dir.mkdir(parents=True, exist_ok=True)
    base = f"{prefix}__{int(time.time())}"
    for n in itertools.count(1):
        run_dir = runs_dir / (base if n == 1 else f"{base}-{n}")
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        return run_dir
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    run_dir = make_run_dir(Path(args.runs_dir), f"{args.env}__{args.exp_name}__{args.seed}")
    run_name = run_dir.name
    (run_dir / "args.json").write_text(json.dumps(dataclasses.asdict(args), indent=2))
    flags = argv if argv is not None else sys.argv[1:]
    command = " ".join(["python -m adr_rl_app.agents.train_ppo_procgen", *flags])
    (run_dir / "command.txt").write_text(command + "\n")
    print(f"run: {run_dir}", flush=True)

    venv = make_procgen_vec_env(
        args.env,
        args.num_envs,
        distribution_mode=args.distribution_mode,
        start_level=args.start_level,
        num_levels=args.num_levels,
        seed=args.seed,
        monitor_filename=str(run_dir / "monitor.csv"),
    )
    if args.norm_reward:
        venv = VecNormalize(
            venv, norm_obs=False, norm_reward=True, clip_reward=10.0, gamma=args.gamma
        )

    if args.resume:
        resume = Path(args.resume)
        vecnorm_path = resume.with_name(resume.stem + "_vecnormalize.pkl")
        if args.norm_reward and vecnorm_path.exists():
            stats = VecNormalize.load(str(vecnorm_path), venv.venv)  # type: ignore[attr-defined]
            venv.ret_rms = stats.ret_rms  # type: ignore[attr-defined]
        model = FastPPO.load(resume, env=venv, device=args.device, numerics=args.numerics)
        print(f"resumed from {resume} at {model.num_timesteps} steps", flush=True)
        for name in ("vf_coef", "value_loss"):  # given with --resume: from here on
            given, kept = getattr(args, name), getattr(model, name)
            if given is not None and given != kept:
                print(f"{name}: {kept} in the checkpoint, {given} from here on")
                setattr(model, name, given)
    else:
        fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(ProcgenRecipe)}
        for name in ("vf_coef", "value_loss"):
            if fields[name] is None:
                fields[name] = getattr(RECIPE, name)
        recipe = ProcgenRecipe(**fields)
        model = make_procgen_ppo(
            venv,
            recipe,
            extractor=args.extractor,
            numerics=args.numerics,
            seed=args.seed,
            device=args.device,
        )
    # the values this segment trains with
    args.vf_coef, args.value_loss = float(model.vf_coef), str(model.value_loss)
    (run_dir / "args.json").write_text(json.dumps(dataclasses.asdict(args), indent=2))
    machine = {**machine_info(), "numerics": model.numerics_mode}
    (run_dir / "machine.json").write_text(json.dumps(machine, indent=2))
    print(f"numerics: {model.numerics_mode} (asked {args.numerics}) on {machine['cpu_model']}")
    model.set_logger(configure(str(run_dir), ["stdout", "csv", "tensorboard"]))

    remaining = args.total_timesteps - model.num_timesteps
    checkpoint = LatestCheckpointCallback(
        run_dir / "checkpoints" / "latest.zip", args.checkpoint_freq
    )
    callbacks: list[BaseCallback] = [checkpoint, StopOnSignalCallback()]
    if args.progress_bar:
        callbacks.append(TqdmCallback(args.total_timesteps))
    start = time.time()
    start_steps = model.num_timesteps
    if remaining > 0:
        # reset_num_timesteps=False keeps counting from the checkpoint and makes SB3
        # anneal the learning rate over the full total, as in one uninterrupted run.
        model.learn(
            total_timesteps=remaining,
            callback=CallbackList(callbacks),
            reset_num_timesteps=not args.resume,
            tb_log_name=run_name,
        )
    if checkpoint.last_saved != model.num_timesteps:
        checkpoint.save(model)
    wall = time.time() - start
    sps = (model.num_timesteps - start_steps) / max(wall, 1e-9)
    summary = {
        "num_timesteps": model.num_timesteps,
        "wall_time_s": wall,
        "steps_per_s": sps,
        "numerics": model.numerics_mode,
        "machine": machine,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"done: {model.num_timesteps} steps, {wall:.0f} s, {sps:.0f} steps/s", flush=True)
    venv.close()
    # Keep a copy of the final model next to the run's logs for easy export.
    shutil.copy(run_dir / "checkpoints" / "latest.zip", run_dir / "final_model.zip")


if __name__ == "__main__":
    main()
