"""Tests of envs/procgen.py: SB3 VecEnv checks, the Gymnasium view and the level splits."""

import gc
import importlib

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.vec_env import VecEnv

from adr_rl_app.envs import procgen
from adr_rl_app.envs.procgen import (
    TRAIN_LEVELS,
    UNSEEN_LEVELS,
    LevelSplit,
    ProcgenVecEnv,
    level_split,
    make_procgen_env,
    make_procgen_vec_env,
)

# The procgen extra provides the games: module procgen on 3.10-3.12, procgen_gym on 3.13.
pytestmark = pytest.mark.procgen

GAMES = ["coinrun", "fruitbot"]


def _play(venv: VecEnv, steps: int, seed: int = 0) -> tuple[list, list[int]]:
    """Random actions; returns the infos of finished episodes and every level seed seen."""
    rng = np.random.default_rng(seed)
    finished, level_seeds = [], []
    for _ in range(steps):
        _, _, dones, infos = venv.step(rng.integers(0, 15, size=venv.num_envs))
        level_seeds += [info["level_seed"] for info in infos]
        finished += [info for info, done in zip(infos, dones, strict=True) if done]
    return finished, level_seeds


@pytest.mark.parametrize("game", GAMES)
def test_vec_env_spaces_and_shapes(game):
    venv = make_procgen_vec_env(game, n_envs=3, seed=0)
    try:
        assert isinstance(venv, VecEnv)
        assert venv.num_envs == 3
        assert isinstance(venv.observation_space, spaces.Box)
        assert venv.observation_space.shape == (64, 64, 3)
        assert venv.observation_space.dtype == np.uint8
        assert isinstance(venv.action_space, spaces.Discrete) and venv.action_space.n == 15
        obs = venv.reset()
        assert obs.shape == (3, 64, 64, 3) and obs.dtype == np.uint8
        assert all(venv.observation_space.contains(o) for o in obs)
        obs, rewards, dones, infos = venv.step(np.array([0, 1, 2]))
        assert obs.shape == (3, 64, 64, 3) and obs.dtype == np.uint8
        assert rewards.shape == (3,) and rewards.dtype == np.float32
        assert dones.shape == (3,) and dones.dtype == bool
        assert len(infos) == 3 and all(isinstance(info, dict) for info in infos)
        # The keys and NumPy types the procgen backend gives; procgen_gym is made to match.
        for info in infos:
            assert set(info) >= {"level_seed", "prev_level_seed", "prev_level_complete"}
            assert isinstance(info["level_seed"], np.int32) and info["level_seed"] >= 0
            assert isinstance(info["prev_level_complete"], np.uint8)
    finally:
        venv.close()


def test_vec_env_reports_episode_stats():
    venv = make_procgen_vec_env("coinrun", n_envs=8, seed=0)
    venv.reset()
    finished, _ = _play(venv, 1200)
    venv.close()
    assert finished, "random CoinRun episodes end within 1000 steps"
    for info in finished:
        assert set(info["episode"]) >= {"r", "l", "t"}
        assert 0 < info["episode"]["l"] <= 1000
        # CoinRun pays 10 for the coin and nothing else.
        assert info["episode"]["r"] in (0.0, 10.0)


def test_seeded_vec_env_is_reproducible():
    runs = []
    for _ in range(2):
        venv = make_procgen_vec_env("coinrun", n_envs=4, seed=123)
        first = venv.reset()
        _, seeds = _play(venv, 300, seed=1)
        runs.append((first, seeds))
        venv.close()
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


def test_seed_method_takes_effect_at_reset():
    venv = make_procgen_vec_env("coinrun", n_envs=2, seed=5)
    first = venv.reset()
    _play(venv, 50)
    assert venv.seed(5) == [5, 5]
    np.testing.assert_array_equal(venv.reset(), first)
    venv.close()


@pytest.mark.parametrize("split", [TRAIN_LEVELS, UNSEEN_LEVELS, LevelSplit(500, 3)])
def test_levels_stay_in_split(split):
    venv = make_procgen_vec_env("coinrun", n_envs=8, levels=split, seed=0)
    venv.reset()
    _, seeds = _play(venv, 600)
    venv.close()
    assert seeds and all(split.contains(s) for s in seeds)


