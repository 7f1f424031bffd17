"""Tests of refined exploration (``adr_rl/exploration.py``) and its training-script flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import DDPG, PPO, SAC, TD3
from stable_baselines3.common.logger import configure

from adr_rl.exploration import (
    REFINED_ALGORITHMS,
    ExplorationRefinement,
    RefinedDDPG,
    RefinedExplorationMixin,
    RefinedSAC,
    RefinedTD3,
    refined_algorithm,
)

PLAIN = {"td3": TD3, "sac": SAC, "ddpg": DDPG}
REFINED = {"td3": RefinedTD3, "sac": RefinedSAC, "ddpg": RefinedDDPG}


def kwargs(net_arch: tuple[int, ...] = (32, 32)) -> dict:
    """Small and fast: learning from step 100, one gradient step per env step. A fresh
    dict each time (SB3 writes into ``policy_kwargs``)."""
    return dict(
        learning_starts=100,
        batch_size=32,
        train_freq=1,
        gradient_steps=1,
        policy_kwargs={"net_arch": list(net_arch)},
        seed=0,
        verbose=0,
    )


SHORT = ExplorationRefinement(method="adr", probability=0.5, warmup=150, steps=5)


class ActionRecorder(gym.Wrapper):
    """Keeps every action the env executes."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.actions: list[np.ndarray] = []

    def step(self, action):
        self.actions.append(np.array(action, copy=True))
        return self.env.step(action)


def _env() -> ActionRecorder:
    return ActionRecorder(gym.make("Pendulum-v1"))


@pytest.mark.parametrize("method", ["adr", "gd"])
@pytest.mark.parametrize("algo", ["td3", "sac"])
def test_refined_actions_are_counted_and_executed_actions_stay_in_space(algo, method):
    env = _env()
    refinement = ExplorationRefinement(method=method, probability=0.5, warmup=150, steps=5)
    model = REFINED[algo]("MlpPolicy", env, refinement=refinement, **kwargs())
    model.learn(300)
    stats = model.refinement_stats
    # One env: every step from max(warmup, learning_starts) on is eligible.
    assert stats.eligible == 300 - 150
    assert 0.3 < stats.share < 0.7 and stats.refined == round(stats.share * stats.eligible)
    assert stats.q_gain_sum >= 0 and stats.seconds > 0
    assert len(env.actions) == 300
    assert all(env.action_space.contains(a.astype(np.float32)) for a in env.actions)
    buffer = model.replay_buffer.actions[:300, 0]
    assert (np.abs(buffer) <= 1).all()
    # The buffer stores the scaled version of what the env executed.
    np.testing.assert_allclose(
        model.policy.unscale_action(buffer), np.stack(env.actions), rtol=1e-5, atol=1e-5
    )


def test_each_env_of_a_vec_env_flips_its_own_coin():
    from stable_baselines3.common.vec_env import DummyVecEnv

    recorders = [_env(), _env()]
    venv = DummyVecEnv([lambda r=r: r for r in recorders])
    model = RefinedTD3("MlpPolicy", venv, refinement=SHORT, **kwargs())
    model.learn(400)  # 200 steps of 2 envs; eligible from step 150 on
    stats = model.refinement_stats
    assert stats.eligible == 400 - 150 and 0 < stats.refined < stats.eligible
    for recorder in recorders:
        assert all(recorder.action_space.contains(a.astype(np.float32)) for a in recorder.actions)


@pytest.mark.parametrize("algo", ["td3", "sac"])
def test_probability_zero_is_bit_identical_to_the_plain_algorithm(algo):
    # One after the other: SB3 seeds torch's global generator in the constructor and the
    # updates draw from it.
    plain_env, refined_env = _env(), _env()
    plain = PLAIN[algo]("MlpPolicy", plain_env, **kwargs())
    plain.learn(300)
    refined = REFINED[algo](
        "MlpPolicy",
        refined_env,
        refinement=ExplorationRefinement(probability=0.0, warmup=0),
        **kwargs(),
    )
    refined.learn(300)
    np.testing.assert_array_equal(np.stack(plain_env.actions), np.stack(refined_env.actions))
    plain_state, refined_state = plain.policy.state_dict(), refined.policy.state_dict()
    assert plain_state.keys() == refined_state.keys()
    assert all(torch.equal(plain_state[k], refined_state[k]) for k in plain_state)
    assert refined.refinement_stats.refined == 0


