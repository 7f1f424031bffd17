"""The one place where the library meets Stable-Baselines3's classes.

Attacks see an SB3 policy (or a plain module) as ``observation tensor -> (N, n_actions)``
logits or Q-values (:func:`policy_adapter`), with SB3's own preprocessing inside;
refinement sees an off-policy agent's policy with its continuous critic
(:func:`off_policy_policy`). Everything SB3-specific those two need lives here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

SUPPORTED_MODELS = (
    "SB3 PPO/A2C (an ActorCriticPolicy with a Discrete action space: CnnPolicy, the IMPALA "
    "extractor, MlpPolicy), SB3 DQN, or an nn.Module mapping a batch of observations to "
    "logits or Q-values (N, n_actions); ADR needs ReLU activations (for MlpPolicy: "
    "policy_kwargs=dict(activation_fn=nn.ReLU)), the other methods take any"
)


# --------------------------------------------------------------------------------------
# adapters: from the user's model to "observation tensor -> (N, n_actions)"
# --------------------------------------------------------------------------------------
@dataclass
class PolicyAdapter:
    """One model seen as ``output(x) -> (N, n_actions)`` over float observations ``x``.

    ``space`` is the SB3 observation space (``None`` for plain modules); ``x`` is laid
    out as that space (channel-first images) in the observation's own units, and SB3's
    own preprocessing (``/255`` for images) happens inside ``output``. ``value`` is an
    actor-critic policy's critic ``x -> (N, 1)`` and ``value_networks`` its modules
    (``None`` and empty for other models).
    """

    root: nn.Module
    networks: list[nn.Module]
    output: Callable[[torch.Tensor], torch.Tensor]
    kind: Literal["policy", "q"]
    space: spaces.Box | None
    n_actions: int | None = None
    value: Callable[[torch.Tensor], torch.Tensor] | None = None
    value_networks: list[nn.Module] = field(default_factory=list)


def policy_adapter(model: Any, output_kind: Literal["logits", "q"]) -> PolicyAdapter:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
    from stable_baselines3.common.preprocessing import is_image_space
    from stable_baselines3.dqn.policies import DQNPolicy

    policy = model.policy if isinstance(model, BaseAlgorithm) else model
    if isinstance(policy, ActorCriticPolicy | DQNPolicy):
        if not isinstance(policy.action_space, spaces.Discrete):
            raise TypeError(
                f"observation attacks need a Discrete action space, got {policy.action_space}"
            )
        if not isinstance(policy.observation_space, spaces.Box):
            raise TypeError(
                f"observation attacks need a Box observation space, got {policy.observation_space}"
            )
        space = policy.observation_space
        # SB3's preprocess_obs for a Box space, with its image test (numpy on the space's
        # bounds) decided once here rather than on every call: the same arithmetic, and
        # nothing a torch.compile'd attack step would have to break its graph for.
        scale_images = bool(policy.normalize_images and is_image_space(space))

        def prep(x: torch.Tensor) -> torch.Tensor:
            return x.float() / 255.0 if scale_images else x.float()

        if isinstance(policy, DQNPolicy):
            q_net = policy.q_net

            def q_values(x: torch.Tensor) -> torch.Tensor:  # QNetwork.forward, same modules
                return cast(torch.Tensor, q_net.q_net(q_net.features_extractor(prep(x))))

            return PolicyAdapter(policy, [q_net], q_values, "q", space, int(policy.action_space.n))
        fe = policy.pi_features_extractor
        actor = policy.mlp_extractor.policy_net
        head = policy.action_net
        vf_fe = policy.vf_features_extractor
        critic = policy.mlp_extractor.value_net
        value_head = policy.value_net

        def logits(x: torch.Tensor) -> torch.Tensor:
            return head(actor(fe(prep(x))))

        def value(x: torch.Tensor) -> torch.Tensor:  # ActorCriticPolicy.predict_values
            return value_head(critic(vf_fe(prep(x))))

        return PolicyAdapter(
            policy,
            [fe, actor, head],
            logits,
            "policy",
            space,
            int(policy.action_space.n),
            value,
            [vf_fe, critic, value_head],
        )
    if isinstance(model, BaseAlgorithm | BasePolicy) or not isinstance(model, nn.Module):
        raise TypeError(
            f"ObservationAttack supports {SUPPORTED_MODELS}; got {type(model).__name__}"
        )
    if output_kind not in ("logits", "q"):
        raise ValueError(f"output must be 'logits' or 'q', got {output_kind!r}")
    return PolicyAdapter(model, [model], model, "policy" if output_kind == "logits" else "q", None)


def device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


SUPPORTED_AGENTS = "TD3, DDPG and SAC (stable-baselines3), TQC (sb3-contrib)"


SUPPORTED_POLICIES = ("TD3Policy", "SACPolicy", "TQCPolicy")


def check_finite(observation: Any) -> None:
    parts = observation.values() if isinstance(observation, dict) else [observation]
    for part in parts:
        array = np.asarray(part)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ValueError("observation contains NaN or inf values")


def off_policy_policy(model: Any) -> Any:
    policy = getattr(model, "policy", model)
    names = {cls.__name__ for cls in type(policy).__mro__}
    if not names & set(SUPPORTED_POLICIES) or not hasattr(policy, "critic"):
        raise TypeError(
            f"ActionRefiner supports {SUPPORTED_AGENTS} (their policies and continuous critics); "
            f"got {type(model).__name__}. On-policy agents (PPO, A2C) and DQN have no Q(s, a) "
            "critic over continuous actions to refine against"
        )
    if not isinstance(policy.action_space, spaces.Box):
        raise ValueError(f"ActionRefiner needs a Box action space, got {policy.action_space}")
    return policy
