"""Tests of ``adr_rl.maximize``: values, invariants, errors and the user's network state."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stable_baselines3.common.torch_layers import NatureCNN
from torch import nn

from adr_rl import METHODS, ADRConfig, NonReluNetworkError, ReluSurrogate, maximize
from tests.nets import FunctionalReluNet, SharedReluNet, SmallResNet, mlp

DETERMINISTIC = ("gd", "pgd", "fgsm", "adam")
FAST = dict(steps=15)


def _rand(shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=dtype) * 2 - 1).to(dtype)


# -- the surrogate reproduces the network at its own pattern (Prop. 5.1) ---------------
@pytest.mark.parametrize(
    "net, shape",
    [
        (mlp(), (5, 4)),
        (mlp(inplace=True), (5, 4)),
        (SmallResNet(), (3, 3, 8, 8)),
        (SharedReluNet(), (4, 3)),
    ],
    ids=["mlp", "mlp-inplace", "resnet", "shared-relu"],
)
def test_surrogate_equals_network_at_its_pattern(net, shape):
    x = _rand(shape)
    expected = net(x)
    with ReluSurrogate(net) as s:
        real, signs = s.real(lambda: net(x))
        hard, zs = s.gated(lambda: net(x), [p.float() for p in signs])
        soft, _ = s.gated(
            lambda: net(x), [torch.sigmoid(20.0 * (2 * p.float() - 1)) for p in signs]
        )
        off, _ = s.gated(lambda: net(x), [torch.zeros_like(p, dtype=torch.float32) for p in signs])
    torch.testing.assert_close(real, expected)
    torch.testing.assert_close(hard, expected)
    torch.testing.assert_close(soft, expected, rtol=1e-5, atol=1e-5)
    assert len(signs) == len(zs) == len(s.sites)
    # All gates off: the network is affine with the ReLU outputs replaced by zero.
    assert not torch.allclose(off, expected)


def test_nature_cnn_sites_and_self_check():
    from gymnasium import spaces

    space = spaces.Box(0, 255, (3, 64, 64), dtype="uint8")
    torch.manual_seed(0)
    cnn = NatureCNN(space, features_dim=16)
    x = torch.rand(2, 3, 64, 64)
    with ReluSurrogate(cnn) as s:
        _, signs = s.real(lambda: cnn(x))
        out, _ = s.gated(lambda: cnn(x), [p.float() for p in signs])
    assert [site.shape for site in s.sites] == [(32, 15, 15), (64, 6, 6), (64, 4, 4), (16,)]
    torch.testing.assert_close(out, cnn(x))
    res = maximize(lambda x: cnn(x).sum(1), x, 0.0, 1.0, steps=3, method="adr", network=cnn)
    assert (res.value >= res.initial_value).all()


def test_impala_cnn_sites_and_adr_steps():
    from gymnasium import spaces

    from adr_rl.extractors import ImpalaCNN

    torch.manual_seed(0)
    cnn = ImpalaCNN(spaces.Box(0, 255, (3, 64, 64), dtype="uint8"), features_dim=8)
    x = torch.rand(2, 3, 64, 64)
    with ReluSurrogate(cnn) as s:
        _, signs = s.real(lambda: cnn(x))
        out, _ = s.gated(lambda: cnn(x), [p.float() for p in signs])
    assert len(s.sites) == 3 * 2 * 2 + 2  # two ReLUs per residual block, two in the head
    torch.testing.assert_close(out, cnn(x))
    res = maximize(
        lambda x: cnn(x)[:, 0],
        x,
        (x - 4 / 255).clamp(0, 1),
        (x + 4 / 255).clamp(0, 1),
        steps=3,
        method="adr",
        network=cnn,
    )
    assert (res.value >= res.initial_value).all()


def test_gated_with_site_function_matches_gates():
    net, x = SmallResNet(), _rand((3, 3, 8, 8))
    with ReluSurrogate(net) as s:
        with pytest.raises(ValueError, match="real"):
            s.gated(lambda: net(x), lambda i, z: z)
        _, signs = s.real(lambda: net(x))
        gates = [
            torch.rand(p.shape, generator=torch.Generator().manual_seed(i))
            for i, p in enumerate(signs)
        ]
        by_tensor, zs = s.gated(lambda: net(x), gates)
        by_fn, zs_fn = s.gated(lambda: net(x), lambda i, z: gates[i] * z)
    torch.testing.assert_close(by_fn, by_tensor, rtol=0, atol=0)
    assert len(zs_fn) == len(zs) == len(signs)


@pytest.mark.parametrize("method", ["adr", "adr_sync"])
def test_adr_does_not_depend_on_input_memory_layout(method):
    """Channels-last inputs (Procgen observations) take ADR's layout-matched buffers;
    the iterates are the same as for contiguous inputs up to float rounding."""
    net = SmallResNet().double()
    x = _rand((4, 3, 8, 8), dtype=torch.float64)
    kwargs = dict(steps=8, method=method, network=net, objective=lambda out, x: out[:, 0])
    res = maximize(net, x, x - 0.05, x + 0.05, **kwargs)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    res_cl = maximize(net, x_cl, x_cl - 0.05, x_cl + 0.05, **kwargs)
    torch.testing.assert_close(res_cl.x, res.x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(res_cl.value, res.value, rtol=1e-9, atol=1e-9)


# -- results: inside the box, never worse than x0 ----------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(METHODS),
    seed=st.integers(0, 10_000),
    batch=st.integers(1, 4),
    half_width=st.floats(0.0, 2.0),
)
def test_result_inside_box_and_never_worse(method, seed, batch, half_width):
    net = mlp(seed=seed % 7)
    center = _rand((batch, 4), seed)
    lower = center - half_width
    upper = center + torch.linspace(0, half_width, 4)  # per-coordinate tensor bounds
    res = maximize(net, center, lower, upper, steps=12, method=method, seed=seed)
    assert res.x.shape == center.shape and res.x.dtype == center.dtype
    assert (res.x >= lower).all() and (res.x <= upper).all()
    assert (res.value >= res.initial_value).all()
    torch.testing.assert_close(res.value, net(res.x).squeeze(1))  # the TRUE value at res.x
    torch.testing.assert_close(res.initial_value, net(center).squeeze(1))


@pytest.mark.parametrize("method", ["adr", "adr_sync", "gd", "adam", "restart_gd", "perturbed_gd"])
def test_methods_improve_a_random_network(method):
    from adr_rl_app.eval.random_relu import random_relu_net

    net = random_relu_net((10, 64, 64, 1), seed=3)
    x0 = torch.zeros(2, 10)
    res = maximize(net, x0, -1.0, 1.0, steps=200, method=method, seed=0)
    assert (res.value > res.initial_value + 1.0).all()


@pytest.mark.parametrize(
    "options",
    [
        dict(restart_every=7),
        dict(aggregate="sum", normalization="none"),
        dict(objective_scale="grad", resync_freq=3),
        dict(use_constraint=False, use_eta_step=False, use_noise=False),
    ],
)
def test_adr_options_keep_the_invariants(options):
    net = mlp(seed=4)
    x0 = _rand((3, 4), seed=5) * 0.3
    res = maximize(net, x0, x0 - 0.5, x0 + 0.5, steps=30, method="adr", config=ADRConfig(**options))
    assert (res.x >= x0 - 0.5 - 1e-7).all() and (res.x <= x0 + 0.5 + 1e-7).all()
    assert (res.value >= res.initial_value).all()
    torch.testing.assert_close(res.value, net(res.x).squeeze(1))


@pytest.mark.parametrize("method", ["adr", "adr_sync"])
def test_adr_runs_free_their_buffers(method):
    """Each run's gate state and activations are released when it returns: a reference
    cycle through autograd's C++ nodes once kept them alive, and a long attacked rollout
    ran out of memory."""
    import gc
    import warnings

    def live_tensors() -> int:
        gc.collect()
        with warnings.catch_warnings():  # isinstance on torch.distributed's deprecated names
            warnings.simplefilter("ignore", FutureWarning)
            return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))

    net = mlp(seed=4)
    x0 = _rand((8, 4), seed=5)
    maximize(net, x0, x0 - 0.5, x0 + 0.5, steps=5, method=method)  # warm-up
    before = live_tensors()
    for _ in range(3):
        res = maximize(net, x0, x0 - 0.5, x0 + 0.5, steps=5, method=method)
    del res
    assert live_tensors() <= before


def test_adr_config_rejects_bad_values():
    with pytest.raises(ValueError, match="eta_min"):
        ADRConfig(eta_min=0.6)
    with pytest.raises(ValueError, match="perturb_freq"):
        ADRConfig(perturb_freq=0)
    with pytest.raises(ValueError, match="c_min"):
        ADRConfig(c_init=100.0)


def test_history_is_monotone_and_ends_at_value():
    net = mlp()
    res = maximize(net, _rand((3, 4)), -1.0, 1.0, steps=20, method="adr", record_history=True)
    assert res.history.shape == (21, 3)
    assert (res.history[1:] >= res.history[:-1]).all()
    torch.testing.assert_close(res.history[-1], res.value)
    torch.testing.assert_close(res.history[0], res.initial_value)


def test_objective_callable_with_network_kwarg():
    """A critic-like function: the optimized input is only part of the network's input."""
    critic = mlp((3 + 2, 32, 32, 1), seed=1)
    s = _rand((6, 3), seed=2)
    a0 = _rand((6, 2), seed=3) * 0.5
    q = lambda a: critic(torch.cat([s, a], dim=1))  # noqa: E731
    res = maximize(q, a0, -1.0, 1.0, steps=30, method="adr", network=critic, seed=0)
    assert (res.value >= q(a0).squeeze(1) - 1e-6).all()
    torch.testing.assert_close(res.value, q(res.x).squeeze(1))


