"""Run folders: where every ``adr-rl`` command leaves its JSON, plots and table.

``runs/<command>-<YYYYmmdd-HHMMSS>/`` holds ``results.json`` (config, seeds, raw numbers
and aggregates), the PNG plots, and ``summary.md`` (the markdown table the command
prints at the end), so a run can be read, compared and re-plotted later.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def new_run_dir(command: str, root: str | Path = "runs", create: bool = True) -> Path:
    """A fresh folder ``<root>/<command>-<time>`` (suffixed if two runs share a second);
    ``create=False`` only names it, for a script that makes its own ``--out``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{command}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    if create:
        path.mkdir(parents=True)
    return path


def output_dir(out: str, command: str) -> Path:
    """``--out`` if given, else a fresh run folder for ``command``; created either way."""
    path = Path(out) if out else new_run_dir(command)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(path: Path, obj: Any, allow_nan: bool = True) -> None:
    """Atomic write: a reader sees the old file or the whole new one, never a part, also
    if the run is killed; the temporary name is per process, so concurrent writers of
    one folder (sweep workers) never share it. ``allow_nan=False`` refuses NaN/inf,
    which strict JSON readers reject."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=allow_nan))
    os.replace(tmp, path)


def write_results(path: Path, results: dict[str, Any]) -> None:
    """A command's results JSON, with the machine it ran on (CPU model and flags, threads,
    torch) added under ``machine`` unless the command recorded it itself; atomic."""
    from adr_rl.machine import machine_info

    if "machine" not in results:  # not setdefault: the partial writes would re-read the CPU
        results["machine"] = machine_info()
    write_json(path, results)


def finish(run_dir: Path, summary: str) -> None:
    """Write the run's markdown table and print it with where everything went."""
    (run_dir / "summary.md").write_text(summary + "\n")
    print()
    print(summary)
    print(f"\nrun folder: {run_dir}")


def write_run(
    out: str,
    command: str,
    results: dict[str, Any],
    table: str,
    plots: dict[str, Callable[[dict[str, Any], Path], None]],
) -> Path:
    """The one results writer of a command: ``results.json`` (with the machine it ran on),
    each plot, and the markdown table, printed; returns the run folder."""
    run_dir = output_dir(out, command)
    write_results(run_dir / "results.json", results)
    for name, draw in plots.items():
        draw(results, run_dir / name)
    finish(run_dir, table)
    return run_dir
