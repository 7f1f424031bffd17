"""Bounds of CNN policies over an L-inf ball (adr_rl/certify/cnn.py): soundness on sampled
points, CROWN never looser than IBP, exactness at eps 0, monotone stability, max-pool
argmax certificates, errors, and the module left untouched."""

from __future__ import annotations

import gymnasium
import pytest
import torch
from stable_baselines3.common.torch_layers import NatureCNN
from torch import nn

from adr_rl.certify import (
    CNN_BOUND_METHODS,
    UnsupportedLayerError,
    cnn_bounds,
    cnn_ops,
    cnn_preactivations,
)
from adr_rl.extractors import ImpalaCNN

TOL = 1e-9


def impala_net(seed: int = 0) -> list[nn.Module]:
    """ImpalaCNN (conv, max-pool, residual blocks, flatten-relu-linear-relu) on 3x8x8
    inputs with 2 and 3 channels, and a 4-action linear head."""
    torch.manual_seed(seed)
    space = gymnasium.spaces.Box(0, 255, (3, 8, 8), dtype="uint8")
    return [ImpalaCNN(space, features_dim=8, channels=(2, 3)), nn.Linear(8, 4)]


def small_nature(seed: int = 0) -> nn.Module:
    """SB3's NatureCNN layer pattern (8x8/4, 4x4/2, 3x3/1 convs, linear) with few channels."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 8, stride=4),
        nn.ReLU(),
        nn.Conv2d(4, 6, 4, stride=2),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, stride=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6, 10),
        nn.ReLU(),
        nn.Identity(),
        nn.Linear(10, 5),
    )


def sb3_nature(seed: int = 0) -> list[nn.Module]:
    """SB3's own NatureCNN class at its smallest input (36x36) and 16 features."""
    torch.manual_seed(seed)
    space = gymnasium.spaces.Box(0, 255, (3, 36, 36), dtype="uint8")
    return [NatureCNN(space, features_dim=16), nn.Linear(16, 3)]


NETS = {
    "impala": (impala_net, (3, 8, 8)),
    "nature_small": (lambda: [small_nature()], (3, 36, 36)),
    "sb3_nature": (sb3_nature, (3, 36, 36)),
}


def ball_samples(x: torch.Tensor, eps: float, n: int, seed: int) -> torch.Tensor:
    """``(n, *x.shape[1:])``: half random corners, half uniform interior points of the
    ball around ``x[0]`` intersected with [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x0 = x[0].to(torch.float64)
    signs = 2 * torch.randint(0, 2, (n // 2, *x0.shape), generator=g).to(x0.dtype) - 1
    corners = x0 + eps * signs  # float64: an int tensor times eps would be float32
    inner = x0 + eps * (2 * torch.rand((n - n // 2, *x0.shape), generator=g, dtype=x0.dtype) - 1)
    return torch.cat([corners, inner]).clamp(0, 1)


def images(shape: tuple[int, ...], n: int = 2, seed: int = 0) -> torch.Tensor:
    """Pixel-like inputs: k/255 with some saturated pixels (the valid-range clip matters)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), generator=g).to(torch.float64) / 255.0