def test_objective_reduces_multi_output():
    net = mlp((4, 16, 3))
    x0 = _rand((2, 4))
    res = maximize(
        net, x0, -1.0, 1.0, steps=10, method="gd", objective=lambda out, x: out[:, 1] - out[:, 0]
    )
    out = net(res.x)
    torch.testing.assert_close(res.value, out[:, 1] - out[:, 0])


# -- batching and reproducibility --------------------------------------------------------
@pytest.mark.parametrize("method", DETERMINISTIC + ("adr",))
def test_batched_call_equals_per_problem_calls(method):
    net = mlp(dtype=torch.float64)
    x0 = _rand((5, 4), dtype=torch.float64) * 0.5
    config = ADRConfig(use_noise=False) if method == "adr" else None
    batched = maximize(net, x0, -1.0, 1.0, steps=25, method=method, config=config)
    for i in range(5):
        single = maximize(net, x0[i : i + 1], -1.0, 1.0, steps=25, method=method, config=config)
        torch.testing.assert_close(single.x[0], batched.x[i])
        torch.testing.assert_close(single.value[0], batched.value[i])


@pytest.mark.parametrize("method", METHODS)
def test_seeded_runs_are_reproducible(method):
    net = mlp()
    x0 = _rand((3, 4))
    a = maximize(net, x0, -1.0, 1.0, steps=40, method=method, seed=7)
    b = maximize(net, x0, -1.0, 1.0, steps=40, method=method, seed=7)
    assert torch.equal(a.x, b.x) and torch.equal(a.value, b.value)


