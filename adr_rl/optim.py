"""``maximize``: batched input optimization of ReLU networks, ADR and its baselines.

Every method solves ``B`` independent problems

    maximize_x  J(x) = objective(f(x), x)   subject to   lower <= x <= upper

in one vectorized loop (no Python loop over problems) and returns, per problem, the
best iterate under the *true* network, the starting point included, so
``result.value >= J(x0)`` always holds.

Methods (see METHOD.md and the README's benchmark for how they compare):

- ``"adr"``: Activation-Descent Regularization as specified in METHOD.md (paper
  hyper-parameters, :class:`ADRConfig`).
- ``"adr_sync"``: the project's ADR variant (:func:`adr_sync_config`): ``eta`` is
  re-synchronized with the real pattern every few steps and the objective is made
  scale-free; the README's benchmark and ablations show why.
- ``"gd"``: normalized-gradient ascent, the paper's baseline.
- ``"pgd"``: sign-gradient ascent (projected gradient for L-inf boxes).
- ``"fgsm"``: one sign step to the box corner that the gradient points at.
- ``"adam"``: Adam ascent, projected onto the box.
- ``"restart_gd"``: normalized-gradient ascent restarted from a uniform random
  point of the box every ``restart_every`` steps, the fair randomized baseline.
- ``"perturbed_gd"``: normalized-gradient ascent with Gaussian kicks when stalled,
  the randomized counterpart of ADR's activation noise.
- ``"cem"``: the cross-entropy method (QT-Opt's action optimizer): sample a
  population around a mean, refit mean and std to the elites, no gradients.
- ``"random"``: uniform samples in the box, the floor.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from torch import nn
from tqdm.auto import tqdm

from adr_rl.surrogate import NonReluNetworkError, ReluSurrogate

__all__ = [
    "COMPILED_METHODS",
    "METHODS",
    "ADRConfig",
    "AdamConfig",
    "CEMConfig",
    "MaximizeResult",
    "PerturbedGDConfig",
    "RestartGDConfig",
    "adr_sync_config",
    "maximize",
    "network_evaluations",
]

Method = Literal[
    "adr", "adr_sync", "gd", "pgd", "fgsm", "adam", "restart_gd", "perturbed_gd", "cem", "random"
]
METHODS: tuple[str, ...] = (
    "adr",
    "adr_sync",
    "gd",
    "pgd",
    "fgsm",
    "adam",
    "restart_gd",
    "perturbed_gd",
    "cem",
    "random",
)

#: Methods ``maximize(..., compile=True)`` runs as compiled iterations (``adr_rl/compiled.py``).
COMPILED_METHODS: tuple[str, ...] = ("adr", "adr_sync", "gd", "pgd")

# Forward + backward passes of the network per iteration (a backward pass costs about
# one forward pass); used to give every method the same number of network evaluations.
_EVALS_PER_STEP = {
    "adr": 3,  # real forward (pattern + true value), surrogate forward, backward
    "adr_sync": 3,
    "gd": 2,  # forward (also the true value), backward
    "pgd": 2,
    "fgsm": 2,
    "adam": 2,
    "restart_gd": 2,
    "perturbed_gd": 2,
    "random": 1,
}


def network_evaluations(method: str, steps: int, config: Any = None) -> int:
    """Network passes (forward or backward, over the whole batch) ``steps`` iterations cost.

    A CEM iteration evaluates its whole population: ``config.population`` passes.
    """
    _check_method(method)
    if method == "cem":
        return (config.population if config is not None else CEMConfig().population) * steps
    return _EVALS_PER_STEP[method] * steps


@dataclass(frozen=True)
class ADRConfig:
    """Hyper-parameters of ADR (METHOD.md, ingredients 1-5).

    Defaults are the public proof of concept's values for the small random network
    (METHOD.md, "Reference hyper-parameters"), which the paper also uses for action
    refinement up to the learning rates. The ablation switches (``use_constraint``,
    ``use_eta_step``, ``use_noise``) exist to measure which part earns the gain.
    """

    lr_eta: float = 1.0
    """Step size of the activation variables ``eta``."""
    alpha: float = 2000.0
    """Gate sharpness: ``g(eta) = sigmoid(alpha * (0.5 - eta))``."""
    delta: float = 0.01
    """Initial distance of ``eta`` from the threshold 0.5 (``eta = 0.5 - delta*sign(z)``)."""
    eta_min: float = 0.3
    """Lower bound of ``eta`` (reference value)."""
    eta_max: float = 0.7
    """Upper bound of ``eta`` (reference value)."""
    c_init: float = 1.0
    """Initial multiplier of the consistency loss."""
    lr_c: float = 1e-2
    """Dual-ascent rate of the multiplier ``c`` (raised while violated, decayed otherwise)."""
    c_min: float = 1e-2
    """Bounds of ``c``; the reference gives none, these keep it within a decade or two
    of ``c_init`` (METHOD.md, ingredient 5)."""
    c_max: float = 10.0
    noise_scale: float = 0.1
    """Std of the Gaussian kick added to ``eta`` when its gradient is tiny."""
    perturb_freq: int = 25
    """Every ``perturb_freq`` steps, problems whose ``eta`` gradient norm is below
    ``grad_threshold`` get a noise kick."""
    grad_threshold: float = 1e-4
    resync_freq: int = 0
    """Reset ``eta`` to the real pattern of the current ``x`` every this many steps (0: never)."""
    normalization: Literal["none", "layer"] = "layer"
    """Distance estimate for the consistency loss: ``"layer"`` divides each site's
    pre-activations by their per-problem RMS (scale-free, cheap for CNNs); ``"none"``
    uses raw pre-activations."""
    aggregate: Literal["max", "sum"] = "max"
    """Per-site aggregation of unit violations (the reference takes the max)."""
    objective_scale: Literal["none", "grad"] = "none"
    """``"grad"`` divides ``J_hat`` by the norm of the true gradient at ``x0`` (per
    problem), so the consistency term keeps a say whatever the objective's units."""
    restart_every: int = 0
    """Restart ``x`` from a uniform point of the box every this many steps (0: never)."""
    x_step: Literal["l2", "sign"] = "l2"
    """Geometry of the ``x`` step: ``"l2"`` is the paper's norm-clipped gradient step of
    L2 length at most ``lr``; ``"sign"`` steps every coordinate by ``lr`` against the
    sign of the Lagrangian's gradient (steepest descent for an L-inf box, as PGD), so
    ADR and PGD can be compared with the same step geometry and size (observation
    attacks, ``adr_rl/attack.py``)."""
    use_constraint: bool = True
    use_eta_step: bool = True
    use_noise: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.eta_min < 0.5 < self.eta_max <= 1.0:
            raise ValueError("need 0 <= eta_min < 0.5 < eta_max <= 1")
        if self.alpha <= 0 or self.delta <= 0 or self.lr_eta < 0 or self.noise_scale < 0:
            raise ValueError("alpha and delta must be > 0; lr_eta and noise_scale >= 0")
        if self.perturb_freq < 1 or self.resync_freq < 0:
            raise ValueError("perturb_freq must be >= 1 and resync_freq >= 0")
        if not 0 <= self.c_min <= self.c_init <= self.c_max:
            raise ValueError("need 0 <= c_min <= c_init <= c_max")
        if self.x_step not in ("l2", "sign"):
            raise ValueError(f"x_step must be 'l2' or 'sign', got {self.x_step!r}")


