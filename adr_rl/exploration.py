"""Refined exploration: off-policy agents that learn from critic-refined actions.

The ADR paper's deep-RL experiment: while TD3 trains, after ``warmup`` env steps and with
probability ``probability`` per env step, the exploration action (the actor's action plus
SB3's action noise, in the scaled space ``[-1, 1]``) is replaced by the action
:func:`adr_rl.maximize` finds for the critic's ``Q(s, .)`` inside a trust region around it
(docs/method.md, "The RL uses"). The agent stores and learns from the refined action. The paper's
proof of concept patched SB3's ``TD3._sample_action`` in a fork (T = 100 steps, the target
critic's first Q network, the whole action box); here the same hook is overridden in a
mixin, so :class:`RefinedTD3`, :class:`RefinedDDPG`, :class:`RefinedSAC` (and
:class:`RefinedTQC` when sb3-contrib is installed) are the SB3 classes with one method
more. The refinement itself is :meth:`adr_rl.ActionRefiner.refine_from`.

A model trained this way saves a zip that the plain class loads (``TD3.load``): the
refinement settings and state are left out of the save.

    from adr_rl.exploration import ExplorationRefinement, RefinedTD3

    model = RefinedTD3("MlpPolicy", "Pendulum-v1", refinement=ExplorationRefinement())
    model.learn(20_000)
    model.save("td3_refined")            # TD3.load("td3_refined") works
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import DDPG, DQN, SAC, TD3
from stable_baselines3.common.base_class import maybe_make_env
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from adr_rl.optim import METHODS, network_evaluations
from adr_rl.refine import ActionRefiner

__all__ = [
    "REFINED_ALGORITHMS",
    "ExplorationRefinement",
    "RefinedDDPG",
    "RefinedExplorationMixin",
    "RefinedSAC",
    "RefinedTD3",
    "RefinementStats",
    "refined_algorithm",
]

#: Attributes of a refined model that only refinement uses; left out of ``save`` so the
#: zip is a plain SB3 one.
REFINEMENT_ATTRIBUTES: tuple[str, ...] = (
    "refinement",
    "refinement_stats",
    "_refinement_rng",
    "_refiner",
    "_refiner_key",
)


@dataclass(frozen=True)
class ExplorationRefinement:
    """How exploration actions are refined. Defaults: the paper's TD3 experiment.

    :param method: a :func:`adr_rl.maximize` method (``"adr"``: the paper's; ``"gd"``,
        ``"adr_sync"``, ``"cem"``, ...).
    :param probability: chance, per env and step, that the exploration action is refined
        (paper: 0.1 to 0.25). 0 trains exactly as the plain algorithm.
    :param warmup: env steps before the first refinement (paper: 5,000). Refinement also
        waits for the algorithm's ``learning_starts``: before it the actions are uniform
        samples and the critic is untrained.
    :param steps: optimizer iterations per refinement (paper: T = 100); ignored when
        ``evaluations`` is set.
    :param evaluations: critic passes (forward or backward) per refinement; ``steps``
        becomes ``evaluations // network_evaluations(method, 1)``, so two methods get
        the same compute (:func:`adr_rl.network_evaluations`). ``None``: use ``steps``.
    :param radius: L-inf half-width of the trust region around the exploration action in
        the scaled space, intersected with ``[-1, 1]`` (paper: 2, the whole box).
    :param critic: ``"target"`` (paper) or ``"online"`` critic network.
    :param q: ``"q1"`` (paper: the first Q network), ``"min"`` over the twin Q networks,
        or ``"mean"``.
    :param seed: seed of the refinement's own random stream (the coin flips and each
        call's optimizer seed); the algorithm's RNGs are never touched.
    :param lr: optimizer step size (default: :class:`adr_rl.ActionRefiner`'s,
        ``radius / 5`` for ``adr``/``adr_sync``/``gd``).
    :param config: method options passed to :func:`adr_rl.maximize` (e.g. ``ADRConfig``).
    :param compile: run the optimizer's iterations compiled (see :func:`adr_rl.maximize`).
    """

    method: str = "adr"
    probability: float = 0.25
    warmup: int = 5_000
    steps: int = 100
    evaluations: int | None = None
    radius: float = 2.0
    critic: Literal["target", "online"] = "target"
    q: Literal["q1", "min", "mean"] = "q1"
    seed: int = 0
    lr: float | None = None
    config: Any = None
    compile: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(
                f"unknown refinement method {self.method!r}; choose one of {', '.join(METHODS)}"
            )
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must lie in [0, 1], got {self.probability}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup must be an int >= 0 (env steps), got {self.warmup!r}")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {self.steps!r}")
        if self.evaluations is not None:
            per_step = network_evaluations(self.method, 1, self.config)
            if not isinstance(self.evaluations, int) or self.evaluations < per_step:
                raise ValueError(
                    f"evaluations must be an int >= {per_step} (one {self.method} step), "
                    f"got {self.evaluations!r}"
                )
        if not self.radius > 0:
            raise ValueError(f"radius must be > 0 (2 covers the whole box), got {self.radius}")
        if self.critic not in ("target", "online"):
            raise ValueError(f"critic must be 'target' or 'online', got {self.critic!r}")
        if self.q not in ("q1", "min", "mean"):
            raise ValueError(f"q must be 'q1', 'min' or 'mean', got {self.q!r}")

    @property
    def n_steps(self) -> int:
        """Optimizer iterations per refinement (from ``evaluations`` when it is set)."""
        if self.evaluations is None:
            return self.steps
        return self.evaluations // network_evaluations(self.method, 1, self.config)

    @property
    def critic_evaluations(self) -> int:
        """Critic passes one refinement costs (:func:`adr_rl.network_evaluations`)."""
        return network_evaluations(self.method, self.n_steps, self.config)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready settings, with the resolved ``n_steps`` and ``critic_evaluations``."""
        out = dataclasses.asdict(self)
        if self.config is not None:
            out["config"] = (
                dataclasses.asdict(self.config)
                if dataclasses.is_dataclass(self.config) and not isinstance(self.config, type)
                else repr(self.config)
            )
        return out | {"n_steps": self.n_steps, "critic_evaluations": self.critic_evaluations}


