"""Branch and bound over the input box, with MILP leaves (one problem row).

On low-dimensional variables (1-3 action coordinates) a wide trust region crosses
many first-layer hyperplanes, so one MILP over the whole box has many binaries and
loose big-M constants. Splitting the box instead makes CROWN's bounds tight quickly:
keep the sub-boxes in a best-first queue by their CROWN upper bound, split the widest
coordinate of the most promising one, prune every sub-box whose bound is below the
best value found, and solve a sub-box by MILP (few binaries, tight big-M) once its
unstable units are few. The largest bound left in the queue is a proven upper bound
at any time, so a time-out still returns a certificate.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from adr_rl.certify.bounds import LayerBounds, encode_row, objective_upper_bound
from adr_rl.certify.formulation import SOLVER_GAP_FACTOR, solve_encoding
from adr_rl.certify.network import DTYPE, AffineLayers, objective_value
from adr_rl.certify.region import region_argmax

__all__ = ["BranchResult", "branch_and_bound"]

# What to do with a queued sub-box: bound and split it, or solve it by MILP once few
# units are unstable (_OPEN); solve it again (_RETRY, its MILP ran out of time); only
# split it (_SPLIT, the solver failed on it; descendants too).
_OPEN, _RETRY, _SPLIT = 0, 1, 2


@dataclass(frozen=True)
class BranchResult:
    """:param x: ``(d,)`` float64 best point; ``value`` its objective; ``upper_bound``
    the proven bound; ``status`` ``"optimal"`` or ``"time_limit"``; ``boxes`` the
    sub-boxes bounded; ``leaves`` the MILPs solved."""

    x: torch.Tensor
    value: float
    upper_bound: float
    status: str
    boxes: int
    leaves: int


def _slice(bounds: Sequence[LayerBounds], i: int) -> list[LayerBounds]:
    return [
        LayerBounds(
            tuple(t[i : i + 1] for t in b.lower), tuple(t[i : i + 1] for t in b.upper), b.method
        )
        for b in bounds
    ]


def branch_and_bound(
    layers: Sequence[AffineLayers],
    lower: torch.Tensor,
    upper: torch.Tensor,
    *,
    time_limit: float,
    mip_rel_gap: float,
    bounds: str = "crown",
    leaf_unstable: int = 24,
    incumbent: tuple[torch.Tensor, float] | None = None,
) -> BranchResult:
    """Maximize ``min_k f_k(x)`` over one box by input splitting with MILP leaves.

    :param layers: the networks for this row only (weights with batch dimension 1).
    :param lower: ``(d,)`` float64, finite; ``upper`` likewise.
    :param leaf_unstable: solve a sub-box by MILP once it has at most this many
        unstable units (all networks together). Keep it at least ``d``: where ``d``
        activation boundaries meet, every box around the point keeps ``d`` unstable
        units however small, so a smaller value can split until the time limit.
    :param incumbent: a known point ``(d,)`` and its value (e.g. a heuristic's).
    :return: status ``"optimal"`` when the search finished (every sub-box pruned or
        solved to the relative gap), ``"time_limit"`` when time ran out first.
    """
    deadline = time.perf_counter() + time_limit
    counter = itertools.count()

    def assess(blo: torch.Tensor, bhi: torch.Tensor) -> tuple[torch.Tensor, list[LayerBounds]]:
        ub, per_net = objective_upper_bound(layers, blo, bhi, bounds)
        return ub, per_net

    lo, hi = lower[None].to(DTYPE), upper[None].to(DTYPE)
    best_x, best_v = ((lo + hi) / 2)[0], -math.inf

    def offer(x: torch.Tensor) -> None:
        nonlocal best_x, best_v
        values = objective_value(layers, x)
        i = int(values.argmax())
        if values[i] > best_v:
            best_x, best_v = x[i].clone(), float(values[i])

    offer((lo + hi) / 2)
    if incumbent is not None and incumbent[1] > best_v:
        best_x, best_v = incumbent[0].to(DTYPE).clone(), float(incumbent[1])
    ub0, per0 = assess(lo, hi)
    heap: list[tuple[float, int, torch.Tensor, torch.Tensor, list[LayerBounds], int]] = [
        (-float(ub0[0]), next(counter), lo, hi, per0, _OPEN)
    ]
    boxes, leaves, status = 1, 0, "optimal"
    # The largest proven bound of the sub-boxes taken off the queue (pruned or solved):
    # the final bound covers them too, so it is a bound on the whole box.
    closed = -math.inf

    def tol() -> float:
        # the relative gap, plus room for the rounding of ``best_v + tol - best_v``
        return mip_rel_gap * max(1.0, abs(best_v)) * (1 + 1e-9) + 1e-12

    while heap:
        if max(-heap[0][0], closed) - best_v <= tol():
            closed = max(closed, -heap[0][0])
            break
        left = deadline - time.perf_counter()
        if left <= 0:
            status = "time_limit"
            break
        neg_ub, _, blo, bhi, per, mode = heapq.heappop(heap)
        unstable = sum(int(b.unstable().sum()) for b in per)
        if mode == _RETRY or (mode == _OPEN and unstable <= leaf_unstable):
            leaves += 1
            box_ub = -neg_ub
            t_upper = box_ub + 1e-9 * (1 + abs(box_ub))
            enc = encode_row(layers, per, blo, bhi, 0, t_upper=t_upper)
            cutoff = best_v + tol() * SOLVER_GAP_FACTOR
            enc.var_lower[enc.t_index] = cutoff
            res = solve_encoding(enc, left, mip_rel_gap * SOLVER_GAP_FACTOR)
            if res.status not in (0, 1, 2):
                # HiGHS sometimes fails ("Solve error") on a cut-off that leaves little
                # room; solve the box without it.
                enc.var_lower[enc.t_index] = -np.inf
                res = solve_encoding(
                    enc, max(deadline - time.perf_counter(), 1e-3), mip_rel_gap * SOLVER_GAP_FACTOR
                )
            if res.x is not None:
                found = torch.as_tensor(res.x[enc.x_slice], dtype=DTYPE)[None].clamp(blo, bhi)
                offer(torch.cat([found, region_argmax(layers, found, lo, hi)]))
            dual = getattr(res, "mip_dual_bound", None)
            bound = -float(dual) if dual is not None and np.isfinite(dual) else box_ub
            bound = min(bound, box_ub)
            if res.status == 2 and np.isfinite(enc.var_lower[enc.t_index]):
                closed = max(closed, cutoff)  # nothing in the box reaches the cut-off
            elif res.status == 0:  # solved to the MIP gap: its bound is proven
                closed = max(closed, bound)
            elif res.status == 1:  # out of time: keep it open with the solver's bound
                heapq.heappush(heap, (-bound, next(counter), blo, bhi, per, _RETRY))
            else:  # the solver failed: split the box instead
                heapq.heappush(heap, (-bound, next(counter), blo, bhi, per, _SPLIT))
            continue
        width = bhi[0] - blo[0]
        j = int(width.argmax())
        mid = (blo[0, j] + bhi[0, j]) / 2
        clo, chi = blo.repeat(2, 1), bhi.repeat(2, 1)
        chi[0, j], clo[1, j] = mid, mid
        ub, per_children = assess(clo, chi)
        boxes += 2
        offer((clo + chi) / 2)
        for i in range(2):
            child_ub = min(float(ub[i]), -neg_ub)
            if child_ub - best_v <= tol():
                closed = max(closed, child_ub)  # pruned: within the tolerance of the best
            else:
                heapq.heappush(
                    heap,
                    (
                        -child_ub,
                        next(counter),
                        clo[i : i + 1],
                        chi[i : i + 1],
                        _slice(per_children, i),
                        mode if mode == _SPLIT else _OPEN,
                    ),
                )
    open_bound = max((-h[0] for h in heap), default=-math.inf)
    upper_bound = max(best_v, open_bound, closed)
    return BranchResult(best_x, best_v, upper_bound, status, boxes, leaves)
