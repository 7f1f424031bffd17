"""Options of :func:`~adr_rl.optim.maximize`: the method names, each method's config
dataclass with its documented defaults, and the network-evaluation cost per step
that equal-budget comparisons use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

Method = Literal[
    "adr",
    "adr_sync",
    "gd",
    "pgd",
    "apgd",
    "fgsm",
    "adam",
    "restart_gd",
    "perturbed_gd",
    "cem",
    "random",
    "milp",
]
#: Methods that solve the problem exactly instead of iterating (``adr_rl/certify``):
#: ``milp`` runs a mixed-integer program on networks of ``nn.Linear`` and ``nn.ReLU``.
EXACT_METHODS: tuple[str, ...] = ("milp",)
#: The iterative methods: every :data:`Method` but the exact ones.
METHODS: tuple[str, ...] = tuple(m for m in get_args(Method) if m not in EXACT_METHODS)

#: Methods ``maximize(..., compile=True)`` runs as compiled iterations (:mod:`.compiled`).
COMPILED_METHODS: tuple[str, ...] = ("adr", "adr_sync", "gd", "pgd")


# Forward + backward passes of the network per iteration (a backward pass costs about
# one forward pass); used to give every method the same number of network evaluations.
EVALS_PER_STEP = {
    "adr": 3,  # real forward (pattern + true value), surrogate forward, backward
    "adr_sync": 3,
    "gd": 2,  # forward (also the true value), backward
    "pgd": 2,
    "apgd": 2,  # one gradient per iterate, as PGD (times n_restarts)
    "fgsm": 2,
    "adam": 2,
    "restart_gd": 2,
    "perturbed_gd": 2,
    "random": 1,
}


def network_evaluations(method: str, steps: int, config: Any = None) -> int:
    """Network passes (forward or backward, over the whole batch) ``steps`` iterations cost.

    A CEM iteration evaluates its whole population: ``config.population`` passes. APGD
    runs ``steps`` iterations per restart: ``2 * steps * config.n_restarts`` passes.
    """
    check_method(method)
    if method in EXACT_METHODS:
        raise ValueError(f"{method!r} solves the problem exactly; it has no evaluation budget")
    if method == "cem":
        return (config.population if config is not None else CEMConfig().population) * steps
    if method == "apgd":
        restarts = config.n_restarts if config is not None else APGDConfig().n_restarts
        return EVALS_PER_STEP[method] * steps * restarts
    return EVALS_PER_STEP[method] * steps


@dataclass(frozen=True)
class ADRConfig:
    """Hyper-parameters of ADR (docs/method.md, ingredients 1-5).

    Defaults are the public proof of concept's values for the small random network
    (docs/method.md, "Reference hyper-parameters"), which the paper also uses for action
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
    of ``c_init`` (docs/method.md, ingredient 5)."""
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
class APGDConfig:
    """Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks", Sec. 3, Algorithm 1), for any box.

    Sign steps (the L-inf geometry) of initial size ``2 * half-width`` of each coordinate
    (the paper's ``eta = 2 * eps``; ``maximize(lr=...)`` sets one size for all), a
    momentum step, and at each checkpoint ``w_j`` the step size of a problem is halved,
    and its iterate moved back to its best point, when

    1. the value rose in fewer than ``rho * (w_j - w_{j-1})`` of the steps since the
       last checkpoint (the paper's condition 1), or
    2. the step size was not halved at ``w_{j-1}`` and the best value has not improved
       since then (condition 2).

    Every default is the paper's (Sec. 3.2 and its code ``autoattack/autopgd_base.py``).
    This follows the paper's text where its code differs in details: condition 1 counts
    ``< rho * interval`` (the code: ``<=``), condition 2 may fire at the first
    checkpoint (the code skips it there), and the checkpoints round as below. The
    torchattacks cross-check (``tests/test_attack_torchattacks.py``) finds the same flip
    rates either way.
    """

    rho: float = 0.75
    """Success fraction of condition 1 (the paper's ``rho``)."""
    momentum: float = 0.75
    """Weight of the new step against the previous move (the paper's ``alpha``):
    ``x <- P(x + momentum * (z - x) + (1 - momentum) * (x - x_prev))``; the first step of
    each run takes the plain step (weight 1)."""
    n_restarts: int = 1
    """Independent runs of ``steps`` iterations each, the first from ``x0``, the others
    from uniform points of the box (needs finite bounds); the best point over all wins."""
    first_checkpoint: float = 0.22
    """``p_1``: the first checkpoint as a fraction of the steps (``p_0 = 0``)."""
    interval_decay: float = 0.03
    """``p_{j+1} = p_j + max(p_j - p_{j-1} - interval_decay, min_interval)``."""
    min_interval: float = 0.06
    """The shortest interval between checkpoints, as a fraction of the steps."""
    checkpoints: tuple[int, ...] | None = None
    """Explicit checkpoint iterations (``1 <= w < steps``, increasing) instead of the
    paper's ``w_j = ceil(p_j * steps)``. The reference code rounds each interval down
    separately (``int(0.22 N)``, shrinking by ``max(int(0.03 N), 1)`` to
    ``max(int(0.06 N), 1)``), which differs for short runs: at 10 steps the paper's
    schedule checks at 3, 5, 6, 7, 8, 9, the code's at 2, 3, 4, ..., 9."""

    def __post_init__(self) -> None:
        if not 0.0 < self.rho <= 1.0 or not 0.0 < self.momentum <= 1.0:
            raise ValueError("rho and momentum must lie in (0, 1]")
        if not isinstance(self.n_restarts, int) or self.n_restarts < 1:
            raise ValueError(f"n_restarts must be an int >= 1, got {self.n_restarts!r}")
        if not 0.0 < self.first_checkpoint <= 1.0 or self.min_interval <= 0:
            raise ValueError("need 0 < first_checkpoint <= 1 and min_interval > 0")
        if self.interval_decay < 0:
            raise ValueError("interval_decay must be >= 0")
        if self.checkpoints is not None:
            w = list(self.checkpoints)
            if any(not isinstance(c, int) or c < 1 for c in w) or w != sorted(set(w)):
                raise ValueError("checkpoints must be increasing ints >= 1, e.g. (2, 4, 6)")

    def checkpoint_steps(self, steps: int) -> list[int]:
        """The checkpoints ``w_1 < w_2 < ...`` of a run of ``steps`` iterations, below
        ``steps`` (a check at the last iteration could change nothing)."""
        if self.checkpoints is not None:
            return [w for w in self.checkpoints if w < steps]
        out: list[int] = []
        p_prev, p = 0.0, self.first_checkpoint
        while True:
            w = math.ceil(round(p * steps, 9))  # round: 0.22 * 50 is 11.000000000000002
            if w >= steps:
                return out
            if not out or w > out[-1]:
                out.append(w)
            p_prev, p = p, p + max(p - p_prev - self.interval_decay, self.min_interval)


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


@dataclass(frozen=True)
class MILPConfig:
    """The exact maximum by MILP (``maximize(method="milp")``, ``adr_rl.certify``)."""

    time_limit: float = 10.0
    """Seconds per problem row; past it the row reports ``"time_limit"`` with the best
    point and the proven bound found so far."""
    mip_rel_gap: float = 1e-6
    """Relative optimality gap that counts as solved (HiGHS's default, 1e-4, let two
    HalfCheetah "optima" come out below what gradient ascent found)."""
    bounds: Literal["interval", "crown", "crown_lp"] = "crown"
    """Pre-activation bounds the big-M constants come from (tighter: fewer unstable
    units, so fewer binaries)."""
    strategy: Literal["auto", "milp", "split"] = "auto"
    """``"split"``: branch and bound over the box with MILP leaves (fast for <= 3
    variables); ``"milp"``: one program; ``"auto"``: split when x has <= 3 dimensions."""
    warm_start: bool = True
    """Start from ``x0``'s value as a cut-off (the actor's action for refinement)."""

    def __post_init__(self) -> None:
        if not self.time_limit > 0 or not 0 <= self.mip_rel_gap < 1:
            raise ValueError("need time_limit > 0 and 0 <= mip_rel_gap < 1")


def check_method(method: str) -> None:
    """Raise a ``ValueError`` naming the choices if ``method`` is not one of :data:`METHODS`
    or :data:`EXACT_METHODS`."""
    if method not in METHODS and method not in EXACT_METHODS:
        choices = ", ".join((*METHODS, *EXACT_METHODS))
        raise ValueError(f"unknown method {method!r}; choose one of {choices}")
