"""Tests of the strong attacks: ``maximize(method="apgd")``, the DLR and value losses of
``ObservationAttack``, and ``WorstCaseAttack`` (issue 16)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3 import PPO, TD3
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from adr_rl import ActionRefiner, maximize, network_evaluations
from adr_rl.attack import ObservationAttack, WorstCaseAttack, common_objective, dlr_loss
from adr_rl.online import AttackedPolicy, AttackedVecEnv, AttackStats
from adr_rl.optim.configs import METHODS, AdamConfig, APGDConfig
from tests.policies import (
    check_invariants,
    constant_lr,
    dqn_policy,
    images,
    impala_policy,
    mlp,
)


def _snapshot(module: nn.Module):
    return (
        copy.deepcopy(module.state_dict()),
        [m.training for m in module.modules()],
        [p.requires_grad for p in module.parameters()],
        [None if p.grad is None else p.grad.clone() for p in module.parameters()],
        [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in module.modules()],
    )


def _assert_same(before, after) -> None:
    assert before[1:3] == after[1:3] and before[4] == after[4]
    for k in before[0]:
        assert torch.equal(before[0][k], after[0][k])
    for g0, g1 in zip(before[3], after[3], strict=True):
        assert (g0 is None and g1 is None) or torch.equal(g0, g1)


class _Quadratic(nn.Module):
    """``J(x) = -||x - c||^2`` per problem: concave, its box maximum is ``clip(c)``."""

    def __init__(self, c: torch.Tensor) -> None:
        super().__init__()
        self.c = nn.Parameter(c.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -((x - self.c) ** 2).sum(dim=1)


# --------------------------------------------------------------------------------------
# maximize(method="apgd")
# --------------------------------------------------------------------------------------
def test_apgd_is_a_method_with_two_passes_per_step():
    assert "apgd" in METHODS
    assert network_evaluations("apgd", 10) == 20
    assert network_evaluations("apgd", 10, APGDConfig(n_restarts=3)) == 60


def test_apgd_checkpoints_follow_the_paper():
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99, 1.05 (Croce & Hein 2020, Sec. 3.2)
    cfg = APGDConfig()
    assert cfg.checkpoint_steps(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert cfg.checkpoint_steps(10) == [3, 5, 6, 7, 8, 9]
    assert cfg.checkpoint_steps(1) == []
    assert APGDConfig(checkpoints=(2, 4, 12)).checkpoint_steps(10) == [2, 4]


def test_apgd_reaches_the_box_optimum_of_a_concave_problem():
    torch.manual_seed(0)
    c = torch.randn(6, 5) * 2
    fn = _Quadratic(c)
    x0 = torch.zeros(6, 5)
    res = maximize(fn, x0, -1.0, 1.0, steps=100, method="apgd", record_history=True)
    optimum = c.clamp(-1, 1)
    # Sign steps land on the corner coordinates exactly; inside, the halved step size
    # (8 halvings of 2.0 over 100 steps) sets the precision.
    assert (res.x - optimum).abs().max() < 1e-2
    assert torch.allclose(res.value, fn(optimum), atol=1e-3)
    assert (res.info["halvings"] > 0).all()
    outside = c.abs() > 1
    assert torch.equal(res.x[outside], optimum[outside])
    # The best iterate: never below the start, and the history never goes down.
    assert (res.value >= res.initial_value).all()
    assert res.history is not None and res.history.shape == (101, 6)
    assert (res.history.diff(dim=0) >= 0).all()
    assert res.network_evaluations == 200 and res.steps == 100


def test_apgd_halving_beats_a_fixed_oversized_step():
    """PGD with APGD's initial step (the box width) oscillates; APGD's halving converges."""
    torch.manual_seed(1)
    fn = _Quadratic(torch.rand(8, 4) - 0.5)
    x0 = torch.full((8, 4), 0.9)
    apgd = maximize(fn, x0, -1.0, 1.0, steps=30, method="apgd")
    pgd = maximize(fn, x0, -1.0, 1.0, steps=30, method="pgd", lr=2.0)
    assert (apgd.value >= pgd.value).all() and (apgd.value > -1e-3).all()


def test_apgd_batch_independence():
    torch.manual_seed(2)
    c = torch.randn(5, 3) * 1.5
    x0 = -torch.rand(5, 3)
    lo, hi = torch.full((5, 3), -1.0), torch.linspace(0.5, 1.5, 5)[:, None].expand(5, 3)
    together = maximize(_Quadratic(c), x0, lo, hi, steps=20, method="apgd")
    for i in range(5):
        row = slice(i, i + 1)
        alone = maximize(_Quadratic(c[row]), x0[row], lo[row], hi[row], steps=20, method="apgd")
        torch.testing.assert_close(alone.x[0], together.x[i])
        torch.testing.assert_close(alone.value[0], together.value[i])


def test_apgd_restarts_and_step_size():
    torch.manual_seed(3)
    fn = _Quadratic(torch.randn(4, 3))
    x0 = torch.zeros(4, 3)
    cfg = APGDConfig(n_restarts=3)
    res = maximize(fn, x0, -1.0, 1.0, steps=10, method="apgd", config=cfg, record_history=True)
    assert res.steps == 30 and res.network_evaluations == 60
    assert res.history is not None and res.history.shape == (31, 4)
    assert (res.value >= res.initial_value).all()
    # Reproducible from the seed; another seed draws other restarts.
    again = maximize(fn, x0, -1.0, 1.0, steps=10, method="apgd", config=cfg)
    assert torch.equal(res.x, again.x)
    # An explicit lr is the initial step of every coordinate; zero never moves.
    still = maximize(fn, x0, -1.0, 1.0, steps=10, method="apgd", lr=0.0)
    assert torch.equal(still.x, x0)
    # An unbounded box works with an explicit lr and no restarts.
    free = maximize(fn, x0, steps=50, method="apgd", lr=1.0)
    torch.testing.assert_close(free.x, fn.c.data, atol=2e-2, rtol=0)


def test_apgd_errors():
    fn = _Quadratic(torch.zeros(2, 3))
    x0 = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="apgd needs finite lower and upper bounds"):
        maximize(fn, x0, steps=5, method="apgd")
    with pytest.raises(ValueError, match="finite"):
        maximize(fn, x0, steps=5, method="apgd", lr=1.0, config=APGDConfig(n_restarts=2))
    with pytest.raises(TypeError, match="APGDConfig"):
        maximize(fn, x0, -1.0, 1.0, steps=5, method="apgd", config=AdamConfig())
    with pytest.raises(ValueError, match="compile=True"):
        maximize(fn, x0, -1.0, 1.0, steps=5, method="apgd", compile=True)
    with pytest.raises(ValueError, match="rho and momentum"):
        APGDConfig(rho=0.0)
    with pytest.raises(ValueError, match="n_restarts"):
        APGDConfig(n_restarts=0)
    with pytest.raises(ValueError, match="checkpoints"):
        APGDConfig(checkpoints=(4, 2))


def test_apgd_refines_td3_actions():
    """Any box problem: ActionRefiner's critic maximization runs APGD too."""
    td3 = TD3("MlpPolicy", gym.make("Pendulum-v1"), learning_starts=0, buffer_size=100, seed=0)
    obs = np.random.default_rng(0).uniform(-1, 1, (8, 3)).astype(np.float32)
    refiner = ActionRefiner(td3, method="apgd", radius=0.25, steps=10, seed=0)
    actions, _ = refiner.predict(obs, deterministic=True)
    assert all(td3.action_space.contains(a) for a in actions)
    info = refiner.last_info
    assert (info.q_refined >= info.q_actor).all() and (info.distance <= 0.25 + 1e-5).all()


