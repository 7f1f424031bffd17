"""``maximize(..., compile=True)``: one ``torch.compile``'d graph per iteration.

On small problems an eager iteration is dominated by per-op dispatch and Python (an
ADR step on the paper's 10-64-64-1 network is ~100 tensor ops of a few microseconds
each), not by arithmetic. Compiling the whole iteration (scoring forward, surrogate
forward, ``autograd.grad``, the updates) lets the backend fuse it into a few kernels.

The compiled ADR step is the same method as the eager one in ``adr_rl/optim/adr.py``,
written with plain differentiable ops instead of the hand-fused site node (the compiler
does the fusing); the eager loop around it keeps what needs Python or random numbers:
re-syncs, noise kicks, restarts, history and the progress bar, in the same order as
the eager path, so both visit the same iterates up to float rounding
(``tests/test_compiled.py``). The network is still seen through the
:class:`~adr_rl.surrogate.ReluSurrogate` hooks, which the compiler traces; the user's
network is frozen and restored exactly as in eager mode.

``torch._dynamo.config.trace_autograd_ops`` (``autograd.grad`` inside the graph) and a
higher ``recompile_limit`` hold only while a compiled step runs; nothing global is left
changed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, cast

import torch

from adr_rl.optim.adr import (
    Units,
    adr_start,
    dual_ascent,
    inverse,
    logit_bounds,
    noise_kick,
    restart,
)
from adr_rl.optim.configs import COMPILED_METHODS, ADRConfig
from adr_rl.optim.problem import Problem, clipped, keep_better, normalized, project
from adr_rl.surrogate import ReluSurrogate

__all__ = ["COMPILED_METHODS", "CompileError", "compiler_available", "run_adr", "run_gradient"]

Evaluate = Callable[[torch.Tensor], torch.Tensor]


class CompileError(RuntimeError):
    """``torch.compile`` could not build the step: a graph break in the objective or the
    network, or no toolchain (a C++ compiler on CPU)."""


def _violation(
    zs: list[torch.Tensor], ws: list[torch.Tensor], units: Units, cfg: ADRConfig
) -> torch.Tensor:
    """Ingredient 3, ``C(x, eta)`` per problem, differentiable in ``z`` and in each
    site's flat gate logits ``ws[i]`` ``(B, n_i)``: the same expression the eager path's
    fused node computes (see ``_GatedSite``)."""
    total = torch.zeros(ws[0].shape[0], dtype=ws[0].dtype, device=ws[0].device)
    for i, z in enumerate(zs):
        zf, wf = units.flat_site(z, i), ws[i]
        if cfg.aggregate == "max":
            # min then relu(-.), like the eager node: ties (common in CNNs, where units that
            # see only zeros share their bias) send the gradient to one unit, not spread it
            site = (zf * wf).min(dim=1).values.neg().relu()
        else:
            site = (zf * wf).neg().relu().sum(dim=1)
        denominator: float | torch.Tensor = cfg.alpha
        if cfg.normalization == "layer":
            rms = torch.linalg.vector_norm(zf.detach(), dim=1)
            denominator = (rms * (zf.shape[1] ** -0.5 * cfg.alpha)).clamp_min(1e-12)
        total = total + site / denominator
    return total


def _site_shaped(flat: torch.Tensor, units: Units, i: int) -> torch.Tensor:
    """``(B, n_i)`` in site ``i``'s memory order -> ``(B, *site shape)`` (a view)."""
    order = units.orders[i]
    stored = flat.view(-1, *(units.shapes[i][d - 1] for d in order))
    return stored.permute(0, *inverse(order))


