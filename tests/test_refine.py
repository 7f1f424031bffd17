"""Tests of ``adr_rl.ActionRefiner`` on small TD3/SAC agents trained inside the tests."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from adr_rl import ActionRefiner, MILPConfig

METHODS = ["none", "adr", "adr_sync", "gd", "adam", "cem"]


def _train(algo, seed=0):
    env = gym.make("Pendulum-v1")
    model = algo(
        "MlpPolicy",
        env,
        learning_starts=100,
        policy_kwargs={"net_arch": [32, 32]},
        seed=seed,
        verbose=0,
    )
    model.learn(300)
    return model


@pytest.fixture(scope="module")
def td3():
    return _train(TD3)


@pytest.fixture(scope="module")
def sac():
    return _train(SAC)


def _observations(space, n, seed):
    space = copy.deepcopy(space)
    space.seed(seed)
    return np.stack([space.sample() for _ in range(n)])


def _scaled(model, actions):
    return model.policy.scale_action(actions)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("algo", ["td3", "sac"])
def test_actions_in_space_trust_region_and_never_worse(method, algo, request):
    model = request.getfixturevalue(algo)
    obs = _observations(model.observation_space, 16, seed=1)
    refiner = ActionRefiner(model, method=method, radius=0.25, steps=15, seed=0)
    actions, state = refiner.predict(obs, deterministic=True)
    assert state is None
    assert actions.shape == (16, 1) and actions.dtype == np.float32
    assert all(model.action_space.contains(a) for a in actions)
    actor, _ = model.predict(obs, deterministic=True)
    moved = np.abs(_scaled(model, actions) - _scaled(model, actor))
    assert (moved <= 0.25 + 1e-5).all()
    info = refiner.last_info
    assert info.q_actor.shape == info.q_refined.shape == info.distance.shape == (16,)
    assert (info.q_refined >= info.q_actor - 1e-6).all()
    np.testing.assert_allclose(info.distance, moved.max(axis=1), atol=1e-5)
    # The reported Q is the critic's value at the returned action.
    obs_t, _ = model.policy.obs_to_tensor(obs)
    q = refiner.q_values(obs_t, torch.as_tensor(_scaled(model, actions)))
    np.testing.assert_allclose(q.numpy(), info.q_refined, rtol=1e-4, atol=1e-4)
    if method == "none":
        np.testing.assert_allclose(actions, actor, atol=1e-6)


def test_refinement_raises_q_somewhere(td3):
    obs = _observations(td3.observation_space, 32, seed=2)
    refiner = ActionRefiner(td3, method="adr_sync", radius=1.0, steps=50)
    refiner.predict(obs)
    assert (refiner.last_info.q_gain > 1e-4).any()


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    radius=st.floats(0.01, 2.5),
    seed=st.integers(0, 1000),
    n=st.integers(1, 5),
    method=st.sampled_from(["adr", "gd", "cem"]),
)
def test_invariants_property(td3, radius, seed, n, method):
    obs = _observations(td3.observation_space, n, seed)
    refiner = ActionRefiner(td3, method=method, radius=radius, steps=8, seed=seed)
    actions, _ = refiner.predict(obs)
    actor, _ = td3.predict(obs, deterministic=True)
    assert all(td3.action_space.contains(a) for a in actions)
    assert (np.abs(_scaled(td3, actions) - _scaled(td3, actor)) <= radius + 1e-5).all()
    assert (refiner.last_info.q_refined >= refiner.last_info.q_actor - 1e-6).all()


def test_unbatched_observation(td3):
    obs = _observations(td3.observation_space, 1, seed=3)[0]
    action, _ = ActionRefiner(td3, steps=5).predict(obs)
    assert action.shape == (1,) and td3.action_space.contains(action)


def test_works_with_sb3_evaluate_policy_on_two_envs(td3):
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=0, env_kwargs={"max_episode_steps": 25})
    refiner = ActionRefiner(td3, method="adr", radius=0.25, steps=5)
    mean, std = evaluate_policy(refiner, env, n_eval_episodes=2)
    assert np.isfinite(mean) and np.isfinite(std)
    assert -25 * 16.3 <= mean <= 0  # Pendulum rewards lie in [-16.3, 0]


def test_seeded_calls_are_reproducible(td3):
    obs = _observations(td3.observation_space, 8, seed=4)
    a1, _ = ActionRefiner(td3, method="cem", steps=5, seed=3).predict(obs)
    a2, _ = ActionRefiner(td3, method="cem", steps=5, seed=3).predict(obs)
    a3, _ = ActionRefiner(td3, method="cem", steps=5, seed=4).predict(obs)
    np.testing.assert_array_equal(a1, a2)
    assert not np.array_equal(a1, a3)


@pytest.mark.parametrize("critic", ["min", "q1", "mean"])
def test_critic_modes(td3, critic):
    obs = _observations(td3.observation_space, 4, seed=5)
    refiner = ActionRefiner(td3, method="none", critic=critic)
    refiner.predict(obs)
    obs_t, _ = td3.policy.obs_to_tensor(obs)
    actor, _ = td3.predict(obs, deterministic=True)
    with torch.no_grad():
        q1, q2 = td3.policy.critic(obs_t, torch.as_tensor(_scaled(td3, actor)))
    expected = {"min": torch.min(q1, q2), "q1": q1, "mean": (q1 + q2) / 2}[critic].squeeze(1)
    np.testing.assert_allclose(refiner.last_info.q_actor, expected.numpy(), rtol=1e-5, atol=1e-5)


def _snapshot(policy):
    return (
        copy.deepcopy(policy.state_dict()),
        [m.training for m in policy.modules()],
        [p.requires_grad for p in policy.parameters()],
        [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in policy.modules()],
    )


def test_model_state_untouched(td3):
    td3.policy.set_training_mode(True)
    before = _snapshot(td3.policy)
    ActionRefiner(td3, method="adr", steps=5).predict(
        _observations(td3.observation_space, 4, seed=6)
    )
    after = _snapshot(td3.policy)
    assert before[1:] == after[1:]
    for k in before[0]:
        assert torch.equal(before[0][k], after[0][k])
    td3.policy.set_training_mode(False)


def test_errors(td3):
    ppo = PPO("MlpPolicy", gym.make("Pendulum-v1"), n_steps=64, verbose=0)
    with pytest.raises(TypeError, match="TD3, DDPG and SAC"):
        ActionRefiner(ppo)
    with pytest.raises(ValueError, match="radius"):
        ActionRefiner(td3, radius=0.0)
    with pytest.raises(ValueError, match="unknown method"):
        ActionRefiner(td3, method="sgd")
    with pytest.raises(ValueError, match="critic"):
        ActionRefiner(td3, critic="max")
    with pytest.raises(ValueError, match="observation shape"):
        ActionRefiner(td3, steps=2).predict(np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="radius must be a finite number"):
        ActionRefiner(td3, radius=float("inf"))
    with pytest.raises(ValueError, match="empty batch"):
        ActionRefiner(td3, steps=2).predict(np.zeros((0, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="critic='mean'"):
        ActionRefiner(td3, method="milp", critic="mean")


@pytest.mark.parametrize("algo", ["td3", "sac"])
@pytest.mark.parametrize("critic", ["min", "q1"])
def test_milp_refinement_is_the_exact_maximum_in_the_trust_region(algo, critic, request):
    """CAQL-style: the certified maximum of the critic over the trust region, at least
    what every heuristic finds there, inside the action space."""
    model = request.getfixturevalue(algo)
    obs = _observations(model.observation_space, 8, seed=2)
    # a generous limit: these small critics solve in well under a second, but a busy
    # machine must not turn the certified maximum into a time-out's best point
    exact = ActionRefiner(
        model, method="milp", radius=0.25, critic=critic, config=MILPConfig(time_limit=300.0)
    )
    actions, _ = exact.predict(obs)
    assert all(model.action_space.contains(a) for a in actions)
    actor, _ = model.predict(obs, deterministic=True)
    assert (np.abs(_scaled(model, actions) - _scaled(model, actor)) <= 0.25 + 1e-5).all()
    q_exact = exact.last_info.q_refined
    for method in ("gd", "adr_sync", "apgd", "cem"):
        heuristic = ActionRefiner(model, method=method, radius=0.25, steps=30, critic=critic)
        heuristic.predict(obs)
        assert (heuristic.last_info.q_refined <= q_exact + 1e-5).all(), method


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["adr", "gd", "cem"])
def test_cuda_refinement_matches_cpu_and_stays_on_device(td3, method):
    """The refiner follows the model's device; CPU and CUDA give the same actions."""
    obs = _observations(td3.observation_space, 8, seed=4)
    cpu = ActionRefiner(td3, method=method, radius=0.25, steps=10, seed=0)
    cpu_actions, _ = cpu.predict(obs, deterministic=True)
    gpu_model = TD3("MlpPolicy", td3.env, policy_kwargs={"net_arch": [32, 32]}, device="cuda")
    gpu_model.policy.load_state_dict(td3.policy.state_dict())
    gpu = ActionRefiner(gpu_model, method=method, radius=0.25, steps=10, seed=0)
    gpu_actions, _ = gpu.predict(obs, deterministic=True)
    assert next(gpu_model.policy.parameters()).device.type == "cuda"
    assert all(td3.action_space.contains(a) for a in gpu_actions)
    np.testing.assert_allclose(gpu_actions, cpu_actions, atol=2e-3)
    np.testing.assert_allclose(
        gpu.last_info.q_refined, cpu.last_info.q_refined, rtol=1e-3, atol=1e-3
    )