# --------------------------------------------------------------------------------------
# DLR and the common objective: hand-computed values
# --------------------------------------------------------------------------------------
def test_dlr_loss_values():
    z = torch.tensor([[4.0, 2.0, 1.0, 0.0], [1.0, 3.0, 2.0, -1.0]])
    y = torch.tensor([0, 0])
    # row 0: y is the top: -(4 - 2) / (4 - 1); row 1: -(1 - 3) / (3 - 1)
    torch.testing.assert_close(dlr_loss(z, y), torch.tensor([-2 / 3, 1.0]))
    t = torch.tensor([3, 1])
    # targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    expected = torch.tensor([-(4 - 0) / (4 - 0.5), -(1 - 3) / (3 - 0.0)])
    torch.testing.assert_close(dlr_loss(z, y, t), expected)
    # Invariant to shifting and scaling the scores.
    torch.testing.assert_close(dlr_loss(3 * z + 7, y, t), expected)


def test_common_objective_values():
    z = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    a = torch.tensor([0, 1])
    log2 = float(np.log(2.0))
    lse = float(np.log(np.exp(2.0) + 1.0))
    torch.testing.assert_close(common_objective(z, a), torch.tensor([log2, lse]))
    torch.testing.assert_close(common_objective(z, a, a), torch.tensor([-log2, -lse]))