def _adr_step(
    surrogate: ReluSurrogate,
    evaluate: Evaluate,
    units: Units,
    cfg: ADRConfig,
    lr: float,
    x: torch.Tensor,
    w: torch.Tensor,
    c: torch.Tensor,
    seed_j_hat: torch.Tensor,
    best_x: torch.Tensor,
    best_v: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    clamp_w: bool,
) -> tuple[torch.Tensor, ...]:
    """One ADR iteration (docs/method.md, ingredients 2-6) without its random parts.

    :param clamp_w: clamp ``w`` to its bounds after the ``eta`` step; ``False`` where
        the caller adds a noise kick first and clamps after it, as the eager path does.
    :return: ``x`` after the step, ``w`` after the ``eta`` step, ``c``, the new best
        iterate and value, and the ``eta`` gradient norm ``(B, 1)`` (zeros without an
        ``eta`` step).
    """
    with torch.no_grad():
        value, _ = surrogate.real(functools.partial(evaluate, x), record=False)
    best_x, best_v = keep_better(best_x, best_v, x, value)
    with torch.enable_grad():
        x_var = x.detach().requires_grad_(True)
        # One leaf per site (its slice of the flat logits), not the flat tensor itself:
        # a gradient to the flat tensor would be assembled from per-site slices with
        # strided copies that cost more than the rest of the step on CNNs.
        ws = [
            w[:, a : a + n].detach().requires_grad_(cfg.use_eta_step)
            for a, n in zip(units.starts, units.sizes, strict=True)
        ]
        gates = [_site_shaped(torch.sigmoid(wf), units, i) for i, wf in enumerate(ws)]
        j_hat, zs = surrogate.gated(functools.partial(evaluate, x_var), gates)
        loss = j_hat * seed_j_hat
        violation = torch.zeros_like(c)
        if cfg.use_constraint:
            violation = _violation(zs, ws, units, cfg)
            loss = loss + c * violation
        inputs = [x_var, *ws] if cfg.use_eta_step else [x_var]
        grads = torch.autograd.grad(loss.sum(), inputs)
    gx = grads[0]
    step = gx.sign() if cfg.x_step == "sign" else clipped(gx)
    x = project(x - lr * step, lo, hi)
    eta_grad_norm = torch.zeros_like(c[:, None])
    if cfg.use_eta_step:
        grad_ws = grads[1:]
        # dL/deta = -alpha dL/dw; the paper's clipped eta step, written for w.
        squares = sum(g.square().sum(dim=1, keepdim=True) for g in grad_ws)
        eta_grad_norm = cfg.alpha * torch.sqrt(cast(torch.Tensor, squares))
        scale = -(cfg.alpha**2 * cfg.lr_eta) / eta_grad_norm.clamp_min(1.0)
        w = torch.cat([wf.detach() + g * scale for wf, g in zip(ws, grad_ws, strict=True)], 1)
        if clamp_w:
            w = w.clamp(*logit_bounds(cfg))
    c = dual_ascent(c, violation.detach(), cfg)
    return x, w, c, best_x, best_v, eta_grad_norm


