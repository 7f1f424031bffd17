"""Tests of adr_rl/extractors.py: shapes, ReLUs as modules, SB3 policy wiring."""

import gymnasium
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.torch_layers import NatureCNN
from torch import nn

from adr_rl.extractors import (
    ConvSequence,
    ImpalaCNN,
    ResidualBlock,
    cnn_policy_kwargs,
    impala_cnn_policy_kwargs,
    nature_cnn_policy_kwargs,
)
from adr_rl_app.envs.procgen import make_procgen_vec_env

OBS_SPACE = gymnasium.spaces.Box(0, 255, (3, 64, 64), np.uint8)


def _replace_relus(module: nn.Module) -> int:
    """Swap every nn.ReLU for nn.Identity in place; returns how many were swapped.

    Max-pools become average pools of the same geometry, so what is left is affine
    unless a functional (hidden) nonlinearity remains.
    """
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, nn.Identity())
            count += 1
        elif isinstance(child, nn.MaxPool2d):
            pool = nn.AvgPool2d(child.kernel_size, child.stride, child.padding)
            setattr(module, name, pool)
        else:
            count += _replace_relus(child)
    return count


@pytest.mark.parametrize("features_dim", [256, 64])
def test_impala_output_shape(features_dim):
    net = ImpalaCNN(OBS_SPACE, features_dim=features_dim)
    x = torch.rand(5, 3, 64, 64)
    y = net(x)
    assert y.shape == (5, features_dim) and net.features_dim == features_dim
    assert (y >= 0).all()


def test_conv_sequence_shapes():
    seq = ConvSequence((3, 64, 64), 16)
    assert seq.get_output_shape() == (16, 32, 32)
    assert seq(torch.rand(2, 3, 64, 64)).shape == (2, 16, 32, 32)
    assert ConvSequence((16, 15, 15), 32).get_output_shape() == (32, 8, 8)


def test_impala_layout_matches_paper():
    net = ImpalaCNN(OBS_SPACE)
    assert [s.out_channels for s in net.conv_seqs] == [16, 32, 32]
    assert sum(isinstance(m, ResidualBlock) for m in net.modules()) == 6
    linear = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(linear) == 1 and linear[0].in_features == 32 * 8 * 8


@pytest.mark.parametrize(
    "make, n_relus",
    [(lambda: ImpalaCNN(OBS_SPACE), 14), (lambda: NatureCNN(OBS_SPACE, 512), 4)],
    ids=["impala", "nature"],
)
def test_every_relu_is_a_module(make, n_relus):
    torch.manual_seed(0)
    net = make()
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == n_relus
    assert not any(r.inplace for r in relus)
    x = torch.rand(4, 3, 64, 64)
    y = net(x)
    # With every ReLU module gated off (and max-pool made linear) the net is affine:
    # no functional relu is left.
    assert _replace_relus(net) == n_relus
    y_lin = net(x)
    assert not torch.allclose(y, y_lin)
    z = torch.rand(4, 3, 64, 64)
    f = lambda a: net(a)  # noqa: E731
    torch.testing.assert_close(f(x + z) - f(z), f(x) - f(torch.zeros_like(x)), atol=1e-4, rtol=0)


def test_impala_gradients_flow():
    net = ImpalaCNN(OBS_SPACE)
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    net(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name, cls", [("nature", NatureCNN), ("impala", ImpalaCNN)])
def test_policy_kwargs_build_ppo(name, cls):
    venv = make_procgen_vec_env("coinrun", n_envs=1, seed=0)
    model = PPO("CnnPolicy", venv, n_steps=8, batch_size=8, policy_kwargs=cnn_policy_kwargs(name))
    assert isinstance(model.policy.features_extractor, cls)
    assert model.policy.action_net.in_features == model.policy.features_extractor.features_dim
    assert model.policy.optimizer.defaults["eps"] == 1e-5
    action, _ = model.predict(venv.reset())
    assert venv.action_space.contains(int(action[0]))
    venv.close()


def test_policy_kwargs_helpers():
    assert nature_cnn_policy_kwargs()["features_extractor_class"] is NatureCNN
    assert impala_cnn_policy_kwargs(128)["features_extractor_kwargs"] == {"features_dim": 128}
    with pytest.raises(ValueError, match="impala"):
        cnn_policy_kwargs("resnet")
    with pytest.raises(ValueError, match="VecTransposeImage"):
        ImpalaCNN(gymnasium.spaces.Box(0, 1, (64,), np.float32))
