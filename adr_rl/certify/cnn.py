"""Sound pre-activation bounds of CNN policies over an L-inf ball of observations.

The observation attacks perturb an image inside ``B_eps(x) = {x' : ||x' - x||_inf <= eps}``
intersected with the valid range. This module bounds every ReLU's pre-activation over
that set, for the modules the shipped policies and :mod:`adr_rl.extractors` use:
``nn.Conv2d``, ``nn.MaxPool2d``, :class:`~adr_rl.extractors.ResidualBlock`
(``x + conv1(relu(conv0(relu(x))))``), ``nn.Flatten``, ``nn.Linear``, ``nn.ReLU``,
``nn.Identity``, and the containers ``nn.Sequential``, SB3's ``NatureCNN`` and
:class:`~adr_rl.extractors.ImpalaCNN` / ``ConvSequence`` (read as their layers in
forward order). Any other module raises :class:`~adr_rl.certify.network.UnsupportedLayerError`
(a ``TypeError``) naming it.

- ``"interval"`` (IBP, Gowal et al. 2018): each conv/linear layer maps the box through
  ``W`` split into its positive and negative parts (written as centre/radius:
  ``W c + b +- |W| r``, the same numbers); ReLU and max-pool are monotone, so they map
  the lower and upper bounds; a residual block adds the intervals of its two branches.
- ``"crown"``: CROWN's backward linear bounds (Zhang et al. 2018, Sec. 3; the same
  relaxation as :func:`adr_rl.certify.bounds.crown_bounds`) through convolutions
  (their adjoint is ``conv_transpose2d``), linear layers, flattens and ReLUs. Max-pools
  and residual blocks stay interval: the back-substitution stops at them and starts
  from their output box, which is sound and leaves them as tight as IBP. Only units
  IBP leaves unstable are back-substituted (a stable unit's relaxation is exact), and
  the result is intersected with IBP, so it is never looser. For SB3's ``NatureCNN``
  (no pool, no residual block) this is full CROWN through the whole policy.

**One linear region.** A ReLU is linear on the ball when its pre-activation is provably
``>= 0`` or ``<= 0`` there (non-strict: ``relu`` is linear on either closed half).
Every ReLU stable is sufficient for the whole ball to lie in one ReLU activation region,
but a max-pool is piecewise linear too: it switches its argmax inside a window. The
network is affine on the ball when every ReLU is stable **and** every max-pool
window's argmax is provably fixed (some element's lower bound is at least every other
element's upper bound); :attr:`CnnBounds.one_region` reports exactly that conjunction.
Both are sufficient conditions from the bounds: a ball reported "not one region" may
still lie in one.

Float64 throughout: the stability tests compare bounds against 0 and against each
other, and float32 rounding in 12,288-input sums (about 1e-6 relative) would decide
near-zero units by noise; float64 also matches the rest of :mod:`adr_rl.certify`.
The modules are only read: no forward call (no hooks fire), no change to parameters,
``requires_grad`` or training mode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from adr_rl.certify.network import DTYPE, UnsupportedLayerError

__all__ = [
    "CNN_BOUND_METHODS",
    "CnnBounds",
    "CnnOp",
    "cnn_bounds",
    "cnn_ops",
    "cnn_preactivations",
]

CnnBoundMethod = Literal["interval", "crown"]
CNN_BOUND_METHODS: tuple[str, ...] = ("interval", "crown")

#: Rows (units) back-substituted at once by CROWN: each row is one input-sized tensor,
#: 12,288 float64 for a 64x64x3 image, so 256 rows x 2 (upper, lower) is about 50 MB.
_ROWS = 256

_SUPPORTED = (
    "Conv2d, MaxPool2d, ResidualBlock (adr_rl.extractors), Flatten, Linear, ReLU, Identity, "
    "and the containers Sequential, NatureCNN, ImpalaCNN, ConvSequence"
)


@dataclass(frozen=True)
class CnnOp:
    """One layer of the network in forward order, its parameters copied to float64.

    :param kind: ``"conv"``, ``"linear"``, ``"relu"``, ``"maxpool"``, ``"flatten"`` or
        ``"residual"``.
    :param name: dotted path of the module (``"0.cnn.2"``), for reports.
    """

    kind: str
    name: str
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    kernel: tuple[int, int] = (1, 1)
    ceil_mode: bool = False
    branch: tuple[CnnOp, ...] = field(default_factory=tuple)


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _param(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if t is None else t.detach().to(device=device, dtype=DTYPE).clone()


def _conv_op(m: nn.Conv2d, name: str, device: torch.device) -> CnnOp:
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise UnsupportedLayerError(
            f"{name}: Conv2d with padding={m.padding!r}, padding_mode={m.padding_mode!r}; "
            "only integer zero padding is supported"
        )
    return CnnOp(
        "conv",
        name,
        _param(m.weight, device),
        _param(m.bias, device),
        _pair(m.stride),
        _pair(m.padding),  # type: ignore[arg-type]
        _pair(m.dilation),
        int(m.groups),
    )


def cnn_ops(
    network: nn.Module | Sequence[nn.Module], device: torch.device | str = "cpu"
) -> list[CnnOp]:
    """The layers of ``network`` (or of several modules applied in turn) in forward order.

    :raises UnsupportedLayerError: (a ``TypeError``) for any module outside the list in
        the module docstring, naming it and its path.
    """
    from stable_baselines3.common.torch_layers import NatureCNN

    from adr_rl.extractors import ConvSequence, ImpalaCNN, ResidualBlock

    dev = torch.device(device)
    ops: list[CnnOp] = []

    def walk(m: nn.Module, name: str) -> None:
        if isinstance(m, nn.Sequential):
            for child_name, child in m.named_children():
                walk(child, f"{name}.{child_name}" if name else child_name)
        elif isinstance(m, NatureCNN):
            walk(m.cnn, f"{name}.cnn")
            walk(m.linear, f"{name}.linear")
        elif isinstance(m, ImpalaCNN):
            walk(m.conv_seqs, f"{name}.conv_seqs")
            walk(m.head, f"{name}.head")
        elif isinstance(m, ConvSequence):
            for part in ("conv", "max_pool", "res_block0", "res_block1"):
                walk(getattr(m, part), f"{name}.{part}")
        elif isinstance(m, ResidualBlock):
            ops.append(
                CnnOp(
                    "residual",
                    name,
                    branch=(
                        CnnOp("relu", f"{name}.relu0"),
                        _conv_op(m.conv0, f"{name}.conv0", dev),
                        CnnOp("relu", f"{name}.relu1"),
                        _conv_op(m.conv1, f"{name}.conv1", dev),
                    ),
                )
            )
        elif isinstance(m, nn.Conv2d):
            ops.append(_conv_op(m, name, dev))
        elif isinstance(m, nn.Linear):
            ops.append(CnnOp("linear", name, _param(m.weight, dev), _param(m.bias, dev)))
        elif isinstance(m, nn.ReLU):
            ops.append(CnnOp("relu", name))
        elif isinstance(m, nn.MaxPool2d):
            if _pair(m.dilation) != (1, 1) or m.return_indices:
                raise UnsupportedLayerError(
                    f"{name}: MaxPool2d with dilation or return_indices is not supported"
                )
            ops.append(
                CnnOp(
                    "maxpool",
                    name,
                    stride=_pair(m.stride if m.stride is not None else m.kernel_size),
                    padding=_pair(m.padding),
                    kernel=_pair(m.kernel_size),
                    ceil_mode=bool(m.ceil_mode),
                )
            )
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise UnsupportedLayerError(f"{name}: only Flatten(start_dim=1, end_dim=-1)")
            ops.append(CnnOp("flatten", name))
        elif isinstance(m, nn.Identity):
            pass
        else:
            raise UnsupportedLayerError(
                f"{name or 'the network'} is a {type(m).__name__}, which the CNN bounds do not "
                f"support; supported: {_SUPPORTED}"
            )

    modules = [network] if isinstance(network, nn.Module) else list(network)
    for i, m in enumerate(modules):
        if not isinstance(m, nn.Module):
            raise TypeError(f"expected nn.Module(s), got {type(m).__name__}")
        walk(m, str(i) if len(modules) > 1 else "")
    return ops


# --------------------------------------------------------------------------------------
# exact forward and interval forward
# --------------------------------------------------------------------------------------
def _affine(op: CnnOp, x: torch.Tensor, weight: torch.Tensor, bias: bool = True) -> torch.Tensor:
    b = op.bias if bias else None
    if op.kind == "conv":
        return F.conv2d(x, weight, b, op.stride, op.padding, op.dilation, op.groups)
    return F.linear(x, weight, b)


def _pool(op: CnnOp, x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, op.kernel, op.stride, op.padding, ceil_mode=op.ceil_mode)


def _exact(op: CnnOp, x: torch.Tensor, pre: list[torch.Tensor]) -> torch.Tensor:
    if op.kind in ("conv", "linear"):
        return _affine(op, x, op.weight)  # type: ignore[arg-type]
    if op.kind == "relu":
        pre.append(x)
        return x.clamp_min(0.0)
    if op.kind == "maxpool":
        return _pool(op, x)
    if op.kind == "flatten":
        return x.flatten(1)
    h = x
    for sub in op.branch:
        h = _exact(sub, h, pre)
    return x + h


def cnn_preactivations(
    network: nn.Module | Sequence[nn.Module] | Sequence[CnnOp], x: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every ReLU's exact pre-activation at ``x`` and the output, in float64.

    :param x: ``(B, C, H, W)`` float, the network's input units.
    :return: per ReLU site (forward order) ``(B, *site_shape)`` float64, and the output.
    """
    ops = _as_ops(network, x.device)
    pre: list[torch.Tensor] = []
    h = x.detach().to(DTYPE)
    for op in ops:
        h = _exact(op, h, pre)
    return pre, h


