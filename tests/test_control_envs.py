"""Control env factory and the refinement evaluation's bookkeeping (quick runs)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adr_rl import CEMConfig, network_evaluations
from adr_rl_app.envs.control import CONTROL_ENVS, make_control_env, make_control_vec_env
from adr_rl_app.eval import refine_control


def test_unknown_env_is_named():
    with pytest.raises(ValueError, match="Foo-v0"):
        make_control_env("Foo-v0")


def test_vec_env_seeding_is_reproducible():
    a = make_control_vec_env("Pendulum-v1", n_envs=3, seed=7).reset()
    b = make_control_vec_env("Pendulum-v1", n_envs=3, seed=7).reset()
    c = make_control_vec_env("Pendulum-v1", n_envs=3, seed=8).reset()
    assert a.shape == (3, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert len({tuple(row) for row in a}) == 3  # envs differ from each other


@pytest.mark.parametrize("env_id", sorted(CONTROL_ENVS))
def test_every_listed_env_builds(env_id):
    pytest.importorskip("Box2D" if CONTROL_ENVS[env_id] == "box2d" else "numpy")
    if CONTROL_ENVS[env_id] == "mujoco":
        pytest.importorskip("mujoco")
    env = make_control_env(env_id, seed=0)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert env.action_space.shape is not None and len(env.action_space.shape) == 1


@pytest.mark.parametrize("method", ["gd", "adam", "cem", "adr", "adr_sync"])
def test_budget_is_the_same_for_every_method(method):
    cem = CEMConfig(population=30, elites=3)
    steps = refine_control.steps_for_budget(method, 90, cem)
    assert network_evaluations(method, steps, cem if method == "cem" else None) == 90
    with pytest.raises(ValueError, match="budget"):
        refine_control.steps_for_budget(method, 1, cem)


def test_quick_run_bookkeeping(tmp_path):
    out = tmp_path / "rc"
    argv = ["--quick", "--out", str(out), "--methods", "none", "gd", "cem"]
    argv += ["--q-gap-states", "16", "--q-gap-grid", "101"]  # quick: 2 seeds x 2 episodes
    results = refine_control.main(argv)
    saved = json.loads((out / "results.json").read_text())
    assert (out / "returns.png").stat().st_size > 0
    rows = {r["method"]: r for r in saved["agents"]["td3_Pendulum-v1"]["rows"]}
    assert rows["none"]["q_gain_per_step"] == 0 and rows["none"]["fraction_changed"] == 0
    for method in ("gd", "cem"):
        assert rows[method]["q_gain_per_step"] >= 0  # best iterate: never below the actor
        assert rows[method]["critic_evaluations"] == 90
        assert rows[method]["n_episodes"] == 4 and len(rows[method]["returns"]) == 4
        lo, hi = rows[method]["ci95_low"], rows[method]["ci95_high"]
        assert lo <= rows[method]["mean_return"] <= hi
    gap = saved["agents"]["td3_Pendulum-v1"]["q_gap"]["0.25"]
    for method in ("gd", "cem"):
        # The grid max is an upper bound up to the grid's resolution.
        assert gap[method]["mean_gap_to_grid_max"] >= -1e-3
        assert 0.0 <= gap[method]["mean_share_captured"] <= 1.05
    assert results["config"]["budget"] == 90


def test_paired_table_is_the_mean_difference_over_episode_pairs():
    """Every method plays the same env seeds, so the change is per episode pair."""
    base = {"method": "none", "radius": 0.0, "returns": [1.0, 2.0, 3.0, 4.0]}
    up = {"method": "milp", "radius": 0.25, "returns": [1.5, 2.5, 3.5, 4.5]}
    short = {"method": "gd", "radius": 0.25, "returns": [9.0]}  # not paired: left out
    text = refine_control.paired_table({"agents": {"a": {"rows": [base, up, short]}}})
    lines = text.splitlines()
    assert lines[0] == "| agent | radius | milp |"
    # a constant difference: its bootstrap interval is that point
    assert lines[2] == "| a | 0.25 | +0.50 [+0.50, +0.50] |"
