"""The linear region around a point: its L_p radius, and whether a box fits inside.

Inside the activation region ``S(x)`` of a ReLU network every pre-activation is an
affine function ``z_j(x') = z_j(x) + g_j . (x' - x)`` with ``g_j`` the unit's input
gradient under ``x``'s pattern, and ``S(x)`` is the polyhedron where each ``z_j`` keeps
its sign. The largest L_p ball around ``x`` inside ``S(x)`` therefore has radius

    min_j |z_j(x)| / ||g_j||_q,    1/p + 1/q = 1

(Lee et al., ICLR 2019, "Towards Robust, Locally Linear Deep Networks", Sec. 3; seed
002). :func:`linear_region_radius` computes it exactly, with the gradients of all
units propagated as Jacobians layer by layer (no autograd, no change to the network).
The same affine functions decide exactly whether a box lies inside one region
(:func:`box_in_one_region`), where the network is affine and its maximum is at a
corner.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from scipy.optimize import linprog
from torch import nn

from adr_rl.certify.bounds import check_box, network_bounds
from adr_rl.certify.network import (
    DTYPE,
    AffineLayers,
    InputMap,
    ReluNetwork,
    as_affine_layers,
)

__all__ = [
    "RegionRadius",
    "box_in_one_region",
    "linear_region_radius",
    "region_argmax",
    "stable_unit_share",
    "unit_jacobians",
]

Networks = nn.Module | ReluNetwork | Sequence[nn.Module | ReluNetwork]


@dataclass(frozen=True)
class RegionRadius:
    """Distance from each row of ``x`` to the nearest activation boundary.

    :param radius: ``(B,)`` float64: the largest ``eps`` with the L_p ball
        ``B_eps(x)`` inside ``x``'s linear region (``inf`` if no unit can switch).
    :param network: ``(B,)`` int64: index of the network holding the nearest unit.
    :param layer: ``(B,)`` int64: its hidden layer (0 = first).
    :param unit: ``(B,)`` int64: its index within the layer.
    :param direction: ``(B, d)`` float64 with unit p-norm: moving ``x`` along it by
        ``radius`` reaches the nearest unit's boundary (the steepest way there).
    :param p: the norm, ``2.0``, ``math.inf`` or ``1.0``.
    """

    radius: torch.Tensor
    network: torch.Tensor
    layer: torch.Tensor
    unit: torch.Tensor
    direction: torch.Tensor
    p: float


def _norm_p(p: float | str) -> float:
    value = math.inf if p in ("inf", math.inf) else float(p)
    if value not in (1.0, 2.0, math.inf):
        raise ValueError(f"p must be 1, 2 or inf, got {p!r}")
    return value


def unit_jacobians(
    layers: AffineLayers, x: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Pre-activations ``(B, n_l)`` and their input gradients ``(B, n_l, d)`` under
    ``x``'s activation pattern, per hidden layer (units with ``z > 0`` are active)."""
    zs, jacs = [], []
    batch = x.shape[0]
    jac = torch.eye(x.shape[1], dtype=DTYPE).expand(batch, -1, -1)
    h = x.to(DTYPE)
    for w, b in zip(layers.weights[:-1], layers.biases[:-1], strict=True):
        z = torch.einsum("boi,bi->bo", w, h) + b
        jz = w.expand(batch, -1, -1) @ jac
        zs.append(z)
        jacs.append(jz)
        active = (z > 0).to(DTYPE)
        h = z * active
        jac = jz * active[:, :, None]
    return zs, jacs


