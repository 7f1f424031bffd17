"""Tests of ``adr_rl.attack``: invariants, objectives, SB3 adapters, online wrappers, errors."""

from __future__ import annotations

import copy
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from hypothesis import example, given, settings
from hypothesis import strategies as st
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn
from torch.nn import functional as F

from adr_rl import ADRConfig, NonReluNetworkError, maximize
from adr_rl.attack import ObservationAttack
from adr_rl.online import AttackedPolicy, AttackedVecEnv, AttackStats
from tests.policies import (
    check_invariants,
    constant_lr,
    dqn_policy,
    images,
    impala_policy,
    mlp,
)

METHODS = ["fgsm", "pgd", "adr", "adr_sync", "random"]


# --------------------------------------------------------------------------------------
# invariants
# --------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 4),
    side=st.integers(3, 6),
    channels=st.integers(1, 3),
    eps=st.floats(0.0, 40.0),
    method=st.sampled_from(METHODS),
    targeted=st.booleans(),
    integer=st.booleans(),
)
# Found by hypothesis: in float32, x - 6.999999999999993 rounds to x - 7, whose ceiling
# left the ball for integer observations; the box is now x +- floor(eps).
@example(
    seed=0,
    n=1,
    side=3,
    channels=1,
    eps=6.999999999999993,
    method="pgd",
    targeted=False,
    integer=True,
)
def test_ball_range_dtype_invariants_property(
    seed, n, side, channels, eps, method, targeted, integer
):
    shape = (channels, side, side)
    net = mlp(int(np.prod(shape)), 3, seed)
    rng = np.random.default_rng(seed)
    obs = rng.integers(0, 256, size=(n, *shape)).astype(np.uint8 if integer else np.float32)
    attack = ObservationAttack(
        net, eps=eps, steps=3, method=method, targeted=targeted, seed=seed, bounds=(0, 255)
    )
    res = attack.perturb(obs)
    check_invariants(obs, res.obs, eps)
    if integer:
        assert np.array_equal(res.obs, np.round(res.obs))
    assert (res.objective >= res.clean_objective - 1e-5).all()
    # The reported objective and actions are those of what is returned.
    with torch.no_grad():
        logits = net(torch.as_tensor(res.obs, dtype=torch.float32))
    np.testing.assert_array_equal(res.adv_actions, logits.argmax(1).numpy())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("layout", ["channel_last", "channel_first", "single"])
def test_sb3_impala_policy_invariants(method, layout):
    policy = impala_policy()
    obs = images(6, seed=1)
    if layout == "channel_first":
        obs = np.ascontiguousarray(obs.transpose(0, 3, 1, 2))
    elif layout == "single":
        obs = obs[0]
    attack = ObservationAttack(policy, eps=8, steps=4, method=method, seed=0)
    adv = attack(obs)
    check_invariants(obs, adv, 8)
    # The reported clean action is SB3's own greedy action.
    res = attack.perturb(obs)
    clean, _ = policy.predict(obs, deterministic=True)
    np.testing.assert_array_equal(res.clean_actions, np.atleast_1d(clean))


def test_torch_input_keeps_type_device_and_dtype():
    policy = impala_policy()
    obs = torch.as_tensor(images(3, seed=2))
    adv = ObservationAttack(policy, eps=4, steps=3, method="pgd")(obs)
    assert isinstance(adv, torch.Tensor) and adv.dtype == torch.uint8 and adv.shape == obs.shape
    assert (adv.int() - obs.int()).abs().max() <= 4


def test_eps_zero_returns_the_clean_observation():
    policy = impala_policy()
    obs = images(4, seed=3)
    for method in METHODS:
        np.testing.assert_array_equal(ObservationAttack(policy, eps=0, method=method)(obs), obs)


def test_fractional_eps_on_uint8_stays_in_the_ball():
    policy = impala_policy()
    obs = images(4, seed=4)
    adv = ObservationAttack(policy, eps=1.5, steps=5, method="pgd")(obs)
    assert np.abs(adv.astype(int) - obs.astype(int)).max() <= 1
    adv = ObservationAttack(policy, eps=np.float32(3.0), steps=5, method="pgd")(obs)  # numpy eps
    assert np.abs(adv.astype(int) - obs.astype(int)).max() <= 3


