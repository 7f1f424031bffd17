"""Sound pre-activation and output bounds of ReLU networks over a box.

- :func:`interval_bounds`: interval arithmetic (IBP), layer by layer.
- :func:`crown_bounds`: CROWN's backward linear bounds (Zhang et al. 2018, "Efficient
  Neural Network Robustness Certification with General Activation Functions", Sec. 3):
  every unstable unit ``relu(z)``, ``l < 0 < u``, is bounded above by the chord
  ``u (z - l) / (u - l)`` and below by ``alpha z`` with ``alpha = 1`` if ``u >= -l``
  else ``0`` (their adaptive lower bound); each layer's bounds are back-substituted to
  the input box. The result is intersected with the interval bounds, so it is never
  looser. With ``lp_tighten=True`` each hidden layer's unstable units are then
  tightened by two LPs over the triangle relaxation of the layers below (the
  activation variables relaxed to ``[0, 1]``, seeds 003/004).
- :func:`objective_upper_bound`: an upper bound on ``min_k f_k(x)`` over the box.

Everything is float64 on the CPU. Bounds are sound up to float64 rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from scipy import sparse
from scipy.optimize import linprog

from adr_rl.certify.formulation import Encoding, encode
from adr_rl.certify.network import DTYPE, AffineLayers

__all__ = [
    "BoundMethod",
    "LayerBounds",
    "check_box",
    "crown_bounds",
    "interval_bounds",
    "lp_relaxation_bound",
    "network_bounds",
    "objective_upper_bound",
]

BoundMethod = Literal["interval", "crown", "crown_lp"]
BOUND_METHODS: tuple[str, ...] = ("interval", "crown", "crown_lp")

# Rows of the batch processed at once by CROWN's back-substitution: its coefficient
# tensors are (rows, n_k, n_{k-1}), 400 x 300 float64 per row for SB3's critics.
_CHUNK = 16


@dataclass(frozen=True)
class LayerBounds:
    """Bounds on every pre-activation over the box, per problem row.

    :param lower: per layer (hidden layers, then the output layer), ``(B, n_l)``
        float64 lower bounds; ``upper`` likewise.
    :param method: ``"interval"``, ``"crown"`` or ``"crown_lp"``.
    """

    lower: tuple[torch.Tensor, ...]
    upper: tuple[torch.Tensor, ...]
    method: str

    @property
    def output_upper(self) -> torch.Tensor:
        """``(B, n_out)``: upper bound of the network's output over the box."""
        return self.upper[-1]

    def unstable(self) -> torch.Tensor:
        """``(B, L)`` int64: unstable units (``l < 0 < u``) per hidden layer."""
        counts = [((lo < 0) & (hi > 0)).sum(dim=1) for lo, hi in self.hidden()]
        return torch.stack(counts, dim=1) if counts else torch.zeros(0, 0, dtype=torch.int64)

    def stable_share(self) -> torch.Tensor:
        """``(B,)`` float64: share of hidden units whose sign is fixed over the box."""
        total = sum(lo.shape[1] for lo, _ in self.hidden())
        return 1.0 - self.unstable().sum(dim=1).to(DTYPE) / max(total, 1)

    def hidden(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(zip(self.lower[:-1], self.upper[:-1], strict=True))


def check_box(
    lower: torch.Tensor | float, upper: torch.Tensor | float, like: torch.Tensor | None, d: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``lower``/``upper`` as ``(B, d)`` float64 CPU tensors, finite, ``lower <= upper``."""
    lo = torch.as_tensor(lower, dtype=DTYPE).detach().cpu()
    hi = torch.as_tensor(upper, dtype=DTYPE).detach().cpu()
    if like is not None:
        lo, hi = lo.expand(like.shape), hi.expand(like.shape)
    if lo.dim() != 2 or lo.shape != hi.shape or lo.shape[1] != d:
        raise ValueError(
            f"lower and upper must be (B, {d}) tensors (the box of each problem row), got "
            f"{tuple(lo.shape)} and {tuple(hi.shape)}"
        )
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        raise ValueError("the box must be finite: bounds and the MILP need finite lower/upper")
    if (lo > hi).any():
        raise ValueError("lower > upper for some coordinates")
    return lo.contiguous(), hi.contiguous()


def _affine_interval(
    w: torch.Tensor, b: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    center, radius = (hi + lo) / 2, (hi - lo) / 2
    zc = torch.einsum("boi,bi->bo", w, center) + b
    zr = torch.einsum("boi,bi->bo", w.abs(), radius)
    return zc - zr, zc + zr


def interval_bounds(layers: AffineLayers, lower: torch.Tensor, upper: torch.Tensor) -> LayerBounds:
    """Interval bounds of every layer's pre-activations over ``[lower, upper]``.

    :param layers: the network as a function of ``x`` (:func:`affine_layers`).
    :param lower: ``(B, d)`` float, finite; ``upper`` likewise, ``lower <= upper``.
    """
    lo, hi = check_box(lower, upper, None, int(layers.weights[0].shape[2]))
    lows, ups = [], []
    for i, (w, b) in enumerate(zip(layers.weights, layers.biases, strict=True)):
        zl, zu = _affine_interval(w, b, lo, hi)
        lows.append(zl)
        ups.append(zu)
        if i < len(layers.weights) - 1:
            lo, hi = zl.clamp_min(0.0), zu.clamp_min(0.0)
    return LayerBounds(tuple(lows), tuple(ups), "interval")


def _relaxation(
    lo: torch.Tensor, hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CROWN's relaxation of ``relu`` on ``[lo, hi]``: upper ``su z + tu``, lower ``sl z``."""
    unstable = (lo < 0) & (hi > 0)
    active = lo >= 0
    width = torch.where(unstable, hi - lo, torch.ones_like(hi))
    su = torch.where(unstable, hi / width, active.to(DTYPE))
    tu = torch.where(unstable, -su * lo, torch.zeros_like(lo))
    sl = torch.where(unstable, (hi >= -lo).to(DTYPE), active.to(DTYPE))
    return su, tu, sl


def _back_substitute(
    ws: Sequence[torch.Tensor],
    bs: Sequence[torch.Tensor],
    k: int,
    lows: Sequence[torch.Tensor],
    ups: Sequence[torch.Tensor],
    x_lo: torch.Tensor,
    x_hi: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CROWN bounds of layer ``k``'s pre-activations given bounds of layers ``< k``."""
    batch = x_lo.shape[0]
    lam_u = ws[k].expand(batch, -1, -1)
    lam_l = lam_u
    c_u = bs[k].expand(batch, -1)
    c_l = c_u
    for i in range(k - 1, -1, -1):
        su, tu, sl = _relaxation(lows[i], ups[i])
        pos, neg = lam_u.clamp_min(0), lam_u.clamp_max(0)
        a_u = pos * su[:, None, :] + neg * sl[:, None, :]
        c_u = c_u + torch.einsum("boi,bi->bo", pos, tu)
        pos, neg = lam_l.clamp_min(0), lam_l.clamp_max(0)
        a_l = pos * sl[:, None, :] + neg * su[:, None, :]
        c_l = c_l + torch.einsum("boi,bi->bo", neg, tu)
        w, b = ws[i].expand(batch, -1, -1), bs[i].expand(batch, -1)
        c_u = c_u + torch.einsum("boi,bi->bo", a_u, b)
        c_l = c_l + torch.einsum("boi,bi->bo", a_l, b)
        lam_u, lam_l = a_u @ w, a_l @ w
    up = (
        c_u
        + torch.einsum("bod,bd->bo", lam_u.clamp_min(0), x_hi)
        + torch.einsum("bod,bd->bo", lam_u.clamp_max(0), x_lo)
    )
    lo = (
        c_l
        + torch.einsum("bod,bd->bo", lam_l.clamp_min(0), x_lo)
        + torch.einsum("bod,bd->bo", lam_l.clamp_max(0), x_hi)
    )
    return lo, up


def crown_bounds(
    layers: AffineLayers, lower: torch.Tensor, upper: torch.Tensor, lp_tighten: bool = False
) -> LayerBounds:
    """CROWN bounds of every layer over ``[lower, upper]``, intersected with the
    interval bounds (never looser than :func:`interval_bounds`).

    :param layers: the network as a function of ``x`` (:func:`affine_layers`).
    :param lower: ``(B, d)`` float, finite; ``upper`` likewise.
    :param lp_tighten: also tighten each hidden layer's unstable units by LPs over the
        triangle relaxation of the layers below (2 LPs per unstable unit; slow on wide
        networks, exact for the first two layers' relaxation).
    """
    ibp = interval_bounds(layers, lower, upper)
    lo, hi = check_box(lower, upper, None, int(layers.weights[0].shape[2]))
    n_layers = len(layers.weights)
    lows: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]
    ups: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]
    for start in range(0, lo.shape[0], _CHUNK):
        rows = slice(start, start + _CHUNK)
        ws = [w[rows] if w.shape[0] > 1 else w for w in layers.weights]
        bs = [b[rows] if b.shape[0] > 1 else b for b in layers.biases]
        cl: list[torch.Tensor] = []
        cu: list[torch.Tensor] = []
        for k in range(n_layers):
            zl, zu = ibp.lower[k][rows], ibp.upper[k][rows]
            if k > 0:  # layer 0's interval bounds are exact (affine over a box)
                bl, bu = _back_substitute(ws, bs, k, cl, cu, lo[rows], hi[rows])
                zl, zu = torch.maximum(zl, bl), torch.minimum(zu, bu)
            if lp_tighten and 0 < k < n_layers - 1:
                zl, zu = _lp_tighten(ws, bs, k, cl, cu, zl, zu, lo[rows], hi[rows])
            cl.append(zl)
            cu.append(zu)
        for k in range(n_layers):
            lows[k].append(cl[k])
            ups[k].append(cu[k])
    return LayerBounds(
        tuple(torch.cat(x) for x in lows),
        tuple(torch.cat(x) for x in ups),
        "crown_lp" if lp_tighten else "crown",
    )


def _lp_tighten(
    ws: Sequence[torch.Tensor],
    bs: Sequence[torch.Tensor],
    k: int,
    lows: Sequence[torch.Tensor],
    ups: Sequence[torch.Tensor],
    zl: torch.Tensor,
    zu: torch.Tensor,
    x_lo: torch.Tensor,
    x_hi: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    zl, zu = zl.clone(), zu.clone()
    for r in range(x_lo.shape[0]):
        row_w = [(w[r] if w.shape[0] > 1 else w[0]).numpy() for w in ws]
        row_b = [(b[r] if b.shape[0] > 1 else b[0]).numpy() for b in bs]
        enc = encode(
            [row_w],
            [row_b],
            [[lo[r].numpy() for lo in lows]],
            [[hi[r].numpy() for hi in ups]],
            x_lo[r].numpy(),
            x_hi[r].numpy(),
            upto=k,
        )
        prev = enc.post[0][k - 1]
        for j in torch.nonzero((zl[r] < 0) & (zu[r] > 0)).flatten().tolist():
            for sign in (1.0, -1.0):
                c = np.zeros(enc.c.size)
                c[prev.cols] = -sign * (row_w[k][j] @ prev.coef)  # linprog minimizes
                res = linprog(
                    c,
                    bounds=np.stack([enc.var_lower, enc.var_upper], axis=1),
                    method="highs",
                    **_rows_as_ub(enc),
                )
                if res.status != 0:
                    continue  # keep the sound bound we already have
                value = sign * -res.fun + row_w[k][j] @ prev.const + row_b[k][j]
                if sign > 0:
                    zu[r, j] = min(zu[r, j].item(), value + 1e-9 * (1 + abs(value)))
                else:
                    zl[r, j] = max(zl[r, j].item(), value - 1e-9 * (1 + abs(value)))
    return zl, zu


def _rows_as_ub(enc: Encoding) -> dict[str, Any]:
    """``row_lower <= A v <= row_upper`` as linprog's ``A_ub v <= b_ub``, ``A_eq v = b_eq``."""
    eq = enc.row_lower == enc.row_upper
    up = np.isfinite(enc.row_upper) & ~eq
    low = np.isfinite(enc.row_lower) & ~eq
    a_ub = sparse.vstack([enc.a[up], -enc.a[low]]).tocsr()
    b_ub = np.concatenate([enc.row_upper[up], -enc.row_lower[low]])
    out: dict[str, Any] = {"A_ub": a_ub, "b_ub": b_ub}
    if eq.any():
        out["A_eq"], out["b_eq"] = enc.a[eq], enc.row_upper[eq]
    return out


def network_bounds(
    layers: AffineLayers, lower: torch.Tensor, upper: torch.Tensor, method: str
) -> LayerBounds:
    """Bounds of every layer of one network by ``method`` (see :data:`BOUND_METHODS`)."""
    if method == "interval":
        return interval_bounds(layers, lower, upper)
    if method in ("crown", "crown_lp"):
        return crown_bounds(layers, lower, upper, lp_tighten=method == "crown_lp")
    raise ValueError(f"unknown bound method {method!r}; choose one of {', '.join(BOUND_METHODS)}")


def objective_upper_bound(
    networks: Sequence[AffineLayers],
    lower: torch.Tensor,
    upper: torch.Tensor,
    method: str = "crown",
) -> tuple[torch.Tensor, list[LayerBounds]]:
    """Upper bound on ``min_k f_k(x)`` over ``[lower, upper]``: ``min_k`` of each
    network's output bound (each ``f_k`` must have one output).

    :param networks: the networks as functions of ``x`` (:func:`affine_layers`).
    :param lower: ``(B, d)`` float, finite; ``upper`` likewise.
    :param method: ``"interval"``, ``"crown"`` or ``"crown_lp"``.
    :return: ``(B,)`` float64 upper bound, and each network's :class:`LayerBounds`.
    """
    per_net = [network_bounds(n, lower, upper, method) for n in networks]
    for k, b in enumerate(per_net):
        if b.output_upper.shape[1] != 1:
            raise ValueError(
                f"network {k} has {b.output_upper.shape[1]} outputs; the objective needs a "
                "scalar output (out_features=1)"
            )
    ub = torch.stack([b.output_upper[:, 0] for b in per_net], dim=1).amin(dim=1)
    return ub, per_net


def lp_relaxation_bound(
    networks: Sequence[AffineLayers],
    bounds: Sequence[LayerBounds],
    lower: torch.Tensor,
    upper: torch.Tensor,
) -> torch.Tensor:
    """``(B,)`` float64: the LP relaxation of the MILP (every activation variable in
    ``[0, 1]``, both networks in one program with ``t <= f_k``): an upper bound on
    ``min_k f_k`` over the box, at least as tight as CROWN's on the same bounds."""
    lo, hi = check_box(lower, upper, None, int(networks[0].weights[0].shape[2]))
    out = torch.empty(lo.shape[0], dtype=DTYPE)
    for r in range(lo.shape[0]):
        enc = encode_row(networks, bounds, lo, hi, r)
        res = linprog(
            enc.c,
            bounds=np.stack([enc.var_lower, enc.var_upper], axis=1),
            method="highs",
            **_rows_as_ub(enc),
        )
        out[r] = -res.fun if res.status == 0 else float("inf")
    return out


def encode_row(
    networks: Sequence[AffineLayers],
    bounds: Sequence[LayerBounds],
    lo: torch.Tensor,
    hi: torch.Tensor,
    r: int,
    t_upper: float = np.inf,
) -> Encoding:
    """The :func:`encode` of problem row ``r`` (networks, bounds and box are batched)."""
    ws, bs, pl, pu = [], [], [], []
    for net, bd in zip(networks, bounds, strict=True):
        w, b = net.row(r)
        ws.append([x.numpy() for x in w])
        bs.append([x.numpy() for x in b])
        pl.append([x[r].numpy() for x, _ in zip(bd.lower[:-1], bd.upper[:-1], strict=True)])
        pu.append([x[r].numpy() for x in bd.upper[:-1]])
    return encode(ws, bs, pl, pu, lo[r].numpy(), hi[r].numpy(), t_upper=t_upper)
