"""Smoke test of eval/refine_training.py: tiny budgets, resuming, skipping finished runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from stable_baselines3 import TD3

from adr_rl.optim.compiled import compiler_available

ROOT = Path(__file__).resolve().parents[1]


def _run(out: Path, steps: int, *extra: str) -> str:
    cmd = [
        sys.executable,
        "-m",
        "adr_rl_app.eval.refine_training",
        "--tasks",
        "Pendulum-v1",
        "--variants",
        "adr",
        "--seeds",
        "0",
        "--steps",
        str(steps),
        "--eval-freq",
        "200",
        "--eval-episodes",
        "1",
        "--learning-starts",
        "50",
        "--warmup",
        "50",
        "--evaluations",
        "6",
        "--out",
        str(out),
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, check=True, cwd=out, env=env
    )
    return done.stdout


def test_runs_resume_skip_and_report(tmp_path):
    _run(tmp_path, 200)
    run_dir = tmp_path / "Pendulum-v1" / "adr" / "seed0"
    assert (run_dir / "done.json").exists() and not (run_dir / "owner.pid").exists()
    # Extending the budget resumes from the checkpoint instead of starting over.
    (run_dir / "done.json").unlink()
    _run(tmp_path, 400)
    curve = json.loads((run_dir / "curve.json").read_text())
    assert [p["budget"] for p in curve["points"]] == [0, 200, 400]
    assert curve["points"][-1]["env_steps"] == 400
    assert sum(p.get("refined", 0) for p in curve["points"]) > 0
    assert "done before" in _run(tmp_path, 400)
    results = json.loads((tmp_path / "results.json").read_text())
    adr = results["tasks"]["Pendulum-v1"]["variants"]["adr"]
    assert [r["budget"] for r in adr["curve"]] == [0, 200, 400]
    assert adr["timing"]["refined_share"] > 0
    assert (tmp_path / "learning_curves.png").stat().st_size > 0
    assert "| adr | 1/1 |" in (tmp_path / "summary.md").read_text()
    # The checkpoint of a refined run is a plain TD3 zip.
    assert type(TD3.load(run_dir / "latest.zip")) is TD3


@pytest.mark.skipif(not compiler_available(), reason="torch.compile needs a C++ compiler")
def test_compile_is_recorded_per_point_and_timed_apart(tmp_path):
    _run(tmp_path, 200)
    run_dir = tmp_path / "Pendulum-v1" / "adr" / "seed0"
    (run_dir / "done.json").unlink()
    _run(tmp_path, 400, "--compile")  # the same run, resumed with compiled refinement
    points = json.loads((run_dir / "curve.json").read_text())["points"]
    assert [p.get("compiled") for p in points] == [None, False, True]
    assert points[-1]["refined"] > 0
    results = json.loads((tmp_path / "results.json").read_text())
    modes = results["tasks"]["Pendulum-v1"]["variants"]["adr"]["timing_by_mode"]
    assert set(modes) == {"eager", "compiled"}
    assert all(m["refined_actions"] > 0 for m in modes.values())
    assert "(compiled)" in (tmp_path / "summary.md").read_text()
