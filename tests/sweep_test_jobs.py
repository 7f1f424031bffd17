"""Job functions that tests/test_sweep.py runs through eval.sweep (importable by workers)."""

from __future__ import annotations

import os
from typing import Any


def echo_or_crash(params: dict[str, Any]) -> dict[str, Any]:
    """Return the seed as the metric, or kill the worker process when ``mode`` is crash."""
    if params["mode"] == "crash":
        os._exit(3)  # no exception, no cleanup: what a segfault or the OOM killer looks like
    return {"metric": float(params["seed"]), "pid": os.getpid()}
