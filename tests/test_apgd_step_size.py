"""eval/apgd_step_size.py: APGD and PGD at several step sizes, paired against PGD."""

import json

import pytest

from adr_rl_app.eval import apgd_step_size


@pytest.mark.procgen
def test_quick_run_pairs_every_variant_with_the_reference_pgd(tmp_path):
    out = tmp_path / "run"
    apgd_step_size.main(["--quick", "--out", str(out), "--apgd-steps", "2", "0.5"])
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["method"], r["step_over_eps"]) for r in rows] == [
        ("pgd", 0.25),
        ("pgd", 2.0),
        ("apgd", 2.0),
        ("apgd", 0.5),
    ]
    reference = rows[0]
    assert reference["vs_pgd"]["diff"] == 0.0
    assert reference["vs_pgd"]["only_a"] == reference["vs_pgd"]["only_b"] == 0
    for r in rows:
        assert len(r["flipped"]) == 16 and set(r["flipped"]) <= {0, 1}
        assert r["flip_rate"] == pytest.approx(sum(r["flipped"]) / 16)
        d = r["vs_pgd"]
        assert d["diff"] == pytest.approx((sum(r["flipped"]) - sum(reference["flipped"])) / 16)
        assert d["diff_ci95"][0] <= d["diff"] <= d["diff_ci95"][1]
    assert (out / "flip_vs_step.png").stat().st_size > 0
    assert "initial step / eps" in (out / "summary.md").read_text()


def test_the_reference_pgd_is_required():
    with pytest.raises(SystemExit, match="0.25"):
        apgd_step_size.parse_args(["--pgd-steps", "2"])