def test_nan_observation_is_an_error_and_leaves_the_model_alone(td3):
    obs = _observations(td3.observation_space, 3, seed=7)
    obs[1, 0] = np.nan
    before = _snapshot(td3.policy)
    with pytest.raises(ValueError, match="NaN"):
        ActionRefiner(td3, steps=2).predict(obs)
    after = _snapshot(td3.policy)
    assert before[1:] == after[1:]


def test_discrete_agent_is_refused_with_what_is_supported():
    from stable_baselines3 import DQN

    dqn = DQN("MlpPolicy", gym.make("CartPole-v1"), learning_starts=0, verbose=0)
    with pytest.raises(TypeError, match="TD3, DDPG and SAC"):
        ActionRefiner(dqn)


def test_ddpg_is_supported():
    from stable_baselines3 import DDPG

    ddpg = _train(DDPG)
    obs = _observations(ddpg.observation_space, 6, seed=8)
    refiner = ActionRefiner(ddpg, method="adr", radius=0.25, steps=5)
    actions, _ = refiner.predict(obs)
    assert all(ddpg.action_space.contains(a) for a in actions)
    assert (refiner.last_info.q_refined >= refiner.last_info.q_actor - 1e-6).all()


def test_tqc_quantile_critics():
    sb3_contrib = pytest.importorskip("sb3_contrib")
    tqc = sb3_contrib.TQC(
        "MlpPolicy",
        gym.make("Pendulum-v1"),
        learning_starts=50,
        policy_kwargs={"net_arch": [32, 32], "n_quantiles": 5, "n_critics": 2},
        seed=0,
        verbose=0,
    )
    tqc.learn(100)
    obs = _observations(tqc.observation_space, 5, seed=9)
    refiner = ActionRefiner(tqc, method="adr", radius=0.25, steps=5, critic="mean")
    actions, _ = refiner.predict(obs)
    assert all(tqc.action_space.contains(a) for a in actions)
    # The reported Q of the actor's action is the mean over critics of the mean quantile.
    obs_t, _ = tqc.policy.obs_to_tensor(obs)
    actor, _ = tqc.predict(obs, deterministic=True)
    with torch.no_grad():
        quantiles = tqc.policy.critic(obs_t, torch.as_tensor(_scaled(tqc, actor)))
    np.testing.assert_allclose(
        refiner.last_info.q_actor, quantiles.mean(dim=(1, 2)).numpy(), rtol=1e-5, atol=1e-5
    )
    assert (refiner.last_info.q_refined >= refiner.last_info.q_actor - 1e-6).all()


