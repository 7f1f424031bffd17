"""``maximize(..., compile=True)``: the compiled iteration visits the eager iterates.

Skipped where ``torch.compile`` cannot build CPU code (no C++ compiler); the error for
an unsupported method needs no compiler and always runs.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from adr_rl import ADRConfig, maximize
from adr_rl.optim.compiled import COMPILED_METHODS, compiler_available
from tests.nets import SmallResNet, mlp
from tests.test_adr_reference import CONFIGS

needs_compiler = pytest.mark.skipif(
    not compiler_available(), reason="torch.compile needs a C++ compiler on CPU"
)


def _problem(dtype=torch.float64):
    net = mlp((6, 24, 24, 1), seed=3, dtype=dtype)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(5, 6, generator=g, dtype=dtype) * 1.6 - 0.8
    return net, x0


def _assert_same_run(net, x0, steps, box=(-1.0, 1.0), **kwargs):
    eager = maximize(net, x0, *box, steps=steps, record_history=True, **kwargs)
    compiled = maximize(net, x0, *box, steps=steps, record_history=True, compile=True, **kwargs)
    torch.testing.assert_close(compiled.history, eager.history, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(compiled.x, eager.x, rtol=1e-10, atol=1e-12)
    assert compiled.info["compiled"] and compiled.value.shape == (x0.shape[0],)
    return eager, compiled


WITH_RANDOMNESS = {
    # Noise kicks every 3 steps for every problem, restarts every 5: the eager loop
    # around the compiled step draws the same numbers in the same order.
    "noise-restarts": dataclasses.replace(
        CONFIGS["soft-gates"],
        use_noise=True,
        perturb_freq=3,
        grad_threshold=1e9,
        noise_scale=0.05,
        restart_every=5,
    ),
    "paper-noise": ADRConfig(perturb_freq=4, grad_threshold=1e9),
}


@needs_compiler
@pytest.mark.parametrize("name", [*CONFIGS, *WITH_RANDOMNESS])
def test_compiled_adr_visits_the_eager_iterates(name):
    cfg = {**CONFIGS, **WITH_RANDOMNESS}[name]
    net, x0 = _problem()
    lr = 0.05 if cfg.x_step == "sign" else 0.3
    eager, compiled = _assert_same_run(net, x0, 12, method="adr", config=cfg, lr=lr, seed=4)
    assert compiled.info["noise_kicks"] == eager.info["noise_kicks"]
    assert (compiled.value > compiled.initial_value).any()  # the run is not vacuous


@needs_compiler
@pytest.mark.parametrize("method", ["gd", "pgd", "adr_sync"])
def test_compiled_baselines_and_adr_sync_match_eager(method):
    net, x0 = _problem()
    _assert_same_run(net, x0, 10, method=method, lr=0.1)


@needs_compiler
def test_compiled_adr_on_a_residual_cnn():
    net = SmallResNet().double()  # conv, max-pool, residual block with an inplace ReLU
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    _assert_same_run(
        net, x0, 4, method="adr", objective=lambda out, x: out[:, 0], config=CONFIGS["soft-gates"]
    )


@needs_compiler
def test_compiled_adr_breaks_consistency_ties_like_eager():
    """An IMPALA-CNN policy: units that see only zeros share their bias, so the most
    violated unit of a site is often a tie. Both paths must send the consistency
    gradient to the same single unit (spreading it over the tie changes every later
    iterate; sign steps make that visible at once)."""
    from adr_rl.attack import attack_adr_config
    from tests.policies import impala_policy as _impala_policy

    policy = _impala_policy(seed=3).double()
    fe, head = policy.pi_features_extractor, policy.action_net
    actor = policy.mlp_extractor.policy_net
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 256, (6, 3, 16, 16), generator=g).double()
    labels = head(actor(fe(x0 / 255.0))).argmax(dim=1)

    def objective(out, x):
        return torch.nn.functional.cross_entropy(out, labels, reduction="none")

    _assert_same_run(
        lambda x: head(actor(fe(x / 255.0))),
        x0,
        5,
        method="adr_sync",
        config=attack_adr_config("adr_sync"),
        objective=objective,
        network=[fe, actor, head],
        lr=4.0,
        box=((x0 - 8).clamp(0, 255), (x0 + 8).clamp(0, 255)),
    )


@needs_compiler
def test_compiled_run_is_one_graph_per_step_and_keeps_the_invariants_and_the_network():
    net, x0 = _problem(torch.float32)
    x0 = torch.cat([x0, x0[:2] * 0.5])  # a batch size no other test compiles for
    torch._dynamo.utils.counters.clear()
    net.train()
    net[0].weight.requires_grad_(False)
    before = copy.deepcopy(net.state_dict())
    flags = [p.requires_grad for p in net.parameters()]
    res = maximize(net, x0, -0.9, 0.9, steps=20, method="adr_sync", compile=True)
    assert ((res.x >= -0.9) & (res.x <= 0.9)).all()
    assert (res.value >= res.initial_value).all()
    torch.testing.assert_close(res.value, net(res.x).squeeze(1), rtol=1e-5, atol=1e-5)
    assert net.training and [p.requires_grad for p in net.parameters()] == flags
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key])
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    # Compiled for real: new graphs were built and nothing fell back to eager.
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert not torch._dynamo.utils.counters["graph_break"]
    assert not torch._dynamo.config.trace_autograd_ops  # the switch is not left on


@needs_compiler
def test_a_graph_break_is_a_compile_error_that_names_it():
    from adr_rl import CompileError

    net, x0 = _problem()

    def objective(out, x):  # a Python branch on a tensor's value leaves the graph
        if out.sum() > -1e9:
            return out.squeeze(1)
        return -out.squeeze(1)

    with pytest.raises(CompileError, match="one graph"):
        maximize(net, x0, -1.0, 1.0, steps=2, method="gd", objective=objective, compile=True)
    res = maximize(net, x0, -1.0, 1.0, steps=2, method="gd", objective=objective)
    assert res.value.shape == (5,)  # the same objective is fine in eager mode
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


@pytest.mark.parametrize("method", ["adam", "fgsm", "cem", "random", "restart_gd"])
def test_compile_refuses_methods_it_does_not_cover(method):
    net, x0 = _problem()
    with pytest.raises(ValueError, match="compile=True supports adr, adr_sync, gd, pgd"):
        maximize(net, x0, -1.0, 1.0, steps=2, method=method, compile=True)
    assert set(COMPILED_METHODS) == {"adr", "adr_sync", "gd", "pgd"}


@needs_compiler
@pytest.mark.parametrize("method", ["pgd", "adr_sync"])
def test_compiled_observation_attack_matches_eager(method):
    """An IMPALA-CNN policy on uint8 images: the same adversarial observations."""
    import numpy as np

    from adr_rl import ObservationAttack
    from tests.policies import check_invariants as _check_invariants
    from tests.policies import images as _images
    from tests.policies import impala_policy as _impala_policy

    policy = _impala_policy(seed=3)
    obs = _images(6, seed=3)
    eager = ObservationAttack(policy, eps=8, steps=5, method=method).perturb(obs)
    compiled = ObservationAttack(policy, eps=8, steps=5, method=method, compile=True).perturb(obs)
    _check_invariants(obs, compiled.obs, 8)
    # float32 rounding may move a pixel across a .5 before rounding to integers
    assert np.abs(compiled.obs.astype(int) - eager.obs.astype(int)).max() <= 1
    np.testing.assert_allclose(compiled.objective, eager.objective, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(compiled.adv_actions, eager.adv_actions)
    with pytest.raises(ValueError, match="compile=True supports"):
        ObservationAttack(policy, eps=8, steps=5, method="fgsm", compile=True)


@needs_compiler
def test_compiled_action_refinement_matches_eager():
    import numpy as np
    from stable_baselines3 import TD3

    from adr_rl import ActionRefiner
    from adr_rl_app.eval.loading import zoo_path

    model = TD3.load(zoo_path("td3_Pendulum-v1"), device="cpu")
    obs = np.random.default_rng(0).uniform(-1, 1, size=(4, 3)).astype(np.float32)
    eager = ActionRefiner(model, method="adr", steps=10)
    compiled = ActionRefiner(model, method="adr", steps=10, compile=True)
    a, _ = eager.predict(obs, deterministic=True)
    b, _ = compiled.predict(obs, deterministic=True)
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    assert model.action_space.contains(b[0])
    np.testing.assert_allclose(compiled.last_info.q_refined, eager.last_info.q_refined, rtol=1e-5)
    with pytest.raises(ValueError, match="compile=True supports"):
        ActionRefiner(model, method="cem", compile=True)
