"""``maximize``: batched input optimization of ReLU networks, ADR and its baselines.

Every method solves ``B`` independent problems

    maximize_x  J(x) = objective(f(x), x)   subject to   lower <= x <= upper

in one vectorized loop (no Python loop over problems) and returns, per problem, the
best iterate under the *true* network, the starting point included, so
``result.value >= J(x0)`` always holds.

Methods (see docs/method.md, and docs/random-relu.md for how they compare):

- ``"adr"``: Activation-Descent Regularization as specified in docs/method.md (paper
  hyper-parameters, :class:`ADRConfig`).
- ``"adr_sync"``: the project's ADR variant (:func:`adr_sync_config`): ``eta`` is
  re-synchronized with the real pattern every few steps and the objective is made
  scale-free; the benchmark and ablations in docs/random-relu.md show why.
- ``"gd"``: normalized-gradient ascent, the paper's baseline.
- ``"pgd"``: sign-gradient ascent (projected gradient for L-inf boxes).
- ``"apgd"``: Auto-PGD (Croce & Hein 2020): sign steps with momentum whose size is
  halved per problem at fixed checkpoints when progress stalls, restarting from the
  best point, optionally with random restarts (:class:`APGDConfig`).
- ``"fgsm"``: one sign step to the box corner that the gradient points at.
- ``"adam"``: Adam ascent, projected onto the box.
- ``"restart_gd"``: normalized-gradient ascent restarted from a uniform random
  point of the box every ``restart_every`` steps, the fair randomized baseline.
- ``"perturbed_gd"``: normalized-gradient ascent with Gaussian kicks when stalled,
  the randomized counterpart of ADR's activation noise.
- ``"cem"``: the cross-entropy method (QT-Opt's action optimizer): sample a
  population around a mean, refit mean and std to the elites, no gradients.
- ``"random"``: uniform samples in the box, the floor.
- ``"milp"``: the exact maximum with a proven bound, by a mixed-integer program
  (``adr_rl.certify``, :class:`MILPConfig`), for networks of ``nn.Linear``/``nn.ReLU``
  whose input is affine in ``x`` (a critic with the observation fixed included).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import nn
from tqdm.auto import tqdm

from adr_rl.machine import threads_for, torch_threads
from adr_rl.optim import adr, baselines
from adr_rl.optim.configs import (
    COMPILED_METHODS,
    EXACT_METHODS,
    AdamConfig,
    ADRConfig,
    APGDConfig,
    CEMConfig,
    Method,
    MILPConfig,
    PerturbedGDConfig,
    RestartGDConfig,
    adr_sync_config,
    check_method,
    network_evaluations,
)
from adr_rl.optim.problem import MaximizeResult, Problem
from adr_rl.surrogate import ReluSurrogate

_DEFAULT_LR = {
    "adr": 0.5,
    "adr_sync": 0.5,
    "gd": 0.5,
    "restart_gd": 0.5,
    "perturbed_gd": 0.5,
    "adam": 0.05,
}


Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def maximize(
    fn: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    lower: float | torch.Tensor = -math.inf,
    upper: float | torch.Tensor = math.inf,
    steps: int = 100,
    method: Method | str = "adr",
    seed: int | None = 0,
    *,
    objective: Objective | None = None,
    network: nn.Module | Sequence[nn.Module] | None = None,
    lr: float | None = None,
    config: ADRConfig
    | AdamConfig
    | APGDConfig
    | RestartGDConfig
    | PerturbedGDConfig
    | CEMConfig
    | MILPConfig
    | None = None,
    record_history: bool = False,
    progress: bool = False,
    compile: bool = False,
    threads: int | None = None,
    bound: bool = False,
) -> MaximizeResult:
    """Maximize ``objective(fn(x), x)`` over the box ``[lower, upper]`` from ``x0``.

    :param fn: a network (its output ``(B,)`` or ``(B, 1)`` is maximized), or any
        callable ``x -> output`` that uses ``network`` inside (e.g. a critic
        ``a -> Q(s, a)`` with ``s`` fixed).
    :param x0: ``(B, *input_shape)`` float tensor, no NaN, inside the box: the start
        of each of the ``B`` problems. Computation runs on its device.
    :param lower: scalar or tensor broadcastable to ``x0``; ``lower <= upper``.
    :param upper: scalar or tensor broadcastable to ``x0``. GD-type methods accept an
        unbounded box; ``fgsm``, ``random``, ``restart_gd``, ``cem`` need finite bounds,
        and so does ``apgd`` without ``lr`` or with restarts.
    :param steps: iterations (``fgsm`` always takes one; ``apgd`` takes ``steps`` per
        restart, and ``result.steps`` counts them all).
    :param method: one of :data:`METHODS`.
    :param seed: seeds this call's own ``torch.Generator`` (nothing global is read;
        ``None`` means 0, so every call is reproducible).
    :param objective: ``objective(output, x) -> (B,)`` to maximize; default: the output.
    :param network: the module(s) whose ``nn.ReLU`` sites ADR relaxes (frozen and
        restored for every method); default ``fn``. ADR needs a ReLU network, the other
        methods any differentiable one.
    :param lr: step size (ADR/GD: L2 length of an ``x`` step; PGD: sign-step size;
        Adam: learning rate; APGD: the initial sign-step size of every coordinate).
        Default per method; PGD's default is ``2.5 * max half-width / steps`` (Madry et
        al.), APGD's is ``2 * half-width`` of each coordinate (Croce & Hein's ``2 eps``).
    :param config: method options (:class:`ADRConfig` for ``adr``/``adr_sync``, ...).
        ``cem`` evaluates ``fn`` on ``population * B`` rows at once, stacked as
        ``population`` copies of the batch (row ``i`` belongs to problem ``i % B``); a
        callable ``fn`` with fixed context (e.g. a critic's observations) must accept that.
    :param record_history: keep the best-so-far value after every step.
    :param progress: show a tqdm bar over the steps.
    :param compile: run each iteration as one ``torch.compile``'d graph (``adr``,
        ``adr_sync``, ``gd``, ``pgd``; ``adr_rl/optim/compiled.py``). The first call for a
        network and shape compiles (seconds to a minute); later ones reuse it. Same
        iterates up to float rounding, several times faster per step on small problems.
        Needs the backend's toolchain (a C++ compiler on CPU, Triton on CUDA).
    :param threads: torch intra-op threads for this call on CPU, restored after it.
        ``None`` (default): 1 thread for small problems (``x0`` with at most
        :data:`adr_rl.machine.SMALL_WORK_ELEMENTS` elements), whose steps take micro- to
        milliseconds and stall when a second thread waits for a busy core; the
        process's setting otherwise.
    :param bound: also compute a proven upper bound on the maximum over the box (CROWN,
        ``adr_rl.certify``; milliseconds for critic-sized MLPs) into
        ``result.upper_bound``, so the gap ``upper_bound - value`` is known. Needs the
        network(s) built from ``nn.Linear``/``nn.ReLU`` with an input affine in ``x``
        and the default objective; ``method="milp"`` always sets it.
    :raises NonReluNetworkError: ``adr``/``adr_sync`` on a network that is not a ReLU
        network ADR can relax.
    :raises ValueError: bad bounds, shapes, ``x0`` with NaN or outside the box, ...
    :raises adr_rl.optim.compiled.CompileError: ``compile=True`` where the backend cannot build.
    """
    check_method(method)
    if compile and method not in COMPILED_METHODS:
        raise ValueError(f"compile=True supports {', '.join(COMPILED_METHODS)}, not {method!r}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    if network is None:
        if not isinstance(fn, nn.Module):
            raise TypeError("fn is not an nn.Module: pass network= naming the module(s) it uses")
        network = fn
    modules = [network] if isinstance(network, nn.Module) else list(network)
    x0, lo, hi = _check_inputs(x0, lower, upper)
    if (bound or method in EXACT_METHODS) and objective is not None:
        raise ValueError(
            f"{'method milp' if method in EXACT_METHODS else 'bound=True'} works on the "
            "network's output: drop objective= (fold it into fn, e.g. a min of critics)"
        )
    if method in EXACT_METHODS:
        return _run_exact(fn, x0, lo, hi, modules, config, seed, record_history)
    if method in ("fgsm", "random", "restart_gd", "cem") and not (
        torch.isfinite(lo).all() and torch.isfinite(hi).all()
    ):
        raise ValueError(f"method {method!r} needs finite lower and upper bounds")
    config = _resolve_config(method, config)
    finite = bool(torch.isfinite(lo).all() and torch.isfinite(hi).all())
    if method == "apgd" and not finite and (lr is None or cast(APGDConfig, config).n_restarts > 1):
        raise ValueError(
            "apgd needs finite lower and upper bounds for its default step size (2 * "
            "half-width) and its restarts; pass lr= and n_restarts=1 for an unbounded box"
        )
    apgd_lr = lr  # None: APGD's default, 2 * half-width per coordinate
    if lr is None:
        lr = _default_lr(method, lo, hi, steps)
    if lr < 0 or not math.isfinite(lr):
        raise ValueError(f"lr must be a finite number >= 0, got {lr}")
    with torch_threads(threads_for(x0, threads)):
        generator = torch.Generator(device=x0.device)
        generator.manual_seed(0 if seed is None else int(seed))

        def evaluate(x: torch.Tensor) -> torch.Tensor:
            out = fn(x)
            return _objective_values(objective, out, x)

        # Only ADR evaluates the surrogate; every other method works on any differentiable
        # network (Tanh policies, functional relu, ...), frozen and restored all the same.
        relaxes = method in ("adr", "adr_sync")
        with ReluSurrogate(modules, relax=relaxes) as surrogate:
            if relaxes:
                surrogate.scan_nonlinearities(lambda: evaluate(x0))
            problem = Problem(evaluate, surrogate, x0, lo, hi, generator, record_history)
            steps_run = 1 if method == "fgsm" else steps
            if method == "apgd":
                steps_run = steps * cast(APGDConfig, config).n_restarts
            bar = tqdm(
                total=steps_run, desc=f"maximize[{method}]", disable=not progress, leave=False
            )
            try:
                if compile:
                    from adr_rl.optim import compiled

                    if method in ("adr", "adr_sync"):
                        info = compiled.run_adr(
                            problem, steps_run, lr, cast(ADRConfig, config), bar
                        )
                        info["config"] = dataclasses.asdict(cast(ADRConfig, config))
                    else:
                        info = compiled.run_gradient(problem, method, steps_run, lr, bar)
                elif method in ("adr", "adr_sync"):
                    info = adr.run_adr(problem, steps_run, lr, cast(ADRConfig, config), bar)
                elif method == "random":
                    info = baselines.run_random(problem, steps_run, bar)
                elif method == "cem":
                    info = baselines.run_cem(problem, steps_run, cast(CEMConfig, config), bar)
                elif method == "apgd":
                    info = baselines.run_apgd(
                        problem, steps, apgd_lr, cast(APGDConfig, config), bar
                    )
                else:
                    info = baselines.run_gradient(problem, method, steps_run, lr, config, bar)
            finally:
                bar.close()
    if method == "apgd":
        evals = network_evaluations(method, steps, config)
    else:
        evals = network_evaluations(method, steps_run, config if method == "cem" else None)
    result = problem.result(method, steps_run, evals, info)
    if bound:
        from adr_rl import certify

        result.upper_bound = certify.upper_bound_fn(fn, x0, lo, hi, modules, seed=seed or 0)
    return result


def _run_exact(
    fn: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    modules: list[nn.Module],
    config: Any,
    seed: int | None,
    record_history: bool,
) -> MaximizeResult:
    """``method="milp"``: the certified maximum of ``adr_rl.certify``, scored like every
    other method's answer under the real network (``x0`` kept where it is better)."""
    from adr_rl import certify

    cfg = _resolve_config("milp", config)
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        raise ValueError("method 'milp' needs finite lower and upper bounds")
    exact = certify.exact_maximize_fn(
        fn,
        x0,
        lo,
        hi,
        modules,
        time_limit=cfg.time_limit,
        mip_rel_gap=cfg.mip_rel_gap,
        bounds=cfg.bounds,
        warm_start=x0 if cfg.warm_start else None,
        strategy=cfg.strategy,
        seed=0 if seed is None else int(seed),
    )
    generator = torch.Generator(device=x0.device)
    with ReluSurrogate(modules, relax=False) as surrogate:

        def evaluate(x: torch.Tensor) -> torch.Tensor:
            return _objective_values(None, fn(x), x)

        problem = Problem(evaluate, surrogate, x0, lo, hi, generator, record_history)
        x = problem.project(exact.x.to(device=x0.device, dtype=x0.dtype))
        value, _ = problem.true_value(x, record=False)
        problem.offer(x, value)
        problem.record()
    info = {
        "status": exact.status,
        "gap": exact.gap,
        "solve_time": exact.solve_time,
        "relaxation_bound": exact.relaxation_bound,
        "n_unstable": exact.n_unstable,
        "config": dataclasses.asdict(cfg),
    }
    result = problem.result("milp", 0, 0, info)
    result.upper_bound = exact.upper_bound
    return result


