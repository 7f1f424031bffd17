"""eval.attack_summary: merging rollout folders and the ADR-vs-PGD comparison."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adr_rl_app.eval.attack_summary import (
    compare,
    gather,
    main,
    paired_returns,
    tally,
    verdict,
)
from adr_rl_app.eval.stats import bootstrap_diff_ci


def _row(method, mode, eps, steps, returns, flip=None):
    return {
        "method": method,
        "mode": mode,
        "eps": eps,
        "steps": steps,
        "mean_return": float(np.mean(returns)),
        "ci95_low": float(np.min(returns)),
        "ci95_high": float(np.max(returns)),
        "flip_rate": flip,
        "n_episodes": len(returns),
        "truncated": 0,
        "success_rate": 0.0 if mode == "targeted" else None,
        "attack_ms_per_obs": 1.0 if method != "none" else None,
        "runs": [
            {"returns": returns[: len(returns) // 2]},
            {"returns": returns[len(returns) // 2 :]},
        ],
    }


def _write(folder, rows, variant="adr_sync"):
    folder.mkdir()
    report = {"adr_variant": variant, "games": {"coinrun": rows}}
    (folder / "rollout.json").write_text(json.dumps(report))


CLEAN = [10.0, 10.0, 0.0, 10.0]


def test_gather_merges_folders_and_pairs_adr_with_pgd(tmp_path):
    _write(
        tmp_path / "rollout_a",
        [
            _row("none", "untargeted", 0.0, 0, CLEAN),
            _row("pgd", "untargeted", 2.0, 10, [0.0, 0.0, 10.0, 0.0], 0.5),
            _row("adr", "untargeted", 2.0, 10, [10.0, 10.0, 10.0, 0.0], 0.4),
        ],
    )
    _write(
        tmp_path / "rollout_b",
        [
            _row("none", "untargeted", 0.0, 0, CLEAN),  # the same clean episodes
            _row("pgd", "untargeted", 2.0, 50, [0.0] * 4, 0.6),
            _row("adr", "untargeted", 2.0, 50, [0.0] * 4, 0.7),
            _row("adr", "untargeted", 4.0, 50, [0.0] * 4, 0.7),  # no PGD partner: skipped
        ],
    )
    rows, variants = gather([tmp_path / "rollout_a", tmp_path / "rollout_b"])
    assert variants == ["adr_sync"] and len(rows) == 6
    pairs = compare(rows)
    assert [(p["steps"], p["eps"]) for p in pairs] == [(10, 2.0), (50, 2.0)]
    first = pairs[0]
    assert first["adr_minus_pgd"] == pytest.approx(7.5 - 2.5)
    low, high = first["diff_ci95"]
    assert low <= 5.0 <= high
    assert pairs[1]["adr_minus_pgd"] == 0.0 and pairs[1]["verdict"] == "equal, CI spans 0"
    assert tally(pairs) == {
        "settings": 2,
        "adr_at_least_as_low": 1,
        "adr_lower_ci_excludes_0": 0,
        "pgd_lower_ci_excludes_0": 0,
    }
    main(["--out", str(tmp_path)])  # finds rollout_*/ by itself
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["tally"]["settings"] == 2
    text = (tmp_path / "summary.md").read_text()
    assert "| coinrun | untargeted | 2 | 10 |" in text
    assert "| coinrun | - | none | 0 | 0 | 7.50 [0.00, 10.00] | 4 (0) | - | - | - |" in text
    assert text.count("| coinrun | untargeted | adr |") == 3
    assert (tmp_path / "summary.png").stat().st_size > 10_000


def _levelled(row, order):
    """``row`` with level records: episode i of run r played (seed r, env i, level 100 r + i),
    listed in the finishing ``order`` of each run (a permutation)."""
    for r, run in enumerate(row["runs"]):
        n = len(run["returns"])
        run["returns"] = [run["returns"][i] for i in order[:n]]
        run.update(seed=r, env_ids=list(order[:n]), level_seeds=[100 * r + i for i in order[:n]])
    return row


def test_settings_with_level_records_are_compared_episode_by_episode():
    # Level difficulty dominates: PGD takes 1 point off every level, ADR 2.
    levels = [20.0, 5.0, 15.0, 0.0, 25.0, 10.0]
    pgd = _levelled(_row("pgd", "untargeted", 2.0, 10, [x - 1 for x in levels]), [0, 1, 2])
    adr = _levelled(_row("adr", "untargeted", 2.0, 10, [x - 2 for x in levels]), [2, 0, 1])
    a, p = paired_returns(adr, pgd)  # matched by level although finished in another order
    np.testing.assert_array_equal(a - p, -1.0)
    (pair,) = compare(
        {
            ("coinrun", "pgd", "untargeted", 2.0, 10): pgd,
            ("coinrun", "adr", "untargeted", 2.0, 10): adr,
        }
    )
    assert pair["paired"] and pair["diff_ci95"] == pytest.approx([-1.0, -1.0])
    assert pair["verdict"] == "ADR lower (CI < 0)"
    # Without level records (older rows) the same returns are two independent samples.
    old = _row("pgd", "untargeted", 2.0, 10, [x - 1 for x in levels])
    assert paired_returns(adr, old) is None
    (pair,) = compare(
        {
            ("coinrun", "pgd", "untargeted", 2.0, 10): old,
            ("coinrun", "adr", "untargeted", 2.0, 10): adr,
        }
    )
    assert not pair["paired"] and pair["diff_ci95"][0] < -1.0 < 0.0 < pair["diff_ci95"][1]


def test_gather_refuses_a_setting_that_differs_between_runs(tmp_path):
    _write(tmp_path / "rollout_a", [_row("none", "untargeted", 0.0, 0, CLEAN)])
    _write(tmp_path / "rollout_b", [_row("none", "untargeted", 0.0, 0, [0.0, 0.0, 0.0, 0.0])])
    with pytest.raises(ValueError, match="differs between two runs"):
        gather([tmp_path / "rollout_a", tmp_path / "rollout_b"])


def test_verdict_reads_the_interval():
    assert verdict(-1.0, -2.0, -0.5) == "ADR lower (CI < 0)"
    assert verdict(1.0, 0.5, 2.0) == "PGD lower (CI > 0)"
    assert verdict(-0.2, -1.0, 0.5) == "ADR lower, CI spans 0"
    assert verdict(0.3, -1.0, 1.5) == "PGD lower, CI spans 0"


def test_bootstrap_diff_ci():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 400), rng.normal(0.0, 1.0, 400)
    low, high = bootstrap_diff_ci(a, b, seed=1)
    assert low < a.mean() - b.mean() < high
    # Half-width close to the normal approximation 1.96 * sqrt(2 / n) * sigma.
    assert abs((high - low) / 2 - 1.96 * np.sqrt(a.var() / 400 + b.var() / 400)) < 0.03
    assert bootstrap_diff_ci(np.full(5, 2.0), np.full(7, 1.0)) == (1.0, 1.0)
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_diff_ci(np.array([]), b)