# --------------------------------------------------------------------------------------
# objectives
# --------------------------------------------------------------------------------------
def test_untargeted_attacks_flip_actions_and_raise_the_loss():
    policy = impala_policy(seed=5)
    obs = images(32, seed=5)
    clean = ObservationAttack(policy, eps=0, method="pgd").perturb(obs)
    for method in ("fgsm", "pgd", "adr", "adr_sync"):
        res = ObservationAttack(policy, eps=32, steps=10, method=method).perturb(obs)
        assert res.flipped.mean() > 0.2, method
        assert res.objective.mean() > clean.objective.mean() + 0.02


@pytest.mark.parametrize("method", ["pgd", "adr_sync"])
def test_targeted_raises_the_target_probability(method):
    policy = impala_policy(seed=6)
    obs = images(16, seed=6)
    targets = np.arange(16) % 5
    res = ObservationAttack(policy, eps=16, steps=10, method=method, targeted=True).perturb(
        obs, targets
    )
    obs_t, _ = policy.obs_to_tensor(obs)
    adv_t, _ = policy.obs_to_tensor(res.obs)
    with torch.no_grad():
        p_clean = policy.get_distribution(obs_t).distribution.probs
        p_adv = policy.get_distribution(adv_t).distribution.probs
    idx = torch.arange(16)
    gain = p_adv[idx, targets] - p_clean[idx, targets]
    assert (gain >= -1e-6).all() and gain.mean() > 0.05
    np.testing.assert_allclose(res.objective, p_adv[idx, targets].log().numpy(), atol=1e-4)
    assert res.success.mean() >= (p_clean.argmax(1).numpy() == targets).mean()


def test_targeted_default_target_is_the_least_likely_action():
    policy = impala_policy(seed=7)
    obs = images(8, seed=7)
    res = ObservationAttack(policy, eps=2, steps=2, method="pgd", targeted=True).perturb(obs)
    obs_t, _ = policy.obs_to_tensor(obs)
    with torch.no_grad():
        probs = policy.get_distribution(obs_t).distribution.probs
    np.testing.assert_array_equal(res.targets, probs.argmin(1).numpy())


def test_kl_objective_is_zero_at_clean_and_positive_after():
    policy = impala_policy(seed=8)
    obs = images(8, seed=8)
    res = ObservationAttack(policy, eps=16, steps=5, method="pgd", loss="kl").perturb(obs)
    np.testing.assert_allclose(res.clean_objective, 0.0, atol=1e-6)
    assert (res.objective > 0).any()


def test_dqn_minimizes_the_q_value_of_the_clean_action():
    policy = dqn_policy()
    obs = images(8, seed=9)
    res = ObservationAttack(policy, eps=16, steps=5, method="pgd").perturb(obs)
    adv_t, _ = policy.obs_to_tensor(res.obs)
    obs_t, _ = policy.obs_to_tensor(obs)
    with torch.no_grad():
        q_adv, q_clean = policy.q_net(adv_t), policy.q_net(obs_t)
    a = torch.as_tensor(res.clean_actions)
    idx = torch.arange(8)
    assert (q_adv[idx, a] <= q_clean[idx, a] + 1e-5).all()
    np.testing.assert_allclose(res.objective, -q_adv[idx, a].numpy(), atol=1e-4)


def test_ppo_mlp_policy_with_relu_and_unbounded_box():
    env = gym.make("CartPole-v1")
    model = PPO("MlpPolicy", env, policy_kwargs={"activation_fn": nn.ReLU}, n_steps=64, seed=0)
    obs = np.stack([env.reset(seed=i)[0] for i in range(5)])
    res = ObservationAttack(model, eps=0.5, steps=5, method="adr").perturb(obs)
    check_invariants(obs, res.obs, 0.5, low=-np.inf, high=np.inf)
    space = model.observation_space
    assert all(space.contains(o) for o in res.obs)


