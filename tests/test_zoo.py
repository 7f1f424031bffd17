"""Tests of the shipped policies in agents/zoo: they load with PPO.load and act."""

from pathlib import Path

import numpy as np
import pytest
from stable_baselines3 import PPO

from adr_rl_app.envs.procgen import UNSEEN_LEVELS, make_procgen_vec_env

# The procgen extra provides the games: module procgen on 3.10-3.12, procgen_gym on 3.13.
pytestmark = pytest.mark.procgen

ZOO = Path(__file__).resolve().parents[1] / "agents" / "zoo"


@pytest.mark.parametrize("game", ["coinrun", "fruitbot"])
def test_shipped_policy_loads_and_steps(game):
    path = ZOO / f"ppo_{game}.zip"
    if not path.exists():
        pytest.skip(f"{path} is not shipped yet")
    model = PPO.load(path, device="cpu")
    venv = make_procgen_vec_env(game, n_envs=2, levels=UNSEEN_LEVELS, seed=0)
    obs = venv.reset()
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (2,) and all(venv.action_space.contains(int(a)) for a in actions)
    obs, rewards, dones, _ = venv.step(actions)
    assert obs.shape == (2, 64, 64, 3) and rewards.shape == (2,)
    # Unbatched predict works too.
    action, _ = model.predict(obs[0])
    assert np.ndim(action) == 0 and venv.action_space.contains(int(action))
    venv.close()
    assert (ZOO / f"ppo_{game}.md").exists(), "every shipped policy has a model card"


def test_shipped_agents_load_from_any_working_directory(tmp_path, monkeypatch):
    """The evaluation scripts find agents/zoo through the package, not the cwd."""
    from adr_rl_app.eval.attack_procgen import shipped_policy
    from adr_rl_app.eval.refine_control import load_agent

    monkeypatch.chdir(tmp_path)
    assert isinstance(shipped_policy("coinrun"), PPO)
    model, env_id = load_agent("td3_Pendulum-v1", zoo="", device="cpu")
    assert env_id == "Pendulum-v1" and model.__class__.__name__ == "TD3"


@pytest.mark.parametrize("game", ["coinrun", "fruitbot"])
def test_shipped_policies_are_fp32_impala_and_the_nature_ones_stay(game):
    """Issue 13: both games ship the IMPALA policy in plain fp32 PPO; the NatureCNN policy
    each replaced stays under ``_nature`` for the results measured on it."""
    import torch
    from stable_baselines3.common.torch_layers import NatureCNN

    from adr_rl.extractors import ImpalaCNN
    from adr_rl_app.eval.attack_procgen import policy_identity, shipped_policy

    impala = shipped_policy(game)
    assert isinstance(impala.policy.features_extractor, ImpalaCNN)
    assert all(p.dtype == torch.float32 for p in impala.policy.parameters())
    nature = shipped_policy(game, "_nature")
    assert isinstance(nature.policy.features_extractor, NatureCNN)
    assert policy_identity(game)["file"] == f"ppo_{game}.zip"
    assert policy_identity(game, "_nature")["file"] == f"ppo_{game}_nature.zip"
    assert policy_identity(game)["sha256"] != policy_identity(game, "_nature")["sha256"]


def test_policy_suffix_is_a_flag_and_a_missing_policy_is_named():
    from adr_rl_app.eval.attack_procgen import parse_args, shipped_policy
    from adr_rl_app.eval.errors import UserError

    assert parse_args(["--policy-suffix", "_nature"]).policy_suffix == "_nature"
    assert parse_args([]).policy_suffix == ""
    with pytest.raises(UserError, match="ppo_coinrun_nope"):
        shipped_policy("coinrun", "_nope")
