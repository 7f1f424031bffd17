"""eval/numerics_gradient.py: the same minibatch's PPO gradient in each numeric mode."""

from __future__ import annotations

import json

import pytest

from adr_rl_app.eval import numerics_gradient
from adr_rl_app.eval.errors import UserError

CHECKPOINT = "agents/zoo/training/ppo_coinrun_impala/latest.zip"


@pytest.mark.procgen
def test_modes_are_compared_on_the_same_minibatch(tmp_path):
    numerics_gradient.main(["--quick", "--model", CHECKPOINT, "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    by_mode = {(r["mode"], r["minibatch"]): r for r in rows}
    assert set(by_mode) == {(m, k) for m in ("fp32", "fp32-cl", "bf16-cl") for k in (0, 1)}
    for k in (0, 1):
        # The reference against itself: the same gradient and outputs, exactly.
        same = by_mode["fp32", k]
        assert same["all"]["relative_l2"] == 0.0 and same["max_abs_log_prob_diff"] == 0.0
        # channels-last changes only the summation order.
        assert by_mode["fp32-cl", k]["all"]["relative_l2"] < 1e-4
        # bf16 autocast changes the extractor's arithmetic, not the gradient's direction.
        bf16 = by_mode["bf16-cl", k]
        assert bf16["max_abs_log_prob_diff"] > 0.0
        assert bf16["all"]["cosine"] > 0.9
    assert "| bf16-cl | 1 |" in (tmp_path / "summary.md").read_text()


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        numerics_gradient.main(["--model", str(tmp_path / "nope.zip"), "--out", str(tmp_path)])
