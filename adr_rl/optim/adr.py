"""ADR's iteration (docs/method.md, ingredients 1-6): activation variables, the gated
surrogate pass through the network's own ReLU hooks, the consistency loss with its
dual ascent, noise kicks and restarts.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from tqdm.auto import tqdm

from adr_rl.optim.configs import ADRConfig
from adr_rl.optim.problem import Problem, clipped, gradient
from adr_rl.surrogate import NonReluNetworkError


class Units:
    """All ReLU units of all sites as one flat ``(B, U)`` buffer, viewed per site.

    Keeping ``eta`` flat makes every per-unit update one vectorized op, whatever the
    number of sites (the optimizer's per-step overhead matters for small nets). Each
    site's slice is laid out in the memory order of that site's pre-activations (e.g.
    channels-last when the input is), so gate and pre-activation never mix layouts:
    mixed layouts make PyTorch copy whole activation tensors (measured on the IMPALA
    CNN). For contiguous pre-activations this is the plain ``(C, H, W)`` order; for
    other layouts, reductions over units (a site's RMS, ``aggregate="sum"``, the norm
    of the ``eta`` gradient) run in memory order, which changes float rounding only,
    and noise is still drawn in ``(C, H, W)`` order (:meth:`add_logical`), so each
    unit gets the same kick whatever the layout.
    """

    def __init__(self, signs: Sequence[torch.Tensor]) -> None:
        self.shapes = [tuple(s.shape[1:]) for s in signs]
        self.sizes = [math.prod(shape) for shape in self.shapes]
        self.starts = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        self.total = sum(self.sizes)
        self.orders = [_memory_order(s) for s in signs]
        self.logical = all(o == tuple(range(1, len(o) + 1)) for o in self.orders)

    def empty(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        return torch.empty(batch, self.total, dtype=like.dtype, device=like.device)

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Per-site ``(B, *shape)`` views of ``flat``, each in its site's memory layout."""
        out = []
        for start, size, shape, order in zip(
            self.starts, self.sizes, self.shapes, self.orders, strict=True
        ):
            stored = flat[:, start : start + size].view(-1, *(shape[d - 1] for d in order))
            out.append(stored.permute(0, *inverse(order)))
        return out

    def empty_site(self, i: int, like: torch.Tensor) -> torch.Tensor:
        """Uninitialized ``like``-shaped tensor in site ``i``'s memory layout."""
        order = self.orders[i]
        stored = like.new_empty((like.shape[0], *(like.shape[d] for d in order)))
        return stored.permute(0, *inverse(order))

    def flat_site(self, t: torch.Tensor, i: int) -> torch.Tensor:
        """``(B, *shape) -> (B, n)`` in site ``i``'s memory order (a view when ``t`` has it)."""
        if t.dim() == 2:
            return t
        if self.logical:
            return t.flatten(1)
        return t.permute(0, *self.orders[i]).reshape(t.shape[0], -1)

    def set_pattern(
        self, flat: torch.Tensor, signs: Sequence[torch.Tensor], cfg: ADRConfig
    ) -> None:
        """Write :func:`_logits_from_pattern` of ``signs`` (one per site) into ``flat``."""
        for view, sign in zip(self.views(flat), signs, strict=True):
            view.copy_(_logits_from_pattern(sign.to(flat.dtype), cfg))

    def add_logical(self, flat: torch.Tensor, noise: torch.Tensor, scale: torch.Tensor) -> None:
        """``flat += noise * scale`` where ``noise`` ``(B, U)`` is in the sites' logical
        ``(C, H, W)`` order, so the noise each unit gets does not depend on the layout."""
        if self.logical:
            flat.addcmul_(noise, scale)
            return
        for view, start, size, shape in zip(
            self.views(flat), self.starts, self.sizes, self.shapes, strict=True
        ):
            piece = noise[:, start : start + size].view(-1, *shape)
            view.addcmul_(piece, scale.view(-1, *([1] * len(shape))))


def _memory_order(t: torch.Tensor) -> tuple[int, ...]:
    """Non-batch dims of ``t`` from outermost to innermost in memory (identity unless
    ``t`` is a dense permutation, e.g. channels-last)."""
    identity = tuple(range(1, t.dim()))
    if t.is_contiguous():
        return identity
    strides = t.stride()
    order = tuple(sorted(identity, key=lambda d: -strides[d]))
    if t.permute(0, *order)[:1].is_contiguous():
        return order
    return identity


def inverse(order: tuple[int, ...]) -> tuple[int, ...]:
    """Permutation that undoes ``permute(0, *order)`` (dims counted from 1)."""
    return tuple(order.index(d) + 1 for d in range(1, len(order) + 1))


def _logits_from_pattern(signs: torch.Tensor, cfg: ADRConfig) -> torch.Tensor:
    """Ingredient 1, ``eta = 0.5 - delta * sign(z)`` (``z <= 0`` counts as off), as gate
    logits ``w = alpha * (0.5 - eta)``, so that ``g(eta) = sigmoid(w)``.

    The optimizer keeps ``eta`` in this form: it saves one full pass over the
    activations per step, forward and backward (measurable on CNNs).
    """
    return (cfg.alpha * cfg.delta) * (2.0 * signs - 1.0)


class _GateState:
    """What the fused site nodes of the surrogate passes share (see :class:`_GatedSite`).

    Built once per run: the buffers are updated in place, so their per-site views (made
    here, once) stay valid; small nets are dominated by such per-op overhead.

    :param w: ``(B, U)`` gate logits (no graph); ``s``: their sigmoid, the gates.
    :param grad_w: ``(B, U)`` buffer the backward pass writes ``dL/dw`` into, or ``None``
        when no ``eta`` gradient is wanted.
    """

    def __init__(
        self,
        units: Units,
        w: torch.Tensor,
        s: torch.Tensor,
        grad_w: torch.Tensor | None,
        cfg: ADRConfig,
    ) -> None:
        self.units, self.cfg = units, cfg
        self.w, self.s, self.grad_w = units.views(w), units.views(s), None
        self.w_flat = [w[:, a : a + n] for a, n in zip(units.starts, units.sizes, strict=True)]
        if grad_w is not None:
            self.grad_w = units.views(grad_w)
            self.grad_w_flat = [
                grad_w[:, a : a + n] for a, n in zip(units.starts, units.sizes, strict=True)
            ]
        # Per-site work buffers, reused every step: a fresh activation-sized tensor costs
        # more than the pass that fills it (page faults; measured on the IMPALA CNN).
        self.grad_z: list[torch.Tensor | None] = [None] * len(units.sizes)
        self._scratch: list[torch.Tensor | None] = [None] * len(units.sizes)
        self.reset()

    def buffer(
        self, buffers: list[torch.Tensor | None], i: int, like: torch.Tensor
    ) -> torch.Tensor:
        """``buffers[i]``, (re)allocated like ``like`` in site ``i``'s layout if needed."""
        b = buffers[i]
        if b is None or b.shape != like.shape or b.dtype != like.dtype:
            b = buffers[i] = self.units.empty_site(i, like)
        return b

    def scratch(self, i: int, z: torch.Tensor) -> torch.Tensor:
        """``(B, n)`` scratch for site ``i`` in the forward pass: the slice of the ``eta``
        gradient buffer, which the backward pass overwrites anyway, if there is one."""
        if self.grad_w is not None:
            return self.grad_w_flat[i]
        return self.units.flat_site(self.buffer(self._scratch, i, z), i)

    def reset(self) -> None:
        """Forget the last pass (call before each surrogate pass)."""
        self.written = [False] * len(self.units.sizes)
        self.violations: list[torch.Tensor] = []

    def site(self, i: int, z: torch.Tensor) -> torch.Tensor:
        """The surrogate's output at site ``i`` (a :data:`SiteFn`); records its violation."""
        if z.dtype != self.s[i].dtype:
            # Under autocast the pre-activations come in low precision; the gates, their
            # buffers and the consistency term stay in the iterate's dtype.
            z = z.to(self.s[i].dtype)
        out, violation = _GatedSite.apply(z, i, self)
        self.violations.append(violation)
        return cast(torch.Tensor, out)

    def violation(self) -> torch.Tensor:
        """Ingredient 3: ``C(x, eta)``, ``(B,)``, summed over the sites in call order."""
        total = self.violations[0]
        for v in self.violations[1:]:
            total = total + v
        return total


class _GatedSite(torch.autograd.Function):
    """One ReLU site of the surrogate, ``relu(z) -> sigmoid(w) * z`` (ingredient 2), and
    its consistency term (ingredient 3) as a single autograd node.

    Fusing them replaces about twenty small autograd nodes per site (sigmoid, split,
    gather, relu, ...) by one, and computes ``dL/dz`` and ``dL/dw`` in the fewest
    passes over the activations: the consistency term touches one unit per row (its
    arg-max), so its gradient is added with a scatter of ``B`` values instead of a
    dense zero-filled tensor. ``dL/dw`` is written straight into the state's flat
    buffer rather than returned (``eta`` is not an autograd input), so the ``eta``
    update needs no concatenation. The arithmetic is the same, op for op, as
    autograd's on the unfused expression (iterates are bit-identical to it in float64).

    Consistency, as in the paper: a gate is violated when it is off (``eta > 0.5``)
    with ``z > 0`` or on with ``z < 0``; both cases are ``relu(z * (eta - 0.5)) > 0``,
    the paper's two penalties in one expression (``eta - 0.5 = -w / alpha``). ``z`` are
    the surrogate's own pre-activations: when every gate agrees with the sign of its
    pre-activation computed under the gated pattern, that pattern is the real one at
    ``x`` and ``f_hat == f`` (Prop. 5.1), so this is the feasibility condition itself,
    read off the one surrogate pass. Units are aggregated per site by ``max`` (the
    reference) or ``sum``, and with ``normalization="layer"`` divided by the per-problem
    RMS of ``z`` (which commutes with relu and max).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, z: torch.Tensor, i: int, state: _GateState
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = state.cfg
        s = state.s[i]
        out = s * z
        # A weak reference: the state holds this pass's violation tensors, whose grad_fn
        # holds this ctx, a cycle through autograd's C++ nodes that Python's collector
        # cannot see, so a strong one would keep every run's buffers alive.
        ctx.i, ctx.state = i, weakref.ref(state)
        if not cfg.use_constraint:
            # C only feeds the multiplier c, which only matters inside the constraint term.
            ctx.save_for_backward(s, z)
            return out, z.new_zeros(z.shape[0])
        zf, wf = state.units.flat_site(z, i), state.w_flat[i]
        if cfg.aggregate == "max":
            # max_j relu(-z_j w_j) = relu(-min_j z_j w_j): only the arg-min unit matters.
            m, ctx.j = torch.mul(zf, wf, out=state.scratch(i, z)).min(dim=1, keepdim=True)
            site = m.squeeze(1).neg().relu()
        else:
            site = (zf * wf).neg().relu().sum(dim=1)
        denominator: float | torch.Tensor = cfg.alpha
        if cfg.normalization == "layer":
            rms = torch.linalg.vector_norm(zf, dim=1)
            denominator = rms.mul_(zf.shape[1] ** -0.5 * cfg.alpha).clamp_min_(1e-12)
        ctx.site, ctx.denominator = site, denominator
        ctx.save_for_backward(s, z)
        return out, site / denominator

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_out: torch.Tensor, grad_violation: torch.Tensor
    ) -> tuple[torch.Tensor, None, None]:
        s, z = ctx.saved_tensors
        state = ctx.state()
        if state is None:
            raise RuntimeError("ADR's gate state was freed before the backward pass")
        units, i, cfg = state.units, ctx.i, state.cfg
        # dL/dz, allocated in the site's layout so that its flat view below is a view.
        grad_z = torch.mul(grad_out, s, out=state.buffer(state.grad_z, i, z))
        grad_w = None
        if state.grad_w is not None:
            grad_w = state.grad_w[i]
            torch.mul(grad_out, z, out=grad_w)
            torch.ops.aten.sigmoid_backward.grad_input(grad_w, s, grad_input=grad_w)
            state.written[i] = True
        if cfg.use_constraint:
            # Autograd's steps through site / denominator, relu, neg and the product.
            g = grad_violation / ctx.denominator
            g = torch.where(ctx.site > 0, g, 0.0).neg()
            wf, gz_flat = state.w_flat[i], units.flat_site(grad_z, i)
            if cfg.aggregate == "max":
                j, g = ctx.j, g[:, None]
                gz_flat.scatter_add_(1, j, g * wf.gather(1, j))
                if grad_w is not None:
                    zj = units.flat_site(z, i).gather(1, j)
                    state.grad_w_flat[i].scatter_add_(1, j, g * zj)
            else:
                zf = units.flat_site(z, i)
                g = torch.where(zf * wf < 0, g[:, None], 0.0)
                gz_flat.add_(g * wf)
                if grad_w is not None:
                    state.grad_w_flat[i].add_(g * zf)
        return grad_z, None, None


@dataclass
class ADRStart:
    """ADR's state before its first step, shared by the eager and the compiled loop.

    :param w: ``(B, U)`` activation variables as gate logits ``w = alpha * (0.5 - eta)``
        (see :func:`_logits_from_pattern`), set from the real pattern at ``x0``.
    :param seed_j_hat: ``dL/dJ_hat = -1 / scale`` per problem (ingredient 4).
    """

    x: torch.Tensor
    units: Units
    w: torch.Tensor
    c: torch.Tensor
    seed_j_hat: torch.Tensor


def adr_start(problem: Problem, cfg: ADRConfig) -> ADRStart:
    """Self-check (Prop. 5.1), initial pattern, multiplier and objective scale."""
    x = problem.best_x.clone()
    units = Units(problem.signs0)
    _self_check(problem, x)
    w = units.empty(problem.batch, x)
    units.set_pattern(w, problem.signs0, cfg)
    c = torch.full((problem.batch,), cfg.c_init, dtype=x.dtype, device=x.device)
    scale = torch.ones_like(c)
    if cfg.objective_scale == "grad":
        _, g0 = gradient(problem, x)
        scale = g0.flatten(1).norm(dim=1).clamp_min(1e-12)
    return ADRStart(x, units, w, c, -(torch.ones_like(scale) / scale))


def logit_bounds(cfg: ADRConfig) -> tuple[float, float]:
    """``[eta_min, eta_max]`` as bounds of the gate logits ``w = alpha * (0.5 - eta)``."""
    return cfg.alpha * (0.5 - cfg.eta_max), cfg.alpha * (0.5 - cfg.eta_min)


def dual_ascent(c: torch.Tensor, violation: torch.Tensor, cfg: ADRConfig) -> torch.Tensor:
    """Ingredient 5: raise ``c`` while the constraint is violated, decay it otherwise."""
    raised = torch.where(violation > 0, c + cfg.lr_c * violation, c * (1.0 - cfg.lr_c))
    return raised.clamp(cfg.c_min, cfg.c_max)


def noise_kick(
    problem: Problem,
    units: Units,
    w: torch.Tensor,
    eta_grad_norm: torch.Tensor | None,
    cfg: ADRConfig,
) -> int:
    """Ingredient 5's escape, in place on ``w``: a Gaussian kick for the problems whose
    ``eta`` gradient norm is below ``grad_threshold`` (all of them without an ``eta``
    gradient); returns how many were kicked. The caller clamps ``w`` after."""
    noise = torch.randn(w.shape, generator=problem.generator, device=w.device, dtype=w.dtype)
    if eta_grad_norm is not None:
        stuck = eta_grad_norm < cfg.grad_threshold
    else:
        stuck = torch.ones((w.shape[0], 1), dtype=torch.bool, device=w.device)
    units.add_logical(w, noise, (cfg.alpha * cfg.noise_scale) * stuck)
    return int(stuck.sum())


def restart(
    problem: Problem, units: Units, w: torch.Tensor, cfg: ADRConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """A uniform restart: the new ``x``, ``w`` set to its pattern in place, a fresh ``c``."""
    x = problem.uniform()
    _, signs = problem.true_value(x)
    units.set_pattern(w, signs, cfg)
    return x, torch.full((problem.batch,), cfg.c_init, dtype=x.dtype, device=x.device)


def run_adr(problem: Problem, steps: int, lr: float, cfg: ADRConfig, bar: tqdm) -> dict[str, Any]:
    start = adr_start(problem, cfg)
    x, units, w, c, seed_j_hat = start.x, start.units, start.w, start.c, start.seed_j_hat
    # The gates and the eta gradient are kept in place in one buffer each, like w.
    gates = torch.empty_like(w)
    grad_w = torch.empty_like(w) if cfg.use_eta_step else None
    state = _GateState(units, w, gates, grad_w, cfg)
    w_min, w_max = logit_bounds(cfg)
    kicks = 0
    for t in range(1, steps + 1):
        # Ingredient 6: score the iterate under the real network (no graph needed).
        resync = bool(cfg.resync_freq) and t % cfg.resync_freq == 0
        value, signs = problem.true_value(x, record=resync)
        problem.offer(x, value)
        if resync:
            units.set_pattern(w, signs, cfg)

        # Ingredient 4: L(x, eta) = -J_hat(x, eta) / scale + c * C(x, eta), C summed over
        # the sites. Its gradient is seeded per term (dL/dJ_hat = -1 / scale, dL/dC_i =
        # c), exactly what autograd would pass down from L.sum(), without the graph of L.
        torch.sigmoid(w, out=gates)
        state.reset()
        x_var = x.detach().requires_grad_(True)
        with torch.enable_grad():
            j_hat, _ = problem.surrogate.gated(
                functools.partial(problem.evaluate, x_var), state.site
            )
        outputs, seeds = [j_hat], [seed_j_hat]
        if cfg.use_constraint:
            outputs += state.violations
            seeds += [c] * len(state.violations)
        (gx,) = torch.autograd.grad(outputs, [x_var], seeds, allow_unused=True)
        if gx is None:
            gx = torch.zeros_like(x)
        violation = state.violation().detach()

        # Ingredient 5: updates of x, eta and c.
        step = gx.sign() if cfg.x_step == "sign" else clipped(gx)
        x = problem.project(x - lr * step)
        eta_grad_norm = None
        moved = False
        if grad_w is not None and any(state.written):
            for view, written in zip(state.grad_w or (), state.written, strict=True):
                if not written:  # a site whose output the objective ignores
                    view.zero_()
            # dL/deta = -alpha dL/dw; the paper's clipped eta step, written for w.
            eta_grad_norm = cfg.alpha * torch.linalg.vector_norm(grad_w, dim=1, keepdim=True)
            w.addcmul_(grad_w, -(cfg.alpha**2 * cfg.lr_eta) / eta_grad_norm.clamp_min(1.0))
            moved = True
        if cfg.use_noise and t % cfg.perturb_freq == 0:
            kicks += noise_kick(problem, units, w, eta_grad_norm, cfg)
            moved = True
        if moved:
            w.clamp_(w_min, w_max)
        c = dual_ascent(c, violation, cfg)
        if cfg.restart_every and t % cfg.restart_every == 0:
            x, c = restart(problem, units, w, cfg)
        problem.record()
        bar.update()
    problem.finish(x)
    return {"lr": lr, "noise_kicks": kicks, "config": dataclasses.asdict(cfg)}


def _self_check(problem: Problem, x: torch.Tensor) -> None:
    """Prop. 5.1: with gates equal to the real pattern the surrogate *is* the network.

    Uses hard 0/1 gates, so the check does not depend on ``alpha``.
    """
    hard = [s.to(x.dtype) for s in problem.signs0]
    with torch.no_grad():
        j_hat, _ = problem.surrogate.gated(lambda: problem.evaluate(x), hard)
    ref = problem.initial_value
    rtol = 1e-9 if ref.dtype == torch.float64 else 1e-4
    if not torch.all((j_hat - ref).abs() <= rtol * (1.0 + ref.abs())):
        worst = (j_hat - ref).abs().max().item()
        raise NonReluNetworkError(
            "self-check failed: the sigmoid surrogate with the network's own activation "
            f"pattern differs from the real output by {worst:.3g} (Prop. 5.1). Likely causes: "
            "a non-linearity that is not an nn.ReLU module (functional relu, Tanh, ...), a "
            "stateful or random forward(), or an nn.ReLU module whose output is reused "
            "elsewhere"
        )