def test_refinement_changes_the_run_only_after_the_warmup():
    plain_env, refined_env = _env(), _env()
    TD3("MlpPolicy", plain_env, **kwargs()).learn(250)
    RefinedTD3("MlpPolicy", refined_env, refinement=SHORT, **kwargs()).learn(250)
    plain, refined = np.stack(plain_env.actions), np.stack(refined_env.actions)
    np.testing.assert_array_equal(plain[:150], refined[:150])
    assert not np.array_equal(plain[150:], refined[150:])


def test_saved_model_loads_with_the_plain_class_and_acts_in_its_space(tmp_path):
    model = RefinedTD3("MlpPolicy", "Pendulum-v1", refinement=SHORT, **kwargs())
    model.learn(200)
    model.save(tmp_path / "refined")
    data = zipfile.ZipFile(tmp_path / "refined.zip").read("data").decode()
    assert "adr_rl" not in data and "refinement" not in data
    loaded = TD3.load(tmp_path / "refined")
    assert type(loaded) is TD3
    obs = np.stack([loaded.observation_space.sample() for _ in range(8)])
    actions, _ = loaded.predict(obs, deterministic=True)
    assert all(loaded.action_space.contains(a) for a in actions)
    np.testing.assert_array_equal(actions, model.predict(obs, deterministic=True)[0])
    # Resuming refined training: the settings are passed again.
    resumed = RefinedTD3.load(tmp_path / "refined", env=_env(), refinement=SHORT)
    resumed.learn(100, reset_num_timesteps=False)
    assert resumed.refinement_stats.refined > 0


def test_the_sb3_logger_gets_share_gain_and_time(tmp_path):
    model = RefinedTD3("MlpPolicy", "Pendulum-v1", refinement=SHORT, **kwargs())
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(400, log_interval=1)  # Pendulum's episodes are 200 steps: two dumps
    lines = (tmp_path / "progress.csv").read_text().splitlines()
    header, last = lines[0].split(","), lines[-1].split(",")
    row = dict(zip(header, last, strict=True))
    assert 0 < float(row["refine/share"]) < 1
    assert float(row["refine/q_gain"]) >= 0
    assert float(row["refine/seconds"]) > 0
    stats = model.refinement_stats
    assert int(float(row["refine/refined"])) == stats.refined
    # Pendulum has one action coordinate; the share on the box's faces is of those.
    assert stats.coordinates == stats.refined
    assert 0 <= stats.at_bound <= stats.coordinates
    assert float(row["refine/at_bound"]) == pytest.approx(stats.at_bound / stats.coordinates)


def test_equal_critic_evaluations_and_settings():
    adr = ExplorationRefinement(method="adr", evaluations=300)
    gd = ExplorationRefinement(method="gd", evaluations=300)
    assert (adr.n_steps, gd.n_steps) == (100, 150)
    assert adr.critic_evaluations == gd.critic_evaluations == 300
    assert ExplorationRefinement().as_dict() | {"seed": 0} == {
        "method": "adr",
        "probability": 0.25,
        "warmup": 5000,
        "steps": 100,
        "evaluations": None,
        "radius": 2.0,
        "critic": "target",
        "q": "q1",
        "seed": 0,
        "lr": None,
        "config": None,
        "compile": False,
        "n_steps": 100,
        "critic_evaluations": 300,
    }


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(method="newton"), "unknown refinement method"),
        (dict(probability=1.5), "probability"),
        (dict(warmup=-1), "warmup"),
        (dict(steps=0), "steps"),
        (dict(evaluations=2), "evaluations"),
        (dict(radius=0.0), "radius"),
        (dict(critic="behaviour"), "critic"),
        (dict(q="q2"), "q must"),
    ],
)
def test_bad_settings_name_the_fix(bad, match):
    with pytest.raises(ValueError, match=match):
        ExplorationRefinement(**bad)