def adr_sync_config(**overrides: Any) -> ADRConfig:
    """The project's ADR variant ``"adr_sync"``.

    Two changes to the paper's ADR, both found by the ablations on tuning seeds
    (``eval/tune_adr.py``, seeds >= 1000, disjoint from the reported ones):

    - ``resync_freq=20``: without it ``eta`` keeps the *initial* activation pattern
      (its gradient is ~1e-5), so ``x`` keeps following the initial linear piece's
      gradient long after it has left that region; re-reading the real pattern every
      20 steps keeps the surrogate describing where ``x`` is (5 and 10 did worse).
    - ``objective_scale="grad"``: dividing ``J_hat`` by the initial gradient norm
      makes the Lagrangian scale-free, so the consistency term is not drowned by an
      objective in the hundreds (random networks) or thousands (large ones).
    """
    base: dict[str, Any] = dict(resync_freq=20, objective_scale="grad")
    base.update(overrides)
    return ADRConfig(**base)  # type: ignore[arg-type]


@dataclass(frozen=True)
class CEMConfig:
    """Cross-entropy method (Rubinstein 1999), as QT-Opt uses it for actions
    (Kalashnikov et al. 2018: 64 samples, 6 elites)."""

    population: int = 64
    """Samples per iteration; each iteration costs this many network evaluations."""
    elites: int = 6
    """Best samples the Gaussian is refit to."""
    init_std: float = 0.5
    """Initial std as a fraction of the box's half-width, around ``x0``."""
    min_std: float = 1e-3
    """Floor of the std (fraction of the half-width) so the search never freezes."""

    def __post_init__(self) -> None:
        if not 1 <= self.elites <= self.population:
            raise ValueError("need 1 <= elites <= population")
        if self.init_std <= 0 or self.min_std < 0:
            raise ValueError("init_std must be > 0 and min_std >= 0")


