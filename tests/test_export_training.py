"""agents/export_training.py: a run segment's checkpoint and logs land in the tracked
folder, the checkpoint is replaced and the segments accumulate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adr_rl_app.agents.export_training import (
    draw_curve,
    evaluate_checkpoint,
    export,
    record_evaluation,
    training_args,
)
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


def _segment_args(run: Path, game: str = "fruitbot") -> None:
    args = {"env": game, "extractor": "impala", "numerics": "bf16-cl", "seed": 1}
    (run / "args.json").write_text(json.dumps(args))


def _entry(steps: int, mean: float, episodes: int = 100) -> dict[str, object]:
    return {
        "num_timesteps": steps,
        "split": "unseen",
        "episodes": episodes,
        "seed": 0,
        "mean_return": mean,
        "ci95_low": mean - 1,
        "ci95_high": mean + 1,
    }


def test_an_evaluation_of_the_same_checkpoint_replaces_the_earlier_one(tmp_path):
    record_evaluation(tmp_path, _entry(200, 5.0))
    record_evaluation(tmp_path, _entry(100, 1.0))
    record_evaluation(tmp_path, _entry(200, 5.0, episodes=200))  # another measurement
    evals = record_evaluation(tmp_path, _entry(200, 6.0))  # the same one, re-run
    assert [(e["num_timesteps"], e["episodes"], e["mean_return"]) for e in evals] == [
        (100, 100, 1.0),
        (200, 100, 6.0),
        (200, 200, 5.0),
    ]
    assert json.loads((tmp_path / "evaluations.json").read_text()) == evals


def test_the_curve_is_drawn_from_every_segment(tmp_path):
    dest = tmp_path / "dest"
    for name, steps in (("fruitbot__a__1__100", 16384), ("fruitbot__a__1__200", 32768)):
        run = _run(tmp_path, name, steps)
        _segment_args(run)
        export(run, dest)
    record_evaluation(dest, _entry(32768, 2.0))
    path = draw_curve(dest)
    assert path == dest / "learning_curve.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_training_args_need_an_exported_segment(tmp_path):
    (tmp_path / "segments").mkdir()
    with pytest.raises(UserError, match="no exported segment"):
        training_args(tmp_path)


@pytest.mark.procgen
def test_evaluation_is_what_the_rollout_command_prints(tmp_path):
    import shutil

    from adr_rl_app.eval import rollout

    dest = tmp_path / "dest"
    run = tmp_path / "coinrun__a__1__100"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy("agents/zoo/ppo_coinrun.zip", run / "checkpoints" / "latest.zip")
    (run / "checkpoints" / "latest.json").write_text(json.dumps({"num_timesteps": 7}))
    _segment_args(run, "coinrun")
    export(run, dest)
    entry = evaluate_checkpoint(dest, episodes=16, seed=3)
    argv = ["--model", str(dest / "latest.zip"), "--env", "coinrun", "--n-episodes", "16"]
    rollout.main([*argv, "--seed", "3", "--out", str(tmp_path / "r.json")])
    printed = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert entry["num_timesteps"] == 7 and entry["split"] == "unseen"
    assert {k: entry[k] for k in printed} == printed
