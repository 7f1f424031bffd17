"""Tests of eval/rollout.py: episode quotas, seeding, any-predict policies, the bootstrap CI."""

import numpy as np
import pytest

from adr_rl_app.envs.procgen import TRAIN_LEVELS, UNSEEN_LEVELS, LevelSplit
from adr_rl_app.eval.episodes import episode_quotas
from adr_rl_app.eval.procgen_rollouts import RandomPolicy, RolloutResult, rollout, summarize
from adr_rl_app.eval.stats import bootstrap_mean_ci

# The procgen extra provides the games: module procgen on 3.10-3.12, procgen_gym on 3.13.
pytestmark = pytest.mark.procgen


class FirstActionPolicy:
    """Duck-typed policy with SB3's predict: counts calls and the batch size seen."""

    def __init__(self):
        self.calls = 0
        self.batch_sizes = set()

    def predict(self, observation, state=None, episode_start=None, deterministic=False):
        assert observation.dtype == np.uint8 and observation.shape[1:] == (64, 64, 3)
        self.calls += 1
        self.batch_sizes.add(observation.shape[0])
        return np.zeros(observation.shape[0], dtype=np.int64), state


@pytest.mark.parametrize(
    "n_episodes, n_envs, expected",
    [(10, 4, [2, 2, 3, 3]), (4, 4, [1, 1, 1, 1]), (7, 1, [7]), (100, 16, [6] * 12 + [7] * 4)],
)
def test_episode_quotas(n_episodes, n_envs, expected):
    quotas = episode_quotas(n_episodes, n_envs)
    assert quotas.tolist() == expected and quotas.sum() == n_episodes


def test_episode_quotas_reject_bad_sizes():
    with pytest.raises(ValueError, match="n_episodes"):
        episode_quotas(0, 4)


@pytest.mark.parametrize("levels", [TRAIN_LEVELS, UNSEEN_LEVELS])
def test_rollout_counts_quota_per_env(levels):
    result = rollout(
        RandomPolicy(seed=0), "coinrun", 10, levels=levels, n_envs=4, seed=0, progress_bar=False
    )
    assert isinstance(result, RolloutResult)
    assert result.returns.shape == result.lengths.shape == (10,)
    assert result.returns.dtype == np.float64 and result.lengths.dtype == np.int64
    assert np.bincount(result.env_ids, minlength=4).tolist() == [2, 2, 3, 3]
    assert set(np.unique(result.returns)) <= {0.0, 10.0}
    assert ((result.lengths > 0) & (result.lengths <= 1000)).all()
    assert all(levels.contains(int(s)) for s in result.level_seeds)
    assert result.config["n_episodes"] == 10


def test_rollout_is_seeded():
    a = rollout(RandomPolicy(seed=1), "fruitbot", 4, n_envs=2, seed=7, progress_bar=False)
    b = rollout(RandomPolicy(seed=1), "fruitbot", 4, n_envs=2, seed=7, progress_bar=False)
    np.testing.assert_array_equal(a.returns, b.returns)
    np.testing.assert_array_equal(a.level_seeds, b.level_seeds)


def test_rollout_accepts_any_predict_and_caps_envs():
    policy = FirstActionPolicy()
    result = rollout(
        policy, "coinrun", 2, levels=LevelSplit(0, 5), n_envs=8, seed=0, progress_bar=False
    )
    assert policy.batch_sizes == {2}
    assert result.config["n_envs"] == 2
    assert policy.calls >= result.lengths.max()


def test_random_policy_is_seeded_and_valid():
    obs = np.zeros((6, 64, 64, 3), dtype=np.uint8)
    a, _ = RandomPolicy(seed=3).predict(obs)
    b, _ = RandomPolicy(seed=3).predict(obs)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (6,) and ((a >= 0) & (a < 15)).all()


def test_bootstrap_ci():
    assert bootstrap_mean_ci(np.full(50, 3.0)) == (3.0, 3.0)
    values = np.random.default_rng(0).normal(5.0, 1.0, size=400)
    low, high = bootstrap_mean_ci(values, seed=1)
    assert low < values.mean() < high
    # Half-width close to the normal approximation 1.96 * sigma / sqrt(n).
    assert abs((high - low) / 2 - 1.96 * values.std() / 20) < 0.02
    assert bootstrap_mean_ci(values, seed=1) == (low, high)
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_mean_ci(np.array([]))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_mean_ci(values, confidence=95)


def test_summarize():
    result = RolloutResult(
        returns=np.array([0.0, 10.0, 10.0, 0.0]),
        lengths=np.array([10, 20, 30, 40]),
        level_seeds=np.zeros(4, dtype=np.int64),
        env_ids=np.zeros(4, dtype=np.int64),
    )
    s = summarize(result)
    assert s["mean_return"] == 5.0 and s["mean_length"] == 25.0 and s["n_episodes"] == 4
    assert 0.0 <= s["ci95_low"] <= 5.0 <= s["ci95_high"] <= 10.0


def test_command_line_writes_the_episodes_it_prints(tmp_path, monkeypatch, capsys):
    """``python -m adr_rl_app.eval.rollout``: the shipped model by its README path from any working
    directory; the JSON holds the episodes the printed mean summarizes."""
    import json

    from adr_rl_app.eval.rollout import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "episodes.json"
    argv = ["--model", "agents/zoo/ppo_coinrun.zip", "--n-episodes", "4", "--n-envs", "2"]
    main([*argv, "--out", str(out)])
    data = json.loads(out.read_text())
    returns = np.array(data["returns"])
    assert returns.shape == (4,) and data["summary"]["mean_return"] == returns.mean()
    assert f"mean return {returns.mean():.2f}" in capsys.readouterr().out


def test_command_line_rejects_a_bad_split_and_a_continuous_agent(tmp_path):
    from adr_rl_app.eval.loading import UserError
    from adr_rl_app.eval.rollout import main

    with pytest.raises(SystemExit):
        main(["--split", "test"])
    with pytest.raises(UserError, match="rollouts support"):
        main(["--model", "agents/zoo/td3_Pendulum-v1.zip", "--n-episodes", "1"])
