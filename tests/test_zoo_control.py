"""The shipped control agents load with the installed numpy/SB3, act inside their env's
action space, and carry a model card whose recorded score they roughly reproduce."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3 import SAC, TD3

from adr_rl import ActionRefiner
from adr_rl_app.envs.control import CONTROL_ENVS, make_control_env

ZOO = Path(__file__).resolve().parents[1] / "agents" / "zoo"
AGENTS = sorted(p.stem for p in ZOO.glob("*.zip") if p.stem.split("_", 1)[0] in ("td3", "sac"))


def test_the_required_agents_are_shipped():
    envs = {name.split("_", 1)[1] for name in AGENTS}
    assert {"Pendulum-v1", "LunarLanderContinuous-v3"} <= envs
    assert any(CONTROL_ENVS[e] == "mujoco" for e in envs)


@pytest.mark.parametrize("name", AGENTS)
def test_shipped_agent_loads_acts_and_has_a_card(name):
    algo, env_id = name.split("_", 1)
    pytest.importorskip({"box2d": "Box2D", "mujoco": "mujoco"}.get(CONTROL_ENVS[env_id], "numpy"))
    model = {"td3": TD3, "sac": SAC}[algo].load(ZOO / f"{name}.zip", device="cpu")
    env = make_control_env(env_id, seed=1000)
    obs, _ = env.reset(seed=1000)
    action, _ = ActionRefiner(model, method="adr", radius=0.25, steps=3).predict(obs)
    assert env.action_space.contains(action)
    card = json.loads((ZOO / f"{name}.json").read_text())
    assert card["env"] == env_id and card["algo"] == algo
    assert len(card["eval"]["returns"]) == 20
    assert (ZOO / f"{name}.md").exists()
    # One deterministic episode from the card's eval seed lands within the card's range.
    total, done = 0.0, False
    obs, _ = env.reset(seed=card["eval"]["seed"])
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        done = terminated or truncated
    returns = np.asarray(card["eval"]["returns"])
    spread = returns.max() - returns.min()
    assert returns.min() - 0.5 * spread <= total <= returns.max() + 0.5 * spread