def _gradient_step(
    surrogate: ReluSurrogate,
    evaluate: Evaluate,
    method: str,
    lr: float,
    x: torch.Tensor,
    best_x: torch.Tensor,
    best_v: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """One iteration of normalized-gradient (``gd``) or sign-gradient (``pgd``) ascent."""
    with torch.enable_grad():
        x_var = x.detach().requires_grad_(True)
        value, _ = surrogate.real(functools.partial(evaluate, x_var), record=False)
        (grad,) = torch.autograd.grad(value.sum(), [x_var])
    best_x, best_v = keep_better(best_x, best_v, x, value)
    step = normalized(grad) if method == "gd" else grad.sign()
    x = project(x + lr * step, lo, hi)
    return x, best_x, best_v


_compiled: dict[str, Callable[..., Any]] = {}


def _compiled_fn(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile(fn)``, built once per process (its cache holds one graph per
    network, configuration and shape it has seen)."""
    if name not in _compiled:
        # fullgraph: a graph break inside the user's network or objective would split
        # the step around the ReLU hooks' bookkeeping; refuse it instead (CompileError).
        _compiled[name] = torch.compile(fn, fullgraph=True, dynamic=False)
    return _compiled[name]


def _call(name: str, fn: Callable[..., Any], *args: Any) -> tuple[torch.Tensor, ...]:
    config = torch._dynamo.config
    if not hasattr(config, "trace_autograd_ops") or not hasattr(config, "recompile_limit"):
        raise CompileError(
            f"compile=True needs a torch whose compiler traces autograd.grad "
            f"(torch._dynamo.config.trace_autograd_ops); this is torch {torch.__version__}, "
            "the project is tested with 2.13.0"
        )
    step = _compiled_fn(name, fn)
    try:
        # One graph per network, configuration and shape: allow more than dynamo's
        # default 8 before it would silently fall back to eager.
        with torch._dynamo.config.patch(trace_autograd_ops=True, recompile_limit=64):
            return step(*args)  # type: ignore[no-any-return]
    except torch._dynamo.exc.Unsupported as exc:
        raise CompileError(
            "compile=True needs the objective and the network's forward to trace as one "
            "graph (no numpy, no Python branches on tensor values); run "
            f"without compile=True. torch.compile stopped at: {_first_line(exc)}"
        ) from exc
    except torch._dynamo.exc.BackendCompilerFailed as exc:
        raise CompileError(
            "compile=True: torch.compile could not build the step (on CPU the inductor "
            "backend needs a working C++ compiler, e.g. g++; on CUDA, Triton). Run without "
            f"compile=True, or fix the toolchain: {_first_line(exc)}"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_adr(problem: Problem, steps: int, lr: float, cfg: ADRConfig, bar: Any) -> dict[str, Any]:
    """ADR with a compiled iteration; the same loop as :func:`adr_rl.optim.adr.run_adr`."""
    start = adr_start(problem, cfg)
    x, units, w, c, seed_j_hat = start.x, start.units, start.w, start.c, start.seed_j_hat
    kicks = 0
    for t in range(1, steps + 1):
        if cfg.resync_freq and t % cfg.resync_freq == 0:
            _, signs = problem.true_value(x, record=True)
            units.set_pattern(w, signs, cfg)
        kick = cfg.use_noise and t % cfg.perturb_freq == 0
        x, w, c, problem.best_x, problem.best_value, eta_grad_norm = _call(
            "adr",
            _adr_step,
            problem.surrogate,
            problem.evaluate,
            units,
            cfg,
            lr,
            x,
            w,
            c,
            seed_j_hat,
            problem.best_x,
            problem.best_value,
            problem.lo,
            problem.hi,
            not kick,
        )
        if kick:  # w is this loop's own tensor (the step's output): kicked in place
            norm = eta_grad_norm if cfg.use_eta_step else None
            kicks += noise_kick(problem, units, w, norm, cfg)
            w = w.clamp(*logit_bounds(cfg))
        if cfg.restart_every and t % cfg.restart_every == 0:
            x, c = restart(problem, units, w, cfg)
        problem.record()
        bar.update()
    problem.finish(x)
    return {"lr": lr, "noise_kicks": kicks, "compiled": True}


def run_gradient(problem: Problem, method: str, steps: int, lr: float, bar: Any) -> dict[str, Any]:
    """``gd``/``pgd`` with a compiled iteration; the loop of :func:`.baselines.run_gradient`."""
    x = problem.best_x.clone()
    for _ in range(steps):
        x, problem.best_x, problem.best_value = _call(
            "gradient",
            _gradient_step,
            problem.surrogate,
            problem.evaluate,
            method,
            lr,
            x,
            problem.best_x,
            problem.best_value,
            problem.lo,
            problem.hi,
        )
        problem.record()
        bar.update()
    problem.finish(x)
    return {"lr": lr, "compiled": True}


def compiler_available() -> bool:
    """Whether ``torch.compile``'s default backend can build CPU code here (a C++
    compiler on the PATH); CUDA needs Triton instead."""
    import shutil

    cxx = torch._inductor.config.cpp.cxx
    names = [c for c in (cxx if isinstance(cxx, tuple) else (cxx,)) if c]
    return any(shutil.which(n) for n in [*names, "g++", "c++", "clang++"])