@pytest.mark.parametrize("method", ["pgd", "adr", "adr_sync", "fgsm"])
def test_seed_free_attacks_do_not_depend_on_the_seed(method):
    """eval/attack_procgen.py reuses one seed's run for these (see its seed_free)."""
    policy = impala_policy(seed=10)
    obs = images(6, seed=10)
    a = ObservationAttack(policy, eps=8, steps=5, method=method, seed=0)(obs)
    b = ObservationAttack(policy, eps=8, steps=5, method=method, seed=1)(obs)
    np.testing.assert_array_equal(a, b)


def test_random_start_and_random_method_depend_on_the_seed():
    policy = impala_policy(seed=11)
    obs = images(6, seed=11)
    for kwargs in ({"method": "random"}, {"method": "pgd", "random_start": True}):
        a = ObservationAttack(policy, eps=8, steps=3, seed=0, **kwargs)(obs)
        b = ObservationAttack(policy, eps=8, steps=3, seed=0, **kwargs)(obs)
        c = ObservationAttack(policy, eps=8, steps=3, seed=1, **kwargs)(obs)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_adr_sign_step_moves_every_coordinate_by_lr():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1))
    x0 = torch.zeros(4, 6)
    res = maximize(
        net, x0, -1.0, 1.0, steps=1, method="adr", config=ADRConfig(x_step="sign"), lr=0.01
    )
    moved = res.value > res.initial_value
    assert moved.any()
    step = (res.x - x0)[moved].abs()
    assert torch.all((step == 0) | ((step - 0.01).abs() < 1e-7))
    with pytest.raises(ValueError, match="x_step"):
        ADRConfig(x_step="l1")


# --------------------------------------------------------------------------------------
# model state
# --------------------------------------------------------------------------------------
def _snapshot(module: nn.Module):
    return (
        copy.deepcopy(module.state_dict()),
        [m.training for m in module.modules()],
        [p.requires_grad for p in module.parameters()],
        [None if p.grad is None else p.grad.clone() for p in module.parameters()],
        [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in module.modules()],
    )


def _assert_same(before, after):
    assert before[1:3] == after[1:3] and before[4] == after[4]
    for k in before[0]:
        assert torch.equal(before[0][k], after[0][k])
    for g0, g1 in zip(before[3], after[3], strict=True):
        assert (g0 is None and g1 is None) or torch.equal(g0, g1)


@pytest.mark.parametrize("method", METHODS)
def test_model_state_untouched(method):
    policy = impala_policy()
    policy.set_training_mode(True)
    for p in list(policy.parameters())[:3]:
        p.grad = torch.ones_like(p)
    before = _snapshot(policy)
    ObservationAttack(policy, eps=4, steps=3, method=method).perturb(images(3, seed=12))
    _assert_same(before, _snapshot(policy))