@dataclass(frozen=True)
class AdamConfig:
    """Adam ascent (Kingma & Ba) with projection onto the box after every step."""

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


@dataclass(frozen=True)
class RestartGDConfig:
    """Normalized-gradient ascent with uniform random restarts in the box."""

    restart_every: int = 100
    """Steps per restart; the first run starts from ``x0``."""


@dataclass(frozen=True)
class PerturbedGDConfig:
    """Normalized-gradient ascent with Gaussian kicks when the value stalls."""

    perturb_freq: int = 25
    """Check for a stall every this many steps."""
    noise_scale: float = 0.1
    """Std of the kick, as a fraction of the box width."""


_DEFAULT_LR = {
    "adr": 0.5,
    "adr_sync": 0.5,
    "gd": 0.5,
    "restart_gd": 0.5,
    "perturbed_gd": 0.5,
    "adam": 0.05,
}


@dataclass
class MaximizeResult:
    """What :func:`maximize` found.

    :param x: ``(B, *input_shape)``, same dtype/device as ``x0``: best iterate per problem.
    :param value: ``(B,)``: the true objective at ``x`` (real ReLUs).
    :param initial_value: ``(B,)``: the true objective at ``x0``.
    :param history: ``(steps + 1, B)`` best-so-far value after each step when
        ``record_history=True``, else ``None``.
    :param network_evaluations: forward + backward passes of the network, each over
        the whole batch (see :func:`network_evaluations`).
    """

    x: torch.Tensor
    value: torch.Tensor
    initial_value: torch.Tensor
    method: str
    steps: int
    network_evaluations: int
    history: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)


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
    config: ADRConfig | AdamConfig | RestartGDConfig | PerturbedGDConfig | CEMConfig | None = None,
    record_history: bool = False,
    progress: bool = False,
    compile: bool = False,
) -> MaximizeResult:
    """Maximize ``objective(fn(x), x)`` over the box ``[lower, upper]`` from ``x0``.

    :param fn: a network (its output ``(B,)`` or ``(B, 1)`` is maximized), or any
        callable ``x -> output`` that uses ``network`` inside (e.g. a critic
        ``a -> Q(s, a)`` with ``s`` fixed).
    :param x0: ``(B, *input_shape)`` float tensor, no NaN, inside the box: the start
        of each of the ``B`` problems. Computation runs on its device.
    :param lower: scalar or tensor broadcastable to ``x0``; ``lower <= upper``.
    :param upper: scalar or tensor broadcastable to ``x0``. GD-type methods accept an
        unbounded box; ``fgsm``, ``random``, ``restart_gd``, ``cem`` need finite bounds.
    :param steps: iterations (``fgsm`` always takes one).
    :param method: one of :data:`METHODS`.
    :param seed: seeds this call's own ``torch.Generator`` (nothing global is read;
        ``None`` means 0, so every call is reproducible).
    :param objective: ``objective(output, x) -> (B,)`` to maximize; default: the output.
    :param network: the module(s) whose ``nn.ReLU`` sites ADR relaxes (frozen and
        restored for every method); default ``fn``. ADR needs a ReLU network, the other
        methods any differentiable one.
    :param lr: step size (ADR/GD: L2 length of an ``x`` step; PGD: sign-step size;
        Adam: learning rate). Default per method; PGD's default is
        ``2.5 * max half-width / steps`` (Madry et al.).
    :param config: method options (:class:`ADRConfig` for ``adr``/``adr_sync``, ...).
        ``cem`` evaluates ``fn`` on ``population * B`` rows at once, stacked as
        ``population`` copies of the batch (row ``i`` belongs to problem ``i % B``); a
        callable ``fn`` with fixed context (e.g. a critic's observations) must accept that.
    :param record_history: keep the best-so-far value after every step.
    :param progress: show a tqdm bar over the steps.
    :param compile: run each iteration as one ``torch.compile``'d graph (``adr``,
        ``adr_sync``, ``gd``, ``pgd``; ``adr_rl/compiled.py``). The first call for a
        network and shape compiles (seconds to a minute); later ones reuse it. Same
        iterates up to float rounding, several times faster per step on small problems.
        Needs the backend's toolchain (a C++ compiler on CPU, Triton on CUDA).
    :raises NonReluNetworkError: ``adr``/``adr_sync`` on a network that is not a ReLU
        network ADR can relax.
    :raises ValueError: bad bounds, shapes, ``x0`` with NaN or outside the box, ...
    :raises adr_rl.compiled.CompileError: ``compile=True`` where the backend cannot build.
    """
    _check_method(method)
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
    if method in ("fgsm", "random", "restart_gd", "cem") and not (
        torch.isfinite(lo).all() and torch.isfinite(hi).all()
    ):
        raise ValueError(f"method {method!r} needs finite lower and upper bounds")
    if lr is None:
        lr = _default_lr(method, lo, hi, steps)
    if lr < 0 or not math.isfinite(lr):
        raise ValueError(f"lr must be a finite number >= 0, got {lr}")
    config = _resolve_config(method, config)
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
        problem = _Problem(evaluate, surrogate, x0, lo, hi, generator, record_history)
        steps_run = 1 if method == "fgsm" else steps
        bar = tqdm(total=steps_run, desc=f"maximize[{method}]", disable=not progress, leave=False)
        try:
            if compile:
                from adr_rl import compiled

                if method in ("adr", "adr_sync"):
                    info = compiled.run_adr(problem, steps_run, lr, cast(ADRConfig, config), bar)
                    info["config"] = dataclasses.asdict(cast(ADRConfig, config))
                else:
                    info = compiled.run_gradient(problem, method, steps_run, lr, bar)
            elif method in ("adr", "adr_sync"):
                info = _run_adr(problem, steps_run, lr, cast(ADRConfig, config), bar)
            elif method == "random":
                info = _run_random(problem, steps_run, bar)
            elif method == "cem":
                info = _run_cem(problem, steps_run, cast(CEMConfig, config), bar)
            else:
                info = _run_gradient(problem, method, steps_run, lr, config, bar)
        finally:
            bar.close()
    evals = network_evaluations(method, steps_run, config if method == "cem" else None)
    return problem.result(method, steps_run, evals, info)


