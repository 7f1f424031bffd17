"""Critic-guided action refinement for Stable-Baselines3 off-policy agents.

At inference, :class:`ActionRefiner` starts from the actor's action and maximizes the
critic's ``Q(s, a)`` over a trust region around it with :func:`adr_rl.maximize`
(docs/method.md, "The RL uses"). It is a drop-in for SB3's ``predict``, so SB3's own
``evaluate_policy`` runs it on vectorized envs.

Everything happens in SB3's scaled action space ``[-1, 1]`` (``policy.scale_action``):
the box is ``[a - radius, a + radius]`` intersected with ``[-1, 1]``, and the returned
actions are unscaled back into the env's action space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from adr_rl.optim import COMPILED_METHODS, EXACT_METHODS, METHODS, maximize
from adr_rl.sb3 import SUPPORTED_AGENTS, check_finite, off_policy_policy
from adr_rl.surrogate import eval_mode

__all__ = ["ActionRefiner", "RefineInfo", "SUPPORTED_AGENTS"]


CriticMode = Literal["min", "q1", "mean"]
CriticNetwork = Literal["online", "target"]


@dataclass(frozen=True)
class RefineInfo:
    """Diagnostics of the last :meth:`ActionRefiner.predict` call, one entry per env.

    :param q_actor: ``(n_envs,)`` float: the critic's value of the actor's action.
    :param q_refined: ``(n_envs,)`` float: the critic's value of the returned action
        (``>= q_actor``: the actor's action is a candidate).
    :param distance: ``(n_envs,)`` float: L-inf distance moved, scaled action space.
    """

    q_actor: np.ndarray
    q_refined: np.ndarray
    distance: np.ndarray

    @property
    def q_gain(self) -> np.ndarray:
        return self.q_refined - self.q_actor

    @property
    def changed(self) -> np.ndarray:
        return self.distance > 0


class ActionRefiner:
    """Refine an SB3 off-policy agent's actions by maximizing its critic (drop-in ``predict``).

    :param model: a trained TD3, DDPG, SAC or TQC model (or its policy).
    :param method: ``"none"`` (the actor's action) or a :func:`adr_rl.maximize` method:
        ``"adr"``, ``"adr_sync"``, ``"gd"``, ``"adam"``, ``"cem"``, ...
    :param radius: trust region half-width in the scaled action space (``> 0``; 2 or
        more means the whole box).
    :param steps: optimizer iterations per call.
    :param critic: ``"min"`` over the twin Q networks (pessimistic, default), ``"q1"``,
        or ``"mean"``. TQC's quantile critics are averaged over quantiles first.
    :param critic_network: ``"online"`` (``policy.critic``, default) or ``"target"``
        (``policy.critic_target``, the Polyak-averaged copy the TD3/SAC updates
        bootstrap from; refined exploration in the paper uses it).
    :param seed: seed of every call's optimizer (calls are reproducible).
    :param lr: optimizer step size (default: ``radius / 5`` for gradient methods).
    :param config: optimizer options, passed to :func:`adr_rl.maximize`.
    :param vec_normalize: a ``VecNormalize`` whose statistics to apply, when the
        observations given to :meth:`predict` are raw (not already normalized by a
        ``VecNormalize`` wrapper of the env).
    :param compile: run each optimizer iteration as one ``torch.compile``'d graph
        (``adr``, ``adr_sync``, ``gd``, ``pgd``; see :func:`adr_rl.maximize`): the first
        call compiles, later calls of the same batch size are several times faster.
    """

    def __init__(
        self,
        model: Any,
        method: str = "adr",
        radius: float = 0.25,
        steps: int = 100,
        critic: CriticMode = "min",
        seed: int = 0,
        lr: float | None = None,
        config: Any = None,
        vec_normalize: Any = None,
        compile: bool = False,
        critic_network: CriticNetwork = "online",
    ) -> None:
        self.model = model
        self.policy = off_policy_policy(model)
        if critic_network not in ("online", "target"):
            raise ValueError(f"critic_network must be 'online' or 'target', got {critic_network!r}")
        if critic_network == "target" and getattr(self.policy, "critic_target", None) is None:
            raise TypeError(f"{type(self.policy).__name__} has no critic_target; use 'online'")
        self.critic_network = critic_network
        if method != "none" and method not in METHODS and method not in EXACT_METHODS:
            choices = ", ".join((*METHODS, *EXACT_METHODS))
            raise ValueError(f"unknown method {method!r}; choose 'none' or one of {choices}")
        if method in EXACT_METHODS and critic == "mean":
            raise ValueError(
                f"method {method!r} maximizes the min of the twin critics or q1 exactly; "
                "critic='mean' is not a ReLU network's output: use critic='min' or 'q1'"
            )
        if compile and method not in ("none", *COMPILED_METHODS):
            raise ValueError(f"compile=True supports {', '.join(COMPILED_METHODS)}, not {method!r}")
        self.compile = compile
        if not (radius > 0 and math.isfinite(radius)):
            raise ValueError(
                f"radius must be a finite number > 0, got {radius}; actions are scaled to "
                "[-1, 1], so radius=2 already covers the whole action space"
            )
        if critic not in ("min", "q1", "mean"):
            raise ValueError(f"critic must be 'min', 'q1' or 'mean', got {critic!r}")
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        self.method, self.radius, self.steps, self.critic_mode = (
            method,
            float(radius),
            steps,
            critic,
        )
        self.seed, self.config, self.vec_normalize = seed, config, vec_normalize
        self.lr = (
            lr
            if lr is not None
            else (self.radius / 5 if method in ("adr", "adr_sync", "gd") else None)
        )
        self.q_networks: list[nn.Module] = list(self.critic_module.q_networks)
        self.last_info: RefineInfo | None = None

    @property
    def critic_module(self) -> Any:
        """The SB3 ``ContinuousCritic`` refined against (online or target)."""
        if self.critic_network == "target":
            return self.policy.critic_target
        return self.policy.critic

    @property
    def observation_space(self) -> spaces.Space:
        return self.policy.observation_space

    @property
    def action_space(self) -> spaces.Box:
        return self.policy.action_space

    def q_values(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Critic value ``(B,)`` of scaled ``actions`` ``(B, act_dim)`` in ``[-1, 1]``
        at preprocessed-by-SB3 ``obs`` (a batch as ``policy.obs_to_tensor`` returns it)."""
        with eval_mode(self.policy), torch.no_grad():
            return self._q_from_features(self._features(obs), actions)

    def _features(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        critic = self.critic_module
        return critic.extract_features(obs, critic.features_extractor)

    def _q_from_features(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        # CEM evaluates k * B rows stacked as k copies of the batch: repeat the context.
        k = actions.shape[0] // features.shape[0]
        inputs = torch.cat([features.repeat(k, 1) if k > 1 else features, actions], dim=1)
        nets = self.q_networks[:1] if self.critic_mode == "q1" else self.q_networks
        qs = torch.stack([net(inputs).mean(dim=1) for net in nets], dim=1)  # TQC: mean quantile
        return qs.min(dim=1).values if self.critic_mode == "min" else qs.mean(dim=1)

    def refine(self, obs: torch.Tensor) -> tuple[torch.Tensor, RefineInfo]:
        """Refined scaled actions ``(B, act_dim)`` in ``[-1, 1]`` for a batch of observations,
        starting from the actor's deterministic actions."""
        with eval_mode(self.policy), torch.no_grad():
            start = self.policy._predict(obs, deterministic=True).reshape(
                -1, *self.action_space.shape
            )
        return self.refine_from(obs, start)

    def refine_from(
        self,
        obs: torch.Tensor | dict[str, torch.Tensor],
        start: torch.Tensor,
        seed: int | None = None,
    ) -> tuple[torch.Tensor, RefineInfo]:
        """Refine given scaled actions (e.g. exploration actions) against the critic.

        :param obs: a batch of ``B`` observations as ``policy.obs_to_tensor`` returns it.
        :param start: ``(B, *action_shape)`` float scaled actions (clamped to ``[-1, 1]``),
            on the policy's device: the centres of the trust regions.
        :param seed: the optimizer's seed for this call (default: ``self.seed``).
        :return: refined scaled actions ``(B, *action_shape)`` in ``[-1, 1]``, within
            ``radius`` of ``start`` (L-inf), and the call's :class:`RefineInfo`.
        """
        with eval_mode(self.policy), torch.no_grad():
            features = self._features(obs)
        start = start.clamp(-1.0, 1.0)
        flat = start.reshape(start.shape[0], -1)
        if self.method == "none":
            with torch.no_grad():
                q = self._q_from_features(features, flat)
            actions, q_refined, q_actor = flat, q, q
        else:
            res = maximize(
                lambda a: self._q_from_features(features, a),
                flat,
                lower=(flat - self.radius).clamp_min(-1.0),
                upper=(flat + self.radius).clamp_max(1.0),
                steps=self.steps,
                method=self.method,
                seed=self.seed if seed is None else seed,
                network=self.q_networks[:1] if self.critic_mode == "q1" else self.q_networks,
                lr=self.lr,
                config=self.config,
                compile=self.compile,
            )
            actions, q_refined, q_actor = res.x, res.value, res.initial_value
        info = RefineInfo(
            q_actor=q_actor.detach().cpu().numpy(),
            q_refined=q_refined.detach().cpu().numpy(),
            distance=(actions - flat).abs().amax(dim=1).detach().cpu().numpy(),
        )
        return actions.reshape(start.shape), info

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's ``predict``: refined actions, batched over envs or for one observation.

        :param observation: ``(n_envs, *obs_shape)`` or ``obs_shape`` (or a dict of
            them), as the env gives it.
        :param deterministic: accepted for SB3 compatibility; refinement always starts
            from the actor's deterministic action and is deterministic given ``seed``.
        :return: actions ``(n_envs, *action_shape)`` (or ``action_shape`` for one
            observation) inside the env's action space, and ``state`` unchanged.
        """
        check_finite(observation)
        first = next(iter(observation.values())) if isinstance(observation, dict) else observation
        if np.asarray(first).ndim > 0 and np.asarray(first).shape[0] == 0:
            raise ValueError("predict got an empty batch (0 observations); pass at least one")
        if self.vec_normalize is not None:
            observation = self.vec_normalize.normalize_obs(observation)
        obs_tensor, vectorized = self.policy.obs_to_tensor(observation)
        scaled, self.last_info = self.refine(obs_tensor)
        actions = self.policy.unscale_action(scaled.detach().cpu().numpy())
        # Unscaling can overshoot the bounds by a rounding error.
        actions = np.clip(actions, self.action_space.low, self.action_space.high).astype(
            self.action_space.dtype
        )
        if not vectorized:
            actions = actions.squeeze(axis=0)
        return actions, state
