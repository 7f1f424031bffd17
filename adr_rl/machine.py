"""What machine a number was measured on, and which numerics its CPU runs natively.

Timings differ by CPU (developer machines are Intel with AMX on some days, AMD on
others), so every benchmark and training run records :func:`machine_info`; bf16 pays
only where the CPU has bf16 instructions, so training asks :func:`native_bf16` before
it turns autocast on; and small optimization problems run fastest, and robustly on a
busy machine, on one thread (:func:`threads_for`).
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

#: CPU flags (as ``/proc/cpuinfo`` names them) that matter for the speed of torch's CPU kernels.
SPEED_FLAGS: tuple[str, ...] = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
#: Flags that give native bf16 matrix arithmetic on x86 (oneDNN's bf16 kernels).
BF16_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """``(model name, flags)`` from ``/proc/cpuinfo``; ``(platform name, {})`` elsewhere."""
    model, flags = "", frozenset[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = frozenset(value.split())
            if model and flags:
                break
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def cpu_model() -> str:
    """The CPU's model name, e.g. ``"AMD EPYC"`` or ``"Intel(R) Xeon(R) Platinum 8480+"``."""
    return _cpuinfo()[0]


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` runs bf16 matrix products natively (not emulated in fp32).

    CPU: an x86 ``avx512_bf16`` or ``amx_bf16`` flag. CUDA: ``torch.cuda.is_bf16_supported()``.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    return any(flag in _cpuinfo()[1] for flag in BF16_FLAGS)


def machine_info() -> dict[str, Any]:
    """Facts to store beside any timing: CPU model and speed flags, cores, torch, GPU."""
    _, flags = _cpuinfo()
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_flags": [f for f in SPEED_FLAGS if f in flags],
        "cpu_native_bf16": native_bf16("cpu"),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


#: Inputs with at most this many elements per call (``x0.numel()``) count as small
#: work: on a CPU their iterations take micro- to milliseconds, where OpenMP's
#: fork/join and spin-waits cost more than a second thread gains, and a second thread
#: that has to wait for a core another process holds stalls every op (measured: 100-step
#: ADR refinement at batch 1, 38 ms with 1 thread vs 1-2 s with 2 threads beside
#: another CPU-bound process; both ~40 ms on an idle machine).
SMALL_WORK_ELEMENTS = 1 << 15


def threads_for(x: torch.Tensor, threads: int | None = None) -> int | None:
    """The torch thread count to run work on ``x`` with, or ``None`` to leave it alone.

    ``threads`` given: that. Otherwise 1 for small CPU work (:data:`SMALL_WORK_ELEMENTS`)
    and ``None`` (the process's setting) for large batches or GPU tensors.
    """
    if threads is not None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be a positive int or None (auto), got {threads!r}")
        return threads
    if x.device.type == "cpu" and x.numel() <= SMALL_WORK_ELEMENTS:
        return 1
    return None


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` intra-op torch threads (``None``: unchanged), then restore."""
    if n is None or n == torch.get_num_threads():
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