def test_seed_changes_randomized_methods():
    net = mlp((4, 32, 32, 1), seed=2)
    x0 = torch.zeros(4, 4)
    a = maximize(net, x0, -1.0, 1.0, steps=60, method="random", seed=1)
    b = maximize(net, x0, -1.0, 1.0, steps=60, method="random", seed=2)
    assert not torch.equal(a.x, b.x)


def test_fgsm_moves_to_the_corner_the_gradient_points_at():
    lin = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    with torch.no_grad():
        lin[0].weight.copy_(torch.eye(4, 3))
        lin[0].bias.fill_(1.0)
        lin[2].weight.copy_(torch.tensor([[1.0, -1.0, 2.0, 0.0]]))
        lin[2].bias.zero_()
    x0 = torch.zeros(1, 3)
    res = maximize(lin, x0, -0.5, 0.5, method="fgsm")
    torch.testing.assert_close(res.x, torch.tensor([[0.5, -0.5, 0.5]]))
    assert res.steps == 1


# -- errors ----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["adr", "adr_sync"])
def test_error_network_without_relu(method):
    with pytest.raises(NonReluNetworkError, match="no nn.ReLU"):
        maximize(nn.Sequential(nn.Linear(3, 1)), torch.zeros(1, 3), -1.0, 1.0, 2, method)