# --------------------------------------------------------------------------------------
# invariants of APGD attacks and the ensemble
# --------------------------------------------------------------------------------------
LOSS_MODES = [("ce", False), ("ce", True), ("dlr", False), ("dlr", True)]


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 4),
    side=st.integers(2, 5),
    eps=st.floats(0.0, 40.0),
    loss_mode=st.sampled_from(LOSS_MODES),
    integer=st.booleans(),
    random_start=st.booleans(),
    restarts=st.integers(1, 2),
)
def test_apgd_attack_invariants_property(
    seed, n, side, eps, loss_mode, integer, random_start, restarts
):
    loss, targeted = loss_mode
    shape = (2, side, side)
    net = mlp(int(np.prod(shape)), 5, seed)
    obs = np.random.default_rng(seed).integers(0, 256, size=(n, *shape))
    obs = obs.astype(np.uint8 if integer else np.float32)
    attack = ObservationAttack(
        net,
        eps=eps,
        steps=4,
        method="apgd",
        loss=loss,
        targeted=targeted,
        seed=seed,
        bounds=(0, 255),
        random_start=random_start,
        config=APGDConfig(n_restarts=restarts),
    )
    res = attack.perturb(obs)
    check_invariants(obs, res.obs, eps)
    if integer:
        assert np.array_equal(res.obs, np.round(res.obs))
    assert (res.objective >= res.clean_objective - 1e-5).all()
    with torch.no_grad():
        logits = net(torch.as_tensor(res.obs, dtype=torch.float32))
    np.testing.assert_array_equal(res.adv_actions, logits.argmax(1).numpy())
    assert res.winner is None


def _members(model, eps, steps, targeted, seed, bounds=None):
    kw = dict(eps=eps, steps=steps, targeted=targeted, seed=seed, bounds=bounds)
    return [
        ObservationAttack(model, method="pgd", **kw),
        ObservationAttack(model, method="apgd", **kw),
        ObservationAttack(model, method="apgd", loss="dlr", **kw),
        ObservationAttack(model, method="adr_sync", **kw),
    ]


def _assert_worst_case(ens: WorstCaseAttack, obs, res) -> None:
    """The ensemble's result is at least as strong as every member's, per observation."""
    singles = [a.perturb(obs) for a in ens.attacks]
    member_success = np.stack([r.success for r in singles])
    np.testing.assert_array_equal(res.member_success, member_success)
    np.testing.assert_array_equal(res.success, member_success.any(axis=0))
    none = ~member_success.any(axis=0)
    assert (res.objective[none] >= res.member_objectives[:, none].max(axis=0) - 1e-6).all()
    # The kept output is the winner's own output.
    for i, w in enumerate(res.winner):
        np.testing.assert_array_equal(res.obs[i], singles[w].obs[i])
        assert res.adv_actions[i] == singles[w].adv_actions[i]
    # Members' own CE objectives are on the common scale.
    np.testing.assert_allclose(res.member_objectives[0], singles[0].objective, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 5),
    eps=st.floats(0.0, 80.0),
    targeted=st.booleans(),
    integer=st.booleans(),
)
def test_worst_case_invariants_and_strength_property(seed, n, eps, targeted, integer):
    shape = (2, 3, 3)
    net = mlp(int(np.prod(shape)), 4, seed)
    obs = np.random.default_rng(seed).integers(0, 256, size=(n, *shape))
    obs = obs.astype(np.uint8 if integer else np.float32)
    ens = WorstCaseAttack(_members(net, eps, 3, targeted, seed, bounds=(0, 255)))
    res = ens.perturb(obs)
    check_invariants(obs, res.obs, eps)
    if integer:
        assert np.array_equal(res.obs, np.round(res.obs))
    assert res.winner is not None and res.winner.shape == (n,) and res.winner.dtype == np.int64
    assert res.member_objectives.shape == (4, n)
    assert (res.objective >= res.clean_objective - 1e-5).all()
    _assert_worst_case(ens, obs, res)
    np.testing.assert_array_equal(ens(obs), res.obs)


