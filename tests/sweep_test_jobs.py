"""Job functions that tests/test_sweep.py runs through eval.sweep (importable by workers)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def echo(params: dict[str, Any]) -> Any:
    """The seed as the metric, or one way for a job to go wrong, chosen by ``mode``."""
    seed, mode = params["seed"], params["mode"]
    if mode == "crash":
        os._exit(3)  # no exception, no cleanup: what a segfault or the OOM killer looks like
    if mode == "exit":  # what a script's main() does with a user error
        raise SystemExit("error: no such model")
    if mode == "nan":
        return {"metric": float("nan")}
    if mode == "no_metric":
        return [seed]
    if mode == "numpy":  # numpy values and a NaN among the extra fields are fine
        return {"metric": np.float32(seed), "curve": np.arange(2), "std": float("nan")}
    return {"metric": float(seed), "pid": os.getpid()}