def _check_inputs(
    x0: torch.Tensor, lower: float | torch.Tensor, upper: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"x0 must be a torch.Tensor of shape (B, *input_shape), got {type(x0)}")
    if not x0.is_floating_point():
        raise TypeError(f"x0 must be a floating-point tensor, got dtype {x0.dtype}")
    if x0.dim() < 2:
        raise ValueError(
            f"x0 must have shape (B, *input_shape) with a batch dimension, got {tuple(x0.shape)}"
        )
    if torch.isnan(x0).any():
        raise ValueError("x0 contains NaN")
    bounds = []
    for name, b in (("lower", lower), ("upper", upper)):
        t = torch.as_tensor(b, dtype=x0.dtype, device=x0.device)
        if torch.isnan(t).any():
            raise ValueError(f"{name} contains NaN")
        try:
            shape = torch.broadcast_shapes(t.shape, x0.shape)
        except RuntimeError:
            shape = None
        if shape != x0.shape:
            raise ValueError(
                f"{name} of shape {tuple(t.shape)} does not broadcast to x0's shape "
                f"{tuple(x0.shape)}"
            )
        bounds.append(t.expand_as(x0))
    lo, hi = bounds
    if (lo > hi).any():
        raise ValueError("lower > upper for some coordinates")
    if ((x0 < lo) | (x0 > hi)).any():
        raise ValueError("x0 lies outside [lower, upper]; project it into the box first")
    return x0.detach().clone(), lo, hi