class _DictPendulum(gym.ObservationWrapper):
    """Pendulum with a Dict observation: angle features and angular velocity apart."""

    def __init__(self) -> None:
        super().__init__(gym.make("Pendulum-v1"))
        box = self.env.observation_space
        self.observation_space = gym.spaces.Dict(
            {
                "angle": gym.spaces.Box(box.low[:2], box.high[:2]),
                "velocity": gym.spaces.Box(box.low[2:], box.high[2:]),
            }
        )

    def observation(self, obs):
        return {"angle": obs[:2], "velocity": obs[2:]}


def test_dict_observations():
    model = TD3(
        "MultiInputPolicy",
        _DictPendulum(),
        learning_starts=50,
        policy_kwargs={"net_arch": [16, 16]},
        seed=0,
        verbose=0,
    )
    model.learn(80)
    space = model.observation_space
    obs = {k: np.stack([space[k].sample() for _ in range(4)]) for k in space.spaces}
    refiner = ActionRefiner(model, method="gd", radius=0.3, steps=5)
    actions, _ = refiner.predict(obs)
    assert actions.shape == (4, 1) and all(model.action_space.contains(a) for a in actions)
    assert (refiner.last_info.q_refined >= refiner.last_info.q_actor - 1e-6).all()


def test_vec_normalize_statistics_are_applied(td3):
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]), norm_reward=False)
    venv.obs_rms.mean = np.array([0.5, -0.2, 1.0])
    venv.obs_rms.var = np.array([0.25, 4.0, 9.0])
    raw = _observations(td3.observation_space, 5, seed=10)
    with_stats = ActionRefiner(td3, method="gd", steps=5, vec_normalize=venv)
    by_hand = ActionRefiner(td3, method="gd", steps=5)
    a, _ = with_stats.predict(raw)
    b, _ = by_hand.predict(venv.normalize_obs(raw))
    np.testing.assert_array_equal(a, b)
    c, _ = by_hand.predict(raw)
    assert not np.allclose(a, c)