@pytest.mark.parametrize("targeted", [False, True])
def test_worst_case_on_an_impala_policy_is_at_least_each_member(targeted):
    policy = impala_policy(n_actions=6, seed=4)
    obs = images(12, seed=4)
    ens = WorstCaseAttack(_members(policy, 12, 5, targeted, 0))
    res = ens.perturb(obs)
    check_invariants(obs, res.obs, 12)
    if not targeted:
        assert res.success.any()  # eps 12 flips some actions of this sharp random policy
    assert (res.objective > res.clean_objective).any()
    _assert_worst_case(ens, obs, res)
    # Channel-first and torch inputs keep their layout and type.
    chw = torch.as_tensor(np.ascontiguousarray(obs.transpose(0, 3, 1, 2)))
    adv = ens(chw)
    assert isinstance(adv, torch.Tensor) and adv.dtype == torch.uint8 and adv.shape == chw.shape


def test_worst_case_with_different_losses_uses_the_common_scale():
    policy = impala_policy(n_actions=6, seed=5)
    obs = images(6, seed=5)
    members = [
        ObservationAttack(policy, eps=1, steps=2, method="apgd", loss="value"),
        ObservationAttack(policy, eps=1, steps=2, method="apgd", loss="kl", random_start=False),
    ]
    res = WorstCaseAttack(members).perturb(obs)
    with torch.no_grad():
        scores = members[0].adapter.output(torch.as_tensor(res.obs).permute(0, 3, 1, 2).float())
    expected = common_objective(scores, torch.as_tensor(res.clean_actions)).numpy()
    np.testing.assert_allclose(res.objective, expected, atol=1e-5)


# --------------------------------------------------------------------------------------
# the value attack
# --------------------------------------------------------------------------------------
def test_value_attack_lowers_v_on_a_tiny_actor_critic():
    torch.manual_seed(6)
    policy = ActorCriticPolicy(
        spaces.Box(-1, 1, (6,)), spaces.Discrete(3), constant_lr, net_arch=[16]
    )
    with torch.no_grad():
        policy.value_net.weight.mul_(10.0)  # SB3's gain-1 head; make V vary visibly
    obs = np.random.default_rng(6).uniform(-0.5, 0.5, (32, 6)).astype(np.float32)

    def v(o):
        with torch.no_grad():
            return policy.predict_values(torch.as_tensor(o)).squeeze(1).numpy()

    for method, autocast in (("pgd", None), ("apgd", None), ("apgd", torch.bfloat16)):
        res = ObservationAttack(
            policy, eps=0.2, steps=10, method=method, loss="value", autocast=autocast
        ).perturb(obs)
        assert np.all(np.abs(res.obs - obs) <= 0.2 + 1e-6)
        v_clean, v_adv = v(obs), v(res.obs)
        np.testing.assert_allclose(res.clean_objective, -v_clean, atol=1e-5)
        np.testing.assert_allclose(res.objective, -v_adv, atol=1e-5)
        assert (v_adv <= v_clean + 1e-6).all() and (v_clean - v_adv).mean() > 0.1
        ce = ObservationAttack(policy, eps=0.2, steps=10, method=method).perturb(obs)
        assert (v_clean - v_adv).mean() > (v_clean - v(ce.obs)).mean()