# --------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------
def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


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
        "restart_gd": RestartGDConfig,
        "perturbed_gd": PerturbedGDConfig,
        "cem": CEMConfig,
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


# --------------------------------------------------------------------------------------
# shared state: best-iterate bookkeeping under the true network
# --------------------------------------------------------------------------------------
class _Problem:
    def __init__(
        self,
        evaluate: Callable[[torch.Tensor], torch.Tensor],
        surrogate: ReluSurrogate,
        x0: torch.Tensor,
        lo: torch.Tensor,
        hi: torch.Tensor,
        generator: torch.Generator,
        record_history: bool,
    ) -> None:
        self.evaluate, self.surrogate = evaluate, surrogate
        self.lo, self.hi, self.generator = lo, hi, generator
        self.batch = x0.shape[0]
        self.best_x = x0.clone()
        with torch.no_grad():
            v0, self.signs0 = surrogate.real(lambda: evaluate(x0))
        self.initial_value = v0.detach().clone()
        self.best_value = self.initial_value.clone()
        self.history: list[torch.Tensor] | None = (
            [self.best_value.clone()] if record_history else None
        )

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return _project(x, self.lo, self.hi)

    def uniform(self) -> torch.Tensor:
        u = torch.rand(
            self.lo.shape, generator=self.generator, device=self.lo.device, dtype=self.lo.dtype
        )
        return self.lo + u * (self.hi - self.lo)

    def offer(self, x: torch.Tensor, value: torch.Tensor) -> None:
        """Keep ``x`` where it beats the best so far (true objective, NaN never wins)."""
        self.best_x, self.best_value = _keep_better(self.best_x, self.best_value, x, value)

    def record(self) -> None:
        if self.history is not None:
            self.history.append(self.best_value.clone())

    def finish(self, x: torch.Tensor) -> None:
        """Score the last iterate too (the loop scores each iterate before stepping)."""
        final, _ = self.true_value(x, record=False)
        self.offer(x, final)
        if self.history is not None:
            self.history[-1] = self.best_value.clone()

    def true_value(
        self, x: torch.Tensor, record: bool = True
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with torch.no_grad():
            return self.surrogate.real(lambda: self.evaluate(x), record=record)

    def result(self, method: str, steps: int, evals: int, info: dict[str, Any]) -> MaximizeResult:
        history = torch.stack(self.history) if self.history is not None else None
        return MaximizeResult(
            x=self.best_x,
            value=self.best_value,
            initial_value=self.initial_value,
            method=method,
            steps=steps,
            network_evaluations=evals,
            history=history,
            info=info,
        )


def _project(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    return torch.maximum(torch.minimum(x, hi), lo)


def _keep_better(
    best_x: torch.Tensor, best_v: torch.Tensor, x: torch.Tensor, value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ingredient 6: ``x`` and its value where they beat the best so far (NaN never wins)."""
    better = value > best_v
    mask = better.view(-1, *([1] * (x.dim() - 1)))
    return torch.where(mask, x.detach(), best_x), torch.where(better, value.detach(), best_v)


def _rowwise_norm(t: torch.Tensor) -> torch.Tensor:
    """``(B, ...) -> (B, 1, ...)``: L2 norm of each row, shaped to broadcast back."""
    norm = torch.linalg.vector_norm(t.flatten(1), dim=1)
    return norm.view(-1, *([1] * (t.dim() - 1)))


def _normalized(t: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    return t / _rowwise_norm(t).clamp_min(eps)


def _clipped(t: torch.Tensor) -> torch.Tensor:
    """Scale rows with norm > 1 down to norm 1 (the paper's norm clipping)."""
    return t / _rowwise_norm(t).clamp_min(1.0)


# --------------------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------------------
def _gradient(problem: _Problem, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """True objective at ``x`` and its gradient (one forward, one backward pass)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        value, _ = problem.surrogate.real(lambda: problem.evaluate(x), record=False)
        (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad


def _run_gradient(
    problem: _Problem, method: str, steps: int, lr: float, config: Any, bar: tqdm
) -> dict[str, Any]:
    x = problem.best_x.clone()
    m = torch.zeros_like(x)
    v = torch.zeros_like(x)
    last_check = problem.initial_value.clone()
    info: dict[str, Any] = {"lr": lr}
    for t in range(1, steps + 1):
        value, grad = _gradient(problem, x)
        problem.offer(x, value)
        if method == "gd" or method == "restart_gd" or method == "perturbed_gd":
            x = x + lr * _normalized(grad)
        elif method == "pgd":
            x = x + lr * grad.sign()
        elif method == "fgsm":
            x = torch.where(grad > 0, problem.hi, torch.where(grad < 0, problem.lo, x))
        elif method == "adam":
            b1, b2 = config.beta1, config.beta2
            m = b1 * m + (1 - b1) * grad
            v = b2 * v + (1 - b2) * grad * grad
            m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
            x = x + lr * m_hat / (v_hat.sqrt() + config.eps)
        x = problem.project(x)
        if method == "restart_gd" and t % config.restart_every == 0:
            x = problem.uniform()
        elif method == "perturbed_gd" and t % config.perturb_freq == 0:
            stalled = (value <= last_check).view(-1, *([1] * (x.dim() - 1)))
            width = torch.where(
                torch.isfinite(problem.hi - problem.lo), problem.hi - problem.lo, 2.0
            )
            kick = torch.randn(x.shape, generator=problem.generator, device=x.device, dtype=x.dtype)
            x = problem.project(torch.where(stalled, x + config.noise_scale * width * kick, x))
            last_check = torch.maximum(last_check, value)
        problem.record()
        bar.update()
    problem.finish(x)
    return info


def _run_random(problem: _Problem, steps: int, bar: tqdm) -> dict[str, Any]:
    for _ in range(steps):
        x = problem.uniform()
        value, _ = problem.true_value(x, record=False)
        problem.offer(x, value)
        problem.record()
        bar.update()
    return {}


def _run_cem(problem: _Problem, steps: int, cfg: CEMConfig, bar: tqdm) -> dict[str, Any]:
    """CEM on all problems at once: one call evaluates ``population * B`` rows."""
    lo, hi = problem.lo, problem.hi
    half = (hi - lo) / 2
    mean, std = problem.best_x.clone(), cfg.init_std * half
    n, b = cfg.population, problem.batch
    for _ in range(steps):
        eps = torch.randn(
            (n, *mean.shape), generator=problem.generator, device=mean.device, dtype=mean.dtype
        )
        samples = torch.maximum(torch.minimum(mean + std * eps, hi), lo)  # (n, B, ...)
        value, _ = problem.true_value(samples.reshape(n * b, *mean.shape[1:]), record=False)
        value = value.view(n, b)
        top, idx = value.topk(cfg.elites, dim=0)  # (elites, B)
        gather = idx.view(cfg.elites, b, *([1] * (mean.dim() - 1))).expand(-1, *mean.shape)
        elite = samples.gather(0, gather)
        problem.offer(elite[0], top[0])
        mean = elite.mean(dim=0)
        std = torch.maximum(elite.std(dim=0, unbiased=False), cfg.min_std * half)
        problem.record()
        bar.update()
    return {"population": n, "elites": cfg.elites}


# --------------------------------------------------------------------------------------
# ADR (METHOD.md, ingredients 1-6)
# --------------------------------------------------------------------------------------
class _Units:
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
            out.append(stored.permute(0, *_inverse(order)))
        return out

    def empty_site(self, i: int, like: torch.Tensor) -> torch.Tensor:
        """Uninitialized ``like``-shaped tensor in site ``i``'s memory layout."""
        order = self.orders[i]
        stored = like.new_empty((like.shape[0], *(like.shape[d] for d in order)))
        return stored.permute(0, *_inverse(order))

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


def _inverse(order: tuple[int, ...]) -> tuple[int, ...]:
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
        units: _Units,
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
        ctx.i, ctx.state = i, state
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
        state: _GateState = ctx.state
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
class _ADRStart:
    """ADR's state before its first step, shared by the eager and the compiled loop.

    :param w: ``(B, U)`` activation variables as gate logits ``w = alpha * (0.5 - eta)``
        (see :func:`_logits_from_pattern`), set from the real pattern at ``x0``.
    :param seed_j_hat: ``dL/dJ_hat = -1 / scale`` per problem (ingredient 4).
    """

    x: torch.Tensor
    units: _Units
    w: torch.Tensor
    c: torch.Tensor
    seed_j_hat: torch.Tensor


def _adr_start(problem: _Problem, cfg: ADRConfig) -> _ADRStart:
    """Self-check (Prop. 5.1), initial pattern, multiplier and objective scale."""
    x = problem.best_x.clone()
    units = _Units(problem.signs0)
    _self_check(problem, x)
    w = units.empty(problem.batch, x)
    units.set_pattern(w, problem.signs0, cfg)
    c = torch.full((problem.batch,), cfg.c_init, dtype=x.dtype, device=x.device)
    scale = torch.ones_like(c)
    if cfg.objective_scale == "grad":
        _, g0 = _gradient(problem, x)
        scale = g0.flatten(1).norm(dim=1).clamp_min(1e-12)
    return _ADRStart(x, units, w, c, -(torch.ones_like(scale) / scale))


def _logit_bounds(cfg: ADRConfig) -> tuple[float, float]:
    """``[eta_min, eta_max]`` as bounds of the gate logits ``w = alpha * (0.5 - eta)``."""
    return cfg.alpha * (0.5 - cfg.eta_max), cfg.alpha * (0.5 - cfg.eta_min)


def _dual_ascent(c: torch.Tensor, violation: torch.Tensor, cfg: ADRConfig) -> torch.Tensor:
    """Ingredient 5: raise ``c`` while the constraint is violated, decay it otherwise."""
    raised = torch.where(violation > 0, c + cfg.lr_c * violation, c * (1.0 - cfg.lr_c))
    return raised.clamp(cfg.c_min, cfg.c_max)


def _noise_kick(
    problem: _Problem,
    units: _Units,
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


def _restart(
    problem: _Problem, units: _Units, w: torch.Tensor, cfg: ADRConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """A uniform restart: the new ``x``, ``w`` set to its pattern in place, a fresh ``c``."""
    x = problem.uniform()
    _, signs = problem.true_value(x)
    units.set_pattern(w, signs, cfg)
    return x, torch.full((problem.batch,), cfg.c_init, dtype=x.dtype, device=x.device)


def _run_adr(problem: _Problem, steps: int, lr: float, cfg: ADRConfig, bar: tqdm) -> dict[str, Any]:
    start = _adr_start(problem, cfg)
    x, units, w, c, seed_j_hat = start.x, start.units, start.w, start.c, start.seed_j_hat
    # The gates and the eta gradient are kept in place in one buffer each, like w.
    gates = torch.empty_like(w)
    grad_w = torch.empty_like(w) if cfg.use_eta_step else None
    state = _GateState(units, w, gates, grad_w, cfg)
    w_min, w_max = _logit_bounds(cfg)
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
        step = gx.sign() if cfg.x_step == "sign" else _clipped(gx)
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
            kicks += _noise_kick(problem, units, w, eta_grad_norm, cfg)
            moved = True
        if moved:
            w.clamp_(w_min, w_max)
        c = _dual_ascent(c, violation, cfg)
        if cfg.restart_every and t % cfg.restart_every == 0:
            x, c = _restart(problem, units, w, cfg)
        problem.record()
        bar.update()
    problem.finish(x)
    return {"lr": lr, "noise_kicks": kicks, "config": dataclasses.asdict(cfg)}


def _self_check(problem: _Problem, x: torch.Tensor) -> None:
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