def _objective_values(
    objective: Objective | None, out: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    b = x.shape[0]
    values = out if objective is None else objective(out, x)
    if not isinstance(values, torch.Tensor):
        raise TypeError("the objective must return a tensor of shape (B,)")
    if values.shape == (b, 1):
        values = values.reshape(b)
    if values.shape != (b,):
        hint = "" if objective is not None else "; pass objective= to reduce the network output"
        raise ValueError(
            f"the objective must have shape (B,) or (B, 1) = ({b},), got {tuple(values.shape)}"
            + hint
        )
    return values


def _default_lr(method: str, lo: torch.Tensor, hi: torch.Tensor, steps: int) -> float:
    if method == "pgd":
        half = ((hi - lo) / 2).max().item()
        if not math.isfinite(half):
            raise ValueError("pgd's default step needs finite bounds; pass lr=")
        return 2.5 * half / max(steps, 1)
    return _DEFAULT_LR.get(method, 0.0)


def _resolve_config(method: str, config: Any) -> Any:
    expected: dict[str, type] = {
        "adr": ADRConfig,
        "adr_sync": ADRConfig,
        "adam": AdamConfig,
        "apgd": APGDConfig,
        "restart_gd": RestartGDConfig,
        "perturbed_gd": PerturbedGDConfig,
        "cem": CEMConfig,
        "milp": MILPConfig,
    }
    kind = expected.get(method)
    if config is None:
        if method == "adr_sync":
            return adr_sync_config()
        return kind() if kind is not None else None
    if kind is None or not isinstance(config, kind):
        want = kind.__name__ if kind is not None else "no config"
        raise TypeError(f"method {method!r} takes {want}, got {type(config).__name__}")
    return config