@dataclass
class RefinementStats:
    """Running totals of a refined model's exploration (not saved with the model).

    :param eligible: env steps (one per env) taken after the warm-up, refined or not.
    :param refined: of those, the ones whose action was refined.
    :param q_gain_sum: sum over refined actions of ``Q(refined) - Q(exploration action)``
        under the refinement's critic (``>= 0``: the start is a candidate).
    :param seconds: wall time spent refining (coin flips excluded).
    :param coordinates: action coordinates refined (``refined`` times the action size).
    :param at_bound: of those, the ones on the box ``[-1, 1]`` (a ReLU critic is
        piecewise linear in the action, so its maximum often sits on a face or corner).
    """

    eligible: int = 0
    refined: int = 0
    q_gain_sum: float = 0.0
    seconds: float = 0.0
    coordinates: int = 0
    at_bound: int = 0

    @property
    def share(self) -> float:
        """Share of eligible steps that were refined (0 before any)."""
        return self.refined / self.eligible if self.eligible else 0.0

    @property
    def at_bound_share(self) -> float:
        """Share of refined action coordinates on the box's faces (0 before any)."""
        return self.at_bound / self.coordinates if self.coordinates else 0.0

    @property
    def mean_q_gain(self) -> float:
        """Mean Q gain per refined action (0 before any)."""
        return self.q_gain_sum / self.refined if self.refined else 0.0


def _check_action_space(space: spaces.Space, algo: str) -> None:
    if not isinstance(space, spaces.Box):
        raise ValueError(
            f"refined exploration needs a continuous (Box) action space, got {space} for "
            f"{algo}: there is no continuous action to refine; use a Box-action env"
        )


def _rows(obs: Any, rows: np.ndarray) -> Any:
    """The chosen envs' rows of a VecEnv observation (an array or a dict of arrays)."""
    if isinstance(obs, dict):
        return {key: value[rows] for key, value in obs.items()}
    return obs[rows]


