"""compare_flip: paired comparison of two flip tables of the same observations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adr_rl_app.eval import compare_flip
from adr_rl_app.eval.errors import UserError


def _report(succeeded: dict[tuple[str, int], list[list[int]]], ms: float, sha="s") -> dict:
    rows = []
    for (method, steps), per_seed in succeeded.items():
        for seed, s in enumerate(per_seed):
            rows.append(
                {
                    "mode": "untargeted",
                    "method": method,
                    "eps": 1.0,
                    "steps": steps,
                    "seed": seed,
                    "succeeded": s,
                    "ms_per_obs": ms,
                }
            )
    return {
        "levels": {"start_level": 10000, "num_levels": 1000000},
        "n_obs": 4,
        "policies": {"fruitbot": {"sha256": sha}},
        "games": {"fruitbot": rows},
    }


def test_paired_rates_differences_and_speed_up(tmp_path):
    a = _report({("pgd", 10): [[1, 0, 1, 0]], ("adr", 50): [[1, 1, 0, 0], [1, 0, 0, 0]]}, 40.0)
    b = _report({("pgd", 10): [[1, 1, 1, 0]], ("fgsm", 1): [[1, 1, 1, 1]]}, 20.0)
    rows = compare_flip.compare(a, b)
    assert len(rows) == 1  # only the setting in both tables
    r = rows[0]
    assert (r["method"], r["rate_a"], r["rate_b"]) == ("pgd", 0.5, 0.75)
    assert r["diff"] == pytest.approx(0.25) and r["only_a"] == 0 and r["only_b"] == 1
    assert r["speedup"] == pytest.approx(2.0)
    low, high = r["diff_ci95"]
    assert 0.0 <= low <= 0.25 <= high <= 1.0
    # Seeds are averaged per observation before the comparison.
    seeds = compare_flip.per_observation(a)[("fruitbot", "untargeted", "adr", 1.0, 50)][0]
    np.testing.assert_allclose(seeds, [1.0, 0.5, 0.0, 0.0])


def test_main_writes_the_table(tmp_path):
    a = _report({("pgd", 10): [[1, 0, 1, 0]]}, 40.0)
    b = _report({("pgd", 10): [[1, 0, 0, 0]]}, 25.0)
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    rows = compare_flip.main([str(pa), str(pb), "--labels", "fp32", "bf16", "--out", str(tmp_path)])
    assert rows[0]["only_a"] == 1
    text = (tmp_path / "compare.md").read_text()
    assert "rate fp32 | rate bf16 | bf16 - fp32" in text and "| 1.60x |" in text
    assert json.loads((tmp_path / "compare.json").read_text())["labels"] == ["fp32", "bf16"]


def test_different_observation_sets_or_policies_are_refused():
    a = _report({("pgd", 10): [[1, 0, 1, 0]]}, 40.0)
    with pytest.raises(UserError, match="n_obs"):
        compare_flip.compare(a, {**a, "n_obs": 8})
    with pytest.raises(UserError, match="different fruitbot policies"):
        compare_flip.compare(a, _report({("pgd", 10): [[1, 0, 1, 0]]}, 40.0, sha="other"))
    short = _report({("pgd", 10): [[1, 0, 1]]}, 40.0)
    with pytest.raises(UserError, match="observations in one table"):
        compare_flip.compare(a, short)