def test_value_attack_on_a_ppo_model_with_a_separate_critic_extractor():
    env = gym.make("CartPole-v1")
    model = PPO("MlpPolicy", env, policy_kwargs=dict(share_features_extractor=False), seed=0)
    obs = np.random.default_rng(7).uniform(-0.1, 0.1, (8, 4)).astype(np.float32)
    before = _snapshot(model.policy)
    res = ObservationAttack(model, eps=0.05, steps=5, method="apgd", loss="value").perturb(obs)
    with torch.no_grad():
        v0 = model.policy.predict_values(torch.as_tensor(obs)).squeeze(1).numpy()
        v1 = model.policy.predict_values(torch.as_tensor(res.obs)).squeeze(1).numpy()
    assert (v1 <= v0 + 1e-6).all() and (v1 < v0).any()
    _assert_same(before, _snapshot(model.policy))


# --------------------------------------------------------------------------------------
# errors and model state
# --------------------------------------------------------------------------------------
def test_errors():
    two = impala_policy(n_actions=2)
    three = impala_policy(n_actions=3)
    with pytest.raises(ValueError, match="loss='dlr' needs at least 3 actions"):
        ObservationAttack(two, eps=1, method="apgd", loss="dlr")
    with pytest.raises(ValueError, match="needs at least 4 actions"):
        ObservationAttack(three, eps=1, method="apgd", loss="dlr", targeted=True)
    ObservationAttack(three, eps=1, method="apgd", loss="dlr")  # untargeted: 3 is enough
    plain = ObservationAttack(mlp(4, 2, 0), eps=1, method="apgd", loss="dlr", bounds=(0, 1))
    with pytest.raises(ValueError, match="at least 3 actions"):
        plain(np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="use loss='q'"):
        ObservationAttack(dqn_policy(), eps=1, loss="value")
    with pytest.raises(ValueError, match="value head"):
        ObservationAttack(mlp(4, 3, 0), eps=1, loss="value")
    with pytest.raises(ValueError, match="targeted attacks take loss='ce' or 'dlr'"):
        ObservationAttack(three, eps=1, loss="value", targeted=True)
    with pytest.raises(ValueError, match="loss must be one of"):
        ObservationAttack(three, eps=1, loss="hinge")
    with pytest.raises(ValueError, match="step_size"):
        ObservationAttack(three, eps=1, step_size=-1.0)
    with pytest.raises(ValueError, match="WorstCaseAttack|non-empty"):
        WorstCaseAttack([])
    with pytest.raises(TypeError, match="must be ObservationAttack"):
        WorstCaseAttack([ObservationAttack(three, eps=1), "pgd"])
    with pytest.raises(ValueError, match="same model"):
        WorstCaseAttack([ObservationAttack(three, eps=1), ObservationAttack(two, eps=1)])
    with pytest.raises(ValueError, match="share eps"):
        WorstCaseAttack([ObservationAttack(three, eps=1), ObservationAttack(three, eps=2)])
    with pytest.raises(ValueError, match="share targeted"):
        WorstCaseAttack(
            [ObservationAttack(three, eps=1), ObservationAttack(three, eps=1, targeted=True)]
        )