def _as_ops(
    network: nn.Module | Sequence[nn.Module] | Sequence[CnnOp], device: torch.device
) -> list[CnnOp]:
    if not isinstance(network, nn.Module) and all(isinstance(o, CnnOp) for o in network):
        return list(network)  # type: ignore[arg-type]
    return cnn_ops(network, device)  # type: ignore[arg-type]


def _interval_affine(
    op: CnnOp, lo: torch.Tensor, hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    center = _affine(op, (hi + lo) / 2, op.weight)  # type: ignore[arg-type]
    radius = _affine(op, (hi - lo) / 2, op.weight.abs(), bias=False)  # type: ignore[union-attr]
    return center - radius, center + radius


def _window_fixed(op: CnnOp, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """``(B, n_windows)`` bool: some element's lower bound >= every other's upper bound."""
    ph, pw = op.padding
    # pad with -inf so padded entries never win (as max_pool2d pads), then cut windows
    neg = -math.inf
    lo_p = F.pad(lo, (pw, pw, ph, ph), value=neg)
    hi_p = F.pad(hi, (pw, pw, ph, ph), value=neg)
    if op.ceil_mode:
        raise UnsupportedLayerError(f"{op.name}: MaxPool2d(ceil_mode=True) is not supported")
    (kh, kw), (sh, sw) = op.kernel, op.stride
    lw = lo_p.unfold(2, kh, sh).unfold(3, kw, sw).flatten(-2)  # (B, C, H', W', k)
    hw = hi_p.unfold(2, kh, sh).unfold(3, kw, sw).flatten(-2)
    best = lw.argmax(dim=-1, keepdim=True)
    best_lo = lw.gather(-1, best)
    others = hw.scatter(-1, best, neg)
    return (best_lo >= others.amax(dim=-1, keepdim=True)).squeeze(-1).flatten(1)


# --------------------------------------------------------------------------------------
# CROWN back-substitution
# --------------------------------------------------------------------------------------
def _relaxation(
    lo: torch.Tensor, hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CROWN's ReLU relaxation on ``[lo, hi]``: upper ``su z + tu``, lower ``sl z``."""
    unstable = (lo < 0) & (hi > 0)
    active = (lo >= 0).to(DTYPE)
    width = torch.where(unstable, hi - lo, torch.ones_like(hi))
    su = torch.where(unstable, hi / width, active)
    tu = torch.where(unstable, -su * lo, torch.zeros_like(lo))
    sl = torch.where(unstable, (hi >= -lo).to(DTYPE), active)
    return su, tu, sl


def _conv_adjoint(op: CnnOp, lam: torch.Tensor, in_shape: torch.Size) -> torch.Tensor:
    w = cast(torch.Tensor, op.weight)
    out_h, out_w = lam.shape[-2:]
    pads = []
    for d in range(2):
        size = (out_h, out_w)[d]
        full = (
            (size - 1) * op.stride[d] - 2 * op.padding[d] + op.dilation[d] * (w.shape[2 + d] - 1)
        ) + 1
        pads.append(int(in_shape[-2 + d]) - full)
    return F.conv_transpose2d(
        lam, w, None, op.stride, op.padding, tuple(pads), op.groups, op.dilation
    )


def _back_substitute(
    ops: Sequence[CnnOp],
    shapes: Sequence[torch.Size],
    relus: dict[int, tuple[torch.Tensor, torch.Tensor]],
    lam: torch.Tensor,
    box: tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of ``lam . h_end`` for rows ``lam: (R, *shape)`` over the segment ``ops``.

    ``shapes[i]`` is op ``i``'s input shape (one observation), ``relus[i]`` the
    pre-activation bounds of ReLU op ``i``, ``box`` the segment input's bounds.
    """
    rows = lam.shape[0]
    lam = torch.cat([lam, lam])  # first half: upper bound, second: lower bound
    const = torch.zeros(2 * rows, dtype=DTYPE, device=lam.device)
    for i in range(len(ops) - 1, -1, -1):
        op = ops[i]
        if op.kind == "relu":
            su, tu, sl = _relaxation(*relus[i])
            up, low = lam[:rows], lam[rows:]
            pu, nu = up.clamp_min(0), up.clamp_max(0)
            pl, nl = low.clamp_min(0), low.clamp_max(0)
            const = const + torch.cat([(pu * tu).flatten(1).sum(1), (nl * tu).flatten(1).sum(1)])
            lam = torch.cat([pu * su + nu * sl, pl * sl + nl * su])
        elif op.kind == "linear":
            if op.bias is not None:
                const = const + lam @ op.bias
            lam = lam @ cast(torch.Tensor, op.weight)
        elif op.kind == "conv":
            if op.bias is not None:
                const = const + lam.sum(dim=(2, 3)) @ op.bias
            lam = _conv_adjoint(op, lam, shapes[i])
        elif op.kind == "flatten":
            lam = lam.reshape(lam.shape[0], *shapes[i])
        else:  # pragma: no cover - segments end at pools and residual blocks
            raise RuntimeError(f"internal: a CROWN segment holds a {op.kind} op")
    lo, hi = box
    pos, neg = lam.clamp_min(0).flatten(1), lam.clamp_max(0).flatten(1)
    lo, hi = lo.flatten(), hi.flatten()
    upper = const[:rows] + pos[:rows] @ hi + neg[:rows] @ lo
    lower = const[rows:] + pos[rows:] @ lo + neg[rows:] @ hi
    return lower, upper


def _crown_tighten(
    ops: Sequence[CnnOp],
    shapes: Sequence[torch.Size],
    relus: dict[int, tuple[torch.Tensor, torch.Tensor]],
    box: tuple[torch.Tensor, torch.Tensor],
    lo: torch.Tensor,
    hi: torch.Tensor,
    only_unstable: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CROWN bounds of the segment's output (one observation), intersected with ``lo/hi``."""
    flat_lo, flat_hi = lo.flatten().clone(), hi.flatten().clone()
    units = torch.arange(flat_lo.numel(), device=lo.device)
    if only_unstable:
        units = units[(flat_lo < 0) & (flat_hi > 0)]
    for start in range(0, units.numel(), _ROWS):
        sel = units[start : start + _ROWS]
        lam = torch.zeros(sel.numel(), flat_lo.numel(), dtype=DTYPE, device=lo.device)
        lam[torch.arange(sel.numel()), sel] = 1.0
        cl, cu = _back_substitute(ops, shapes, relus, lam.reshape(-1, *lo.shape), box)
        flat_lo[sel] = torch.maximum(flat_lo[sel], cl)
        flat_hi[sel] = torch.minimum(flat_hi[sel], cu)
    return flat_lo.reshape(lo.shape), flat_hi.reshape(hi.shape)


# --------------------------------------------------------------------------------------
# the public entry point
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CnnBounds:
    """Bounds over the ball of every ReLU's pre-activation, per observation.

    :param names: per ReLU site (forward order), the module's dotted path.
    :param lower: per site, ``(B, *site_shape)`` float64 lower bounds; ``upper`` likewise.
    :param pool_names: per max-pool, its path; ``pool_fixed``: per max-pool,
        ``(B, n_windows)`` bool, the window's argmax is provably the same on the whole ball.
    :param output_lower: ``(B, n_out)`` float64 bounds of the network output (logits);
        ``output_upper`` likewise.
    :param method: ``"interval"`` or ``"crown"``.
    """

    names: tuple[str, ...]
    lower: tuple[torch.Tensor, ...]
    upper: tuple[torch.Tensor, ...]
    pool_names: tuple[str, ...]
    pool_fixed: tuple[torch.Tensor, ...]
    output_lower: torch.Tensor
    output_upper: torch.Tensor
    method: str

    def site_stable(self) -> tuple[torch.Tensor, ...]:
        """Per site ``(B, n_units)`` bool: ``lower >= 0`` or ``upper <= 0``."""
        return tuple(
            ((lo >= 0) | (hi <= 0)).flatten(1)
            for lo, hi in zip(self.lower, self.upper, strict=True)
        )

    def layer_stable_share(self) -> torch.Tensor:
        """``(B, n_sites)`` float64: share of each site's units provably stable."""
        shares = [s.to(DTYPE).mean(dim=1) for s in self.site_stable()]
        return torch.stack(shares, dim=1) if shares else torch.ones(0, 0, dtype=DTYPE)

    def site_sizes(self) -> tuple[int, ...]:
        return tuple(int(lo[0].numel()) for lo in self.lower)

    def stable_share(self) -> torch.Tensor:
        """``(B,)`` float64: share of all ReLU units (every site) provably stable."""
        counts = sum(s.sum(dim=1) for s in self.site_stable())
        return torch.as_tensor(counts, dtype=DTYPE) / max(sum(self.site_sizes()), 1)

    def all_stable(self) -> torch.Tensor:
        """``(B,)`` bool: every ReLU unit stable (the ball is in one ReLU activation region)."""
        out = torch.ones(self.output_lower.shape[0], dtype=torch.bool)
        for s in self.site_stable():
            out &= s.all(dim=1).cpu()
        return out

    def pools_fixed(self) -> torch.Tensor:
        """``(B,)`` bool: every max-pool window's argmax provably fixed (true without pools)."""
        out = torch.ones(self.output_lower.shape[0], dtype=torch.bool)
        for f in self.pool_fixed:
            out &= f.all(dim=1).cpu()
        return out

    def one_region(self) -> torch.Tensor:
        """``(B,)`` bool: all ReLUs stable and all max-pool argmaxes fixed, so the network
        is one affine function on the whole ball."""
        return self.all_stable() & self.pools_fixed()


def cnn_bounds(
    network: nn.Module | Sequence[nn.Module],
    x: torch.Tensor,
    eps: float,
    *,
    method: str = "interval",
    valid_range: tuple[float, float] | None = (0.0, 1.0),
    device: torch.device | str = "cpu",
) -> CnnBounds:
    """Bounds of every ReLU pre-activation of ``network`` over the L-inf ball around ``x``.

    :param network: the module, or modules applied in turn (e.g. an SB3 policy's
        ``[pi_features_extractor, mlp_extractor.policy_net, action_net]``).
    :param x: ``(B, C, H, W)`` float in the network's input units (for SB3 image
        policies: channel-first, scaled to ``[0, 1]``).
    :param eps: L-inf radius in the same units (``k`` pixel levels: ``k / 255``), ``>= 0``.
    :param method: ``"interval"`` (IBP) or ``"crown"`` (module docstring).
    :param valid_range: the ball is intersected with ``[low, high]`` (``None``: not).
    :param device: where to compute (float64 either way).
    :raises UnsupportedLayerError: for a module outside the supported list.
    :raises ValueError: for a negative or non-finite ``eps``, an unknown method or a
        non-image ``x``.
    """
    if method not in CNN_BOUND_METHODS:
        raise ValueError(
            f"unknown bound method {method!r}; choose one of {', '.join(CNN_BOUND_METHODS)}"
        )
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be finite and >= 0, got {eps}")
    if x.dim() != 4:
        raise ValueError(f"x must be a (B, C, H, W) image batch, got shape {tuple(x.shape)}")
    dev = torch.device(device)
    ops = cnn_ops(network, dev)
    x64 = x.detach().to(device=dev, dtype=DTYPE)
    lo, hi = x64 - eps, x64 + eps
    if valid_range is not None:
        # an x outside the range keeps its own point in the ball
        lo = torch.minimum(lo.clamp_min(valid_range[0]), x64)
        hi = torch.maximum(hi.clamp_max(valid_range[1]), x64)
    if method == "interval":
        return _interval(ops, lo, hi)
    return _crown(ops, lo, hi)


def _interval(ops: Sequence[CnnOp], lo: torch.Tensor, hi: torch.Tensor) -> CnnBounds:
    names: list[str] = []
    lows: list[torch.Tensor] = []
    ups: list[torch.Tensor] = []
    pool_names: list[str] = []
    fixed: list[torch.Tensor] = []

    def step(op: CnnOp, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if op.kind in ("conv", "linear"):
            return _interval_affine(op, lo, hi)
        if op.kind == "relu":
            names.append(op.name)
            lows.append(lo)
            ups.append(hi)
            return lo.clamp_min(0.0), hi.clamp_min(0.0)
        if op.kind == "maxpool":
            pool_names.append(op.name)
            fixed.append(_window_fixed(op, lo, hi))
            return _pool(op, lo), _pool(op, hi)
        if op.kind == "flatten":
            return lo.flatten(1), hi.flatten(1)
        bl, bh = lo, hi
        for sub in op.branch:
            bl, bh = step(sub, bl, bh)
        return lo + bl, hi + bh

    for op in ops:
        lo, hi = step(op, lo, hi)
    return CnnBounds(
        tuple(names), tuple(lows), tuple(ups), tuple(pool_names), tuple(fixed), lo, hi, "interval"
    )


def _crown(ops: Sequence[CnnOp], lo: torch.Tensor, hi: torch.Tensor) -> CnnBounds:
    """CROWN one observation at a time (the back-substituted rows differ per observation),
    intersected with the batched IBP bounds, so that not even float rounding (a batch of
    one and a batch of many may round a conv differently) makes it looser than IBP."""
    ibp = _interval(ops, lo, hi)
    per_obs = [_crown_one(ops, lo[b : b + 1], hi[b : b + 1]) for b in range(lo.shape[0])]
    return CnnBounds(
        ibp.names,
        tuple(
            torch.maximum(a, torch.cat([p.lower[k] for p in per_obs]))
            for k, a in enumerate(ibp.lower)
        ),
        tuple(
            torch.minimum(a, torch.cat([p.upper[k] for p in per_obs]))
            for k, a in enumerate(ibp.upper)
        ),
        ibp.pool_names,
        tuple(
            a | torch.cat([p.pool_fixed[k] for p in per_obs]) for k, a in enumerate(ibp.pool_fixed)
        ),
        torch.maximum(ibp.output_lower, torch.cat([p.output_lower for p in per_obs])),
        torch.minimum(ibp.output_upper, torch.cat([p.output_upper for p in per_obs])),
        "crown",
    )


def _crown_one(ops: Sequence[CnnOp], lo: torch.Tensor, hi: torch.Tensor) -> CnnBounds:
    names: list[str] = []
    lows: list[torch.Tensor] = []
    ups: list[torch.Tensor] = []
    pool_names: list[str] = []
    fixed: list[torch.Tensor] = []
    seg_start = 0  # the back-substitution's segment: ops[seg_start:i], input box seg_box
    seg_box = (lo[0], hi[0])
    shapes: list[torch.Size] = []  # op i's input shape, one observation
    relus: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for i, op in enumerate(ops):
        shapes.append(lo.shape[1:])
        if op.kind == "relu":
            if i > seg_start:  # at the segment start the box is already the best we have
                tl, th = _crown_tighten(
                    ops[seg_start:i],
                    shapes[seg_start:i],
                    {k - seg_start: v for k, v in relus.items() if k >= seg_start},
                    seg_box,
                    lo[0],
                    hi[0],
                    only_unstable=True,
                )
                lo, hi = tl[None], th[None]
            names.append(op.name)
            lows.append(lo)
            ups.append(hi)
            relus[i] = (lo[0], hi[0])
            lo, hi = lo.clamp_min(0.0), hi.clamp_min(0.0)
        elif op.kind in ("maxpool", "residual"):
            sub = _interval([op], lo, hi)
            names.extend(sub.names)
            lows.extend(sub.lower)
            ups.extend(sub.upper)
            pool_names.extend(sub.pool_names)
            fixed.extend(sub.pool_fixed)
            lo, hi = sub.output_lower, sub.output_upper
            seg_start, seg_box = i + 1, (lo[0], hi[0])
        else:
            step = _interval([op], lo, hi)
            lo, hi = step.output_lower, step.output_upper
    if len(ops) > seg_start:
        tl, th = _crown_tighten(
            ops[seg_start:],
            shapes[seg_start:],
            {k - seg_start: v for k, v in relus.items() if k >= seg_start},
            seg_box,
            lo[0],
            hi[0],
            only_unstable=False,
        )
        lo, hi = tl[None], th[None]
    return CnnBounds(
        tuple(names), tuple(lows), tuple(ups), tuple(pool_names), tuple(fixed), lo, hi, "crown"
    )
