"""Image feature extractors for SB3 policies whose every ReLU is an ``nn.ReLU`` module.

ADR sees and relaxes a network's ReLUs through their modules (see
``adr_rl/surrogate.py``), so no extractor here calls ``F.relu``: a functional
ReLU would be invisible to it.

* :class:`ImpalaCNN`: the IMPALA CNN of Espeholt et al. 2018 ("IMPALA", Fig. 3,
  right) as used by Cobbe et al. 2020 for Procgen and by CleanRL's
  ``ppo_procgen.py``: three conv sequences with 16, 32, 32 channels, each a 3x3
  conv, a 3x3 stride-2 max-pool and two residual blocks, then a 256-unit head.
* :func:`nature_cnn_policy_kwargs` and :func:`impala_cnn_policy_kwargs`: the
  ``policy_kwargs`` that make SB3's ``CnnPolicy`` use either extractor, and
  :func:`init_baselines_heads`, the heads' init that goes with the IMPALA one.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, NatureCNN
from torch import nn

#: Channels of the three conv sequences (Espeholt et al. 2018, Fig. 3).
IMPALA_CHANNELS: tuple[int, ...] = (16, 32, 32)
#: Width of the fully connected layer after the conv sequences.
IMPALA_FEATURES_DIM = 256
#: Adam epsilon of CleanRL's ``ppo_procgen.py`` (PyTorch default is 1e-8).
ADAM_EPS = 1e-5


class ResidualBlock(nn.Module):
    """``x + conv1(relu(conv0(relu(x))))`` with channel count kept.

    The ReLUs are separate, non-inplace modules: an inplace ReLU on ``x`` would
    overwrite the residual branch's input.

    :param channels: Input and output channels ``C``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.relu0 = nn.ReLU()
        self.conv0 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:param x: ``(N, C, H, W)`` float. :return: same shape."""
        return x + self.conv1(self.relu1(self.conv0(self.relu0(x))))


class ConvSequence(nn.Module):
    """3x3 conv, 3x3 max-pool with stride 2 (halves H and W, rounding up), two residual blocks.

    :param in_shape: Input ``(C_in, H, W)``.
    :param out_channels: Output channels ``C_out``.
    """

    def __init__(self, in_shape: tuple[int, int, int], out_channels: int) -> None:
        super().__init__()
        self.in_shape = in_shape
        self.out_channels = out_channels
        self.conv = nn.Conv2d(in_shape[0], out_channels, kernel_size=3, padding=1)
        self.max_pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.res_block0 = ResidualBlock(out_channels)
        self.res_block1 = ResidualBlock(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:param x: ``(N, C_in, H, W)`` float. :return: ``(N, C_out, ceil(H/2), ceil(W/2))``."""
        x = self.max_pool(self.conv(x))
        x = self.res_block1(self.res_block0(x))
        return x

    def get_output_shape(self) -> tuple[int, int, int]:
        _, h, w = self.in_shape
        return (self.out_channels, (h + 1) // 2, (w + 1) // 2)


class ImpalaCNN(BaseFeaturesExtractor):
    """The IMPALA CNN as an SB3 features extractor.

    SB3 scales image observations to ``[0, 1]`` and moves channels first before
    the extractor (``normalize_images=True`` and ``VecTransposeImage``), so the
    input is ``(N, C, H, W)`` float in ``[0, 1]``; for Procgen ``C, H, W = 3, 64, 64``.

    :param observation_space: Channel-first image ``Box`` of shape ``(C, H, W)``.
    :param features_dim: Width of the head (256 in IMPALA and CleanRL).
    :param channels: Channels of the conv sequences.
    """

    def __init__(
        self,
        observation_space: gymnasium.spaces.Box,
        features_dim: int = IMPALA_FEATURES_DIM,
        channels: tuple[int, ...] = IMPALA_CHANNELS,
    ) -> None:
        if (
            not isinstance(observation_space, gymnasium.spaces.Box)
            or len(observation_space.shape) != 3
        ):
            raise ValueError(
                f"ImpalaCNN needs a (C, H, W) image Box, got {observation_space}; "
                "wrap the env with VecTransposeImage (PPO does this for image Boxes)."
            )
        super().__init__(observation_space, features_dim)
        c, h, w = observation_space.shape
        shape: tuple[int, int, int] = (int(c), int(h), int(w))
        conv_seqs = []
        for out_channels in channels:
            seq = ConvSequence(shape, out_channels)
            shape = seq.get_output_shape()
            conv_seqs.append(seq)
        self.conv_seqs = nn.Sequential(*conv_seqs)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.ReLU(),
            nn.Linear(shape[0] * shape[1] * shape[2], features_dim),
            nn.ReLU(),
        )

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """:param observations: ``(N, C, H, W)`` float in ``[0, 1]``.

        :return: ``(N, features_dim)`` float, non-negative.
        """
        return self.head(self.conv_seqs(observations))


