"""agents/export_training.py: a run segment's checkpoint and logs land in the tracked
folder, the checkpoint is replaced and the segments accumulate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adr_rl_app.agents.export_training import export
from adr_rl_app.eval.errors import UserError


def _run(root: Path, name: str, steps: int) -> Path:
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "latest.zip").write_bytes(f"model at {steps}".encode())
    (run / "checkpoints" / "latest_vecnormalize.pkl").write_bytes(b"stats")
    (run / "checkpoints" / "latest.json").write_text(json.dumps({"num_timesteps": steps}))
    (run / "progress.csv").write_text("time/total_timesteps,rollout/ep_rew_mean\n16384,1.0\n")
    (run / "command.txt").write_text("adr-rl train ppo-procgen --env fruitbot\n")
    return run


def test_export_replaces_the_checkpoint_and_keeps_every_segment(tmp_path):
    dest = tmp_path / "zoo" / "training"
    first = export(_run(tmp_path, "fruitbot__a__1__100", 16384), dest)
    assert first["num_timesteps"] == 16384 and first["segments"] == ["fruitbot__a__1__100"]
    second = export(_run(tmp_path, "fruitbot__a__1__200", 32768), dest)
    assert second["segments"] == ["fruitbot__a__1__100", "fruitbot__a__1__200"]
    assert (dest / "latest.zip").read_bytes() == b"model at 32768"
    assert (dest / "latest_vecnormalize.pkl").exists()
    assert (dest / "segments" / "fruitbot__a__1__100" / "progress.csv").exists()
    assert json.loads((dest / "training.json").read_text())["num_timesteps"] == 32768


def test_export_refuses_a_run_without_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no checkpoints/latest.zip"):
        export(tmp_path / "empty", tmp_path / "dest")
