"""Adversarial observations for trained policies, offline and online.

:class:`ObservationAttack` perturbs a batch of observations inside an L-inf ball of
radius ``eps`` (in the observation's own units, e.g. 0..255 pixel levels for
Procgen) so that the agent's action changes (docs/method.md, "RL uses: observation
attack"). Every method is one :func:`adr_rl.maximize` call over the batch with the
same objective, box, step size and number of steps, so FGSM, PGD, APGD, ADR and random
noise are compared on equal terms. ADR needs a ReLU policy; the other methods attack
any differentiable one (e.g. SB3's default Tanh ``MlpPolicy``).

:class:`WorstCaseAttack` runs several attacks on the same batch and keeps, per
observation, the strongest member's output (AutoAttack's ensemble idea, Croce & Hein
2020): the one that flips the action, else the one with the largest cross-entropy.

Online use (the agent sees the attacked observations while it plays) is in
:mod:`adr_rl.online`.

Objectives, all maximized over the ball:

- untargeted ``"ce"``: cross-entropy of the policy against its clean greedy action;
- untargeted ``"kl"``: ``KL(pi(.|s) || pi(.|s'))``, the MAD attack's objective
  (Zhang et al. 2020, "Robust Deep RL against Adversarial Perturbations on State
  Observations"). Its gradient is exactly zero at ``s' = s``, so it starts from a
  random point of the ball by default;
- untargeted ``"q"`` (value-based agents): ``-Q(s', a_clean)``;
- ``"dlr"``: the difference of logits ratio (Croce & Hein 2020, Eq. 5 and 6),
  invariant to shifting and scaling the logits. Untargeted:
  ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` with ``y`` the clean action and
  ``z_pi1 >= z_pi2 >= ...`` the sorted scores (needs >= 3 actions); targeted, the
  paper's form ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (needs >= 4 actions);
- untargeted ``"value"`` (actor-critic policies): ``-V(s')``, SA-PPO's critic attack
  (Zhang et al. 2020, Sec. 6): drive the agent to observations its critic rates low;
- targeted (``"ce"``): ``log pi(target | s')`` (for Q-networks ``softmax(Q)``), by
  default with the clean policy's least likely action as the target.
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from adr_rl.optim import COMPILED_METHODS, ADRConfig, adr_sync_config, maximize
from adr_rl.sb3 import PolicyAdapter, device_of, policy_adapter
from adr_rl.surrogate import NonReluNetworkError, eval_mode, find_relus

__all__ = [
    "ATTACK_METHODS",
    "LOSSES",
    "Attack",
    "AttackResult",
    "ObservationAttack",
    "WorstCaseAttack",
    "attack_adr_config",
    "common_objective",
    "dlr_loss",
]

#: Methods an attack can use; all are :func:`adr_rl.maximize` methods.
ATTACK_METHODS: tuple[str, ...] = (
    "fgsm",
    "pgd",
    "apgd",
    "adr",
    "adr_sync",
    "random",
    "gd",
    "adam",
)

Loss = Literal["ce", "kl", "q", "dlr", "value"]
#: Objectives an attack can maximize (see the module docstring).
LOSSES: tuple[str, ...] = ("ce", "kl", "q", "dlr", "value")
Observation = np.ndarray | torch.Tensor


def attack_adr_config(method: str, **overrides: Any) -> ADRConfig:
    """ADR options for attacks: the method's defaults with sign steps in ``x``.

    An L-inf ball's steepest-ascent step is the sign step PGD takes; giving ADR the
    same step geometry and size makes PGD vs ADR a comparison of what ADR adds (the
    activation variables and the consistency term), not of L2 vs L-inf steps.
    """
    if method == "adr_sync":
        return adr_sync_config(x_step="sign", **overrides)
    return ADRConfig(x_step="sign", **overrides)


@dataclass(frozen=True)
class AttackResult:
    """What one :meth:`ObservationAttack.perturb` call did, one entry per observation.

    :param obs: adversarial observations, same type, dtype, shape and device as the input.
    :param clean_actions: ``(N,)`` int64: greedy action at the clean observation.
    :param adv_actions: ``(N,)`` int64: greedy action at the adversarial observation.
    :param targets: ``(N,)`` int64 target actions (targeted attacks), else ``None``.
    :param clean_objective: ``(N,)`` float: the attack objective at the clean observation.
    :param objective: ``(N,)`` float: the objective at the returned observation
        (after rounding for integer dtypes), ``>= clean_objective``. For a
        :class:`WorstCaseAttack`, the common-scale objective (:func:`common_objective`).
    :param seconds: wall time of the call (CUDA synchronized).
    :param winner: ``(N,)`` int64, :class:`WorstCaseAttack` only: index of the member
        whose output was kept for each observation; ``None`` for a single attack.
    :param member_objectives: ``(M, N)`` float, :class:`WorstCaseAttack` only: each
        member's output scored by :func:`common_objective`.
    :param member_success: ``(M, N)`` bool, :class:`WorstCaseAttack` only: each member's
        own ``success``.
    """

    obs: Observation
    clean_actions: np.ndarray
    adv_actions: np.ndarray
    targets: np.ndarray | None
    clean_objective: np.ndarray
    objective: np.ndarray
    seconds: float
    winner: np.ndarray | None = None
    member_objectives: np.ndarray | None = None
    member_success: np.ndarray | None = None

    @property
    def flipped(self) -> np.ndarray:
        """``(N,)`` bool: the greedy action changed."""
        return self.adv_actions != self.clean_actions

    @property
    def success(self) -> np.ndarray:
        """``(N,)`` bool: flipped (untargeted) or the greedy action is the target."""
        return self.flipped if self.targets is None else self.adv_actions == self.targets


# --------------------------------------------------------------------------------------
# the attack
# --------------------------------------------------------------------------------------
class ObservationAttack:
    """An L-inf observation attack with a fixed budget, called on a batch.

    :param model: see :data:`SUPPORTED_MODELS`. Its weights, ``.grad``, ``requires_grad``,
        training mode and hooks are left as they were, also after an exception.
    :param eps: radius of the L-inf ball, ``>= 0``, in the observation's units (pixel
        levels 0..255 for Procgen).
    :param steps: optimizer iterations (``fgsm`` takes one; ``random`` draws ``steps``
        uniform points of the ball and keeps the best under the objective).
    :param method: one of :data:`ATTACK_METHODS`.
    :param targeted: raise the probability of a target action instead of pushing the
        policy away from its clean action.
    :param seed: seed of every call (calls are reproducible).
    :param loss: objective, one of :data:`LOSSES` (module docstring): ``"ce"`` (default
        for policies), ``"kl"``, ``"q"`` (default for Q-networks; needs one), ``"dlr"``
        (>= 3 actions, targeted >= 4) or ``"value"`` (untargeted; needs an actor-critic
        policy). Targeted attacks take ``"ce"`` or ``"dlr"``.
    :param step_size: step size in the observation's units. PGD and ADR (their ``x``
        steps are both sign steps): default ``2.5 * eps / steps`` (Madry et al. 2018);
        APGD: the initial step, default ``2 * eps`` (Croce & Hein 2020). ``gd``/``adam``
        use :func:`adr_rl.maximize`'s defaults.
    :param alpha: deprecated name of ``step_size`` (it clashed with ``ADRConfig.alpha``,
        ADR's gate sharpness); still accepted, with a ``DeprecationWarning``.
    :param random_start: start from a uniform point of the ball instead of the clean
        observation (the clean observation stays a candidate); default: only for ``"kl"``.
    :param config: optimizer options for ``maximize`` (default for ADR:
        :func:`attack_adr_config`).
    :param output: for a plain ``nn.Module``: whether it returns ``"logits"`` or ``"q"``.
    :param bounds: valid observation range ``(low, high)``; default: the SB3 observation
        space's bounds, else the integer dtype's range, else unbounded.
    :param compile: run each iteration as one ``torch.compile``'d graph (``pgd``,
        ``adr``, ``adr_sync``; see :func:`adr_rl.maximize`): the first call of a batch
        size compiles, later ones reuse it.
    :param autocast: ``torch.bfloat16`` or ``torch.float16``: run the optimizer's forward
        and backward passes under ``torch.autocast`` in that dtype (bf16 on a CPU with
        AVX512-BF16: 1.4-2.3x faster per iteration on an IMPALA policy). Only the search
        is in low precision: the iterate, the projection onto the ball and the range, and
        the returned actions and objectives are float32, and the clean observation stays
        a candidate, so every invariant holds as without it. The search itself is a
        little weaker (docs/attacks.md), so report robustness with the float32 default.
    """

    def __init__(
        self,
        model: Any,
        eps: float,
        steps: int = 20,
        method: str = "adr",
        targeted: bool = False,
        seed: int = 0,
        *,
        loss: Loss | None = None,
        step_size: float | None = None,
        alpha: float | None = None,
        random_start: bool | None = None,
        config: Any = None,
        output: Literal["logits", "q"] = "logits",
        bounds: tuple[float, float] | None = None,
        compile: bool = False,
        autocast: torch.dtype | None = None,
    ) -> None:
        self.adapter = policy_adapter(model, output)
        if autocast not in (None, torch.bfloat16, torch.float16):
            raise ValueError(
                f"autocast must be None, torch.bfloat16 or torch.float16, got {autocast!r}"
            )
        if autocast is not None and compile:
            raise ValueError("compile=True and autocast are not supported together; pick one")
        self.autocast: torch.dtype | None = autocast
        if not isinstance(eps, numbers.Real) or not math.isfinite(eps) or eps < 0:
            raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {steps!r}")
        if method not in ATTACK_METHODS:
            raise ValueError(
                f"unknown method {method!r}; choose one of {', '.join(ATTACK_METHODS)}"
            )
        if loss is None:
            loss = "q" if self.adapter.kind == "q" else "ce"
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}, got {loss!r}")
        if loss == "q" and self.adapter.kind != "q":
            raise ValueError("loss='q' needs a Q-network (DQN, or output='q'); use 'ce' or 'kl'")
        if loss == "value" and self.adapter.value is None:
            raise ValueError(
                "loss='value' needs an actor-critic policy with a value head (SB3 PPO/A2C); "
                + (
                    "a Q-network has the Q objective already: use loss='q'"
                    if self.adapter.kind == "q"
                    else "a plain nn.Module has none: use 'ce', 'dlr' or 'kl'"
                )
            )
        if targeted and loss not in ("ce", "dlr"):
            raise ValueError(
                f"targeted attacks take loss='ce' or 'dlr', got {loss!r}; or set targeted=False"
            )
        if loss == "dlr" and self.adapter.n_actions is not None:
            _check_dlr_actions(self.adapter.n_actions, targeted)
        if compile and method not in COMPILED_METHODS:
            raise ValueError(f"compile=True supports {', '.join(COMPILED_METHODS)}, not {method!r}")
        self.compile: bool = compile
        if alpha is not None:
            warnings.warn(
                "ObservationAttack(alpha=...) is deprecated: use step_size= (alpha is also "
                "ADRConfig's gate sharpness)",
                DeprecationWarning,
                stacklevel=2,
            )
            if step_size is not None:
                raise ValueError("pass step_size= only (alpha= is its deprecated name)")
            step_size = alpha
        if step_size is not None and (not math.isfinite(step_size) or step_size < 0):
            raise ValueError(f"step_size must be a finite number >= 0, got {step_size!r}")
        if bounds is not None and not bounds[0] <= bounds[1]:
            raise ValueError(f"bounds must be (low, high) with low <= high, got {bounds}")
        if method in ("adr", "adr_sync"):
            try:
                find_relus(self._networks(loss))
            except NonReluNetworkError as err:
                raise NonReluNetworkError(
                    f"{err}. ADR relaxes ReLUs, so method={method!r} needs a ReLU policy (for "
                    "SB3 MlpPolicy: policy_kwargs=dict(activation_fn=nn.ReLU)); fgsm, pgd and "
                    "random attack any differentiable policy"
                ) from err
        self.eps: float = float(eps)
        self.steps: int = steps
        self.method: str = method
        self.targeted: bool = targeted
        self.seed: int = seed
        self.loss: Loss = loss
        self.bounds: tuple[float, float] | None = bounds
        self.random_start: bool = (loss == "kl") if random_start is None else bool(random_start)
        if method in ("adr", "adr_sync") and config is None:
            config = attack_adr_config(method)
        self.config: Any = config
        self.step_size: float | None = step_size
        if step_size is None and method in ("pgd", "adr", "adr_sync"):
            self.step_size = 2.5 * self.eps / steps
        elif step_size is None and method == "apgd":
            # Croce & Hein's 2 * eps for every pixel, also where the valid range clips the
            # ball (maximize's own default would use each coordinate's clipped width).
            self.step_size = 2.0 * self.eps

    @property
    def model(self) -> nn.Module:
        return self.adapter.root

    @property
    def alpha(self) -> float | None:
        """Deprecated alias of :attr:`step_size`."""
        return self.step_size

    def _networks(self, loss: str) -> list[nn.Module]:
        return self.adapter.value_networks if loss == "value" else self.adapter.networks

    def _scores(self, loss: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """What the objective reads: the critic's ``(N, 1)`` values for ``"value"``, else
        the ``(N, n_actions)`` logits or Q-values."""
        if loss == "value":
            return cast(Callable[[torch.Tensor], torch.Tensor], self.adapter.value)
        return self.adapter.output

    # -- observation layout -----------------------------------------------------------
    def _to_tensor(self, obs: Observation) -> tuple[torch.Tensor, dict[str, Any]]:
        """User observation -> ``(N, *space.shape)`` float tensor on the model's device."""
        if isinstance(obs, np.ndarray):
            dtype, is_torch = obs.dtype, False
            kind = "int" if np.issubdtype(dtype, np.integer) else dtype.kind
        elif isinstance(obs, torch.Tensor):
            dtype, is_torch = obs.dtype, True
            kind = "f" if obs.is_floating_point() else ("b" if dtype == torch.bool else "int")
        else:
            raise TypeError(
                f"obs must be a numpy array or a torch tensor, got {type(obs).__name__}"
            )
        if kind not in ("int", "f"):
            raise TypeError(f"obs must have an integer or floating dtype, got {dtype}")
        t = torch.as_tensor(obs).detach()
        meta: dict[str, Any] = {
            "is_torch": is_torch,
            "dtype": dtype,
            "shape": tuple(t.shape),
            "device": t.device,
            "integer": kind == "int",
            "channel_last": False,
        }
        space = self.adapter.space
        if space is not None:
            shape = tuple(space.shape)
            alt = (shape[1], shape[2], shape[0]) if len(shape) == 3 else None
            if t.shape == shape or (alt is not None and t.shape == alt):
                t = t.unsqueeze(0)
            if t.shape[1:] == shape:
                pass
            elif alt is not None and t.shape[1:] == alt:
                meta["channel_last"] = True
                t = t.permute(0, 3, 1, 2)
            else:
                allowed = f"{shape} or (N, *{shape})"
                if alt is not None:
                    allowed += f", or channel-last {alt} / (N, *{alt})"
                raise ValueError(
                    f"observation shape {tuple(obs.shape)} does not match the policy's "
                    f"observation space: expected {allowed}"
                )
        elif t.dim() < 2:
            raise ValueError(
                f"obs must be a batch (N, *obs_shape) for a plain nn.Module, got {tuple(t.shape)}"
            )
        if t.shape[0] == 0:
            raise ValueError("obs is an empty batch")
        x = t.to(device=device_of(self.adapter.root), dtype=torch.float32)
        if not torch.isfinite(x).all():
            raise ValueError("obs contains NaN or infinite values")
        if space is not None and np.issubdtype(space.dtype, np.integer) and kind == "f":
            # eps is in the space's units (pixel levels): float observations in other
            # units, e.g. scaled to [0, 1], would be attacked 255x too strongly.
            if not torch.equal(x, x.round()):
                raise ValueError(
                    f"the policy's observation space is {space.dtype} "
                    f"[{space.low.min()}, {space.high.max()}] and eps is in those units, but "
                    "obs holds non-integer floats (scaled to [0, 1]?): pass the raw "
                    "observations, e.g. (obs * 255).round().astype(np.uint8)"
                )
            meta["integer"] = True  # integral floats: attack as the integers they are
        return x, meta

    def _from_tensor(self, x: torch.Tensor, meta: dict[str, Any]) -> Observation:
        if meta["channel_last"]:
            x = x.permute(0, 2, 3, 1)
        x = x.reshape(meta["shape"])
        if meta["is_torch"]:
            return x.to(device=meta["device"], dtype=meta["dtype"])
        return x.cpu().numpy().astype(meta["dtype"], copy=False)

    def _valid_range(
        self, x: torch.Tensor, meta: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        lo = torch.full_like(x[0], -math.inf)
        hi = torch.full_like(x[0], math.inf)
        if self.bounds is not None:
            lo, hi = lo.clamp_min(self.bounds[0]), hi.clamp_max(self.bounds[1])
        elif self.adapter.space is not None:
            space = self.adapter.space
            lo = torch.as_tensor(space.low, dtype=x.dtype, device=x.device).expand_as(x[0])
            hi = torch.as_tensor(space.high, dtype=x.dtype, device=x.device).expand_as(x[0])
        dtype = meta["dtype"]
        integer_dtype = (
            np.issubdtype(dtype, np.integer)
            if isinstance(dtype, np.dtype)
            else not dtype.is_floating_point
        )
        if integer_dtype and self.bounds is None:
            info = (
                np.iinfo(meta["dtype"])
                if isinstance(meta["dtype"], np.dtype)
                else torch.iinfo(meta["dtype"])
            )
            lo, hi = lo.clamp_min(float(info.min)), hi.clamp_max(float(info.max))
        return lo, hi

    # -- objective --------------------------------------------------------------------
    def _objective(
        self, clean_out: torch.Tensor, labels: torch.Tensor, clean_actions: torch.Tensor
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``(out, x) -> (rows,)``; ``out`` may stack ``k`` copies of the batch (CEM).

        ``labels`` are the targets (targeted) or the clean actions; ``out`` is what
        :meth:`_scores` returns.
        """
        b = labels.shape[0]
        clean_logp = F.log_softmax(clean_out, dim=1)

        def objective(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            k = out.shape[0] // b
            y = labels.repeat(k) if k > 1 else labels
            if self.loss == "value":
                return -out.reshape(-1)
            if self.loss == "dlr":
                clean = clean_actions.repeat(k) if k > 1 else clean_actions
                return dlr_loss(out, clean, y if self.targeted else None)
            if self.targeted:
                return F.log_softmax(out, dim=1).gather(1, y[:, None]).squeeze(1)
            if self.loss == "ce":
                return F.cross_entropy(out, y, reduction="none")
            if self.loss == "q":
                return -out.gather(1, y[:, None]).squeeze(1)
            lp0 = clean_logp.repeat(k, 1) if k > 1 else clean_logp
            return (lp0.exp() * (lp0 - F.log_softmax(out, dim=1))).sum(dim=1)

        return objective

    # -- the call ---------------------------------------------------------------------
    def __call__(self, obs: Observation, targets: Observation | None = None) -> Observation:
        """Adversarial observations, same type, dtype, shape and device as ``obs``.

        :param obs: ``(N, *obs_shape)`` or one ``obs_shape`` observation (SB3 models accept
            channel-last images as the env gives them, e.g. ``(N, 64, 64, 3) uint8 in
            [0, 255]``), finite.
        :param targets: ``(N,)`` int target actions (targeted attacks); default: the clean
            policy's least likely action.
        """
        return self.perturb(obs, targets).obs

    def perturb(self, obs: Observation, targets: Observation | None = None) -> AttackResult:
        """Like :meth:`__call__`, with the clean and adversarial actions and objectives."""
        t0 = time.perf_counter()
        x, meta = self._to_tensor(obs)
        low, high = self._valid_range(x, meta)
        if ((x < low) | (x > high)).any():
            raise ValueError("obs lies outside the valid observation range " + _range_hint(self))
        if meta["integer"]:
            # The box holds exactly the integers of the ball, so rounding stays inside:
            # an integer x moves by at most floor(eps) (computed in float64, not after
            # float32 rounding of x - eps, which can land on the next integer).
            k = float(math.floor(self.eps))
            lo = torch.maximum(x - k, low).ceil()
            hi = torch.minimum(x + k, high).floor()
        else:
            lo = torch.maximum(x - self.eps, low)
            hi = torch.minimum(x + self.eps, high)
        root = self.adapter.root
        with eval_mode(root):
            with torch.no_grad():
                clean_out = self.adapter.output(x)
            _check_output(clean_out, x.shape[0])
            clean_actions = clean_out.argmax(dim=1)
            if self.loss == "dlr":
                _check_dlr_actions(clean_out.shape[1], self.targeted)
            labels = clean_actions
            target_t = None
            if self.targeted:
                target_t = self._targets(targets, clean_out)
                labels = target_t
            objective = self._objective(clean_out, labels, clean_actions)
            scores = self._scores(self.loss)
            with torch.no_grad():
                clean_scores = clean_out if self.loss != "value" else scores(x)
            clean_value = objective(clean_scores, x).detach()
            x0 = x
            if self.random_start:
                g = torch.Generator(device=x.device)
                g.manual_seed(int(self.seed))
                u = torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype)
                x0 = lo + u * (hi - lo)
            with torch.autocast(
                x.device.type, dtype=self.autocast or torch.bfloat16, enabled=bool(self.autocast)
            ):
                res = maximize(
                    _float_outputs(scores) if self.autocast else scores,
                    x0,
                    lo,
                    hi,
                    steps=self.steps,
                    method=self.method,
                    seed=self.seed,
                    objective=objective,
                    network=self._networks(self.loss),
                    lr=self.step_size,
                    config=self.config,
                    compile=self.compile,
                )
            x_adv = res.x
            if meta["integer"]:
                x_adv = torch.minimum(torch.maximum(x_adv.round(), lo), hi)
            with torch.no_grad():
                adv_out = self.adapter.output(x_adv)
                value = objective(adv_out if self.loss != "value" else scores(x_adv), x_adv)
            # The clean observation is a candidate: never return something worse under the
            # objective (a random start or rounding to integers can be).
            worse = ~(value >= clean_value)
            if worse.any():
                mask = worse.view(-1, *([1] * (x.dim() - 1)))
                x_adv = torch.where(mask, x, x_adv)
                adv_out = torch.where(worse[:, None], clean_out, adv_out)
                value = torch.where(worse, clean_value, value)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        return AttackResult(
            obs=self._from_tensor(x_adv.detach(), meta),
            clean_actions=clean_actions.cpu().numpy(),
            adv_actions=adv_out.argmax(dim=1).cpu().numpy(),
            targets=None if target_t is None else target_t.cpu().numpy(),
            clean_objective=clean_value.cpu().numpy(),
            objective=value.detach().cpu().numpy(),
            seconds=time.perf_counter() - t0,
        )

    def _targets(self, targets: Observation | None, clean_out: torch.Tensor) -> torch.Tensor:
        n, a = clean_out.shape
        if targets is None:
            return clean_out.argmin(dim=1)  # the clean policy's least likely action
        t = torch.as_tensor(targets, device=clean_out.device).reshape(-1)
        if t.is_floating_point() or t.shape[0] != n:
            raise ValueError(f"targets must be {n} integer actions, got {tuple(t.shape)} {t.dtype}")
        if ((t < 0) | (t >= a)).any():
            raise ValueError(f"targets must lie in [0, {a}), got {t.tolist()}")
        return t.long()


def _float_outputs(
    scores: Callable[[torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``scores`` with float32 outputs, so that the objective (cross-entropy, DLR's sort,
    the value) is computed in float32 under autocast."""

    def wrapped(x: torch.Tensor) -> torch.Tensor:
        return scores(x).float()

    return wrapped


def _check_output(out: Any, n: int) -> None:
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != n:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model must map N observations to (N, n_actions) scores, got {shape}")


def _range_hint(attack: ObservationAttack) -> str:
    if attack.bounds is not None:
        return f"bounds={attack.bounds}"
    if attack.adapter.space is not None:
        return "(the policy's observation space)"
    return "(the integer dtype's range)"


def _check_dlr_actions(n_actions: int, targeted: bool) -> None:
    need = 4 if targeted else 3
    if n_actions < need:
        kind = "targeted DLR (z_pi3 and z_pi4)" if targeted else "DLR (z_pi1 - z_pi3)"
        raise ValueError(
            f"loss='dlr' needs at least {need} actions for the {kind} denominator, the "
            f"policy has {n_actions}; use loss='ce' (or 'kl')"
        )


def dlr_loss(
    scores: torch.Tensor, clean_actions: torch.Tensor, targets: torch.Tensor | None = None
) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020, Eq. 5 and 6), to be maximized.

    :param scores: ``(N, A)`` float logits or Q-values; ``A >= 3`` (``>= 4`` targeted).
    :param clean_actions: ``(N,)`` int64 in ``[0, A)``: the label ``y`` (clean action).
    :param targets: ``(N,)`` int64 in ``[0, A)``: target actions ``t``, or ``None``.
    :returns: ``(N,)``: untargeted ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``,
        targeted ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``, where
        ``z_pi1 >= z_pi2 >= ...`` are the sorted scores; the denominators get ``1e-12``
        as in the paper's code. Positive exactly when ``y`` is no longer the best
        (untargeted) or ``t`` beats ``y`` (targeted).
    """
    z = scores.sort(dim=1, descending=True).values
    z_y = scores.gather(1, clean_actions[:, None]).squeeze(1)
    if targets is None:
        best_other = torch.where(z_y >= z[:, 0], z[:, 1], z[:, 0])
        return -(z_y - best_other) / (z[:, 0] - z[:, 2] + 1e-12)
    z_t = scores.gather(1, targets[:, None]).squeeze(1)
    return -(z_y - z_t) / (z[:, 0] - (z[:, 2] + z[:, 3]) / 2 + 1e-12)


def common_objective(
    scores: torch.Tensor, clean_actions: torch.Tensor, targets: torch.Tensor | None = None
) -> torch.Tensor:
    """The scale :class:`WorstCaseAttack` compares its members on, whatever their losses.

    :param scores: ``(N, A)`` float logits (or Q-values, read as ``softmax(Q)``).
    :param clean_actions: ``(N,)`` int64: the clean greedy actions.
    :param targets: ``(N,)`` int64 target actions (targeted), or ``None``.
    :returns: ``(N,)``: untargeted, the cross-entropy of the clean action
        ``-log pi(a_clean | s')``; targeted, ``log pi(target | s')``: the ``"ce"``
        objective of :class:`ObservationAttack`, larger is stronger.
    """
    logp = F.log_softmax(scores, dim=1)
    if targets is None:
        return -logp.gather(1, clean_actions[:, None]).squeeze(1)
    return logp.gather(1, targets[:, None]).squeeze(1)


# --------------------------------------------------------------------------------------
# the worst case over several attacks
# --------------------------------------------------------------------------------------
class WorstCaseAttack:
    """The strongest of several attacks, chosen per observation (AutoAttack's ensemble).

    Every member attacks the same batch; for each observation the output kept is, in
    order: a member's output that succeeds (flips the clean action; targeted: makes the
    target the greedy action), or failing that, the one with the largest
    :func:`common_objective` (the cross-entropy of the clean action, or the target's
    log-probability, re-evaluated on each member's output so that members with
    different losses, e.g. DLR or the critic's value, are compared on one scale). Among
    several successful members, the largest common objective wins too; ties go to the
    earliest member. So the result succeeds wherever any member does, and elsewhere
    scores at least every member's output on the common scale (and at least the clean
    observation when a member maximizes that scale itself: ``loss="ce"``).

    Callable like an :class:`ObservationAttack`, and usable in :class:`AttackedPolicy`
    and :class:`AttackedVecEnv`; :meth:`perturb` reports each observation's winning
    member (``AttackResult.winner``) and :class:`AttackStats` counts the wins.

    :param attacks: the members, :class:`ObservationAttack` s of the same model, ``eps``,
        ``bounds`` and targeted mode (members with the default targets pick the same
        ones: the clean policy's least likely action). The model is left as it was.
    """

    def __init__(self, attacks: Sequence[ObservationAttack]) -> None:
        members = list(attacks) if isinstance(attacks, Sequence) else []
        if not members:
            raise ValueError("attacks must be a non-empty list of ObservationAttack")
        for a in members:
            if not isinstance(a, ObservationAttack):
                raise TypeError(
                    f"WorstCaseAttack members must be ObservationAttack, got {type(a).__name__}"
                )
        first = members[0]
        if any(a.model is not first.model for a in members):
            raise ValueError("all members must attack the same model (the same policy object)")
        for name in ("eps", "targeted", "bounds"):
            values = {getattr(a, name) for a in members}
            if len(values) > 1:
                raise ValueError(f"members must share {name}, got {sorted(map(str, values))}")
        self.attacks: tuple[ObservationAttack, ...] = tuple(members)

    @property
    def adapter(self) -> PolicyAdapter:
        return self.attacks[0].adapter

    @property
    def model(self) -> nn.Module:
        return self.attacks[0].model

    @property
    def eps(self) -> float:
        return self.attacks[0].eps

    @property
    def targeted(self) -> bool:
        return self.attacks[0].targeted

    def __call__(self, obs: Observation, targets: Observation | None = None) -> Observation:
        """The worst-case adversarial observations, same type, dtype, shape and device as
        ``obs`` (see :meth:`ObservationAttack.__call__`)."""
        return self.perturb(obs, targets).obs

    def perturb(self, obs: Observation, targets: Observation | None = None) -> AttackResult:
        """Run every member on ``obs`` and keep the strongest output per observation.

        :param obs: as :meth:`ObservationAttack.__call__`.
        :param targets: ``(N,)`` int target actions, passed to every member.
        :returns: an :class:`AttackResult` with ``winner``, ``member_objectives`` and
            ``member_success``; ``objective`` and ``clean_objective`` are on the common
            scale; ``seconds`` covers all members.
        """
        t0 = time.perf_counter()
        first = self.attacks[0]
        results = [a.perturb(obs, targets) for a in self.attacks]
        x, meta = first._to_tensor(obs)
        clean_actions = torch.as_tensor(results[0].clean_actions, device=x.device)
        target_t = None
        if results[0].targets is not None:
            target_t = torch.as_tensor(results[0].targets, device=x.device).long()
        candidates, objectives = [], []
        with eval_mode(self.model), torch.no_grad():
            clean_value = common_objective(self.adapter.output(x), clean_actions, target_t)
            for res in results:
                # One forward per member on N rows, the batch shape the member scored.
                cand, _ = first._to_tensor(res.obs)
                candidates.append(cand)
                objectives.append(
                    common_objective(self.adapter.output(cand), clean_actions, target_t)
                )
        obj = torch.stack(objectives)  # (M, N)
        success = torch.as_tensor(np.stack([r.success for r in results]), device=x.device)
        any_success = success.any(dim=0, keepdim=True)
        key = torch.where(success | ~any_success, obj, torch.full_like(obj, -math.inf))
        winner = key.argmax(dim=0)  # the first maximum: ties go to the earliest member
        cols = torch.arange(x.shape[0], device=x.device)
        x_adv = torch.stack(candidates)[winner, cols]
        win = winner.cpu().numpy()
        rows = np.arange(len(win))
        adv_actions = np.stack([r.adv_actions for r in results])[win, rows]
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        return AttackResult(
            obs=first._from_tensor(x_adv, meta),
            clean_actions=results[0].clean_actions,
            adv_actions=adv_actions,
            targets=results[0].targets,
            clean_objective=clean_value.cpu().numpy(),
            objective=obj[winner, cols].cpu().numpy(),
            seconds=time.perf_counter() - t0,
            winner=win.astype(np.int64),
            member_objectives=obj.cpu().numpy(),
            member_success=success.cpu().numpy(),
        )


#: What the online wrappers take: one attack or the worst case of several.
Attack = ObservationAttack | WorstCaseAttack
