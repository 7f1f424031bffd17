"""eval/ppo_gradient.py: PPO's gradient per numeric mode and per loss term."""

from __future__ import annotations

import json

import pytest

from adr_rl_app.eval import ppo_gradient
from adr_rl_app.eval.errors import UserError

# The shipped FruitBot run's checkpoint (trained with SB3 vf_coef 0.5).
CHECKPOINT = "agents/zoo/training/ppo_fruitbot_impala/latest.zip"


@pytest.mark.procgen
def test_modes_are_compared_on_the_same_minibatch(tmp_path):
    ppo_gradient.main(
        ["--quick", "--game", "fruitbot", "--model", CHECKPOINT, "--out", str(tmp_path)]
    )
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    by_mode = {(r["mode"], r["minibatch"]): r for r in rows}
    assert set(by_mode) == {(m, k) for m in ("fp32", "fp32-cl", "bf16-cl") for k in (0, 1)}
    for k in (0, 1):
        # The reference against itself: the same gradient and outputs, exactly.
        same = by_mode["fp32", k]
        assert same["all"]["relative_l2"] == 0.0 and same["max_abs_log_prob_diff"] == 0.0
        # channels-last changes only the summation order: far less than bf16 does.
        summation = by_mode["fp32-cl", k]["all"]["relative_l2"]
        assert 0.0 <= summation < 1e-2
        assert summation < by_mode["bf16-cl", k]["all"]["relative_l2"]
        # bf16 autocast changes the extractor's arithmetic, not the gradient's direction.
        bf16 = by_mode["bf16-cl", k]
        assert bf16["max_abs_log_prob_diff"] > 0.0
        assert bf16["all"]["cosine"] > 0.9
    assert "| bf16-cl | 1 |" in (tmp_path / "summary.md").read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["checkpoint"]["vf_coef"] == 0.5
    for row in results["loss_terms"]:
        half, quarter = row["vf_coef 0.5"], row["vf_coef 0.25"]
        # A smaller value weight: a smaller value share of the update, a milder clip.
        assert quarter["value_share"] < half["value_share"]
        assert half["clip_factor"] <= quarter["clip_factor"] <= 1.0
        expected = min(1.0, 0.5 / half["total_norm"])
        assert half["clip_factor"] == pytest.approx(expected)


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        ppo_gradient.main(["--model", str(tmp_path / "nope.zip"), "--out", str(tmp_path)])