def test_error_other_activation_module():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1))
    with pytest.raises(NonReluNetworkError, match="Tanh"):
        maximize(net, torch.zeros(1, 3), -1.0, 1.0, steps=2)


@pytest.mark.parametrize("method", ["adr", "adr_sync"])
def test_error_functional_relu(method):
    with pytest.raises(NonReluNetworkError, match="F.relu"):
        maximize(FunctionalReluNet(), torch.zeros(1, 3), -1.0, 1.0, steps=2, method=method)


class _OnlyFunctional(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.l1, self.l2 = nn.Linear(3, 8), nn.Linear(8, 1)

    def forward(self, x):
        return self.l2(torch.relu(self.l1(x)))


def test_error_functional_relu_only():
    with pytest.raises(NonReluNetworkError, match="no nn.ReLU"):
        maximize(_OnlyFunctional(), torch.zeros(1, 3), -1.0, 1.0, steps=2)


def _tanh_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))


@pytest.mark.parametrize("method", [m for m in METHODS if m not in ("adr", "adr_sync")])
@pytest.mark.parametrize("make", [_tanh_net, FunctionalReluNet, _OnlyFunctional])
def test_baselines_take_any_differentiable_network(method, make):
    """Only ADR relaxes ReLUs; the baselines need gradients (or samples), nothing else."""
    net = make()
    x0 = _rand((4, 3), seed=1) * 0.5
    before = _snapshot(net)
    res = maximize(net, x0, -1.0, 1.0, steps=20, method=method, seed=0)
    with torch.no_grad():
        start, end = net(x0).squeeze(1), net(res.x).squeeze(1)
    assert torch.all(res.x >= -1.0) and torch.all(res.x <= 1.0)
    torch.testing.assert_close(res.value, end)  # the value is the true objective at res.x
    assert torch.all(res.value >= start)
    if method in ("gd", "pgd", "adam", "restart_gd", "perturbed_gd", "cem"):
        assert res.value.mean() > start.mean() + 1e-3  # it optimizes, not just returns x0
    after = _snapshot(net)
    assert before["requires_grad"] == after["requires_grad"]
    assert before["training"] == after["training"] and before["hooks"] == after["hooks"]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(lower=torch.zeros(3), upper=1.0), ValueError, "does not broadcast"),
        (dict(lower=-1.0, upper=torch.ones(2, 7)), ValueError, "does not broadcast"),
        (dict(lower=1.0, upper=-1.0), ValueError, "lower > upper"),
        (dict(lower=0.5, upper=1.0), ValueError, "outside"),
        (dict(steps=-1), ValueError, "steps"),
        (dict(method="sgd"), ValueError, "unknown method"),
        (dict(lr=-0.1), ValueError, "lr"),
        (dict(method="adam", config=ADRConfig()), TypeError, "AdamConfig"),
        (dict(lower=float("nan")), ValueError, "NaN"),
    ],
)
def test_errors_name_the_problem(kwargs, error, match):
    net = mlp()
    kwargs = {"lower": -1.0, "upper": 1.0, "steps": 2} | kwargs
    with pytest.raises(error, match=match):
        maximize(net, torch.zeros(2, 4), **kwargs)


