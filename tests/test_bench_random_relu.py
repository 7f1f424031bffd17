"""Smoke tests of the random-network benchmark and tuning scripts (tiny budgets)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch

from adr_rl.optim.compiled import compiler_available
from adr_rl_app.eval.bench_random_relu import aggregate
from adr_rl_app.eval.random_relu import random_relu_net, steps_for


def test_random_relu_net_matches_the_papers_distribution():
    net = random_relu_net((10, 64, 64, 1), seed=3)
    weights = torch.cat([p.flatten() for p in net.parameters()])
    assert weights.abs().max() <= 1.0
    assert 0.45 < (weights > 0).float().mean() < 0.55  # random sign, p = 0.5
    assert 0.45 < weights.abs().mean() < 0.55  # |w| ~ U(0, 1)
    again = random_relu_net((10, 64, 64, 1), seed=3)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), again.parameters(), strict=True))


def test_equal_network_evaluations():
    assert steps_for("adr", 3000) == 3000
    assert steps_for("gd", 3000) == 4500  # 2 passes per step instead of 3
    assert steps_for("random", 3000) == 9000


def test_aggregate_on_a_hand_computed_example():
    per_seed = [
        {"gd": {"value": 10.0, "s_per_step": 1.0}, "adr": {"value": 11.0, "s_per_step": 3.0}},
        {"gd": {"value": 20.0, "s_per_step": 1.0}, "adr": {"value": 20.0, "s_per_step": 3.0}},
        {"gd": {"value": 10.0, "s_per_step": 1.0}, "adr": {"value": 9.0, "s_per_step": 3.0}},
    ]
    agg = aggregate(per_seed, ["gd", "adr"])
    assert agg["adr"]["median_ratio_to_gd"] == 1.0
    assert np.isclose(agg["adr"]["mean_ratio_to_gd"], (1.1 + 1.0 + 0.9) / 3)
    assert (agg["adr"]["wins_vs_gd"], agg["adr"]["ties_vs_gd"], agg["adr"]["losses_vs_gd"]) == (
        1,
        1,
        1,
    )
    assert agg["gd"]["ties_vs_gd"] == 3


def test_bench_script_smoke(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "adr_rl_app.eval.bench_random_relu",
        "--shapes",
        "small",
        "--seeds-small",
        "2",
        "--steps",
        "30",
        "--methods",
        "adr",
        "adr_sync",
        "restart_gd",
        "--timing-batches",
        "1",
        "--timing-steps",
        "5",
        "--out",
        str(tmp_path),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
    assert "median ratio to GD" in out.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    small = results["shapes"]["small"]
    assert [s["seed"] for s in small["per_seed"]] == [0, 1]
    assert small["aggregate"]["gd"]["median_ratio_to_gd"] == 1.0
    for seed in small["per_seed"]:
        assert seed["runs"]["adr"]["steps"] == 30 and seed["runs"]["gd"]["steps"] == 45
        for run in seed["runs"].values():
            assert np.all(np.diff(run["curve"]) >= 0)  # best-so-far never decreases
    assert small["timing"]["batch_1"]["ratio_adr_gd"] > 0
    assert results["batched_vs_looped"]["speedup"] > 0
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_bench_timing_only_writes_timing_and_leaves_results(tmp_path):
    (tmp_path / "results.json").write_text("{}")  # a finished run's results stay untouched
    cmd = [
        sys.executable,
        "-m",
        "adr_rl_app.eval.bench_random_relu",
        "--timing-only",
        "--shapes",
        "small",
    ]
    cmd += ["--timing-batches", "1", "2", "--timing-steps", "5", "--out", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert set(timing["shapes"]) == {"small"}
    for batch in ("batch_1", "batch_2"):
        t = timing["shapes"]["small"][batch]
        assert np.isclose(t["ratio_adr_gd"], t["adr_s_per_step"] / t["gd_s_per_step"])
        assert 0 < t["forward_nograd_s"] < t["forward_backward_s"]
        assert t["ratio_if_only_extra_forward"] > 1
        if compiler_available():  # same rounds, compile=True
            assert np.isclose(
                t["ratio_adr_gd_compiled"],
                t["adr_compiled_s_per_step"] / t["gd_compiled_s_per_step"],
            )
            speedup = t["adr_s_per_step"] / t["adr_compiled_s_per_step"]
            assert np.isclose(t["adr_speedup_compiled"], speedup)
    assert timing["batched_vs_looped"]["looped_s"] > 0
    assert "ADR/GD" in out.stdout
    assert (tmp_path / "results.json").read_text() == "{}"


def test_tune_script_refuses_reported_seeds():
    cmd = [
        sys.executable,
        "-m",
        "adr_rl_app.eval.tune_adr",
        "--seed-offset",
        "0",
        "--variant",
        "a:adr:",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "disjoint" in out.stderr


def test_tune_script_smoke():
    cmd = [
        sys.executable,
        "-m",
        "adr_rl_app.eval.tune_adr",
        "--seeds",
        "1",
        "--steps",
        "10",
        "--variant",
        "sync:adr:resync_freq=5,objective_scale=grad",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    assert "sync" in out.stdout and "gd" in out.stdout
