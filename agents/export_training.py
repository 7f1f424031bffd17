"""Keep a Procgen training run that spans sessions in the repository.

A session's processes end with it and ``runs/`` is not committed, so before a session
stops the run is stopped (SIGTERM: it saves a last checkpoint) and exported into a
tracked folder: the checkpoint (model with optimizer, ``VecNormalize`` statistics, step
count) and each run segment's logs (``progress.csv``, ``args.json``, ``command.txt``,
``machine.json``). The next session resumes from the exported checkpoint; the model
card's learning curve is drawn from all exported segments.

    python -m adr_rl_app.agents.export_training runs/fruitbot__ppo_procgen__1__1795925080 \\
        --dest agents/zoo/training/ppo_fruitbot_impala
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


def main(argv: list[str] | None = None) -> None:
    args = cli.parse_args(Args, __doc__, argv)
    run_dir = Path(args.run_dir)
    if not args.dest:
        raise UserError("--dest is required: the tracked folder of this training")
    state = export(run_dir, Path(args.dest))
    print(f"exported {run_dir} at {state['num_timesteps']:,} steps -> {args.dest}")


if __name__ == "__main__":
    main()