def test_level_and_mode_reach_the_game():
    """A one-level split fixes the first frame whatever the seed, and the mode changes it:
    procgen-gym's own default mode is "hard", so a dropped mode would show here."""

    def first_frame(mode: str, seed: int) -> np.ndarray:
        levels = LevelSplit(5, 1)
        venv = make_procgen_vec_env("coinrun", 1, distribution_mode=mode, levels=levels, seed=seed)
        try:
            return venv.reset()[0]
        finally:
            venv.close()

    easy = first_frame("easy", 0)
    np.testing.assert_array_equal(easy, first_frame("easy", 1))
    assert not np.array_equal(easy, first_frame("hard", 0))


def test_level_splits():
    assert level_split("train") == TRAIN_LEVELS == LevelSplit(0, 200)
    assert level_split("unseen") == UNSEEN_LEVELS
    assert not TRAIN_LEVELS.overlaps(UNSEEN_LEVELS)
    assert LevelSplit(0, 10).overlaps(LevelSplit(9, 5))
    assert not LevelSplit(0, 10).overlaps(LevelSplit(10, 5))
    assert LevelSplit(5, 0).overlaps(LevelSplit(1_000_000, 1))
    assert TRAIN_LEVELS.contains(0) and TRAIN_LEVELS.contains(199)
    assert not TRAIN_LEVELS.contains(200) and not UNSEEN_LEVELS.contains(199)
    with pytest.raises(ValueError, match="unseen"):
        level_split("test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_levels"):
        LevelSplit(0, -1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Procgen game"):
        make_procgen_vec_env("pong", n_envs=1)
    with pytest.raises(ValueError, match="distribution_mode"):
        make_procgen_vec_env("coinrun", n_envs=1, distribution_mode="medium")
    with pytest.raises(ValueError, match="not both"):
        make_procgen_vec_env("coinrun", n_envs=1, levels=TRAIN_LEVELS, start_level=0)
    with pytest.raises(ValueError, match="num_envs"):
        ProcgenVecEnv("coinrun", 0)


def test_gymnasium_view_passes_check_env():
    env = make_procgen_env("coinrun", render_mode="rgb_array")
    assert isinstance(env, gymnasium.Env)
    check_env(env, skip_render_check=False)
    env.close()


def test_gymnasium_view_seeding_and_episode_end():
    env = make_procgen_env("coinrun", levels=UNSEEN_LEVELS)
    obs_a, _ = env.reset(seed=3)
    obs_b, _ = env.reset(seed=3)
    np.testing.assert_array_equal(obs_a, obs_b)
    assert obs_a.shape == (64, 64, 3) and obs_a.dtype == np.uint8
    rng = np.random.default_rng(0)
    for _ in range(1000):
        obs, reward, terminated, truncated, info = env.step(int(rng.integers(15)))
        assert not truncated
        if terminated:
            break
    assert terminated and UNSEEN_LEVELS.contains(info["prev_level_seed"])
    # The next level is already loaded: reset() without a seed returns its first frame.
    np.testing.assert_array_equal(env.reset()[0], obs)
    with pytest.raises(ValueError, match="Discrete"):
        env.step(15)
    env.close()


def test_gym3_env_binds_its_c_functions_up_front_with_the_collector_paused(monkeypatch):
    """A gym3 env binds C functions lazily under cffi's non-reentrant lock; a finalizer of an
    unclosed env run by the collector inside that lock hung the test suite. So every
    function is bound while the env is built, with the collector paused and restored."""
    if procgen.procgen_backend() != "procgen":
        pytest.skip("the gym3-based backend is not the one installed")
    paused = []
    real_init = importlib.import_module("procgen").ProcgenGym3Env.__init__

    def spy(self, *args, **kwargs):
        paused.append(not gc.isenabled())
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(importlib.import_module("procgen").ProcgenGym3Env, "__init__", spy)
    batch = procgen.make_batch_env("coinrun", 2, "easy", LevelSplit(0, 10), rand_seed=0)
    try:
        lib = batch.env.env._c_lib
        assert paused == [True] and gc.isenabled()
        assert {"libenv_close", "libenv_act", "libenv_observe"} <= set(vars(lib))
    finally:
        batch.close()