def linear_region_radius(
    networks: Networks,
    x: torch.Tensor,
    p: float | str = 2.0,
    *,
    input_map: InputMap | Sequence[InputMap] | None = None,
    prefix: torch.Tensor | None = None,
) -> RegionRadius:
    """Exact L_p distance from each row of ``x`` to the nearest activation boundary.

    With several networks (e.g. twin critics on the same action) the region is the
    intersection of their regions: the minimum over all their units.

    :param networks: ReLU network(s) (``nn.Linear``/``nn.ReLU`` in ``nn.Sequential``).
    :param x: ``(B, d)`` float, the points (the variable, see ``input_map``).
    :param p: ``2``, ``"inf"``/``math.inf`` or ``1``; the gradient norm is its dual.
    :param input_map: the network input as ``u = P x + q`` per row (critic form).
    :param prefix: ``(B, d_s)``: shorthand for ``u = cat(prefix, x)``.
    """
    p = _norm_p(p)
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError("x must be a (B, d) tensor")
    xd = x.detach().to("cpu", DTYPE)
    layers = as_affine_layers(networks, input_map, prefix, x.shape[1])
    q = {2.0: 2.0, math.inf: 1.0, 1.0: math.inf}[p]
    dists, grads, tags = [], [], []
    for k, net in enumerate(layers):
        zs, jacs = unit_jacobians(net, xd)
        for i, (z, j) in enumerate(zip(zs, jacs, strict=True)):
            norm = torch.linalg.vector_norm(j, ord=q, dim=2)
            dist = torch.where(norm > 0, z.abs() / norm.clamp_min(1e-300), math.inf)
            dist = torch.where((z == 0) & (norm == 0), math.inf, dist)
            dists.append(dist)
            grads.append(j * torch.where(z > 0, -1.0, 1.0)[:, :, None].to(DTYPE))
            tags += [(k, i, u) for u in range(z.shape[1])]
    if not dists:  # no hidden layer: the whole space is one region
        batch = xd.shape[0]
        inf = torch.full((batch,), math.inf, dtype=DTYPE)
        zero = torch.zeros(batch, dtype=torch.int64)
        return RegionRadius(inf, zero - 1, zero - 1, zero - 1, torch.zeros_like(xd), p)
    all_d = torch.cat(dists, dim=1)
    all_g = torch.cat(grads, dim=1)
    radius, idx = all_d.min(dim=1)
    g = all_g[torch.arange(xd.shape[0]), idx]  # points towards the boundary
    if p == 2.0:
        direction = g / torch.linalg.vector_norm(g, dim=1, keepdim=True).clamp_min(1e-300)
    elif p == math.inf:
        direction = g.sign()
    else:  # p = 1: all the way along the largest gradient coordinate
        top = g.abs().argmax(dim=1)
        direction = torch.zeros_like(g)
        direction[torch.arange(g.shape[0]), top] = g[torch.arange(g.shape[0]), top].sign()
    tag = torch.tensor([tags[i] for i in idx.tolist()], dtype=torch.int64).reshape(-1, 3)
    return RegionRadius(radius, tag[:, 0], tag[:, 1], tag[:, 2], direction, p)


