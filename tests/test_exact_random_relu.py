"""The exact random-network script on tiny networks of the benchmark's family: its
per-seed maximum equals brute force and beats every heuristic, its float32 rounding bound
holds, and its soundness check catches a planted violation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from adr_rl import maximize
from adr_rl_app.eval.exact_random_relu import (
    compare,
    float32_error_bound,
    float32_rounding,
    method_summary,
    solve_seed,
    soundness,
)
from adr_rl_app.eval.random_relu import random_relu_net
from tests.test_certify import brute_force_max

TINY = (2, 4, 3, 1)


@pytest.mark.parametrize(("seed", "strategy"), [(0, "split"), (1, "milp"), (2, "split")])
def test_solve_seed_is_the_brute_force_maximum_and_beats_every_heuristic(
    seed: int, strategy: str
) -> None:
    # 300 s only guards against a hang (a tiny problem solves in ms, also on a busy machine)
    row = solve_seed(TINY, seed, time_limit=300.0, warm_starts=8, warm_steps=20, strategy=strategy)
    net = random_relu_net(TINY, seed)
    truth = brute_force_max([net.double()], -np.ones(2), np.ones(2))
    assert (row["status"], row["strategy"]) == ("optimal", strategy)
    assert row["value"] == pytest.approx(truth, abs=1e-6)
    assert truth - 1e-9 <= row["upper_bound"] <= truth + 1e-5
    assert row["warm_start_value"] <= row["value"] + 1e-12  # never below its warm start
    x0 = torch.rand(64, 2, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    for method in ("gd", "adam", "adr_sync"):
        found = maximize(random_relu_net(TINY, seed), x0, -1.0, 1.0, steps=100, method=method)
        assert found.value.max().item() <= row["value"] + row["float32_error_bound"] + 1e-9
    assert abs(row["value_float32"] - row["value"]) <= row["float32_rounding"]
    assert row["float32_rounding"] <= row["float32_error_bound"]
    assert len(row["x"]) == 2 and all(-1 <= v <= 1 for v in row["x"])


def test_float32_error_bound_covers_the_observed_rounding() -> None:
    net = random_relu_net((10, 64, 64, 1), seed=5)
    lo, hi = -torch.ones(1, 10, dtype=torch.float64), torch.ones(1, 10, dtype=torch.float64)
    bound = float32_error_bound(net, lo, hi)
    x = torch.rand(4096, 10, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        err = (net(x).double() - copy.deepcopy(net).double()(x.double())).abs().max().item()
    assert 0 < err <= bound
    seen = float32_rounding(net, torch.zeros(1, 10))
    assert 0 < seen <= bound


def test_soundness_flags_a_value_above_the_maximum_and_summary_counts_gaps() -> None:
    row = {
        "seed": 3,
        "status": "optimal",
        "value": 10.0,
        "upper_bound": 10.0 + 1e-6,
        "float32_rounding": 1e-7,
    }
    found = compare(row, {"gd": {"value": 9.99}, "adr": {"value": 10.0}}, best_known=10.0)
    assert soundness(row, found) == []
    assert soundness(row, {"cheat": 10.01}) == [
        "seed 3: cheat 10.01 > upper bound 10.000001",
        "seed 3: cheat 10.01 > exact value 10.0",
    ]
    summary = method_summary([row], ["gd", "adr"])
    assert summary["gd"]["median_gap"] == pytest.approx(1e-3)
    assert (summary["gd"]["within_1e-04"], summary["gd"]["within_1e-03"]) == (0, 1)
    assert summary["best_known"]["within_1e-04"] == 1
    assert row["best_known_optimal"] is True
    assert summary["gd"]["median_gap_to_bound"] == pytest.approx((10 + 1e-6 - 9.99) / (10 + 1e-6))