def test_alpha_is_a_deprecated_name_of_step_size():
    policy = impala_policy()
    with pytest.warns(DeprecationWarning, match="step_size"):
        old = ObservationAttack(policy, eps=4, steps=3, method="pgd", alpha=0.7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = ObservationAttack(policy, eps=4, steps=3, method="pgd", step_size=0.7)
    assert old.step_size == new.step_size == old.alpha == 0.7
    obs = images(3, seed=8)
    np.testing.assert_array_equal(old(obs), new(obs))
    with pytest.raises(ValueError, match="step_size= only"), pytest.warns(DeprecationWarning):
        ObservationAttack(policy, eps=4, step_size=0.5, alpha=0.5)
    assert ObservationAttack(policy, eps=4, method="apgd").step_size == 8.0  # 2 * eps
    assert ObservationAttack(policy, eps=4, steps=10, method="pgd").step_size == 1.0


@pytest.mark.parametrize("kind", ["apgd-ce", "apgd-dlr", "value", "ensemble"])
def test_model_state_untouched(kind):
    policy = impala_policy(seed=9)
    policy.set_training_mode(True)
    for p in list(policy.parameters())[:3]:
        p.grad = torch.ones_like(p)
    before = _snapshot(policy)
    if kind == "ensemble":
        attack = WorstCaseAttack(_members(policy, 4, 3, False, 0))
    else:
        loss = {"apgd-ce": "ce", "apgd-dlr": "dlr", "value": "value"}[kind]
        attack = ObservationAttack(policy, eps=4, steps=3, method="apgd", loss=loss)
    attack.perturb(images(3, seed=9))
    _assert_same(before, _snapshot(policy))


def test_model_state_untouched_after_an_exception():
    policy = impala_policy(seed=10)
    policy.set_training_mode(True)
    before = _snapshot(policy)
    ens = WorstCaseAttack(_members(policy, 2, 2, True, 0))
    with pytest.raises(ValueError, match="targets"):
        ens.perturb(images(2, seed=0), [0, 99])
    _assert_same(before, _snapshot(policy))
    apgd = ObservationAttack(policy, eps=2, steps=2, method="apgd", loss="dlr")
    with pytest.raises(ValueError, match="valid observation range"):
        apgd(np.full((1, 16, 16, 3), 300.0, dtype=np.float32))
    _assert_same(before, _snapshot(policy))


# --------------------------------------------------------------------------------------
# online
# --------------------------------------------------------------------------------------
def test_attack_stats_count_the_ensemble_wins():
    policy = impala_policy(n_actions=6, seed=11)
    ens = WorstCaseAttack(_members(policy, 12, 3, False, 0))
    wrapped = AttackedPolicy(policy, ens)
    for seed in range(3):
        wrapped.predict(images(4, seed=seed))
    s = wrapped.stats
    assert s.attacked == 12 and sum(s.wins.values()) == 12
    assert set(s.wins) <= {0, 1, 2, 3}
    single = AttackStats()
    single.count(ens.attacks[0].perturb(images(2, seed=0)))
    assert single.wins == {}


@pytest.fixture(scope="module")
def coinrun_model():
    return PPO.load("agents/zoo/ppo_coinrun.zip", device="cpu")


@pytest.mark.procgen
def test_worst_case_with_evaluate_policy_on_procgen(coinrun_model):
    from adr_rl_app.envs.procgen import UNSEEN_LEVELS, make_procgen_vec_env

    env = make_procgen_vec_env("coinrun", n_envs=2, levels=UNSEEN_LEVELS, seed=0)
    members = [
        ObservationAttack(coinrun_model, eps=2, steps=2, method=m) for m in ("pgd", "apgd")
    ] + [ObservationAttack(coinrun_model, eps=2, steps=2, method="apgd", loss="dlr")]
    policy = AttackedPolicy(coinrun_model, WorstCaseAttack(members))
    try:
        mean, std = evaluate_policy(policy, env, n_eval_episodes=2, deterministic=False)
    finally:
        env.close()
    assert 0.0 <= mean <= 10.0 and np.isfinite(std)
    s = policy.stats
    assert s.steps == s.attacked > 0 and 0 <= s.flipped <= s.attacked
    assert sum(s.wins.values()) == s.attacked


@pytest.mark.procgen
def test_worst_case_in_attacked_vec_env_keeps_the_env_clean(coinrun_model):
    from adr_rl_app.envs.procgen import UNSEEN_LEVELS, make_procgen_vec_env

    ens = WorstCaseAttack(
        [ObservationAttack(coinrun_model, eps=3, steps=1, method=m) for m in ("fgsm", "apgd")]
    )
    wrapped = AttackedVecEnv(
        make_procgen_vec_env("coinrun", n_envs=2, levels=UNSEEN_LEVELS, seed=3), ens
    )
    plain = make_procgen_vec_env("coinrun", n_envs=2, levels=UNSEEN_LEVELS, seed=3)
    try:
        seen, clean = wrapped.reset(), plain.reset()
        for t in range(3):
            np.testing.assert_array_equal(wrapped.clean_obs, clean)
            check_invariants(clean, seen, 3)
            actions = np.array([t % 15, (5 * t) % 15])
            seen, _, _, _ = wrapped.step(actions)
            clean, _, _, _ = plain.step(actions)
        assert wrapped.stats.attacked == 8 and sum(wrapped.stats.wins.values()) == 8
    finally:
        wrapped.close()
        plain.close()


# --------------------------------------------------------------------------------------
# the evaluation script
# --------------------------------------------------------------------------------------
@pytest.mark.procgen
def test_attack_procgen_quick_reports_the_strong_attacks(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "adr_rl_app.eval.attack_procgen", "--quick", "--out", str(out)]
    cmd += ["--phases", "flip", "rollout", "--adr-method", "adr_sync", "--modes", "untargeted"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    flip = json.loads((out / "flip.json").read_text())
    members = ["pgd", "apgd-ce", "apgd-dlr", "adr_sync"]  # the default, 'adr' resolved
    assert flip["ensemble"] == members
    methods = {s["method"] for s in flip["summary"]}
    assert {"apgd-ce", "apgd-dlr", "value", "ensemble"} <= methods
    assert all(s["ms_per_obs"] > 0 for s in flip["summary"])
    checks = flip["ensemble_check"]
    assert checks and all(c["ok"] for c in checks)
    assert all(sum(c["wins"].values()) == flip["n_obs"] for c in checks)
    assert set(checks[0]["member_rows_beating_ensemble"]) == set(members)
    rollout = json.loads((out / "rollout.json").read_text())
    rows = {r["method"]: r for r in rollout["games"]["coinrun"]}
    assert {"apgd-ce", "apgd-dlr", "value", "ensemble"} <= set(rows)
    ens = rows["ensemble"]
    assert list(ens["wins"]) == members
    assert sum(ens["wins"].values()) == ens["attacked_obs"] > 0
    assert rows["pgd"]["wins"] is None and ens["attack_ms_per_obs"] > 0
    # Every episode names its (seed, env, level), so two settings pair episode by episode:
    # the level an env plays does not depend on the attack.
    for row in rows.values():
        for run in row["runs"]:
            assert len(run["env_ids"]) == len(run["level_seeds"]) == len(run["returns"])
    levels = {
        m: sorted(zip(r["runs"][0]["env_ids"], r["runs"][0]["level_seeds"], strict=True))
        for m, r in rows.items()
    }
    assert levels["pgd"] == levels["ensemble"] == levels["none"]
    assert all(level >= 10_000 for _, level in levels["pgd"])  # unseen levels


@pytest.mark.procgen
def test_attack_procgen_rollout_resumes_and_refuses_other_settings(tmp_path):
    from adr_rl_app.eval import attack_procgen
    from adr_rl_app.eval.errors import UserError

    out = tmp_path / "run"
    argv = ["--quick", "--out", str(out), "--phases", "rollout", "--adr-method", "adr_sync"]
    argv += ["--modes", "untargeted", "--methods", "none", "fgsm"]
    attack_procgen.main(argv)
    first = json.loads((out / "rollout.json").read_text())
    assert [r["method"] for r in first["games"]["coinrun"]] == ["none", "fgsm"]
    assert first["policies"]["coinrun"]["file"] == "ppo_coinrun.zip"
    # The same grid plus one setting: the finished rows are kept as they are.
    attack_procgen.main([*argv, "random"])
    second = json.loads((out / "rollout.json").read_text())
    rows = second["games"]["coinrun"]
    assert [r["method"] for r in rows] == ["none", "fgsm", "random"]
    assert rows[:2] == first["games"]["coinrun"]
    # The folder's config keeps every invocation's settings, in order.
    calls = json.loads((out / "config_rollout.json").read_text())["invocations"]
    assert [c["config"]["methods"] for c in calls] == [["none", "fgsm"], ["none", "fgsm", "random"]]
    # Another ADR variant or precision would mix two measurements in one table.
    with pytest.raises(UserError, match="adr_variant: 'adr_sync' there, 'adr' now"):
        attack_procgen.main([*argv, "--adr-method", "adr"])
    with pytest.raises(UserError, match="autocast: 'none' there, 'bf16' now"):
        attack_procgen.main([*argv, "--autocast", "bf16"])
    attack_procgen.main([*argv, "--adr-method", "adr", "--no-resume"])
    fresh = json.loads((out / "rollout.json").read_text())
    assert fresh["adr_variant"] == "adr" and len(fresh["games"]["coinrun"]) == 2


@pytest.mark.procgen
def test_an_interrupted_rollout_setting_resumes_from_its_finished_seeds(tmp_path, monkeypatch):
    from adr_rl_app.eval import attack_procgen

    argv = ["--quick", "--phases", "rollout", "--adr-method", "adr_sync", "--modes", "untargeted"]
    args = attack_procgen.parse_args([*argv, "--methods", "none", "random"])
    args.seeds, args.episodes = [0, 1], 2  # one episode per seed
    real_play, calls, resumed = attack_procgen.play, [], False

    def play(model, attack, game, n, seed, *rest):
        calls.append((attack is not None, seed))
        if attack is not None and seed == 1 and not resumed:
            raise KeyboardInterrupt  # the session ends during the setting's second seed
        return real_play(model, attack, game, n, seed, *rest)

    monkeypatch.setattr(attack_procgen, "play", play)
    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        attack_procgen.run_rollout(args, out, "adr_sync")
    partial = json.loads((out / attack_procgen.PARTIAL_FILE).read_text())
    sha = attack_procgen.policy_identity("coinrun")["sha256"]
    assert list(partial) == [
        attack_procgen.setting_key("coinrun", sha, "random", "untargeted", 2.0, 3)
    ]
    assert [r["seed"] for r in partial[f"coinrun|{sha[:16]}|random|untargeted|2|3"]] == [0]
    calls.clear()
    resumed = True
    report = attack_procgen.run_rollout(args, out, "adr_sync")
    assert calls == [(True, 1)]  # only the missing seed is played
    row = report["games"]["coinrun"][-1]
    assert row["method"] == "random" and [r["seed"] for r in row["runs"]] == [0, 1]
    assert not (out / attack_procgen.PARTIAL_FILE).exists()
    # The same as a run that was never interrupted (seeded episodes).
    monkeypatch.setattr(attack_procgen, "play", real_play)
    whole = attack_procgen.run_rollout(args, tmp_path, "adr_sync")["games"]["coinrun"][-1]
    assert [r["returns"] for r in whole["runs"]] == [r["returns"] for r in row["runs"]]


def test_resumed_rollouts_refuse_another_policy(tmp_path):
    from adr_rl_app.eval.attack_procgen import resumable_report
    from adr_rl_app.eval.errors import UserError

    fresh = {"seeds": [0], "policies": {"fruitbot": {"sha256": "new"}}, "games": {}}
    path = tmp_path / "rollout.json"
    assert resumable_report(path, fresh) is fresh  # nothing to resume
    old = {**fresh, "policies": {"fruitbot": {"sha256": "old"}}, "games": {"fruitbot": [{}]}}
    path.write_text(json.dumps(old))
    with pytest.raises(UserError, match="policy of fruitbot"):
        resumable_report(path, fresh)
    # Rows of a game this run does not play are kept with their own policy.
    other = {**fresh, "policies": {"coinrun": {"sha256": "c"}}}
    merged = resumable_report(path, other)
    assert merged["games"] == {"fruitbot": [{}]}
    assert merged["policies"] == {"fruitbot": {"sha256": "old"}, "coinrun": {"sha256": "c"}}
    # The weights decide, not the file name (ppo_<game>_nature.zip after the rename).
    renamed = {**fresh, "policies": {"fruitbot": {"file": "b.zip", "sha256": "old"}}}
    old["policies"] = {"fruitbot": {"file": "a.zip", "sha256": "old"}}
    path.write_text(json.dumps(old))
    assert resumable_report(path, renamed)["games"] == {"fruitbot": [{}]}
    # Rows without a policy record cannot be vouched for.
    old["policies"] = {}
    path.write_text(json.dumps(old))
    with pytest.raises(UserError, match="policy of fruitbot: None there"):
        resumable_report(path, renamed)
