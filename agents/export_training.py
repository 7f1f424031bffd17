"""Keep a Procgen training run that spans sessions in the repository.

A session's processes end with it and ``runs/`` is not committed, so before a session
stops the run is stopped (SIGTERM: it saves a last checkpoint) and exported into a
tracked folder: the checkpoint (model with optimizer, ``VecNormalize`` statistics, step
count) and each run segment's logs (``progress.csv``, ``args.json``, ``command.txt``,
``machine.json``). The next session resumes from the exported checkpoint; the model
card's learning curve (``learning_curve.png``, over OpenAI's curves) is redrawn from all
exported segments. With ``--evaluate-episodes`` the exported checkpoint is also played on
unseen levels and the result joins ``evaluations.json`` and the curve's points.

    python -m adr_rl_app.agents.export_training runs/fruitbot__ppo_procgen__1__1795925080 \\
        --dest agents/zoo/training/ppo_fruitbot_impala --evaluate-episodes 100
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import tyro

from adr_rl_app.eval import cli
from adr_rl_app.eval.errors import UserError

#: What each run segment contributes to the curve and the card.
SEGMENT_FILES = ("progress.csv", "args.json", "command.txt", "machine.json", "summary.json")
#: The checkpoint files ``LatestCheckpointCallback`` writes (stem ``latest``).
CHECKPOINT_FILES = ("latest.zip", "latest_vecnormalize.pkl", "latest.json")


@dataclass
class Args:
    run_dir: tyro.conf.Positional[str]
    """the training run folder to export (runs/<game>__<exp>__<seed>__<time>)"""
    dest: str = ""
    """tracked folder of the training, e.g. agents/zoo/training/ppo_fruitbot_impala"""
    evaluate_episodes: int = 0
    """play the exported checkpoint for this many episodes on unseen levels (0: skip)"""
    evaluate_seed: int = 0
    """seed of the evaluation's levels, action sampling and bootstrap"""
    threads: int = 2
    """torch threads of the evaluation"""
    title: str = ""
    """title of the learning curve (default: game, extractor, seed and numerics)"""


def export(run_dir: Path, dest: Path) -> dict[str, object]:
    """Copy ``run_dir``'s checkpoint (replacing the previous one) and logs into ``dest``."""
    checkpoint = run_dir / "checkpoints"
    if not (checkpoint / "latest.zip").exists():
        raise UserError(f"{run_dir} has no checkpoints/latest.zip to export")
    segment = dest / "segments" / run_dir.name
    segment.mkdir(parents=True, exist_ok=True)
    for name in SEGMENT_FILES:
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, segment / name)
    for name in CHECKPOINT_FILES:
        if (checkpoint / name).exists():
            shutil.copy2(checkpoint / name, dest / name)
    steps = json.loads((checkpoint / "latest.json").read_text())["num_timesteps"]
    segments = sorted(p.name for p in (dest / "segments").iterdir() if p.is_dir())
    state = {"num_timesteps": steps, "segments": segments, "checkpoint": "latest.zip"}
    (dest / "training.json").write_text(json.dumps(state, indent=1) + "\n")
    return state


def training_args(dest: Path) -> dict[str, object]:
    """``args.json`` of the newest exported segment (game, extractor, numerics, seed)."""
    segments = sorted(p for p in (dest / "segments").iterdir() if (p / "args.json").exists())
    if not segments:
        raise UserError(f"{dest} has no exported segment with an args.json")
    return json.loads((segments[-1] / "args.json").read_text())


def record_evaluation(dest: Path, entry: dict[str, object]) -> list[dict[str, object]]:
    """Add ``entry`` to ``dest/evaluations.json``, replacing an earlier one of the same
    checkpoint, split, episode count and seed (a re-run is the same measurement)."""
    path = dest / "evaluations.json"
    evals = json.loads(path.read_text()) if path.exists() else []
    same = ("num_timesteps", "split", "episodes", "seed")
    evals = [e for e in evals if any(e.get(k) != entry[k] for k in same)] + [entry]
    evals.sort(key=lambda e: (e["num_timesteps"], e["split"], e["episodes"], e["seed"]))
    path.write_text(json.dumps(evals, indent=1) + "\n")
    return evals


def evaluate_checkpoint(dest: Path, episodes: int, seed: int) -> dict[str, object]:
    """Mean return of ``dest/latest.zip`` (plain fp32 ``PPO``, sampled actions) on
    unseen levels, with its bootstrap CI: what ``eval.rollout --split unseen`` prints for
    the same seed."""
    from adr_rl_app.envs.procgen import UNSEEN_LEVELS
    from adr_rl_app.eval.procgen_rollouts import evaluate_model

    game = str(training_args(dest)["env"])
    steps = json.loads((dest / "latest.json").read_text())["num_timesteps"]
    _, summary = evaluate_model(
        str(dest / "latest.zip"), game, episodes, levels=UNSEEN_LEVELS, seed=seed
    )
    entry = {"num_timesteps": steps, "split": "unseen", "episodes": episodes, "seed": seed}
    return {**entry, **summary}


def draw_curve(dest: Path, title: str = "") -> Path:
    """Redraw ``dest/learning_curve.png`` from every segment's ``progress.csv``, over
    OpenAI's curves, with the unseen-level evaluations as points."""
    from adr_rl_app.eval.learning_curves import GAME_TITLES, plot_learning_curve, read_progress

    args = training_args(dest)
    segments = sorted(str(p) for p in (dest / "segments").iterdir() if p.is_dir())
    steps, returns, _ = read_progress(segments)
    path = dest / "evaluations.json"
    evals = json.loads(path.read_text()) if path.exists() else []
    points = [
        (e["num_timesteps"], e["mean_return"], e["ci95_low"], e["ci95_high"])
        for e in evals
        if e.get("split") == "unseen"
    ]
    game = str(args["env"])
    title = title or (
        f"{GAME_TITLES.get(game, game)} {str(args['extractor']).upper()} PPO, "
        f"seed {args['seed']}, {args['numerics']}"
    )
    out = dest / "learning_curve.png"
    plot_learning_curve(steps, returns, title, out, {}, game=game, test_points=points)
    return out


def main(argv: list[str] | None = None) -> None:
    args = cli.parse_args(Args, __doc__, argv)
    run_dir = Path(args.run_dir)
    if not args.dest:
        raise UserError("--dest is required: the tracked folder of this training")
    if args.evaluate_episodes < 0:
        raise UserError(f"--evaluate-episodes must be >= 0, got {args.evaluate_episodes}")
    dest = Path(args.dest)
    state = export(run_dir, dest)
    print(f"exported {run_dir} at {state['num_timesteps']:,} steps -> {dest}")
    if args.evaluate_episodes:
        import torch

        torch.set_num_threads(args.threads)
        entry = evaluate_checkpoint(dest, args.evaluate_episodes, args.evaluate_seed)
        record_evaluation(dest, entry)
        print(
            f"unseen levels: mean return {entry['mean_return']:.2f} "
            f"[{entry['ci95_low']:.2f}, {entry['ci95_high']:.2f}] over {entry['n_episodes']} "
            f"episodes (seed {args.evaluate_seed})"
        )
    print(f"curve: {draw_curve(dest, args.title)}")


if __name__ == "__main__":
    main()
