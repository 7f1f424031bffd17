"""envs/procgen.py's backend selection: the pyproject extra picks one backend per
Python, and the Gymnasium-native backend (procgen-gym, Python >= 3.13) behind the same
VecEnv, tried here with a fake ``procgen_gym`` module where the real one cannot be
installed."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement

from adr_rl_app.envs import procgen
from adr_rl_app.envs.procgen import BACKEND_ENV_VAR, make_procgen_env, make_procgen_vec_env

ROOT = Path(__file__).resolve().parents[1]

FAKE_PROCGEN_GYM = textwrap.dedent(
    '''
    """A stand-in for procgen_gym: its ProcgenVecEnv's constructor and step API."""
    import numpy as np

    CALLS = []


    class ProcgenVecEnv:
        def __init__(self, num_envs=1, env_name="coinrun", distribution_mode="hard",
                     rand_seed=None, num_levels=0, start_level=0):
            CALLS.append(dict(num_envs=num_envs, env_name=env_name,
                              distribution_mode=distribution_mode, rand_seed=rand_seed,
                              num_levels=num_levels, start_level=start_level))
            self.num_envs, self.t = num_envs, 0
            self.start_level = start_level

        def _obs(self):
            return np.full((self.num_envs, 64, 64, 3), self.t % 256, dtype=np.uint8)

        def reset(self, seed=None, options=None):
            return self._obs(), {"level_seed": np.full(self.num_envs, self.start_level)}

        def step(self, actions):
            assert actions.dtype == np.int32 and actions.shape == (self.num_envs,)
            self.t += 1
            done = np.zeros(self.num_envs, dtype=bool)
            done[0] = self.t % 3 == 0
            # The real module's info arrays: int32 seeds, uint8 flags, one row per env.
            info = {"level_seed": (np.arange(self.num_envs) + self.start_level).astype(np.int32),
                    "prev_level_complete": done.astype(np.uint8)}
            return (self._obs(), np.ones(self.num_envs, np.float32), done,
                    np.zeros(self.num_envs, dtype=bool), info)

        def close(self):
            pass
    '''
)


def _extra() -> list[Requirement]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["optional-dependencies"]["procgen"]]


@pytest.mark.parametrize(
    "python, backend",
    [
        ("3.10", "procgen"),
        ("3.11", "procgen2"),
        ("3.12", "procgen-mirror"),
        ("3.13", "procgen-gym"),
        ("3.14", "procgen-gym"),
    ],
)
def test_the_extra_installs_exactly_one_backend_per_python(python, backend):
    env = {"python_version": python, "python_full_version": python + ".0"}
    chosen = [
        r.name
        for r in _extra()
        if r.name.startswith("procgen") and (r.marker is None or r.marker.evaluate(env))
    ]
    assert chosen == [backend]
    assert Marker(f"python_version == '{python}'").evaluate(env)


@pytest.fixture
def fake_procgen_gym(tmp_path, monkeypatch):
    (tmp_path / "procgen_gym.py").write_text(FAKE_PROCGEN_GYM)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(BACKEND_ENV_VAR, "procgen_gym")
    monkeypatch.delitem(sys.modules, "procgen_gym", raising=False)
    yield
    sys.modules.pop("procgen_gym", None)


def test_forced_backend_is_used_with_the_level_split(fake_procgen_gym):
    assert procgen.procgen_backend() == "procgen_gym"
    venv = make_procgen_vec_env("fruitbot", n_envs=3, start_level=10_000, num_levels=50, seed=7)
    obs = venv.reset()
    import procgen_gym

    call = procgen_gym.CALLS[-1]
    assert call["env_name"] == "fruitbot" and call["num_envs"] == 3
    # Easy mode and the split are passed explicitly: procgen-gym's own default is "hard".
    assert call["distribution_mode"] == "easy"
    assert (call["start_level"], call["num_levels"]) == (10_000, 50)
    assert obs.shape == (3, 64, 64, 3) and obs.dtype == np.uint8
    returns = []
    for _ in range(3):
        obs, rewards, dones, infos = venv.step(np.zeros(3, dtype=np.int64))
        assert rewards.dtype == np.float32 and dones.dtype == bool and len(infos) == 3
        assert [info["level_seed"] for info in infos] == [10_000, 10_001, 10_002]
        # NumPy scalars of the C dtypes, as the procgen backend gives them.
        assert all(isinstance(info["level_seed"], np.int32) for info in infos)
        assert all(isinstance(info["prev_level_complete"], np.uint8) for info in infos)
        returns.extend(info["episode"]["r"] for info in infos if "episode" in info)
    assert dones.tolist() == [True, False, False] and returns == [3.0]
    venv.close()


def test_gymnasium_view_runs_on_the_gymnasium_backend(fake_procgen_gym):
    env = make_procgen_env("coinrun")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3)
    _, reward, terminated, truncated, info = env.step(2)
    assert reward == 1.0 and not terminated and not truncated and info["level_seed"] == 0
    env.close()


def test_missing_backend_says_what_to_install(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV_VAR, "procgen_gym")
    monkeypatch.setattr(procgen.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"procgen2 on Python 3.11, procgen-mirror on 3.12"):
        procgen.procgen_backend()
    assert not procgen.procgen_available()
    monkeypatch.setenv(BACKEND_ENV_VAR, "gym3")
    with pytest.raises(ValueError, match="pick one of"):
        procgen.procgen_backend()


#: The module that each backend distribution of the extra installs.
MODULES = {
    "procgen": "procgen",
    "procgen2": "procgen",
    "procgen-mirror": "procgen",
    "procgen-gym": "procgen_gym",
}


@pytest.mark.procgen
def test_installed_backend_is_the_one_the_extra_picks_for_this_python(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    # The installed project's extra, its markers evaluated for this interpreter as pip did.
    requires = [Requirement(r) for r in importlib.metadata.requires("adr-rl") or []]
    (wanted,) = [
        r
        for r in requires
        if r.name.startswith("procgen") and r.marker and r.marker.evaluate({"extra": "procgen"})
    ]
    assert wanted.specifier.contains(importlib.metadata.version(wanted.name))
    assert procgen.procgen_backend() == MODULES[wanted.name]