def test_error_nan_and_dtype_and_shape_of_x0():
    net = mlp()
    with pytest.raises(ValueError, match="NaN"):
        maximize(net, torch.tensor([[0.0, float("nan"), 0.0, 0.0]]), -1.0, 1.0)
    with pytest.raises(TypeError, match="floating-point"):
        maximize(net, torch.zeros(1, 4, dtype=torch.int64), -1, 1)
    with pytest.raises(ValueError, match="batch dimension"):
        maximize(net, torch.zeros(4), -1.0, 1.0)
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        maximize(mlp((4, 8, 3)), torch.zeros(2, 4), -1.0, 1.0, steps=2)


def test_error_unbounded_box_for_sampling_methods():
    with pytest.raises(ValueError, match="finite"):
        maximize(mlp(), torch.zeros(1, 4), method="random", steps=2)


def test_unbounded_box_is_fine_for_gradient_methods():
    res = maximize(mlp(), torch.zeros(1, 4), method="gd", steps=5)
    assert torch.isfinite(res.x).all()


# -- the user's network is left exactly as it was -----------------------------------------
def _snapshot(net: nn.Module):
    return {
        "state": copy.deepcopy(net.state_dict()),
        "requires_grad": [p.requires_grad for p in net.parameters()],
        "grad": [None if p.grad is None else p.grad.clone() for p in net.parameters()],
        "training": [m.training for m in net.modules()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in net.modules()
        ],
    }


def _prepare_user_network():
    net = nn.Sequential(
        nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1)
    )
    net.train()
    net[3].eval()  # a mixed training state must survive exactly
    net[0].weight.requires_grad_(False)
    net(torch.randn(2, 4)).sum().backward()  # leaves .grad on the trainable parameters
    calls = []
    net[4].register_forward_hook(lambda m, i, o: calls.append(1))
    return net, calls


@pytest.mark.parametrize("method", METHODS)
def test_network_state_untouched(method):
    net, calls = _prepare_user_network()
    before = _snapshot(net)
    maximize(net, torch.zeros(2, 4), -1.0, 1.0, steps=5, method=method)
    after = _snapshot(net)
    for key in ("requires_grad", "training", "hooks"):
        assert before[key] == after[key], key
    for k in before["state"]:
        assert torch.equal(before["state"][k], after["state"][k])
    for g0, g1 in zip(before["grad"], after["grad"], strict=True):
        assert (g0 is None and g1 is None) or torch.equal(g0, g1)
    n = len(calls)
    net(torch.zeros(1, 4))
    assert len(calls) == n + 1  # the user's hook still fires


def test_network_state_untouched_after_exception():
    net, _ = _prepare_user_network()
    before = _snapshot(net)
    count = {"n": 0}

    def objective(out, x):
        count["n"] += 1
        if count["n"] == 6:
            raise RuntimeError("boom")
        return out.squeeze(1)

    with pytest.raises(RuntimeError, match="boom"):
        maximize(net, torch.zeros(2, 4), -1.0, 1.0, steps=10, method="adr", objective=objective)
    after = _snapshot(net)
    for key in ("requires_grad", "training", "hooks"):
        assert before[key] == after[key], key
    for k in before["state"]:
        assert torch.equal(before["state"][k], after["state"][k])


def test_dropout_is_off_during_optimization():
    """Eval mode inside: a net in train mode with dropout gives a deterministic answer."""
    net, _ = _prepare_user_network()
    a = maximize(net, torch.zeros(2, 4), -1.0, 1.0, steps=10, method="gd")
    b = maximize(net, torch.zeros(2, 4), -1.0, 1.0, steps=10, method="gd")
    assert torch.equal(a.x, b.x)
    net.eval()
    torch.testing.assert_close(a.value, net(a.x).squeeze(1))


