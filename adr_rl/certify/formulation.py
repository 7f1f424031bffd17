"""The mixed-integer encoding of ReLU networks over a box (one problem row).

Each hidden unit ``h = relu(z)``, ``z = w . h_prev + b`` with pre-activation bounds
``l <= z <= u``, is "un-rectified" into constraints (Tung & Hwang, seed 004):

- stable inactive (``u <= 0``): ``h = 0``;
- stable active (``l >= 0``): ``h = z`` (both substituted, no variable);
- unstable: a binary activation variable ``delta`` and the big-M constraints
  ``h >= z``, ``h <= z - l (1 - delta)``, ``h <= u delta``, ``0 <= h <= u``
  (Tjeng et al. 2019). Relaxing ``delta`` to ``[0, 1]`` gives exactly the triangle
  relaxation of the unit, the LP relaxation the bounds and the upper bound use.

Several networks on the same variable combine by ``min``: ``t <= f_k(x)`` for each
``k`` and ``t`` is maximized (the pessimistic twin critic, one program for both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

__all__ = ["SOLVER_GAP_FACTOR", "SOLVER_STATUS", "Affine", "Encoding", "encode", "solve_encoding"]

#: HiGHS gets this fraction of the requested relative gap: its gap is measured on its own
#: objective, which its feasibility tolerance lets exceed the network's true value at the
#: point by ~1e-7 relative, so the gap re-measured on the real network is what is asked.
SOLVER_GAP_FACTOR = 0.1

#: ``scipy.optimize.milp``'s status codes, by name.
SOLVER_STATUS = {0: "optimal", 1: "time_limit", 2: "infeasible", 3: "unbounded", 4: "error"}


@dataclass(frozen=True)
class Affine:
    """``coef @ v[cols] + const``: ``coef`` ``(n, len(cols))``, ``const`` ``(n,)``."""

    cols: np.ndarray
    coef: np.ndarray
    const: np.ndarray


@dataclass
class Encoding:
    """A linear program with integrality marks, in ``scipy.optimize.milp``'s form:
    minimize ``c @ v`` s.t. ``row_lower <= A v <= row_upper``, ``var_lower <= v <= var_upper``.

    :param x_slice: where the variable ``x`` sits in ``v``.
    :param t_index: index of the objective variable ``t`` (``-1`` if none).
    :param post: per network, per hidden layer, the layer's output as an affine
        expression of the variables.
    :param n_binary: per network, per hidden layer, the number of binary variables.
    """

    c: np.ndarray
    a: sparse.csr_matrix
    row_lower: np.ndarray
    row_upper: np.ndarray
    var_lower: np.ndarray
    var_upper: np.ndarray
    integrality: np.ndarray
    x_slice: slice
    t_index: int
    post: list[list[Affine]]
    n_binary: list[list[int]]


class _Builder:
    def __init__(self, n_x: int, x_lower: np.ndarray, x_upper: np.ndarray) -> None:
        self.n_vars = n_x
        self.lo: list[np.ndarray] = [x_lower.astype(np.float64)]
        self.hi: list[np.ndarray] = [x_upper.astype(np.float64)]
        self.kind: list[np.ndarray] = [np.zeros(n_x, dtype=np.int64)]
        self.rows, self.cols, self.vals = [], [], []  # type: ignore[var-annotated]
        self.rlo: list[np.ndarray] = []
        self.rhi: list[np.ndarray] = []
        self.n_rows = 0

    def variables(self, lo: np.ndarray, hi: np.ndarray, integer: bool) -> np.ndarray:
        idx = np.arange(self.n_vars, self.n_vars + lo.size)
        self.n_vars += lo.size
        self.lo.append(lo.astype(np.float64))
        self.hi.append(hi.astype(np.float64))
        self.kind.append(np.full(lo.size, int(integer), dtype=np.int64))
        return idx

    def block(self, row0: int, cols: np.ndarray, dense: np.ndarray) -> None:
        """Add ``dense`` (rows x len(cols)) at rows ``row0...``, its nonzeros only."""
        r, k = np.nonzero(dense)
        self.rows.append(r + row0)
        self.cols.append(cols[k])
        self.vals.append(dense[r, k])

    def new_rows(self, lo: np.ndarray, hi: np.ndarray) -> int:
        row0 = self.n_rows
        self.n_rows += lo.size
        self.rlo.append(lo.astype(np.float64))
        self.rhi.append(hi.astype(np.float64))
        return row0


def encode(
    weights: Sequence[Sequence[np.ndarray]],
    biases: Sequence[Sequence[np.ndarray]],
    pre_lower: Sequence[Sequence[np.ndarray]],
    pre_upper: Sequence[Sequence[np.ndarray]],
    x_lower: np.ndarray,
    x_upper: np.ndarray,
    *,
    upto: int | None = None,
    t_upper: float = np.inf,
) -> Encoding:
    """Encode ``max_x min_k f_k(x)`` over ``x_lower <= x <= x_upper`` (one problem row).

    :param weights: per network ``k``, its layers' ``W_l`` ``(n_l, n_{l-1})`` float64
        as functions of ``x`` (input map already folded in).
    :param biases: per network, ``b_l`` ``(n_l,)``.
    :param pre_lower: per network, per *hidden* layer, sound lower bounds ``(n_l,)`` of
        the pre-activations over the box; ``pre_upper`` likewise.
    :param x_lower: ``(d,)`` float64, finite.
    :param upto: encode only the first ``upto`` hidden layers of network 0 and no
        objective (the LP tightening of layer ``upto``'s bounds uses this).
    :param t_upper: a known upper bound on the objective (tightens the LP).
    """
    d = x_lower.size
    bld = _Builder(d, x_lower, x_upper)
    post: list[list[Affine]] = []
    n_binary: list[list[int]] = []
    nets = range(1) if upto is not None else range(len(weights))
    lasts: list[Affine] = []
    for k in nets:
        # The layer's output as an affine expression ``coef @ v[cols] + const`` of the
        # variables so far: stable units are eliminated (active ones are their
        # pre-activation's expression, inactive ones zero), so only unstable units get
        # variables and rows. This keeps the program about as small as its binaries.
        expr = Affine(np.arange(d), np.eye(d), np.zeros(d))
        post.append([])
        n_binary.append([])
        n_hidden = len(weights[k]) - 1 if upto is None else upto
        for i in range(n_hidden):
            w, b = weights[k][i], biases[k][i]
            lo, hi = pre_lower[k][i], pre_upper[k][i]
            z_coef, z_const = w @ expr.coef, w @ expr.const + b
            active, unstable = lo >= 0, (lo < 0) & (hi > 0)
            ui = np.flatnonzero(unstable)
            n_binary[k].append(int(ui.size))
            cols = expr.cols
            if ui.size:
                h = bld.variables(np.zeros(ui.size), hi[ui], integer=False)
                delta = bld.variables(np.zeros(ui.size), np.ones(ui.size), integer=True)
                zc, z0, lu, hu = z_coef[ui], z_const[ui], lo[ui], hi[ui]
                eye = np.eye(ui.size)
                # h - z >= 0
                r0 = bld.new_rows(z0, np.full(ui.size, np.inf))
                bld.block(r0, h, eye)
                bld.block(r0, cols, -zc)
                # h <= z - l (1 - delta):  h - z - l delta <= -l
                r0 = bld.new_rows(np.full(ui.size, -np.inf), z0 - lu)
                bld.block(r0, h, eye)
                bld.block(r0, cols, -zc)
                bld.block(r0, delta, -np.diag(lu))
                # h <= u delta
                r0 = bld.new_rows(np.full(ui.size, -np.inf), np.zeros(ui.size))
                bld.block(r0, h, eye)
                bld.block(r0, delta, -np.diag(hu))
                cols = np.concatenate([cols, h])
            coef = np.zeros((w.shape[0], cols.size))
            coef[active, : expr.cols.size] = z_coef[active]
            coef[ui, expr.cols.size + np.arange(ui.size)] = 1.0
            expr = Affine(cols, coef, np.where(active, z_const, 0.0))
            post[k].append(expr)
        lasts.append(expr)
    t_index = -1
    if upto is None:
        t_index = int(bld.variables(np.array([-np.inf]), np.array([t_upper]), integer=False)[0])
        for k in nets:
            w, b = weights[k][-1], biases[k][-1]
            if w.shape[0] != 1:
                raise ValueError(
                    f"network {k} has {w.shape[0]} outputs; the exact maximum needs a scalar "
                    "output (out_features=1)"
                )
            # t - f_k <= 0
            out_coef, out_const = w @ lasts[k].coef, w @ lasts[k].const + b
            r0 = bld.new_rows(np.array([-np.inf]), out_const.reshape(1))
            bld.block(r0, np.array([t_index]), np.ones((1, 1)))
            bld.block(r0, lasts[k].cols, -out_coef)
    n = bld.n_vars
    c = np.zeros(n)
    if t_index >= 0:
        c[t_index] = -1.0
    cat = np.concatenate
    if bld.rows:
        a = sparse.coo_matrix(
            (cat(bld.vals), (cat(bld.rows), cat(bld.cols))), shape=(bld.n_rows, n)
        ).tocsr()
        rlo, rhi = cat(bld.rlo), cat(bld.rhi)
    else:
        a, rlo, rhi = sparse.csr_matrix((0, n)), np.zeros(0), np.zeros(0)
    return Encoding(
        c=c,
        a=a,
        row_lower=rlo,
        row_upper=rhi,
        var_lower=cat(bld.lo),
        var_upper=cat(bld.hi),
        integrality=cat(bld.kind),
        x_slice=slice(0, d),
        t_index=t_index,
        post=post,
        n_binary=n_binary,
    )


def solve_encoding(enc: Encoding, time_limit: float, mip_rel_gap: float) -> Any:
    """Solve ``enc`` with HiGHS (``scipy.optimize.milp``); returns SciPy's result
    (``status``, ``x``, ``fun``, ``mip_dual_bound``, ...)."""
    constraints = [LinearConstraint(enc.a, enc.row_lower, enc.row_upper)] if enc.a.shape[0] else []
    return milp(
        enc.c,
        constraints=constraints,
        integrality=enc.integrality,
        bounds=Bounds(enc.var_lower, enc.var_upper),
        options={"time_limit": float(time_limit), "mip_rel_gap": float(mip_rel_gap)},
    )