def sites_of(module_list: list[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """Pre-activations recorded by forward hooks on every nn.ReLU of the real modules."""
    seen: list[torch.Tensor] = []
    handles = [
        m.register_forward_hook(lambda _m, inp, _out: seen.append(inp[0].detach().double()))
        for mod in module_list
        for m in mod.modules()
        if isinstance(m, nn.ReLU)
    ]
    try:
        with torch.no_grad():
            h = x.double()
            for mod in module_list:
                mod.double()
                h = mod(h)
                mod.float()
    finally:
        for handle in handles:
            handle.remove()
    return seen


@pytest.mark.parametrize("name", list(NETS))
def test_preactivations_match_the_module(name):
    make, shape = NETS[name]
    net = make()
    x = images(shape, n=3)
    pre, out = cnn_preactivations(net, x)
    ref = sites_of(net, x)
    assert len(pre) == len(ref) and len(pre) > 0
    for a, b in zip(pre, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("method", CNN_BOUND_METHODS)
@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("eps", [1 / 255, 8 / 255, 0.1])
def test_bounds_contain_every_sampled_point(name, method, eps):
    make, shape = NETS[name]
    net = make()
    x = images(shape, n=1, seed=1)
    b = cnn_bounds(net, x, eps, method=method)
    pts = ball_samples(x, eps, 2000, seed=2)
    pre, out = cnn_preactivations(net, pts)
    assert len(pre) == len(b.lower)
    for z, lo, hi in zip(pre, b.lower, b.upper, strict=True):
        assert (z >= lo - TOL).all() and (z <= hi + TOL).all()
    assert (out >= b.output_lower - TOL).all() and (out <= b.output_upper + TOL).all()


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("eps", [1 / 255, 4 / 255, 0.05])
def test_crown_is_never_looser_than_interval(name, eps):
    make, shape = NETS[name]
    net = make()
    x = images(shape, n=2, seed=3)
    ibp = cnn_bounds(net, x, eps, method="interval")
    crown = cnn_bounds(net, x, eps, method="crown")
    for a, b in zip(ibp.lower, crown.lower, strict=True):
        assert (b >= a).all()
    for a, b in zip(ibp.upper, crown.upper, strict=True):
        assert (b <= a).all()
    assert (crown.output_lower >= ibp.output_lower).all()
    assert (crown.output_upper <= ibp.output_upper).all()
    assert (crown.stable_share() >= ibp.stable_share()).all()


@pytest.mark.parametrize("method", CNN_BOUND_METHODS)
@pytest.mark.parametrize("name", list(NETS))
def test_eps_zero_gives_the_exact_values_and_full_stability(name, method):
    make, shape = NETS[name]
    net = make()
    x = images(shape, n=2, seed=4)
    b = cnn_bounds(net, x, 0.0, method=method)
    pre, out = cnn_preactivations(net, x)
    for z, lo, hi in zip(pre, b.lower, b.upper, strict=True):
        torch.testing.assert_close(lo, z, rtol=0, atol=1e-12)
        torch.testing.assert_close(hi, z, rtol=0, atol=1e-12)
    torch.testing.assert_close(b.output_lower, out, rtol=0, atol=1e-12)
    assert (b.stable_share() == 1.0).all()
    assert b.all_stable().all()


@pytest.mark.parametrize("method", CNN_BOUND_METHODS)
@pytest.mark.parametrize("name", list(NETS))
def test_stable_share_is_non_increasing_in_eps(name, method):
    make, shape = NETS[name]
    net = make()
    x = images(shape, n=2, seed=5)
    shares = [
        cnn_bounds(net, x, eps, method=method).stable_share()
        for eps in (0.0, 1e-4, 1 / 255, 4 / 255, 0.1, 0.5)
    ]
    assert (shares[0] == 1).all()
    for a, b in zip(shares, shares[1:], strict=False):
        assert (b <= a + 1e-12).all()
    assert (shares[-1] < 1).all()


@pytest.mark.parametrize("name", list(NETS))
def test_one_region_means_affine_on_the_ball(name):
    """Where the certificate says one region, the network is affine on the ball: its value
    at the midpoint of two sampled points is the mean of its values there (tiny eps, so
    that the certificate holds); at a large eps the same check fails."""
    make, shape = NETS[name]
    net = make()
    x = images(shape, n=1, seed=6)

    def midpoint_gap(eps: float) -> float:
        pts = ball_samples(x, eps, 400, seed=7)
        p, q = pts[:200], pts[200:]
        f = lambda v: cnn_preactivations(net, v)[1]  # noqa: E731
        return float((f((p + q) / 2) - (f(p) + f(q)) / 2).abs().max())

    for method in CNN_BOUND_METHODS:
        assert cnn_bounds(net, x, 1e-6, method=method).one_region().item()
    assert midpoint_gap(1e-6) < 1e-12
    assert not cnn_bounds(net, x, 0.5, method="crown").one_region().item()
    assert midpoint_gap(0.5) > 1e-6


def test_max_pool_argmax_certificate():
    pool = nn.Sequential(nn.MaxPool2d(2, stride=2))
    x = torch.tensor([[[[0.9, 0.1, 0.5, 0.5], [0.2, 0.3, 0.1, 0.1]]]], dtype=torch.float64)
    b = cnn_bounds(pool, x, 0.01, method="interval")
    # window 1: 0.9 beats 0.3 + 0.02; window 2: a tie that any perturbation breaks
    assert b.pool_fixed[0].tolist() == [[True, False]]
    assert b.pools_fixed().tolist() == [False]
    assert b.all_stable().tolist() == [True]  # no ReLU at all
    assert b.one_region().tolist() == [False]
    wide = cnn_bounds(pool, x, 0.4, method="interval")
    assert wide.pool_fixed[0].tolist() == [[False, False]]
    torch.testing.assert_close(b.output_upper, torch.tensor([[[[0.91, 0.51]]]]).double())


def test_valid_range_is_intersected():
    net = [small_nature()]
    x = torch.zeros(1, 3, 36, 36, dtype=torch.float64)
    clipped = cnn_bounds(net, x, 0.1, method="interval")
    half = cnn_bounds(net, x + 0.05, 0.05, method="interval")  # the same box [0, 0.1]
    for a, b in zip(clipped.lower, half.lower, strict=True):
        torch.testing.assert_close(a, b)
    free = cnn_bounds(net, x, 0.1, method="interval", valid_range=None)
    assert (free.upper[0] - free.lower[0]).sum() > (clipped.upper[0] - clipped.lower[0]).sum()


@pytest.mark.parametrize(
    ("module", "name"),
    [
        (nn.Sequential(nn.Conv2d(3, 2, 3), nn.Tanh()), "Tanh"),
        (nn.Sequential(nn.AvgPool2d(2)), "AvgPool2d"),
        (nn.LSTM(3, 3), "LSTM"),
    ],
)
def test_unsupported_modules_raise_a_type_error_naming_them(module, name):
    with pytest.raises(UnsupportedLayerError, match=name) as info:
        cnn_ops(module)
    assert isinstance(info.value, TypeError)
    assert "supported" in str(info.value)


def test_bad_arguments():
    net = [small_nature()]
    x = images((3, 36, 36), n=1)
    with pytest.raises(ValueError, match="method"):
        cnn_bounds(net, x, 0.1, method="lp")
    with pytest.raises(ValueError, match="eps"):
        cnn_bounds(net, x, -1.0)
    with pytest.raises(ValueError, match="B, C, H, W"):
        cnn_bounds(net, x[0], 0.1)
    with pytest.raises(UnsupportedLayerError, match="padding"):
        cnn_ops(nn.Conv2d(3, 2, 3, padding="same"))


@pytest.mark.parametrize("method", CNN_BOUND_METHODS)
def test_the_module_is_untouched(method):
    net = impala_net()
    net[0].train()
    net[1].eval()
    net[1].weight.requires_grad_(False)
    calls = []
    handle = net[0].register_forward_hook(lambda *a: calls.append(1))
    before = [[p.detach().clone() for p in m.parameters()] for m in net]
    grads = [[p.requires_grad for p in m.parameters()] for m in net]
    cnn_bounds(net, images((3, 8, 8), n=1), 2 / 255, method=method)
    assert calls == []
    handle.remove()
    assert net[0].training and not net[1].training
    assert [[p.requires_grad for p in m.parameters()] for m in net] == grads
    for m, old in zip(net, before, strict=True):
        for p, q in zip(m.parameters(), old, strict=True):
            assert torch.equal(p, q) and p.grad is None and p.dtype == torch.float32


@pytest.mark.procgen
def test_region_stability_script_smoke(tmp_path):
    """The command end to end on one CoinRun frame (subprocess, tiny budget)."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "adr_rl_app.eval.region_stability", "--quick"]
    cmd += ["--n-obs", "2", "--crown-obs", "1", "--eps", "1", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| coinrun | 1 | crown | 1 |" in done.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    case = results["games"]["coinrun"]["eps"]["1"]
    assert len(case["interval"]["stable_share"]) == 2
    assert case["crown"]["summary"]["stable_share_mean"] >= case["interval"]["stable_share"][0]
    assert (tmp_path / "region_stability.png").exists() and (tmp_path / "summary.md").exists()
