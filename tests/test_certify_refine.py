"""Smoke test of eval/certify_refine.py (exact refinement gaps) with a tiny budget."""

from __future__ import annotations

import json
import subprocess
import sys


def test_certify_refine_smoke(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "adr_rl_app.eval.certify_refine",
        "--quick",
        "--states",
        "3",
        "--methods",
        "gd",
        "cem",
        "--out",
        str(tmp_path),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
    assert "| td3_Pendulum-v1 | 0.25 |" in out.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    case = results["agents"]["td3_Pendulum-v1"]["radii"]["0.25"]
    summary = case["summary"]
    assert summary["states"] == 3 and summary["solved"] == 3
    assert summary["violations"] == {"upper_bound": 0, "exact_below_heuristic": 0}
    for method in ("gd", "cem"):
        assert 0.0 <= summary["methods"][method]["share_captured"] <= 1.0 + 1e-6
        # the exact maximum is at least what every heuristic found
        for v, best in zip(case["methods"][method], case["exact_value"], strict=True):
            assert v <= best + 1e-6 * max(1.0, abs(best))
    assert (tmp_path / "certify_refine.png").stat().st_size > 5_000
    assert (tmp_path / "summary.md").exists()
