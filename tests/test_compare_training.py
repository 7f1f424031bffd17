"""eval/compare_training.py: training runs against each other and OpenAI's curves."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adr_rl_app.eval import compare_training
from adr_rl_app.eval.errors import UserError
from adr_rl_app.eval.learning_curves import openai_curves, reference_at_marks


def _tracked_run(root, name, segments):
    """A tracked training folder with one progress.csv per segment of (steps, return)."""
    run = root / name
    for i, points in enumerate(segments):
        seg = run / "segments" / f"seg{i}"
        seg.mkdir(parents=True)
        rows = ["time/total_timesteps,rollout/ep_rew_mean,time/time_elapsed"]
        rows += [f"{s},{r},{10 * (k + 1)}" for k, (s, r) in enumerate(points)]
        (seg / "progress.csv").write_text("\n".join(rows) + "\n")
    return run


def test_at_marks_averages_the_window_and_never_extrapolates():
    steps = np.array([100, 200, 300, 400])
    values = np.array([1.0, 2.0, 3.0, 5.0])
    got = compare_training.at_marks(steps, values, [200, 400, 450, 50], window=150)
    assert got == [1.5, 4.0, None, None]


def test_reference_interpolates_each_run_between_its_log_points():
    ref = openai_curves("fruitbot")["train"]
    mark = int((ref["steps"][1] + ref["steps"][2]) // 2)
    cell = reference_at_marks("fruitbot", [mark])["train"][0]
    expected = [np.interp(mark, ref["steps"], run) for run in ref["runs"]]
    assert cell["mean"] == pytest.approx(np.mean(expected))
    assert cell["min"] == pytest.approx(min(expected))
    assert cell["max"] == pytest.approx(max(expected)) and cell["min"] < cell["max"]
    beyond = reference_at_marks("fruitbot", [10**12])
    assert beyond["train"] == [None] and beyond["test"] == [None]


def test_main_tables_two_runs_resumed_across_segments(tmp_path):
    a = _tracked_run(tmp_path, "a", [[(16384, -2.0), (32768, 0.0)], [(49152, 2.0)]])
    b = _tracked_run(tmp_path, "b", [[(16384, -1.0), (32768, 1.0)]])
    out = tmp_path / "out"
    result = compare_training.main(
        ["--runs", str(a), str(b), "--labels", "bf16", "fp32"]
        + ["--marks", "32768", "49152", "--window", "20000", "--out", str(out)]
    )
    by_label = {r["label"]: r for r in result["runs"]}
    assert by_label["bf16"]["at_marks"] == [-1.0, 1.0]  # (0 + -2) / 2, then (2 + 0) / 2
    assert by_label["bf16"]["wall_time_s"] == 30.0  # 20 s + 10 s over the two segments
    assert by_label["fp32"]["at_marks"] == [0.0, None]
    saved = json.loads((out / "results.json").read_text())
    assert saved["runs"][1]["num_timesteps"] == 32768 and saved["machine"]["cpu_model"]
    assert (out / "curves.png").stat().st_size > 0
    assert "| fp32 (train) | 0.00 |  |" in (out / "summary.md").read_text()


def test_bad_arguments_are_named(tmp_path):
    run = _tracked_run(tmp_path, "a", [[(16384, 0.0)]])
    with pytest.raises(UserError, match="1 --runs but 2 --labels"):
        compare_training.main(["--runs", str(run), "--labels", "x", "y", "--out", str(tmp_path)])
    with pytest.raises(UserError, match="no segments"):
        compare_training.main(["--runs", str(tmp_path / "empty"), "--out", str(tmp_path)])
    with pytest.raises(UserError, match="at least one"):
        compare_training.main(["--out", str(tmp_path)])