def box_in_one_region(
    networks: Networks,
    x: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    *,
    input_map: InputMap | Sequence[InputMap] | None = None,
    prefix: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(B,)`` bool: whether the box ``[lower, upper]`` lies inside ``x``'s linear region.

    Exact: the box is inside ``S(x)`` iff every unit's affine function under ``x``'s
    pattern keeps its sign (``> 0`` for active units, ``<= 0`` for inactive ones) over
    the whole box. There the network is affine, so its maximum is at a box corner.

    :param x: ``(B, d)`` float, a point of each box (e.g. the actor's action).
    :param lower: ``(B, d)`` float, finite; ``upper`` likewise.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError("x must be a (B, d) tensor")
    xd = x.detach().to("cpu", DTYPE)
    lo, hi = check_box(lower, upper, None, xd.shape[1])
    if ((xd < lo) | (xd > hi)).any():
        raise ValueError("x must lie inside [lower, upper]")
    layers = as_affine_layers(networks, input_map, prefix, x.shape[1])
    inside = torch.ones(xd.shape[0], dtype=torch.bool)
    for net in layers:
        zs, jacs = unit_jacobians(net, xd)
        for z, j in zip(zs, jacs, strict=True):
            # z(x') = z(x) + j (x' - x); its range over the box
            base = z - torch.einsum("bod,bd->bo", j, xd)
            zmin = (
                base
                + torch.einsum("bod,bd->bo", j.clamp_min(0), lo)
                + torch.einsum("bod,bd->bo", j.clamp_max(0), hi)
            )
            zmax = (
                base
                + torch.einsum("bod,bd->bo", j.clamp_min(0), hi)
                + torch.einsum("bod,bd->bo", j.clamp_max(0), lo)
            )
            ok = torch.where(z > 0, zmin > 0, zmax <= 0)
            inside &= ok.all(dim=1)
    return inside


def stable_unit_share(
    networks: Networks,
    lower: torch.Tensor,
    upper: torch.Tensor,
    *,
    input_map: InputMap | Sequence[InputMap] | None = None,
    prefix: torch.Tensor | None = None,
    method: str = "crown",
) -> torch.Tensor:
    """``(B,)`` float64: share of hidden units (all networks) provably stable over the box.

    :param lower: ``(B, d)`` float, finite; ``upper`` likewise.
    :param method: the bounds that decide stability, ``"interval"``, ``"crown"`` or
        ``"crown_lp"`` (sound: a unit counted stable is stable; tighter bounds count more).
    """
    lo = torch.as_tensor(lower)
    layers = as_affine_layers(networks, input_map, prefix, int(lo.shape[-1]))
    per_net = [network_bounds(n, lower, upper, method) for n in layers]
    unstable = sum(b.unstable().sum(dim=1) for b in per_net)
    total = sum(sum(n.hidden_sizes) for n in layers)
    return 1.0 - torch.as_tensor(unstable, dtype=DTYPE) / max(total, 1)


def region_argmax(
    layers: Sequence[AffineLayers], x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
) -> torch.Tensor:
    """The maximizer of ``min_k f_k`` over ``x``'s linear region within the box, per row.

    Inside the region every network is affine, so this is one small LP (variables
    ``x`` and ``t``; one sign constraint per unit). It polishes a MILP solution: the
    solver's point satisfies the ReLU constraints only up to its feasibility tolerance
    (about 1e-6), which can cost a few 1e-6 of the value; the LP's vertex is exact.
    Rows whose LP fails keep their point.

    :param layers: the networks as functions of ``x`` (:func:`affine_layers`).
    :param x: ``(B, d)`` float64 points in the box.
    :param lower: ``(B, d)`` float64; ``upper`` likewise.
    :return: ``(B, d)`` float64.
    """
    out = x.clone()
    d = x.shape[1]
    for r in range(x.shape[0]):
        rows, rhs = [], []
        xr = x[r : r + 1].to(DTYPE)
        for net in layers:
            single = net.select(r) if net.weights[0].shape[0] > 1 else net
            zs, jacs = unit_jacobians(single, xr)
            for z, j in zip(zs, jacs, strict=True):
                const = z[0] - j[0] @ xr[0]
                active = (z[0] > 0)[:, None]
                # active: z >= 0  ->  -j x <= const;  inactive: z <= 0  ->  j x <= -const
                signed = torch.where(active, -j[0], j[0])
                rows.append(torch.cat([signed, torch.zeros(signed.shape[0], 1, dtype=DTYPE)], 1))
                rhs.append(torch.where(active[:, 0], const, -const))
            w_out, b_out = single.weights[-1][0], single.biases[-1][0]
            if zs:
                mask = (zs[-1][0] > 0).to(DTYPE)
                j_out = w_out @ (jacs[-1][0] * mask[:, None])
                c_out = w_out @ (zs[-1][0] * mask) + b_out - j_out @ xr[0]
            else:
                j_out, c_out = w_out, b_out
            # t <= f_k(x)  ->  t - j_out x <= c_out
            rows.append(torch.cat([-j_out, torch.ones(j_out.shape[0], 1, dtype=DTYPE)], dim=1))
            rhs.append(c_out)
        a_ub = torch.cat(rows)
        c = torch.zeros(d + 1, dtype=DTYPE)
        c[-1] = -1.0
        bounds = [*zip(lower[r].tolist(), upper[r].tolist(), strict=True), (None, None)]
        res = linprog(c.numpy(), A_ub=a_ub.numpy(), b_ub=torch.cat(rhs).numpy(), bounds=bounds)
        if res.status == 0:
            out[r] = torch.as_tensor(res.x[:d], dtype=DTYPE).clamp(lower[r], upper[r])
    return out