# -- CUDA ------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["adr", "gd", "pgd", "adam"])
def test_cuda_matches_cpu(method):
    net = mlp(dtype=torch.float64)
    x0 = _rand((4, 4), dtype=torch.float64) * 0.5
    config = ADRConfig(use_noise=False) if method == "adr" else None
    cpu = maximize(net, x0, -1.0, 1.0, steps=20, method=method, config=config)
    gpu = maximize(net.cuda(), x0.cuda(), -1.0, 1.0, steps=20, method=method, config=config)
    assert gpu.x.device.type == "cuda"
    torch.testing.assert_close(gpu.x.cpu(), cpu.x, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gpu.value.cpu(), cpu.value, rtol=1e-6, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_impala_cnn_adr_matches_cpu():
    """ADR on a residual CNN (IMPALA) on CUDA: same iterates as on CPU, in float64."""
    from gymnasium import spaces

    from adr_rl.extractors import ImpalaCNN

    torch.manual_seed(0)
    cnn = ImpalaCNN(spaces.Box(0, 255, (3, 64, 64), dtype="uint8"), features_dim=8).double()
    x = torch.rand(3, 3, 64, 64, dtype=torch.float64)
    lo, hi = (x - 4 / 255).clamp(0, 1), (x + 4 / 255).clamp(0, 1)
    config = ADRConfig(use_noise=False)

    def run(net, x, lo, hi):
        return maximize(
            lambda z: net(z)[:, 0], x, lo, hi, steps=5, method="adr", network=net, config=config
        )

    cpu = run(cnn, x, lo, hi)
    gpu = run(cnn.cuda(), x.cuda(), lo.cuda(), hi.cuda())
    assert gpu.x.device.type == "cuda"
    assert ((gpu.x >= lo.cuda()) & (gpu.x <= hi.cuda())).all()
    torch.testing.assert_close(gpu.x.cpu(), cpu.x, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gpu.value.cpu(), cpu.value, rtol=1e-6, atol=1e-6)


def test_plain_surrogate_installs_no_hooks_and_refuses_gating():
    """relax=False (every method but ADR): frozen and restored, but nothing hooked."""
    net = _tanh_net()
    x = torch.zeros(2, 3)
    with ReluSurrogate([net], relax=False) as s:
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
        assert all(not p.requires_grad for p in net.parameters())
        out, records = s.real(lambda: net(x))
        torch.testing.assert_close(out, net(x))
        assert records == []
        with pytest.raises(RuntimeError, match="relax=True"):
            s.gated(lambda: net(x), [])
        with pytest.raises(RuntimeError, match="relax=True"):
            s.scan_nonlinearities(lambda: net(x))
    assert all(p.requires_grad for p in net.parameters())


def test_threads_default_to_one_for_small_problems_and_are_restored():
    """Small CPU problems run on one thread (threads=None), an explicit count is used,
    and the process's setting is back after the call, also after an error."""
    from adr_rl.machine import SMALL_WORK_ELEMENTS, threads_for

    seen = []

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return self.lin(x)

    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        net = Probe()
        maximize(net, torch.zeros(4, 3), -1.0, 1.0, steps=2, method="gd")
        assert set(seen) == {1} and torch.get_num_threads() == 2
        seen.clear()
        maximize(net, torch.zeros(4, 3), -1.0, 1.0, steps=2, method="gd", threads=2)
        assert set(seen) == {2}
        big = torch.zeros(SMALL_WORK_ELEMENTS // 3 + 1, 3)
        assert threads_for(big) is None and threads_for(torch.zeros(2, 3)) == 1
        with pytest.raises(ValueError, match="threads must be a positive int"):
            maximize(net, torch.zeros(4, 3), -1.0, 1.0, steps=2, method="gd", threads=0)
        with pytest.raises(ValueError, match="objective must have shape"):
            maximize(
                lambda x: net(x).expand(4, 2),
                torch.zeros(4, 3),
                -1.0,
                1.0,
                network=net,
                method="gd",
            )
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)