def nature_cnn_policy_kwargs(features_dim: int = 512) -> dict[str, Any]:
    """``policy_kwargs`` for SB3's ``CnnPolicy`` with SB3's ``NatureCNN`` (Mnih et al. 2015).

    ``NatureCNN`` builds its ReLUs as ``nn.ReLU`` modules already. Policy and value
    heads are single linear layers on the shared features (``net_arch=[]``), as in
    CleanRL, and Adam uses CleanRL's epsilon.
    """
    return {
        "features_extractor_class": NatureCNN,
        "features_extractor_kwargs": {"features_dim": features_dim},
        "net_arch": [],
        "optimizer_kwargs": {"eps": ADAM_EPS},
    }


def impala_cnn_policy_kwargs(features_dim: int = IMPALA_FEATURES_DIM) -> dict[str, Any]:
    """``policy_kwargs`` for SB3's ``CnnPolicy`` with :class:`ImpalaCNN` (CleanRL's agent).

    ``ortho_init=False`` keeps PyTorch's default initialization in the extractor, as
    OpenAI's and CleanRL's IMPALA agents do. SB3's ``ortho_init`` would give every conv
    an orthogonal sqrt(2) init, and the six residual blocks then add up: a fresh
    network's features have an RMS of about 12 on FruitBot frames instead of 0.06,
    and the project's first FruitBot run, made with it, trailed OpenAI's learning
    curves (``agents/zoo/training/ppo_fruitbot_impala_sb3init``). Call
    :func:`init_baselines_heads` on the built policy for the heads' init.
    """
    return {
        "features_extractor_class": ImpalaCNN,
        "features_extractor_kwargs": {"features_dim": features_dim},
        "net_arch": [],
        "ortho_init": False,
        "optimizer_kwargs": {"eps": ADAM_EPS},
    }


def init_baselines_heads(policy: nn.Module) -> None:
    """Give an SB3 actor-critic's heads OpenAI baselines' init, in place.

    Orthogonal with gain 0.01 for the action logits (a near-uniform first policy) and
    gain 1 for the value, zero biases: what ``ortho_init`` does to the heads, for a
    policy built with ``ortho_init=False`` (:func:`impala_cnn_policy_kwargs`). Meant
    for a freshly built policy of one's own, before training.
    """
    for name, gain in (("action_net", 0.01), ("value_net", 1.0)):
        head = getattr(policy, name, None)
        if not isinstance(head, nn.Linear):
            raise TypeError(f"policy.{name} is {type(head).__name__}, expected nn.Linear.")
        with torch.no_grad():
            nn.init.orthogonal_(head.weight, gain=gain)
            if head.bias is not None:
                head.bias.zero_()


def cnn_policy_kwargs(extractor: str) -> dict[str, Any]:
    """``policy_kwargs`` by name: ``"nature"`` or ``"impala"``."""
    if extractor == "nature":
        return nature_cnn_policy_kwargs()
    if extractor == "impala":
        return impala_cnn_policy_kwargs()
    raise ValueError(f"Unknown extractor {extractor!r}; use 'nature' or 'impala'.")
