"""Run a grid of independent jobs (envs/games x methods x radius/eps x seeds) and gather them.

    adr-rl sweep eval/sweeps/random_relu.yml                 # local worker processes
    python -m adr_rl_app.eval.sweep eval/sweeps/pendulum_refine.yml --workers 4
    adr-rl sweep eval/sweeps/coinrun_attack.yml --backend ray  # an existing Ray cluster

The config is one YAML file::

    job: refine            # job kind: refine | attack | random-relu, or "module:function"
    grid:                  # every value is a list; the jobs are their cartesian product
      env: [Pendulum-v1]
      method: [none, adr, gd]
      radius: [0.1, 0.25]
      seed: [0, 1, 2]      # required: the aggregates are taken over seeds
    fixed:                 # optional: passed to every job unchanged
      model: agents/zoo/td3_Pendulum-v1.zip
      episodes: 5

A job gets ``fixed`` merged with one value of every grid key as its ``params`` dict.
The parameter names a registered kind accepts are listed in :data:`JOB_KINDS` (a typo
is a config error, not a silently ignored key); a ``module:function`` kind (any
importable ``function(params: dict) -> dict``) takes any names. Grid values are
scalars (string, number, bool). Every job returns a JSON-able dict with a float
``"metric"`` (refine and attack: the mean episode return; random-relu: the best value).

Results are files under ``--run-dir`` (default ``runs/sweep-<config file stem>/``, fixed
so that running the same config again resumes it):

- ``jobs/<id>.json``, one per job, written atomically as soon as the job ends:
  ``{id, target, params, status: "ok" | "failed", result | error: {type, message,
  traceback}, seconds, host, finished}``. The id is readable, made of the grid values in
  the config's key order (``env=Pendulum-v1,method=adr,radius=0.1,seed=0``), with a
  short hash appended when characters had to be replaced to make it a file name.
- ``results.json``: the config, every job's record, and per grid cell (all grid keys
  but ``seed``) the metric's n, mean, std (population std, ddof 0, as the other eval
  scripts) and percentile-bootstrap 95% CI of the mean over the seeds that succeeded.
- ``results.md``: the same as a markdown table (also printed) and the failed jobs
  with their one-line errors; ``metric.png``: mean and CI per cell, one series per method.

A job that raises is recorded as failed with its traceback and the others go on; a
worker process that dies (segfault, out of memory, ``os._exit``) is reported per job
too: the jobs that were running when it died are rerun one at a time in a fresh
process, so exactly the job that kills its process is marked failed. The exit status
is 1 if any job failed (after every file is written), else 0.

Rerunning skips the jobs whose file holds a success with the same params (a changed
``fixed`` value reruns them) and retries the failed ones (``--no-retry-failed`` keeps
their old errors).

Backends. ``local`` (default): a ``ProcessPoolExecutor`` of ``--workers`` spawned
processes, at most ``--workers`` jobs in flight. ``ray`` (``pip install -e ".[ray]"``):
one ``ray.remote`` task per job (1 CPU each) on the cluster at ``--ray-address`` or
``RAY_ADDRESS``, else on a live cluster started on this machine by ``ray start``, else
on a new local Ray instance with ``--workers`` CPUs, started and stopped by the sweep.
The driver writes the result files as the tasks finish, so the workers need not share
its filesystem (they do need this repository importable: same checkout, or a
``runtime_env``). Ray 2.60's ``ray start`` turns token authentication on; a driver then
needs ``RAY_AUTH_MODE=token`` in its environment to connect. Ray 2.60 rejects
``ray.init(local_mode=True)`` ("no longer supported"), so the tests use the
new-local-instance path with 2 CPUs (about 10 s to start on 2 cores).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime
import hashlib
import importlib
import itertools
import json
import math
import multiprocessing
import os
import re
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tyro
import yaml
from tqdm.auto import tqdm

from adr_rl_app.eval.loading import UserError
from adr_rl_app.eval.runs import write_json
from adr_rl_app.eval.stats import bootstrap_mean_ci


@dataclass
class Args:
    config: tyro.conf.Positional[str]
    """The sweep's YAML file (format in this module's docstring)."""
    backend: str = "local"
    """Where the jobs run: local (worker processes on this machine) or ray."""
    workers: int = 2
    """Local: worker processes. Ray: CPUs of the local Ray instance, if one is started."""
    ray_address: str = ""
    """Ray cluster address; empty: RAY_ADDRESS, else a cluster running here, else a new one."""
    run_dir: str = ""
    """Output folder; empty: runs/sweep-<config file stem>/ (rerunning a config resumes it)."""
    retry_failed: bool = True
    """Rerun the jobs that failed in an earlier run of this sweep (else keep their errors)."""


@dataclass(frozen=True)
class JobKind:
    """A registered job kind: where its function lives and the parameters it takes."""

    target: str
    """``"module:function"``, imported in the worker only when a job of this kind runs."""
    params: tuple[str, ...]
    """Every parameter name the function reads (keep in step with its docstring)."""
    required: tuple[str, ...]
    """The names a config must give (in ``grid`` or ``fixed``)."""


JOB_KINDS: dict[str, JobKind] = {
    "refine": JobKind(
        "adr_rl_app.eval.refinement:sweep_job",
        ("model", "env", "method", "radius", "steps", "episodes", "seed", "device")
        + ("budget", "critic", "max_episode_steps"),
        ("model", "env", "method", "seed"),
    ),
    "attack": JobKind(
        "adr_rl_app.eval.attacking:sweep_job",
        ("model", "game", "method", "eps", "steps", "targeted", "episodes", "seed", "device")
        + ("n_envs", "max_episode_steps"),
        ("model", "game", "method", "eps", "seed"),
    ),
    "random-relu": JobKind(
        "adr_rl_app.eval.sweep_jobs:random_relu",
        ("shape", "method", "steps", "seed"),
        ("shape", "method", "steps", "seed"),
    ),
}


class SweepConfigError(UserError):
    """A sweep config that cannot run; the message is one line naming the fix."""


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep config."""

    job: str
    """Job kind: a key of :data:`JOB_KINDS` or ``"module:function"``."""
    grid: dict[str, list[Any]]
    """Grid key -> its values, in the file's order; always has ``seed``."""
    fixed: dict[str, Any]
    """Parameters every job gets unchanged."""

    @property
    def target(self) -> str:
        return JOB_KINDS[self.job].target if self.job in JOB_KINDS else self.job

    @property
    def cell_keys(self) -> list[str]:
        """The grid keys that name a cell (all but ``seed``)."""
        return [k for k in self.grid if k != "seed"]


