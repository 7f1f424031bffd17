"""The sweep runner: per-job results, failures that spare the other jobs, resume, config errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from adr_rl import maximize
from adr_rl_app.eval.random_relu import SHAPES, random_relu_net
from adr_rl_app.eval.stats import bootstrap_mean_ci
from adr_rl_app.eval.sweep import Args, SweepConfigError, expand, job_id, load_config, run

STEPS = 50
METHODS = ["gd", "adr"]
SEEDS = [0, 1]
BAD = "not_a_method"  # maximize raises ValueError on it


def write_config(path: Path, raw: dict) -> str:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def tiny_config(tmp: Path) -> str:
    return write_config(
        tmp / "tiny.yml",
        {
            "job": "random-relu",
            "grid": {"method": [*METHODS, BAD], "seed": SEEDS},
            "fixed": {"shape": "small", "steps": STEPS},
        },
    )


def direct_value(method: str, seed: int) -> float:
    net = random_relu_net(SHAPES["small"], seed)
    x0 = torch.zeros(1, SHAPES["small"][0])
    res = maximize(net, x0, lower=-1, upper=1, steps=STEPS, method=method, seed=seed)
    return float(res.value.item())


def records(run_dir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((run_dir / "jobs").glob("*.json"))}


def mtimes(run_dir: Path) -> dict[str, int]:
    return {p.stem: p.stat().st_mtime_ns for p in (run_dir / "jobs").glob("*.json")}


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    config = tiny_config(tmp)
    status = run(Args(config=config, run_dir=str(tmp / "run"), workers=2))
    return status, config, tmp / "run"


def test_a_failing_job_is_reported_and_the_others_are_kept(local_sweep):
    status, _, run_dir = local_sweep
    assert status == 1
    recs = records(run_dir)
    assert len(recs) == len(METHODS + [BAD]) * len(SEEDS)
    for seed in SEEDS:
        bad = recs[f"method={BAD},seed={seed}"]
        assert bad["status"] == "failed" and "result" not in bad
        assert bad["error"]["type"] == "ValueError"
        assert f"unknown method '{BAD}'" in bad["error"]["message"]
        assert "Traceback" in bad["error"]["traceback"]
        for method in METHODS:
            ok = recs[f"method={method},seed={seed}"]
            assert ok["status"] == "ok"
            params = {"shape": "small", "steps": STEPS, "method": method, "seed": seed}
            assert ok["params"] == params
            assert ok["result"]["metric"] == direct_value(method, seed)
    assert not list((run_dir / "jobs").glob(".*.tmp"))  # atomic writes leave nothing behind


def test_results_aggregate_the_seeds_of_each_cell(local_sweep):
    _, _, run_dir = local_sweep
    results = json.loads((run_dir / "results.json").read_text())
    assert (results["n_jobs"], results["n_ok"], results["n_failed"]) == (6, 4, 2)
    cells = {c["cell"]["method"]: c for c in results["cells"]}
    assert list(cells) == [*METHODS, BAD]
    for method in METHODS:
        v = np.array([direct_value(method, s) for s in SEEDS])
        c = cells[method]
        assert (c["n"], c["seeds"], c["failed_seeds"]) == (2, SEEDS, [])
        assert c["mean"] == pytest.approx(v.mean(), rel=1e-12)
        assert c["std"] == pytest.approx(v.std(), rel=1e-12)
        assert c["ci95"] == pytest.approx(list(bootstrap_mean_ci(v)), rel=1e-12)
        assert c["ci95"][0] <= c["mean"] <= c["ci95"][1]
    assert cells[BAD]["n"] == 0 and cells[BAD]["mean"] is None
    assert cells[BAD]["failed_seeds"] == SEEDS
    table = (run_dir / "results.md").read_text()
    assert f"`method={BAD},seed=0`: ValueError: unknown method '{BAD}'" in table
    assert f"| adr | 2 | {cells['adr']['mean']:.4g} |" in table
    assert (run_dir / "metric.png").stat().st_size > 0


def test_rerun_skips_successes_and_retries_failures(local_sweep, tmp_path, capsys):
    status, config, first = local_sweep
    run_dir = tmp_path / "run"
    shutil.copytree(first, run_dir)  # copy2: mtimes kept
    before, old = mtimes(run_dir), records(run_dir)
    capsys.readouterr()

    assert run(Args(config=config, run_dir=str(run_dir))) == 1
    out = capsys.readouterr().out
    assert "4 already done (skipped)" in out and "2 to run (2 failed before" in out
    after, new = mtimes(run_dir), records(run_dir)
    for key in before:
        if old[key]["status"] == "ok":
            assert after[key] == before[key] and new[key] == old[key]  # not recomputed
        else:
            assert after[key] != before[key] and new[key]["status"] == "failed"  # retried

    # Nothing changed and nothing retried: no job runs, the aggregates are the same.
    assert run(Args(config=config, run_dir=str(run_dir), retry_failed=False)) == 1
    out = capsys.readouterr().out
    assert "4 already done (skipped), 2 failed before (kept), 0 to run" in out
    assert mtimes(run_dir) == after
    cells = json.loads((first / "results.json").read_text())["cells"]
    assert json.loads((run_dir / "results.json").read_text())["cells"] == cells


def test_a_dead_worker_or_a_bad_result_fails_only_its_own_job(tmp_path):
    config = write_config(
        tmp_path / "crash.yml",
        {
            "job": "tests.sweep_test_jobs:echo",
            # Interleaved, so that other jobs are in flight when a worker dies.
            "grid": {"seed": [0], "mode": ["crash", "ok", "nan", "no_metric", "numpy", "exit"]},
        },
    )
    assert run(Args(config=config, run_dir=str(tmp_path / "run"), workers=2)) == 1
    recs = records(tmp_path / "run")
    seed = 0
    assert recs[f"seed={seed},mode=ok"]["result"]["metric"] == seed
    numpy = recs[f"seed={seed},mode=numpy"]["result"]
    assert numpy == {"metric": seed, "curve": [0, 1], "std": None}
    modes = ["crash", "nan", "no_metric", "exit"]
    errors = {m: recs[f"seed={seed},mode={m}"]["error"] for m in modes}
    assert errors["exit"]["type"] == "SystemExit"
    assert errors["exit"]["message"] == "error: no such model"
    assert errors["crash"]["type"] == "WorkerCrashed" and "died" in errors["crash"]["message"]
    assert errors["nan"]["type"] == "ValueError" and "non-finite metric" in errors["nan"]["message"]
    assert errors["no_metric"]["type"] == "TypeError"
    assert "returned list, not a dict with 'metric'" in errors["no_metric"]["message"]


def test_a_changed_fixed_value_reruns_the_jobs(tmp_path, capsys):
    raw = {"job": "tests.sweep_test_jobs:echo", "grid": {"seed": [0, 1]}, "fixed": {"mode": "ok"}}
    config, run_dir = write_config(tmp_path / "c.yml", raw), str(tmp_path / "run")
    assert run(Args(config=config, run_dir=run_dir, workers=1)) == 0
    raw["fixed"]["mode"] = "numpy"
    assert run(Args(config=write_config(tmp_path / "c.yml", raw), run_dir=run_dir, workers=1)) == 0
    out = capsys.readouterr().out.split("sweep ")[-1]  # the second run's summary line
    assert "0 already done (skipped)" in out and "2 with changed params" in out
    for rec in records(tmp_path / "run").values():
        assert rec["params"]["mode"] == "numpy" and rec["result"]["curve"] == [0, 1]


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"job": "train", "grid": {"seed": [0]}}, "unknown job kind 'train'"),
        ({"job": "random-relu", "grid": {"method": "gd", "seed": [0]}}, "must be a non-empty list"),
        ({"job": "random-relu", "grid": {"method": ["gd"]}}, "must have a 'seed' list"),
        ({"job": "random-relu", "grid": {"seed": [0.5]}}, "'seed' values must be ints"),
        ({"job": "random-relu", "grid": {"seed": [0]}, "fixed": {"seed": 1}}, "in both grid"),
        ({"job": "random-relu", "grid": {"seed": [0]}, "fixed": {"shape": "small"}}, "needs"),
        (
            {"job": "random-relu", "grid": {"seed": [0]}, "fixed": {"stpes": 5}},
            "takes no parameters ['stpes']",
        ),
        ({"job": "random-relu", "grid": {"seed": [0, 0]}}, "repeat"),
        ({"job": "random-relu", "grids": {"seed": [0]}}, "unknown top-level keys ['grids']"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_config_errors_are_one_line(tmp_path, raw, message):
    path = write_config(tmp_path / "bad.yml", raw)
    with pytest.raises(SweepConfigError) as err:
        run(Args(config=path, run_dir=str(tmp_path / "run")))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()  # nothing is written for a config that cannot run


def test_cli_reports_a_config_error_and_exits_2(tmp_path, capsys):
    from adr_rl_app import cli

    assert cli.main(["sweep", str(tmp_path / "missing.yml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("adr-rl: error: ") and "\n" not in err
    assert "missing.yml' does not exist" in err


def test_job_ids_are_readable_file_names_and_distinct(tmp_path):
    assert job_id({"env": "Pendulum-v1", "radius": 0.1, "seed": 0}) == (
        "env=Pendulum-v1,radius=0.1,seed=0"
    )
    a, b = job_id({"model": "a/b", "seed": 0}), job_id({"model": "a_b", "seed": 0})
    assert a != b and "/" not in a and a.startswith("model=a_b,seed=0-")
    config = load_config(
        write_config(
            tmp_path / "c.yml",
            {"job": "mod:fn", "grid": {"x": [1, "a b", True], "seed": [0, 1]}, "fixed": {"k": 2}},
        )
    )
    jobs = expand(config)
    assert [j.id for j in jobs][:2] == ["x=1,seed=0", "x=1,seed=1"]
    assert jobs[2].id.startswith("x=a_b,seed=0-") and jobs[4].id == "x=true,seed=0"
    assert jobs[0].params == {"k": 2, "x": 1, "seed": 0}


def test_ray_backend_gives_the_local_results(local_sweep, tmp_path):
    pytest.importorskip("ray")
    _, config, local_dir = local_sweep
    status = run(Args(config=config, backend="ray", workers=2, run_dir=str(tmp_path / "run")))
    assert status == 1
    local, remote = records(local_dir), records(tmp_path / "run")
    assert set(remote) == set(local)
    for key, rec in local.items():
        assert remote[key]["status"] == rec["status"]
        if rec["status"] == "ok":
            assert remote[key]["result"]["metric"] == rec["result"]["metric"]
        else:
            assert remote[key]["error"]["message"] == rec["error"]["message"]
    cells = json.loads((local_dir / "results.json").read_text())["cells"]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["cells"] == cells


def test_a_pool_that_breaks_between_submissions_loses_no_job(tmp_path, monkeypatch):
    """The race CI once hit: a worker dies after one job was submitted and before the
    next, so ``submit`` itself raises BrokenProcessPool. That job never ran; it must go
    to a fresh pool instead of aborting the sweep."""
    import concurrent.futures as cf
    from concurrent.futures.process import BrokenProcessPool

    import adr_rl_app.eval.sweep as sweep

    calls = {"n": 0}

    class FlakyPool(cf.ProcessPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:  # the second submission of the whole sweep
                raise BrokenProcessPool("a child process terminated abruptly")
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(sweep.cf, "ProcessPoolExecutor", FlakyPool)
    config = write_config(
        tmp_path / "ok.yml",
        {"job": "tests.sweep_test_jobs:echo", "grid": {"seed": [0, 1, 2], "mode": ["ok"]}},
    )
    assert run(Args(config=config, run_dir=str(tmp_path / "run"), workers=2)) == 0
    recs = records(tmp_path / "run")
    assert sorted(r["result"]["metric"] for r in recs.values()) == [0.0, 1.0, 2.0]
    assert calls["n"] == 4  # three jobs, one submission refused and repeated