def test_unsupported_algorithms_and_discrete_actions_are_refused():
    with pytest.raises(ValueError, match="continuous \\(Box\\) action space"):
        RefinedTD3("MlpPolicy", "CartPole-v1")
    with pytest.raises(TypeError, match="supports td3, ddpg, sac"):
        refined_algorithm("ppo")
    with pytest.raises(TypeError, match="no such critic"):
        refined_algorithm(PPO)

    class RefinedPPO(RefinedExplorationMixin, PPO):  # type: ignore[misc]
        pass

    with pytest.raises(TypeError, match="on-policy"):
        RefinedPPO("MlpPolicy", "Pendulum-v1")
    with pytest.raises(TypeError, match="ExplorationRefinement"):
        RefinedTD3("MlpPolicy", "Pendulum-v1", refinement={"method": "adr"})
    assert refined_algorithm(TD3) is RefinedTD3 and refined_algorithm("DDPG") is RefinedDDPG
    assert refined_algorithm(DDPG) is RefinedDDPG and refined_algorithm(SAC) is RefinedSAC
    assert set(REFINED_ALGORITHMS) >= {"td3", "ddpg", "sac"}


def test_tqc_if_installed():
    contrib = pytest.importorskip("sb3_contrib")
    env = _env()
    model = refined_algorithm("tqc")("MlpPolicy", env, refinement=SHORT, **kwargs((32,)))
    model.learn(250)
    assert model.refinement_stats.refined > 0
    assert all(env.action_space.contains(a.astype(np.float32)) for a in env.actions)
    assert refined_algorithm(contrib.TQC) is type(model)


def test_script_flags_parse_into_refinement_settings():
    from adr_rl_app.agents.train_offpolicy import parse_args, refinement_of

    args = parse_args(
        "--refine-method gd --refine-probability 0.1 --refine-warmup 7 --refine-steps 9 "
        "--refine-radius 0.5 --refine-critic online --refine-q min --seed 3".split()
    )
    assert refinement_of(args) == ExplorationRefinement(
        method="gd",
        probability=0.1,
        warmup=7,
        steps=9,
        radius=0.5,
        critic="online",
        q="min",
        seed=3,
    )
    args = parse_args("--refine-method adr --refine-evaluations 300".split())
    assert refinement_of(args).n_steps == 100
    assert refinement_of(parse_args([])) is None
    assert refinement_of(parse_args(["--refine-method", "none"])) is None
    with pytest.raises(SystemExit, match="probability"):
        refinement_of(parse_args("--refine-method adr --refine-probability 2".split()))
    with pytest.raises(SystemExit):
        parse_args(["--refine-critic", "behaviour"])


def test_adr_rl_train_td3_routes_the_refine_flags(tmp_path):
    # `adr-rl train td3` (python -m adr_rl_app) routes its flags to agents/train_offpolicy.py.
    # Its rl-zoo3 settings learn from step 10,000, so this tiny run records the settings but
    # refines nothing; the training tests above cover refined actions.
    cmd = [
        sys.executable,
        "-m",
        "adr_rl_app",
        "train",
        "td3",
        "--env",
        "Pendulum-v1",
        "--total-timesteps",
        "200",
        "--eval-episodes",
        "1",
        "--eval-freq",
        "200",
        "--checkpoint-freq",
        "100000",
        "--refine-method",
        "gd",
        "--refine-probability",
        "0.1",
        "--refine-warmup",
        "50",
        "--refine-steps",
        "20",
        "--out",
        str(tmp_path),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "OMP_NUM_THREADS": "1",
    }
    subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, check=True, cwd=tmp_path, env=env
    )
    card = json.loads((tmp_path / "td3_Pendulum-v1_refine-gd.json").read_text())
    settings = card["refinement"]["settings"]
    assert card["refinement"]["enabled"] is True
    assert (settings["method"], settings["probability"], settings["warmup"]) == ("gd", 0.1, 50)
    assert (settings["n_steps"], settings["critic"], settings["q"]) == (20, "target", "q1")
    assert card["refinement"]["refined_actions"] == 0  # learning_starts is 10,000
    assert "refined exploration | `gd`" in (tmp_path / "td3_Pendulum-v1_refine-gd.md").read_text()
    curve = json.loads((tmp_path / "td3_Pendulum-v1_refine-gd_learning_curve.json").read_text())
    assert curve["refinement"]["settings"] == settings
    model = TD3.load(tmp_path / "td3_Pendulum-v1_refine-gd.zip")
    action, _ = model.predict(np.zeros(3, dtype=np.float32))
    assert model.action_space.contains(action)
