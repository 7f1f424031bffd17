"""The eval scripts' shared conventions: one return-metric schema, one results writer
(with the machine it ran on), one model loader; and no script writes JSON by hand."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from adr_rl_app.eval.errors import UserError
from adr_rl_app.eval.runs import write_results
from adr_rl_app.eval.stats import bootstrap_mean_ci, return_summary

ROOT = Path(__file__).resolve().parents[1]

SCHEMA = {"n_episodes", "mean_return", "ci95_low", "ci95_high", "std_return"}


def test_return_summary_values() -> None:
    returns = np.array([1.0, 2.0, 3.0, 10.0])
    s = return_summary(returns, lengths=np.array([5, 5, 10, 20]), seed=3)
    assert set(s) == SCHEMA | {"mean_length"}
    assert s["n_episodes"] == 4 and s["mean_return"] == 4.0 and s["mean_length"] == 10.0
    assert s["std_return"] == pytest.approx(np.std(returns))
    assert (s["ci95_low"], s["ci95_high"]) == bootstrap_mean_ci(returns, seed=3)
    assert s["ci95_low"] <= s["mean_return"] <= s["ci95_high"]
    assert set(return_summary(returns)) == SCHEMA  # no lengths, no mean_length
    with pytest.raises(ValueError, match="non-empty"):
        return_summary(np.array([]))


def test_write_results_records_the_machine(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    write_results(path, {"rows": [1]})
    saved = json.loads(path.read_text())
    assert saved["rows"] == [1]
    assert {"cpu_model", "torch"} <= set(saved["machine"])
    write_results(path, {"rows": [2], "machine": {"cpu_model": "given"}})  # kept if given
    assert json.loads(path.read_text())["machine"] == {"cpu_model": "given"}
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temporary file left


def test_committed_refinement_results_use_the_schema() -> None:
    """The committed tables are read with the same keys the scripts write today."""
    for path in (ROOT / "results" / "refine_control").rglob("results.json"):
        for entry in json.loads(path.read_text())["agents"].values():
            for row in entry["rows"]:
                assert SCHEMA <= set(row), path
                assert row["n_episodes"] == len(row["returns"])
                assert row["mean_return"] == pytest.approx(np.mean(row["returns"]))


def test_no_script_writes_json_by_hand() -> None:
    """Every eval script writes through ``runs`` (atomic, machine recorded)."""
    offenders = []
    for path in sorted((ROOT / "eval").glob("*.py")):
        if path.name == "runs.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("dump", "dumps")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "json"
                and path.name != "sweep.py"  # hashes job parameters with json.dumps
            ):
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, offenders


def test_one_loader_refuses_the_wrong_algorithm() -> None:
    from adr_rl_app.eval.attack_procgen import shipped_policy
    from adr_rl_app.eval.refine_control import load_agent

    model, env_id = load_agent("td3_Pendulum-v1", zoo="", device="cpu")
    assert type(model).__name__ == "TD3" and env_id == "Pendulum-v1"
    with pytest.raises(UserError, match="algorithm must be one of"):
        load_agent("ppo_Pendulum-v1", zoo="", device="cpu")
    assert type(shipped_policy("coinrun")).__name__ == "PPO"
