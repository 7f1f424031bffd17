"""Smoke test of agents/train_offpolicy.py (tiny budget) and the hyper-parameter table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3 import TD3

from adr_rl import ActionRefiner
from adr_rl_app.agents.hyperparams import hyperparams
from adr_rl_app.eval.stats import bootstrap_mean_ci


def test_hyperparams_are_copies_and_unknown_pairs_fail():
    hp = hyperparams("td3", "Pendulum-v1")
    hp["gamma"] = 0.0
    assert hyperparams("td3", "Pendulum-v1")["gamma"] == 0.98
    with pytest.raises(KeyError, match="no hyper-parameters"):
        hyperparams("td3", "CartPole-v1")


def test_bootstrap_mean_ci_brackets_the_mean():
    x = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    lo, hi = bootstrap_mean_ci(x)
    assert lo < x.mean() < hi
    assert bootstrap_mean_ci(np.full(7, 3.0)) == (3.0, 3.0)


def test_train_script_writes_a_loadable_agent_and_card(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "adr_rl_app.agents.train_offpolicy",
        "--algo",
        "td3",
        "--env",
        "Pendulum-v1",
        "--total-timesteps",
        "250",
        "--eval-episodes",
        "2",
        "--checkpoint-freq",
        "100000",
        "--out",
        str(tmp_path),
    ]
    # Run in tmp_path so the checkpoints under runs/ land there too.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, check=True, cwd=tmp_path, env=env
    )
    card = json.loads((tmp_path / "td3_Pendulum-v1.json").read_text())
    # train_freq is one episode (rl-zoo3): training stops at the end of an episode.
    assert card["env_steps"] == 400 and card["seed"] == 0
    assert len(card["eval"]["returns"]) == 2
    assert card["eval"]["ci95"][0] <= card["eval"]["mean"] <= card["eval"]["ci95"][1]
    assert "Clean return over 2 episodes" in (tmp_path / "td3_Pendulum-v1.md").read_text()
    model = TD3.load(tmp_path / "td3_Pendulum-v1.zip")
    action, _ = ActionRefiner(model, steps=3).predict(np.zeros(3, dtype=np.float32))
    assert model.action_space.contains(action)


@pytest.mark.parametrize("env_id", ["LunarLanderContinuous-v3", "HalfCheetah-v5", "Hopper-v5"])
@pytest.mark.parametrize("algo", ["td3", "sac"])
def test_every_control_env_has_buildable_hyperparams(algo, env_id):
    from stable_baselines3 import SAC

    from adr_rl_app.envs.control import CONTROL_ENVS, make_control_env

    pytest.importorskip("Box2D" if CONTROL_ENVS[env_id] == "box2d" else "mujoco")
    config = hyperparams(algo, env_id)
    assert config.pop("n_timesteps") >= 100_000
    config.pop("noise_std", None)
    config["buffer_size"] = 1_000  # the constructor allocates the buffer
    model = {"td3": TD3, "sac": SAC}[algo]("MlpPolicy", make_control_env(env_id), **config)
    assert model.learning_starts == 10_000


def test_time_limit_and_latest_checkpoint(tmp_path):
    from adr_rl_app.agents.callbacks import LatestCheckpointCallback, TimeLimitCallback

    model = TD3("MlpPolicy", "Pendulum-v1", learning_starts=10_000, seed=0, verbose=0)
    ckpt = LatestCheckpointCallback(tmp_path / "latest.zip", freq=100)
    # A zero budget stops learn() at its first step; the checkpoint is written on demand.
    model.learn(10_000, callback=[ckpt, TimeLimitCallback(0.0)])
    assert model.num_timesteps == 1
    ckpt.save(model)
    assert (tmp_path / "latest.zip").exists()
    assert (tmp_path / "latest_replay_buffer.pkl").exists()
    assert not list(tmp_path.glob("tmp_*"))
    resumed = TD3.load(tmp_path / "latest.zip")
    assert resumed.num_timesteps == 1