@dataclass(frozen=True)
class Job:
    id: str
    """File-safe, readable id from the grid values."""
    params: dict[str, Any]
    """``fixed`` merged with this job's grid values."""


_SCALARS = (str, int, float, bool)


def parse_config(raw: Any, source: str = "config") -> SweepConfig:
    """Validate a loaded YAML document; every problem is a one-line :class:`SweepConfigError`."""

    def fail(msg: str) -> SweepConfigError:
        return SweepConfigError(f"{source}: {msg}")

    if not isinstance(raw, dict):
        raise fail(f"expected a mapping with keys job, grid, fixed; got {type(raw).__name__}")
    unknown = sorted(set(raw) - {"job", "grid", "fixed"})
    if unknown:
        raise fail(f"unknown top-level keys {unknown}; allowed: job, grid, fixed")
    job = raw.get("job")
    if not isinstance(job, str) or not (job in JOB_KINDS or re.fullmatch(r"[\w.]+:\w+", job)):
        raise fail(
            f"unknown job kind {job!r}; choose one of {sorted(JOB_KINDS)} or give 'module:function'"
        )
    grid = raw.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise fail("'grid' must be a non-empty mapping of parameter name -> list of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise fail(f"grid value of {key!r} must be a non-empty list, got {values!r}")
        bad = [v for v in values if not isinstance(v, _SCALARS)]
        if bad:
            raise fail(f"grid values of {key!r} must be strings, numbers or bools, got {bad[0]!r}")
        if len(set(map(_fmt, values))) != len(values):
            raise fail(f"grid values of {key!r} repeat: {values!r}")
    if "seed" not in grid:
        raise fail("grid must have a 'seed' list (the aggregates are over seeds)")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in grid["seed"]):
        raise fail(f"grid 'seed' values must be ints, got {grid['seed']!r}")
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise fail(f"'fixed' must be a mapping of parameter name -> value, got {fixed!r}")
    both = sorted(set(grid) & set(fixed))
    if both:
        raise fail(f"parameters {both} are in both grid and fixed; keep each in one")
    try:
        json.dumps(fixed, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise fail(f"'fixed' values must be plain YAML data (JSON-able): {e}") from None
    if job in JOB_KINDS:
        kind = JOB_KINDS[job]
        given = set(grid) | set(fixed)
        unknown = sorted(given - set(kind.params))
        if unknown:
            raise fail(f"job {job!r} takes no parameters {unknown}; it takes {list(kind.params)}")
        missing = [p for p in kind.required if p not in given]
        if missing:
            raise fail(f"job {job!r} needs parameters {missing} in grid or fixed")
    return SweepConfig(job=job, grid=dict(grid), fixed=dict(fixed))


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep's YAML file."""
    path = Path(path)
    if not path.is_file():
        raise SweepConfigError(f"sweep config {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SweepConfigError(f"{path}: not valid YAML: {first}") from None
    return parse_config(raw, str(path))


def _fmt(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def job_id(values: dict[str, Any]) -> str:
    """Readable, file-safe id of one grid point, e.g. ``method=adr,radius=0.1,seed=0``."""
    raw = ",".join(f"{k}={_fmt(v)}" for k, v in values.items())
    safe = re.sub(r"[^A-Za-z0-9._=,+-]", "_", raw)
    if safe != raw or len(safe) > 180:  # replaced characters could make two ids collide
        digest = hashlib.sha1(raw.encode()).hexdigest()[:8]
        safe = f"{safe[:180]}-{digest}"
    return safe


def expand(config: SweepConfig) -> list[Job]:
    """The grid's cartesian product, in the file's key and value order."""
    keys = list(config.grid)
    jobs = []
    for combo in itertools.product(*(config.grid[k] for k in keys)):
        values = dict(zip(keys, combo, strict=True))
        jobs.append(Job(job_id(values), {**config.fixed, **values}))
    return jobs


def resolve(target: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Import ``"module:function"``."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def execute(target: str, job: Job) -> dict[str, Any]:
    """Run one job in the current process and return its record; never raises."""
    t0 = time.perf_counter()
    record: dict[str, Any] = {"id": job.id, "target": target, "params": job.params}
    try:
        fn = resolve(target)
        if "torch" in sys.modules:  # one job per core: the workers share the machine
            sys.modules["torch"].set_num_threads(1)
        result = fn(dict(job.params))
        if not isinstance(result, dict) or "metric" not in result:
            raise TypeError(f"{target} returned {type(result).__name__}, not a dict with 'metric'")
        metric = float(result["metric"])
        if not math.isfinite(metric):
            raise ValueError(f"{target} returned a non-finite metric {metric}")
        # JSON-able now, in the job's process, not later when the driver writes it.
        record.update(status="ok", result=jsonable({**result, "metric": metric}))
    # SystemExit too: a script's job function may end with sys.exit("error: ...").
    except (Exception, SystemExit) as e:  # noqa: BLE001 - a job's failure is data
        record.update(status="failed", error=_error(e, traceback.format_exc()))
    record.update(seconds=time.perf_counter() - t0, host=socket.gethostname(), finished=_now())
    return record


def jsonable(obj: Any, where: str = "result") -> Any:
    """``obj`` as plain JSON data: numpy/torch scalars and arrays become numbers and lists,
    tuples lists, non-finite floats ``None`` (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, str | bool | int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "tolist"):  # numpy and torch scalars and arrays
        return jsonable(obj.tolist(), where)
    raise TypeError(f"{where} is a {type(obj).__name__}, which is not JSON data")


def _error(e: BaseException, tb: str) -> dict[str, str]:
    return {"type": type(e).__name__, "message": str(e), "traceback": tb}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent or unreadable: the job runs again
    return record if isinstance(record, dict) else None


# ----------------------------------------------------------------------------- backends


def _crash_record(job: Job, target: str, message: str) -> dict[str, Any]:
    return {
        "id": job.id,
        "target": target,
        "params": job.params,
        "status": "failed",
        "error": {"type": "WorkerCrashed", "message": message, "traceback": ""},
        "seconds": None,
        "host": socket.gethostname(),
        "finished": _now(),
    }


def _local_pass(
    target: str, jobs: list[Job], workers: int, done: Callable[[dict[str, Any]], None]
) -> list[Job]:
    """Run ``jobs`` with at most ``workers`` in flight; return those a dead worker took down."""
    ctx = multiprocessing.get_context("spawn")
    pending = list(reversed(jobs))
    crashed: list[Job] = []
    while pending:
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            running: dict[cf.Future, Job] = {}
            broken = False
            while pending or running:
                while pending and len(running) < workers and not broken:
                    job = pending.pop()
                    try:
                        running[pool.submit(execute, target, job)] = job
                    except BrokenProcessPool:
                        # A worker died since the last wait: this job never started.
                        pending.append(job)
                        broken = True
                if not running:
                    break
                finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    job = running.pop(fut)
                    try:
                        done(fut.result())
                    except BrokenProcessPool:
                        broken = True  # every job in flight is lost; a fresh pool goes on
                        crashed.append(job)
                    except Exception as e:  # noqa: BLE001 - e.g. the job could not be sent
                        done(_crash_record(job, target, f"{type(e).__name__}: {e}"))
    return crashed


def run_local(
    target: str, jobs: list[Job], workers: int, done: Callable[[dict[str, Any]], None]
) -> None:
    """Spawned worker processes; a job that kills its process is found by running alone."""
    crashed = _local_pass(target, jobs, workers, done)
    if crashed and workers > 1:  # which of the jobs in flight killed it? one at a time tells
        crashed = _local_pass(target, crashed, 1, done)
    for job in crashed:
        done(
            _crash_record(
                job, target, "the worker process running this job died (BrokenProcessPool)"
            )
        )


def run_ray(
    target: str,
    jobs: list[Job],
    workers: int,
    address: str,
    done: Callable[[dict[str, Any]], None],
) -> None:
    """One Ray task per job; the driver writes each record as its task finishes."""
    try:
        import ray
    except ImportError:
        raise SweepConfigError(
            "--backend ray needs Ray: pip install -e '.[ray]' (or pip install 'ray>=2.9')"
        ) from None
    started = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS", "") or _running_cluster()
        if address:
            ray.init(address=address)
        else:  # "local": a new instance even where a dead `ray start` left its address file
            ray.init(address="local", num_cpus=workers, include_dashboard=False)
        started = True
    try:
        # max_retries: a task whose worker or node dies gets one more try, then is reported.
        remote = ray.remote(num_cpus=1, max_retries=1)(execute)
        refs = {remote.remote(target, job): job for job in jobs}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                job = refs.pop(ref)
                try:
                    done(ray.get(ref))
                except ray.exceptions.RayError as e:
                    message = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    done(_crash_record(job, target, f"{type(e).__name__}: {message}"))
    finally:
        if started:
            ray.shutdown()


def _running_cluster() -> str:
    """Address of a cluster started on this machine by ``ray start`` that answers, else "".

    Ray records the last one in its temp folder; ``ray.init(address="auto")`` trusts that
    record and, when the cluster has died without ``ray stop``, waits on it for minutes
    (seen with Ray 2.60). A one-second TCP probe of the GCS port tells a live one first.
    """
    try:
        from ray._private.services import get_ray_address_from_environment

        host, _, port = get_ray_address_from_environment("auto", None).rpartition(":")
        socket.create_connection((host, int(port)), timeout=1.0).close()
        return f"{host}:{port}"
    except Exception:  # noqa: BLE001 - Ray-internal API: any surprise means "none found"
        return ""


# ----------------------------------------------------------------------------- gathering


def aggregate(config: SweepConfig, records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per grid cell (all grid keys but seed): the metric over the seeds that succeeded."""
    keys = config.cell_keys
    cells = []
    for combo in itertools.product(*(config.grid[k] for k in keys)):
        cell = dict(zip(keys, combo, strict=True))
        metrics, seeds, failed = [], [], []
        for seed in config.grid["seed"]:
            rec = records.get(job_id(_with_seed(config, cell, seed)))
            if rec is not None and rec.get("status") == "ok":
                metrics.append(rec["result"]["metric"])
                seeds.append(seed)
            else:
                failed.append(seed)
        v = np.asarray(metrics, dtype=np.float64)
        finite = v.size > 0 and bool(np.isfinite(v).all())
        ci = bootstrap_mean_ci(v) if finite else (None, None)
        cells.append(
            {
                "cell": cell,
                "n": int(v.size),
                "mean": float(v.mean()) if finite else None,
                "std": float(v.std()) if finite else None,
                "ci95": list(ci),
                "seeds": seeds,
                "metrics": metrics,
                "failed_seeds": failed,
            }
        )
    return cells


def _with_seed(config: SweepConfig, cell: dict[str, Any], seed: int) -> dict[str, Any]:
    """Grid values of one job in the config's key order (the order its id uses)."""
    return {k: (seed if k == "seed" else cell[k]) for k in config.grid}


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _one_line(error: dict[str, Any]) -> str:
    message = str(error.get("message", "")).strip().splitlines()
    return f"{error.get('type', 'Error')}: {message[0] if message else ''}".rstrip(": ")


def markdown(config: SweepConfig, cells: list[dict[str, Any]], failed: list[dict]) -> str:
    keys = config.cell_keys
    head = [*keys, "n", "mean", "std", "95% CI", "failed seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cells:
        lo, hi = c["ci95"]
        ci = "-" if lo is None else f"[{lo:.4g}, {hi:.4g}]"
        fails = ", ".join(map(str, c["failed_seeds"])) or "-"
        row = [*(_fmt(c["cell"][k]) for k in keys), str(c["n"]), _num(c["mean"]), _num(c["std"])]
        lines.append("| " + " | ".join([*row, ci, fails]) + " |")
    if failed:
        lines += ["", f"Failed jobs ({len(failed)}):", ""]
        lines += [f"- `{r['id']}`: {_one_line(r['error'])}" for r in failed]
    return "\n".join(lines) + "\n"


def plot(config: SweepConfig, cells: list[dict[str, Any]], path: Path) -> None:
    """Mean metric and its 95% CI per cell, one series per method (if ``method`` is a key)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    group = "method" if "method" in config.grid else None
    others = [k for k in config.cell_keys if k != group]
    methods = config.grid[group] if group else [None]
    labels: list[str] = []
    for c in cells:
        label = ",".join(f"{k}={_fmt(c['cell'][k])}" for k in others) or "all"
        if label not in labels:
            labels.append(label)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(labels) + 2), 4))
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        xs, ys, err = [], [], []
        for c in cells:
            if (group and c["cell"][group] != m) or c["mean"] is None:
                continue
            lo, hi = c["ci95"]
            label = ",".join(f"{k}={_fmt(c['cell'][k])}" for k in others) or "all"
            xs.append(labels.index(label) + (j - (len(methods) - 1) / 2) * width)
            ys.append(c["mean"])
            err.append([c["mean"] - lo, hi - c["mean"]])
        e = np.asarray(err).T if err else None
        ax.errorbar(xs, ys, yerr=e, fmt="o", capsize=3, label=str(m) if group else None)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("metric: mean over seeds, 95% bootstrap CI")
    ax.grid(alpha=0.3)
    if group:
        ax.legend(fontsize=8, title=group)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- driver


def default_run_dir(config_path: str) -> Path:
    return Path("runs") / f"sweep-{Path(config_path).stem}"


def run(args: Args) -> int:
    """Run the sweep ``args`` describes; return 0 if every job succeeded, else 1."""
    if args.backend not in ("local", "ray"):
        raise SweepConfigError(f"--backend must be local or ray, got {args.backend!r}")
    if args.workers < 1:
        raise SweepConfigError(f"--workers must be >= 1, got {args.workers}")
    config = load_config(args.config)
    jobs = expand(config)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.config)
    job_dir = run_dir / "jobs"
    job_dir.mkdir(parents=True, exist_ok=True)

    records: dict[str, dict[str, Any]] = {}
    todo: list[Job] = []
    n_ok = n_failed_kept = n_retry = n_stale = 0
    for job in jobs:
        old = read_record(job_dir / f"{job.id}.json")
        same = old is not None and old.get("params") == json.loads(json.dumps(job.params))
        if same and old["status"] == "ok":
            records[job.id] = old
            n_ok += 1
        elif same and old["status"] == "failed" and not args.retry_failed:
            records[job.id] = old
            n_failed_kept += 1
        else:
            n_retry += same
            n_stale += old is not None and not same
            todo.append(job)
    print(
        f"sweep {args.config}: {len(jobs)} jobs; {n_ok} already done (skipped), "
        f"{n_failed_kept} failed before (kept), {len(todo)} to run "
        f"({n_retry} failed before, {n_stale} with changed params); results in {run_dir}"
    )

    bar = tqdm(total=len(todo), desc="sweep jobs", unit="job", disable=not todo)

    def done(record: dict[str, Any]) -> None:
        write_json(job_dir / f"{record['id']}.json", record, allow_nan=False)
        records[record["id"]] = record
        bar.update(1)
        if record["status"] != "ok":
            bar.write(f"failed {record['id']}: {_one_line(record['error'])}")

    try:
        if todo and args.backend == "local":
            run_local(config.target, todo, args.workers, done)
        elif todo:
            run_ray(config.target, todo, args.workers, args.ray_address, done)
    finally:
        bar.close()

    ordered = [records[j.id] for j in jobs if j.id in records]
    failed = [r for r in ordered if r["status"] != "ok"]
    cells = aggregate(config, records)
    results = {
        "config": {"path": args.config, **dataclasses.asdict(config)},
        "args": dataclasses.asdict(args),
        "n_jobs": len(jobs),
        "n_ok": len(ordered) - len(failed),
        "n_failed": len(failed),
        "cells": cells,
        "jobs": ordered,
    }
    write_json(run_dir / "results.json", results, allow_nan=False)
    table = markdown(config, cells, failed)
    (run_dir / "results.md").write_text(table)
    plot(config, cells, run_dir / "metric.png")
    print(table)
    print(f"wrote {run_dir / 'results.json'}, {run_dir / 'results.md'}, {run_dir / 'metric.png'}")
    return 1 if failed or len(ordered) < len(jobs) else 0


def main(argv: Iterable[str] | None = None) -> int:
    """Exit status: 0 all jobs succeeded, 1 some failed; a bad config raises
    :class:`SweepConfigError` (``adr-rl sweep`` prints it as one line, status 2)."""
    args = tyro.cli(Args, args=list(argv) if argv is not None else None, description=__doc__)
    return run(args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SweepConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