class _ImageEnv(gym.Env):
    """36x36 RGB uint8 observations (the smallest NatureCNN takes), 2-D Box actions."""

    observation_space = gym.spaces.Box(0, 255, (36, 36, 3), dtype=np.uint8)
    action_space = gym.spaces.Box(-2.0, 2.0, (2,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def test_image_observations_are_preprocessed_like_the_policy_does():
    model = TD3("CnnPolicy", _ImageEnv(), buffer_size=10, seed=0, verbose=0)
    space = model.observation_space
    space.seed(0)
    obs = np.stack([space.sample() for _ in range(3)])  # (3, 36, 36, 3) uint8, HWC
    refiner = ActionRefiner(model, method="adr", radius=0.5, steps=4)
    actions, _ = refiner.predict(obs)
    assert actions.shape == (3, 2) and all(model.action_space.contains(a) for a in actions)
    # The reported actor Q equals the critic on SB3's own preprocessing (transpose, /255).
    obs_t, _ = model.policy.obs_to_tensor(obs)
    actor, _ = model.predict(obs, deterministic=True)
    with torch.no_grad():
        q1, q2 = model.policy.critic(obs_t, torch.as_tensor(_scaled(model, actor)))
    np.testing.assert_allclose(
        refiner.last_info.q_actor, torch.min(q1, q2).squeeze(1).numpy(), rtol=1e-5, atol=1e-5
    )
    assert (refiner.last_info.q_refined >= refiner.last_info.q_actor - 1e-6).all()