class RefinedExplorationMixin(OffPolicyAlgorithm):
    """Adds refined exploration to an SB3 off-policy algorithm with a continuous critic.

    Put it before the algorithm among the bases (``class RefinedTD3(
    RefinedExplorationMixin, TD3)``); the classes below are ready-made. The constructor
    takes the algorithm's arguments plus ``refinement`` (an :class:`ExplorationRefinement`,
    or ``None`` to train exactly as the plain algorithm).

    Only ``_sample_action`` changes: SB3 samples the exploration action (noise included,
    clipped to ``[-1, 1]``), then each env's action is refined with probability
    ``refinement.probability`` once ``num_timesteps >= max(warmup, learning_starts)``;
    the env executes the refined action (unscaled and clipped into the action space) and
    the replay buffer stores it. The coin flips and optimizer seeds come from a dedicated
    ``numpy.random.Generator`` seeded with ``refinement.seed``, so with probability 0 the
    run is bit-identical to the plain algorithm with the same seed.

    Logged to the SB3 logger: ``refine/share`` (refined share of the eligible env steps),
    ``refine/q_gain`` (mean critic gain over the exploration action), ``refine/seconds``
    (total wall time refining), ``refine/refined`` (total refined actions) and
    ``refine/at_bound`` (share of refined action coordinates on the box's faces); the
    totals are also in :attr:`refinement_stats`.

    ``save`` leaves the refinement out: the zip loads with the plain class. To resume
    refined training, pass the settings again:
    ``RefinedTD3.load(path, env=env, refinement=ExplorationRefinement(...))`` (without
    them, a loaded model refines with the defaults); the random stream restarts from
    ``refinement.seed``.
    """

    refinement: ExplorationRefinement | None
    refinement_stats: RefinementStats

    def __init__(
        self,
        policy: Any,
        env: Any,
        *args: Any,
        refinement: ExplorationRefinement | None = ExplorationRefinement(),  # noqa: B008
        **kwargs: Any,
    ) -> None:
        name = type(self).__name__
        if isinstance(self, (DQN, OnPolicyAlgorithm)):
            raise TypeError(
                f"{name}: refined exploration supports {', '.join(REFINED_ALGORITHMS)} (an "
                "off-policy algorithm with a continuous Q(s, a) critic); on-policy agents "
                "(PPO, A2C) and DQN have none to refine against"
            )
        if refinement is not None and not isinstance(refinement, ExplorationRefinement):
            raise TypeError(
                f"refinement must be an ExplorationRefinement or None, got "
                f"{type(refinement).__name__}"
            )
        if env is not None:
            # SB3 would assert on a Discrete space; say what to do instead.
            env = maybe_make_env(env, kwargs.get("verbose", 0))
            _check_action_space(env.action_space, name)
        self.refinement = refinement
        self.refinement_stats = RefinementStats()
        self._refinement_rng: np.random.Generator | None = None
        self._refiner: ActionRefiner | None = None
        self._refiner_key: tuple[Any, ...] | None = None
        super().__init__(policy, env, *args, **kwargs)

    def set_refinement(self, refinement: ExplorationRefinement | None) -> None:
        """Change the settings; the random stream restarts from ``refinement.seed``."""
        if refinement is not None and not isinstance(refinement, ExplorationRefinement):
            raise TypeError(f"expected an ExplorationRefinement or None, got {refinement!r}")
        self.refinement = refinement
        self._refinement_rng = None
        self._refiner = None

    def _setup_model(self) -> None:
        super()._setup_model()
        _check_action_space(self.action_space, type(self).__name__)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), *REFINEMENT_ATTRIBUTES]

    def _refinement_refiner(self, refinement: ExplorationRefinement) -> ActionRefiner:
        # Rebuilt when the settings or the policy object change (e.g. after load).
        key = (refinement, id(self.policy))
        if self._refiner is None or self._refiner_key != key:
            self._refiner = ActionRefiner(
                self,
                method=refinement.method,
                radius=refinement.radius,
                steps=refinement.n_steps,
                critic=refinement.q,
                critic_network=refinement.critic,
                seed=refinement.seed,
                lr=refinement.lr,
                config=refinement.config,
                compile=refinement.compile,
            )
            self._refiner_key = key
        return self._refiner

    def _sample_action(
        self,
        learning_starts: int,
        action_noise: ActionNoise | None = None,
        n_envs: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """SB3's exploration action, refined against the critic for the chosen envs.

        :return: actions ``(n_envs, *action_shape)`` inside the env's action space (what
            the env executes) and the scaled actions ``(n_envs, *action_shape)`` in
            ``[-1, 1]`` the replay buffer stores.
        """
        action, buffer_action = super()._sample_action(learning_starts, action_noise, n_envs)
        refinement = getattr(self, "refinement", None)
        if (
            refinement is None
            or refinement.probability == 0.0
            or self.num_timesteps < max(refinement.warmup, learning_starts)
        ):
            return action, buffer_action
        if self._refinement_rng is None:
            self._refinement_rng = np.random.default_rng(refinement.seed)
        rng = self._refinement_rng
        chosen = rng.random(n_envs) < refinement.probability
        stats = self.refinement_stats
        stats.eligible += n_envs
        self.logger.record_mean("refine/share", float(chosen.mean()))
        if not chosen.any():
            return action, buffer_action
        start_time = time.perf_counter()
        refiner = self._refinement_refiner(refinement)
        assert self._last_obs is not None, "self._last_obs was not set"
        obs, _ = self.policy.obs_to_tensor(_rows(self._last_obs, chosen))
        start = torch.as_tensor(buffer_action[chosen], dtype=torch.float32, device=self.device)
        refined, info = refiner.refine_from(obs, start, seed=int(rng.integers(2**31)))
        scaled = refined.detach().cpu().numpy()
        space = self.action_space
        assert isinstance(space, spaces.Box)
        executed = np.clip(self.policy.unscale_action(scaled), space.low, space.high)
        action, buffer_action = action.copy(), buffer_action.copy()
        action[chosen] = executed.astype(action.dtype)
        buffer_action[chosen] = scaled.astype(buffer_action.dtype)
        elapsed = time.perf_counter() - start_time
        gains = info.q_gain
        stats.refined += int(chosen.sum())
        stats.q_gain_sum += float(gains.sum())
        stats.seconds += elapsed
        stats.coordinates += int(scaled.size)
        stats.at_bound += int(np.count_nonzero(np.abs(scaled) >= 1.0 - 1e-6))
        self.logger.record_mean("refine/q_gain", float(gains.mean()))
        self.logger.record("refine/at_bound", stats.at_bound_share)
        self.logger.record("refine/seconds", stats.seconds)
        self.logger.record("refine/refined", stats.refined)
        return action, buffer_action


class RefinedTD3(RefinedExplorationMixin, TD3):
    """SB3's :class:`~stable_baselines3.TD3` with refined exploration (the paper's agent);
    see :class:`RefinedExplorationMixin`. Saved models load with ``TD3.load``."""


class RefinedDDPG(RefinedExplorationMixin, DDPG):
    """SB3's :class:`~stable_baselines3.DDPG` with refined exploration; see
    :class:`RefinedExplorationMixin`. Saved models load with ``DDPG.load``."""


class RefinedSAC(RefinedExplorationMixin, SAC):
    """SB3's :class:`~stable_baselines3.SAC` with refined exploration: the sampled action
    (plus any action noise) is the start; see :class:`RefinedExplorationMixin`. Saved
    models load with ``SAC.load``."""


#: Plain algorithm name -> its refined class.
REFINED_ALGORITHMS: dict[str, type[RefinedExplorationMixin]] = {
    "td3": RefinedTD3,
    "ddpg": RefinedDDPG,
    "sac": RefinedSAC,
}

try:
    from sb3_contrib import TQC

    class RefinedTQC(RefinedExplorationMixin, TQC):
        """sb3-contrib's ``TQC`` with refined exploration (Q: the mean over quantiles);
        see :class:`RefinedExplorationMixin`. Saved models load with ``TQC.load``."""

    REFINED_ALGORITHMS["tqc"] = RefinedTQC
    __all__.append("RefinedTQC")
except ImportError:  # sb3-contrib is optional
    pass


def refined_algorithm(algo: str | type) -> type[RefinedExplorationMixin]:
    """The refined class of an algorithm given by name (``"td3"``) or class (``TD3``).

    :raises TypeError: an algorithm without a continuous critic to refine against.
    """
    if isinstance(algo, type) and issubclass(algo, RefinedExplorationMixin):
        return algo
    name = algo.lower() if isinstance(algo, str) else getattr(algo, "__name__", "").lower()
    refined = REFINED_ALGORITHMS.get(name)
    # A class must be the refined class's own algorithm (DDPG subclasses TD3).
    if refined is None or (isinstance(algo, type) and refined.__bases__[-1] is not algo):
        raise TypeError(
            f"refined exploration supports {', '.join(REFINED_ALGORITHMS)} (off-policy "
            f"algorithms with a continuous Q(s, a) critic), got {algo!r}; PPO, A2C and DQN "
            "have no such critic"
        )
    return refined
