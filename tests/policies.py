"""Small policies and checks shared by the attack tests."""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticCnnPolicy
from stable_baselines3.dqn.policies import CnnPolicy as DQNCnnPolicy
from torch import nn

from adr_rl.extractors import ImpalaCNN


def constant_lr(_: float) -> float:
    return 1e-3


def impala_policy(n_actions: int = 5, seed: int = 0) -> ActorCriticCnnPolicy:
    """A tiny IMPALA-CNN PPO policy on 16x16 RGB images (channel-first space, as SB3 builds it)."""
    torch.manual_seed(seed)
    policy = ActorCriticCnnPolicy(
        spaces.Box(0, 255, (3, 16, 16), np.uint8),
        spaces.Discrete(n_actions),
        constant_lr,
        features_extractor_class=ImpalaCNN,
        features_extractor_kwargs={"features_dim": 16, "channels": (4, 8)},
        net_arch=[],
    )
    # SB3 initializes the action head with gain 0.01 (a near-uniform policy); a trained
    # policy is sharper, so scale the head up to make flips and targets meaningful.
    with torch.no_grad():
        policy.action_net.weight.mul_(300.0)
    return policy


def dqn_policy(seed: int = 0) -> DQNCnnPolicy:
    torch.manual_seed(seed)
    return DQNCnnPolicy(
        spaces.Box(0, 255, (3, 16, 16), np.uint8),
        spaces.Discrete(4),
        constant_lr,
        features_extractor_class=ImpalaCNN,
        features_extractor_kwargs={"features_dim": 16, "channels": (4,)},
        net_arch=[],
    )


def mlp(in_dim: int, n_actions: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_dim, 16), nn.ReLU(), nn.Linear(16, n_actions))


def images(n: int, seed: int, shape=(16, 16, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def check_invariants(obs: np.ndarray, adv: np.ndarray, eps: float, low=0, high=255) -> None:
    """The attack invariants: shape and dtype kept, inside the eps-ball and the range."""
    assert adv.shape == obs.shape and adv.dtype == obs.dtype
    diff = np.abs(adv.astype(np.float64) - obs.astype(np.float64))
    tol = 0 if np.issubdtype(obs.dtype, np.integer) else 1e-4 * max(1.0, eps)
    assert diff.max() <= eps + tol
    assert adv.min() >= low and adv.max() <= high