class _FunctionalRelu(nn.Module):
    """Has an nn.ReLU module but also calls F.relu: ADR's scan must refuse it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.relu, self.fc2 = nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.dropout(self.relu(self.fc1(x.flatten(1))))))


def test_model_state_untouched_after_an_exception():
    net = _FunctionalRelu()
    net.train()
    before = _snapshot(net)
    attack = ObservationAttack(net, eps=4, steps=3, method="adr", bounds=(0, 255))
    with pytest.raises(NonReluNetworkError, match="F.relu"):
        attack(np.zeros((2, 3, 2, 2), dtype=np.float32))
    _assert_same(before, _snapshot(net))
    policy = impala_policy()
    policy.set_training_mode(True)
    before = _snapshot(policy)
    with pytest.raises(ValueError, match="targets"):
        ObservationAttack(policy, eps=2, targeted=True).perturb(images(2, seed=0), [0, 99])
    _assert_same(before, _snapshot(policy))


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------
def test_errors():
    policy = impala_policy()
    obs = images(2, seed=13)
    with pytest.raises(ValueError, match="eps"):
        ObservationAttack(policy, eps=-1)
    with pytest.raises(ValueError, match="eps"):
        ObservationAttack(policy, eps=float("nan"))
    with pytest.raises(ValueError, match="steps"):
        ObservationAttack(policy, eps=1, steps=0)
    with pytest.raises(ValueError, match="unknown method"):
        ObservationAttack(policy, eps=1, method="cw")
    with pytest.raises(ValueError, match="loss='q' needs a Q-network"):
        ObservationAttack(policy, eps=1, loss="q")
    attack = ObservationAttack(policy, eps=1, steps=2)
    with pytest.raises(ValueError, match="observation shape"):
        attack(images(2, seed=0, shape=(8, 8, 3)))
    with pytest.raises(ValueError, match="NaN"):
        attack(np.full((1, 16, 16, 3), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="valid observation range"):
        attack(np.full((1, 16, 16, 3), 300.0, dtype=np.float32))
    with pytest.raises(TypeError, match="integer or floating"):
        attack(obs.astype(bool))
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        attack(obs.tolist())
    with pytest.raises(TypeError, match="SB3 PPO/A2C"):
        ObservationAttack("not a model", eps=1)
    sac = SAC("MlpPolicy", gym.make("Pendulum-v1"), learning_starts=0, buffer_size=100)
    with pytest.raises(TypeError, match="SB3 PPO/A2C"):
        ObservationAttack(sac, eps=1)
    box = ActorCriticPolicy(spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (2,)), constant_lr)
    with pytest.raises(TypeError, match="Discrete action space"):
        ObservationAttack(box, eps=1)
    tanh = ActorCriticPolicy(spaces.Box(-1, 1, (3,)), spaces.Discrete(2), constant_lr)  # SB3's Tanh
    for method in ("adr", "adr_sync"):
        with pytest.raises(NonReluNetworkError, match="activation_fn=nn.ReLU"):
            ObservationAttack(tanh, eps=1, method=method)
    with pytest.raises(ValueError, match=r"\(N, n_actions\)"):
        ObservationAttack(nn.Sequential(nn.Linear(4, 1), nn.ReLU(), nn.Flatten(0)), eps=1)(
            np.zeros((2, 4), dtype=np.float32)
        )
    with pytest.raises(ValueError, match="every"):
        AttackedPolicy(policy, attack, every=0)
    with pytest.raises(ValueError, match="fraction"):
        AttackedPolicy(policy, attack, fraction=1.5)


# --------------------------------------------------------------------------------------
# the search in bf16 (autocast)
# --------------------------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 4),
    eps=st.floats(0.0, 40.0),
    method=st.sampled_from([*METHODS, "apgd"]),
    targeted=st.booleans(),
    integer=st.booleans(),
)
def test_autocast_keeps_every_invariant_property(seed, n, eps, method, targeted, integer):
    policy = impala_policy(seed=seed % 7)
    obs = images(n, seed=seed)
    if not integer:
        obs = obs.astype(np.float32)
    attack = ObservationAttack(
        policy,
        eps=eps,
        steps=3,
        method=method,
        targeted=targeted,
        seed=seed,
        autocast=torch.bfloat16,
    )
    res = attack.perturb(obs)
    check_invariants(obs, res.obs, eps)
    assert np.array_equal(res.obs, np.round(res.obs))  # the uint8 space rounds floats too
    # Only the search ran in bf16: what is reported is the float32 policy's own verdict on
    # what is returned, and never worse than the clean observation.
    assert (res.objective >= res.clean_objective).all()
    with torch.no_grad():
        obs_t, _ = policy.obs_to_tensor(res.obs)
        logits = policy.get_distribution(obs_t).distribution.logits
    assert logits.dtype == torch.float32
    np.testing.assert_array_equal(res.adv_actions, logits.argmax(1).numpy())


@pytest.mark.parametrize("method", ["pgd", "adr_sync", "apgd"])
def test_autocast_flips_actions_and_leaves_the_model_alone(method):
    policy = impala_policy(seed=5)
    policy.set_training_mode(True)
    before = _snapshot(policy)
    obs = images(32, seed=5)
    res = ObservationAttack(
        policy, eps=32, steps=10, method=method, autocast=torch.bfloat16
    ).perturb(obs)
    assert res.flipped.mean() > 0.2
    _assert_same(before, _snapshot(policy))
    assert all(p.dtype == torch.float32 for p in policy.parameters())
    assert not torch.is_autocast_enabled("cpu")


def test_autocast_errors():
    policy = impala_policy()
    with pytest.raises(ValueError, match="autocast must be None, torch.bfloat16"):
        ObservationAttack(policy, eps=1, autocast=torch.float32)
    with pytest.raises(ValueError, match="compile=True and autocast"):
        ObservationAttack(policy, eps=1, method="pgd", compile=True, autocast=torch.bfloat16)


# --------------------------------------------------------------------------------------
# online wrappers on Procgen
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coinrun_model():
    return PPO.load("agents/zoo/ppo_coinrun.zip", device="cpu")


@pytest.mark.procgen
def test_attacked_policy_with_sb3_evaluate_policy_on_procgen(coinrun_model):
    from adr_rl_app.envs.procgen import UNSEEN_LEVELS, make_procgen_vec_env

    env = make_procgen_vec_env("coinrun", n_envs=2, levels=UNSEEN_LEVELS, seed=0)
    attack = ObservationAttack(coinrun_model, eps=2, steps=2, method="adr_sync")
    policy = AttackedPolicy(coinrun_model, attack)
    try:
        mean, std = evaluate_policy(policy, env, n_eval_episodes=2, deterministic=False)
    finally:
        env.close()
    assert 0.0 <= mean <= 10.0 and np.isfinite(std)  # CoinRun pays 10 for the coin, else 0
    s = policy.stats
    assert s.steps == s.attacked > 0 and 0 <= s.flipped <= s.attacked and s.seconds > 0


@pytest.mark.procgen
def test_attacked_vec_env_keeps_the_env_clean_and_follows_the_schedule(coinrun_model):
    from adr_rl_app.envs.procgen import UNSEEN_LEVELS, make_procgen_vec_env

    attack = ObservationAttack(coinrun_model, eps=4, steps=2, method="pgd")
    wrapped = AttackedVecEnv(
        make_procgen_vec_env("coinrun", n_envs=2, levels=UNSEEN_LEVELS, seed=3), attack, every=2
    )
    plain = make_procgen_vec_env("coinrun", n_envs=2, levels=UNSEEN_LEVELS, seed=3)
    try:
        seen, clean = wrapped.reset(), plain.reset()
        for t in range(6):
            np.testing.assert_array_equal(wrapped.clean_obs, clean)  # env state unchanged
            check_invariants(clean, seen, 4)
            if t % 2 == 1:  # reset is step 0; odd steps are skipped with every=2
                np.testing.assert_array_equal(seen, clean)
            actions = np.array([t % 15, (3 * t) % 15])
            seen, _, _, _ = wrapped.step(actions)
            clean, _, _, _ = plain.step(actions)
        assert wrapped.stats.steps == 14 and wrapped.stats.attacked == 8  # t = 0, 2, 4, 6
    finally:
        wrapped.close()
        plain.close()


def test_fraction_schedule_attacks_about_that_share():
    policy = impala_policy()
    attack = ObservationAttack(policy, eps=2, steps=1, method="fgsm")
    wrapped = AttackedPolicy(policy, attack, fraction=0.25, seed=0)
    for _ in range(40):
        wrapped.predict(images(4, seed=0))
    assert wrapped.stats.steps == 160 and 20 <= wrapped.stats.attacked <= 60
    none = AttackedPolicy(policy, attack, fraction=0.0)
    obs = images(4, seed=1)
    np.testing.assert_array_equal(
        none.predict(obs, deterministic=True)[0], policy.predict(obs, deterministic=True)[0]
    )
    assert none.stats.attacked == 0


def test_attack_stats_count_what_each_call_did():
    policy = impala_policy()
    attack = ObservationAttack(policy, eps=8, steps=3, method="pgd")
    stats = AttackStats()
    results = [attack.perturb(images(n, seed=n)) for n in (5, 3)]
    for res in results:
        stats.count(res)
    flipped = sum(int(r.flipped.sum()) for r in results)
    assert (stats.attacked, stats.calls, stats.flipped, stats.steps) == (8, 2, flipped, 0)
    assert stats.flip_rate == flipped / 8 and stats.success_rate == flipped / 8  # untargeted
    assert stats.seconds == sum(r.seconds for r in results) > 0
    assert np.isnan(AttackStats().flip_rate)


# --------------------------------------------------------------------------------------
# scripts and devices
# --------------------------------------------------------------------------------------
@pytest.mark.procgen
def test_attack_procgen_quick_smoke(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "adr_rl_app.eval.attack_procgen", "--quick", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("tune.json", "flip.json", "rollout.json", "returns_vs_eps.png", "flip_vs_eps.png"):
        assert (out / name).exists(), name


def test_bench_attack_quick_smoke(tmp_path):
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "adr_rl_app.eval.bench_attack", "--quick", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "results.json").exists()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["pgd", "adr_sync"])
def test_cuda_attack_matches_cpu(method):
    cpu = impala_policy(seed=14)
    gpu = impala_policy(seed=14).to("cuda")
    obs = images(8, seed=14)
    a = ObservationAttack(cpu, eps=4, steps=5, method=method).perturb(obs)
    b = ObservationAttack(gpu, eps=4, steps=5, method=method).perturb(obs)
    check_invariants(obs, b.obs, 4)
    np.testing.assert_array_equal(a.clean_actions, b.clean_actions)
    assert np.abs(a.objective - b.objective).max() < 0.05
    assert next(gpu.parameters()).device.type == "cuda"


@pytest.mark.parametrize("method", ["fgsm", "pgd", "random"])
def test_baseline_attacks_take_sb3_default_tanh_mlp_policy(method):
    """SB3's MlpPolicy uses Tanh: ADR refuses it, the gradient/sampling attacks do not."""
    torch.manual_seed(0)
    space = spaces.Box(-1, 1, (6,))
    policy = ActorCriticPolicy(space, spaces.Discrete(4), constant_lr)
    obs = np.random.default_rng(0).uniform(-0.5, 0.5, (64, 6)).astype(np.float32)
    res = ObservationAttack(policy, eps=0.3, steps=10, method=method).perturb(obs)
    assert res.obs.dtype == np.float32 and res.obs.shape == obs.shape
    assert np.all(np.abs(res.obs - obs) <= 0.3 + 1e-6)
    assert np.all(res.obs >= -1) and np.all(res.obs <= 1)
    assert np.all(res.objective >= res.clean_objective)
    if method != "random":
        assert res.flipped.mean() > 0.2  # eps 0.3 on a random Tanh policy flips many actions


def test_uint8_policy_refuses_observations_scaled_to_unit_range():
    """eps is in pixel levels: [0, 1]-scaled floats for a uint8 policy would be a silently
    wrong attack, so they are refused; integral floats are attacked as integers."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    class Frames(gym.Env):
        observation_space = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
        action_space = gym.spaces.Discrete(4)

        def reset(self, *, seed=None, options=None):
            return self.observation_space.sample(), {}

        def step(self, action):
            return self.observation_space.sample(), 0.0, True, False, {}

    model = PPO("CnnPolicy", DummyVecEnv([Frames]), n_steps=8, batch_size=8, verbose=0)
    obs = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    attack = ObservationAttack(model, eps=2.0, steps=2, method="pgd")
    with pytest.raises(ValueError, match="scaled to \\[0, 1\\]"):
        attack(obs.astype(np.float32) / 255.0)
    adv = attack(obs.astype(np.float32))
    assert adv.dtype == np.float32 and np.array_equal(adv, adv.round())
    assert np.abs(adv - obs).max() <= 2.0
