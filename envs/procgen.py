"""Procgen games for Stable-Baselines3 2.x and Gymnasium.

Procgen comes from one of several wheels (:data:`BACKENDS`): ``procgen``, ``procgen2`` or
``procgen-mirror`` (module ``procgen``, built on the old ``gym`` and ``gym3``) or
``procgen-gym`` (module ``procgen_gym``, Gymnasium-native, Python >= 3.13); the same C++
games behind each: same levels, rewards and episode ends for a seed. Frames can differ in
a pixel or two where the wheels bundle different Qt builds (CoinRun's background under
``procgen2``/``procgen-mirror``). This module is the only place that touches them: everything it
returns speaks Gymnasium spaces and SB3's ``VecEnv`` API, so SB3's own wrappers
(``VecExtractDictObs``, ``VecMonitor``, ``VecTransposeImage``) and PPO work on it
unchanged.

Three pieces:

* :class:`ProcgenVecEnv` and :func:`make_procgen_vec_env`: the batched env used
  for training and evaluation, observations ``(N, 64, 64, 3) uint8 in [0, 255]``.
* :class:`ProcgenGymnasiumEnv` and :func:`make_procgen_env`: a single-env
  ``gymnasium.Env`` view for users of Gymnasium wrappers.
* :class:`LevelSplit`, :data:`TRAIN_LEVELS`, :data:`UNSEEN_LEVELS`: the level sets
  of the generalization protocol of Cobbe et al. 2020 ("Leveraging Procedural
  Generation to Benchmark Reinforcement Learning", Sec. 2.1): train on levels
  ``[0, 200)`` in ``easy`` mode, test on levels never seen in training.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import gymnasium
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecExtractDictObs, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from adr_rl_app.envs.games import DISTRIBUTION_MODES, N_ACTIONS, OBS_SHAPE, PROCGEN_GAMES

logger = logging.getLogger(__name__)

_SEED_MODULUS = 2**31  # procgen's rand_seed is a C int


@dataclass(frozen=True)
class LevelSplit:
    """A contiguous set of Procgen levels: ``[start_level, start_level + num_levels)``.

    :param start_level: First level seed of the set.
    :param num_levels: Number of levels; ``0`` means every level from
        ``start_level`` on (Procgen's convention), i.e. the full distribution.
    """

    start_level: int
    num_levels: int

    def __post_init__(self) -> None:
        if self.start_level < 0 or self.num_levels < 0:
            raise ValueError(
                f"LevelSplit needs start_level >= 0 and num_levels >= 0, got {self}; "
                "use num_levels=0 for an unbounded set."
            )

    def contains(self, level_seed: int) -> bool:
        """Whether ``level_seed`` (Procgen's ``info['level_seed']``) lies in this set."""
        if level_seed < self.start_level:
            return False
        return self.num_levels == 0 or level_seed < self.start_level + self.num_levels

    def overlaps(self, other: LevelSplit) -> bool:
        """Whether the two sets share a level."""
        lo = max(self.start_level, other.start_level)
        ends = [s.start_level + s.num_levels for s in (self, other) if s.num_levels > 0]
        return not ends or lo < min(ends)


#: Training levels of the standard generalization protocol (Cobbe et al. 2020, Sec. 2.1).
TRAIN_LEVELS = LevelSplit(start_level=0, num_levels=200)
#: Held-out levels, disjoint from :data:`TRAIN_LEVELS`. Cobbe et al. test on the full
#: distribution (``num_levels=0``), where a training level comes up with
#: probability ~200/2**31; starting at 10_000 makes the split disjoint by construction.
UNSEEN_LEVELS = LevelSplit(start_level=10_000, num_levels=1_000_000)


def level_split(name: Literal["train", "unseen"]) -> LevelSplit:
    """The named level set: ``"train"`` (:data:`TRAIN_LEVELS`) or ``"unseen"``."""
    if name == "train":
        return TRAIN_LEVELS
    if name == "unseen":
        return UNSEEN_LEVELS
    raise ValueError(f"Unknown level split {name!r}; use 'train' or 'unseen'.")


def _check_args(env_name: str, distribution_mode: str) -> None:
    if env_name not in PROCGEN_GAMES:
        raise ValueError(f"Unknown Procgen game {env_name!r}; pick one of {PROCGEN_GAMES}.")
    if distribution_mode not in DISTRIBUTION_MODES:
        raise ValueError(
            f"Unknown distribution_mode {distribution_mode!r}; pick one of {DISTRIBUTION_MODES}."
        )


#: Procgen backends, by the module they import, in the order they are tried: ``procgen``
#: (OpenAI's ``procgen`` wheel on CPython 3.10, ``procgen2`` on 3.11, ``procgen-mirror`` on
#: 3.12; built on ``gym``/``gym3``) and ``procgen_gym`` (``procgen-gym`` on CPython 3.13, a
#: Gymnasium-native port with no gym dependency). ``pyproject.toml``'s ``procgen`` extra
#: installs the one that has a wheel for the running Python.
BACKENDS: tuple[str, ...] = ("procgen", "procgen_gym")
#: Environment variable that forces one of :data:`BACKENDS`.
BACKEND_ENV_VAR = "ADR_RL_PROCGEN_BACKEND"


def procgen_backend() -> str:
    """The Procgen backend module this process uses (see :data:`BACKENDS`).

    :raises ImportError: none is installed, or the forced one is not; the message
        says which package to install for this Python.
    """
    forced = os.environ.get(BACKEND_ENV_VAR, "")
    if forced and forced not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV_VAR}={forced!r}; pick one of {BACKENDS}.")
    for name in (forced,) if forced else BACKENDS:
        if importlib.util.find_spec(name) is not None:
            return name
    raise ImportError(
        f"No Procgen backend installed{f' ({forced} forced)' if forced else ''}. Install the "
        "project's procgen extra (pip install -e '.[procgen]'): it picks procgen on Python 3.10, "
        "procgen2 on Python 3.11, procgen-mirror on 3.12 and procgen-gym on 3.13+."
    )


def procgen_available() -> bool:
    """Whether a Procgen backend is installed: lets callers (the tests) skip without one,
    whichever module the running Python's backend imports."""
    try:
        procgen_backend()
    except ImportError:
        return False
    return True


class BatchEnv(Protocol):
    """What :class:`ProcgenVecEnv` needs of a backend: one C++ batch of ``N`` games.

    ``reset() -> obs``; ``step(actions) -> (obs, rewards, dones, infos)`` with ``obs``
    ``(N, 64, 64, 3) uint8``, ``rewards (N,) float``, ``dones (N,) bool`` (the game
    restarted itself, so ``obs`` already shows the next level) and ``infos`` one dict
    per env (``level_seed``, ``prev_level_complete``, ...).
    """

    def reset(self) -> np.ndarray: ...

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]: ...

    def close(self) -> None: ...


class _Gym3Batch:
    """The ``procgen`` module's baselines-style ``ProcgenEnv`` (old-gym spaces)."""

    def __init__(self, env: Any) -> None:
        self.env = env

    def reset(self) -> np.ndarray:
        return self.env.reset()["rgb"]

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        obs, rewards, dones, infos = self.env.step(actions)
        return obs["rgb"], rewards, dones, [dict(info) for info in infos]

    def close(self) -> None:
        self.env.close()


class _GymnasiumBatch:
    """``procgen_gym.ProcgenVecEnv``: a Gymnasium ``VectorEnv``, infos as arrays.

    Each env's info is cut from the arrays as NumPy scalars of the C dtypes (``level_seed``
    int32, ``prev_level_complete`` uint8), as the ``procgen`` backend gives them, so that
    code reading infos sees the same types on every Python.
    """

    def __init__(self, env: Any) -> None:
        self.env = env

    def reset(self) -> np.ndarray:
        obs, _ = self.env.reset()
        return obs

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        n = len(rewards)
        infos = [{k: np.asarray(v)[i] for k, v in info.items()} for i in range(n)]
        return obs, rewards, np.logical_or(terminated, truncated), infos

    def close(self) -> None:
        self.env.close()


def make_batch_env(
    env_name: str,
    num_envs: int,
    distribution_mode: str,
    levels: LevelSplit,
    rand_seed: int,
) -> BatchEnv:
    """One C++ batch of ``num_envs`` games from the installed backend (imported lazily)."""
    backend = procgen_backend()
    kwargs = dict(
        num_envs=num_envs,
        env_name=env_name,
        distribution_mode=distribution_mode,
        num_levels=levels.num_levels,
        start_level=levels.start_level,
        rand_seed=int(rand_seed) % _SEED_MODULUS,
    )
    if backend == "procgen_gym":
        module = importlib.import_module("procgen_gym")
        return _GymnasiumBatch(module.ProcgenVecEnv(**kwargs))
    # Importing gym prints a deprecation banner on stderr; it says nothing actionable here.
    with contextlib.redirect_stderr(io.StringIO()):
        module = importlib.import_module("procgen")
        to_baselines = importlib.import_module("gym3").ToBaselinesVecEnv
    num = kwargs.pop("num_envs")
    # gym3 binds each C function of a new env lazily, under cffi's non-reentrant lock. If
    # the cyclic garbage collector runs inside that lock and finalizes another, unclosed
    # env, its ``__del__`` -> ``close()`` binds ``libenv_close`` and waits on the same lock
    # forever (seen in the test suite). So build with the collector paused and bind every
    # function up front: no later call, finalizers included, takes the lock again.
    collecting = gc.isenabled()
    gc.disable()
    try:
        env = module.ProcgenGym3Env(num=num, **kwargs)
        lib = env._c_lib
        for name in dir(lib):
            getattr(lib, name)
    finally:
        if collecting:
            gc.enable()
    return _Gym3Batch(to_baselines(env))


class ProcgenVecEnv(VecEnv):
    """Procgen as an SB3 ``VecEnv`` with Gymnasium spaces.

    Observations are a ``Dict('rgb': Box(0, 255, (64, 64, 3), uint8))`` batch; wrap
    with ``VecExtractDictObs(env, "rgb")`` (as :func:`make_procgen_vec_env` does) to
    get plain ``(N, 64, 64, 3) uint8`` arrays. Envs reset themselves at the end of an
    episode (SB3 convention), so the observation returned with ``done=True`` is the
    first frame of the next level; Procgen gives no terminal frame.

    Procgen seeds the whole batch with one ``rand_seed``, which fixes the sequence
    of levels every sub-env plays. :meth:`seed` stores a seed for the next
    :meth:`reset`; every :meth:`reset` after a step rebuilds the game so that
    fresh episodes start (procgen itself ignores resets mid-episode), drawing the
    next ``rand_seed`` from a generator seeded by the last seed, so a seeded env
    replays the same levels run after run.

    :param env_name: A Procgen game, e.g. ``"coinrun"`` or ``"fruitbot"``.
    :param num_envs: Number of parallel envs ``N``.
    :param distribution_mode: Procgen's difficulty, ``"easy"`` in the protocol.
    :param levels: Which levels to play.
    :param seed: Seed of the level sequence; ``None`` draws one from the OS.
    """

    def __init__(
        self,
        env_name: str,
        num_envs: int,
        distribution_mode: str = "easy",
        levels: LevelSplit = TRAIN_LEVELS,
        seed: int | None = None,
    ) -> None:
        _check_args(env_name, distribution_mode)
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}.")
        self.env_name = env_name
        self.distribution_mode = distribution_mode
        self.levels = levels
        self.render_mode: str | None = None
        observation_space = spaces.Dict(
            {"rgb": spaces.Box(low=0, high=255, shape=OBS_SHAPE, dtype=np.uint8)}
        )
        super().__init__(num_envs, observation_space, spaces.Discrete(N_ACTIONS))
        self._rng = np.random.default_rng(seed)
        self._pending_seed: int | None = None
        self._fresh = False  # True between a reset and the first step
        self._actions: np.ndarray | None = None
        self._last_obs: np.ndarray | None = None
        self._env = self._build(self._next_rand_seed())
        self._fresh = True

    def _next_rand_seed(self) -> int:
        return int(self._rng.integers(0, _SEED_MODULUS))

    def _build(self, rand_seed: int) -> Any:
        self.rand_seed = rand_seed
        return make_batch_env(
            self.env_name, self.num_envs, self.distribution_mode, self.levels, rand_seed
        )

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Seed the level sequence; it takes effect at the next :meth:`reset`.

        :return: One entry per env; Procgen seeds the batch as a whole, so all
            sub-envs share the seed.
        """
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        self._pending_seed = int(seed)
        return [self._pending_seed] * self.num_envs

    def reset(self) -> dict[str, np.ndarray]:
        if self._pending_seed is not None:
            self._rng = np.random.default_rng(self._pending_seed)
            self._pending_seed = None
            self._env.close()
            self._env = self._build(self._next_rand_seed())
        elif not self._fresh:
            self._env.close()
            self._env = self._build(self._next_rand_seed())
        self._fresh = True
        obs = self._env.reset()
        self._last_obs = obs
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return {"rgb": obs}

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.int32).reshape(self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async(); call step() instead.")
        self._fresh = False
        obs, rewards, dones, infos = self._env.step(self._actions)
        self._actions = None
        self._last_obs = obs
        return (
            {"rgb": obs},
            np.asarray(rewards, dtype=np.float32),
            np.asarray(dones, dtype=bool),
            infos,
        )

    def close(self) -> None:
        self._env.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        """The last observation of each env, ``(64, 64, 3) uint8``."""
        if self._last_obs is None:
            return [None] * self.num_envs
        return list(self._last_obs)

    def _indices_list(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        # The sub-envs live inside one C++ batch: only batch-level attributes exist.
        if not hasattr(self, attr_name):
            raise AttributeError(f"ProcgenVecEnv has no attribute {attr_name!r}.")
        return [getattr(self, attr_name) for _ in self._indices_list(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise NotImplementedError("Procgen sub-envs have no settable attributes.")

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        raise NotImplementedError("Procgen sub-envs have no callable methods.")

    def env_is_wrapped(
        self, wrapper_class: type[gymnasium.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [False for _ in self._indices_list(indices)]


def make_procgen_vec_env(
    env_name: str,
    n_envs: int = 64,
    *,
    distribution_mode: str = "easy",
    start_level: int | None = None,
    num_levels: int | None = None,
    levels: LevelSplit | None = None,
    seed: int | None = 0,
    monitor: bool = True,
    monitor_filename: str | None = None,
) -> VecEnv:
    """An SB3 ``VecEnv`` for a Procgen game, ready for PPO.

    The stack is ``ProcgenVecEnv -> VecExtractDictObs("rgb") -> VecMonitor``:
    observations are ``(n_envs, 64, 64, 3) uint8 in [0, 255]`` (PPO adds
    ``VecTransposeImage`` itself), actions ``Discrete(15)``, and with ``monitor``
    every finished episode's ``info["episode"] = {"r": return, "l": length, "t": s}``.

    :param env_name: A Procgen game, e.g. ``"coinrun"`` or ``"fruitbot"``.
    :param n_envs: Number of parallel envs.
    :param distribution_mode: Procgen difficulty; ``"easy"`` as in Cobbe et al. 2020.
    :param start_level: First level; with ``num_levels`` an alternative to ``levels``.
    :param num_levels: Number of levels (``0``: unbounded).
    :param levels: Level set; defaults to :data:`TRAIN_LEVELS`.
    :param seed: Seed of the level sequence (``None``: from the OS).
    :param monitor: Add ``VecMonitor`` for episode statistics.
    :param monitor_filename: Where ``VecMonitor`` writes its CSV (``None``: nowhere).
    """
    if levels is not None and (start_level is not None or num_levels is not None):
        raise ValueError("Pass either levels or start_level/num_levels, not both.")
    if levels is None:
        levels = LevelSplit(
            start_level=TRAIN_LEVELS.start_level if start_level is None else start_level,
            num_levels=TRAIN_LEVELS.num_levels if num_levels is None else num_levels,
        )
    venv: VecEnv = ProcgenVecEnv(env_name, n_envs, distribution_mode, levels, seed)
    venv = VecExtractDictObs(venv, key="rgb")
    if monitor:
        venv = VecMonitor(venv, filename=monitor_filename)
    return venv


class ProcgenGymnasiumEnv(gymnasium.Env[np.ndarray, np.int64]):
    """One Procgen game as a ``gymnasium.Env``.

    ``reset(seed=s)`` restarts the level sequence from seed ``s``; the levels
    played after it are then reproducible. Episodes end with ``terminated=True``
    (Procgen's own time limits, e.g. 1000 steps in CoinRun, also end as
    terminations, as in Procgen's gym registration); ``truncated`` is always
    ``False``. Procgen moves to the next level by itself, so the observation
    returned with ``terminated=True`` already shows the next level, and the
    following ``reset()`` without a seed returns that same frame.

    :param env_name: A Procgen game, e.g. ``"coinrun"``.
    :param distribution_mode: Procgen difficulty.
    :param levels: Level set; defaults to :data:`TRAIN_LEVELS`.
    :param render_mode: ``None`` or ``"rgb_array"`` (returns the last observation).
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        env_name: str,
        distribution_mode: str = "easy",
        levels: LevelSplit = TRAIN_LEVELS,
        render_mode: str | None = None,
    ) -> None:
        _check_args(env_name, distribution_mode)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}.")
        self.env_name = env_name
        self.distribution_mode = distribution_mode
        self.levels = levels
        self.render_mode = render_mode
        self.observation_space = spaces.Box(low=0, high=255, shape=OBS_SHAPE, dtype=np.uint8)
        self.action_space = spaces.Discrete(N_ACTIONS)
        self._env: Any = None
        self._obs: np.ndarray | None = None
        self._needs_restart = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None or self._needs_restart or self._env is None:
            if self._env is not None:
                self._env.close()
            rand_seed = int(self.np_random.integers(0, _SEED_MODULUS))
            self._env = make_batch_env(
                self.env_name, 1, self.distribution_mode, self.levels, rand_seed
            )
            self._obs = self._env.reset()[0]
        self._needs_restart = True
        assert self._obs is not None
        return self._obs.copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._env is None:
            raise RuntimeError("Call reset() before step().")
        if not self.action_space.contains(int(action)):
            raise ValueError(f"Action {action!r} is outside Discrete({N_ACTIONS}).")
        obs, rewards, dones, infos = self._env.step(np.array([int(action)], dtype=np.int32))
        self._obs = obs[0]
        terminated = bool(dones[0])
        # After a termination the next level is already loaded; reset() keeps it.
        self._needs_restart = not terminated
        return self._obs.copy(), float(rewards[0]), terminated, False, dict(infos[0])

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        if self.render_mode == "rgb_array" and self._obs is not None:
            return self._obs.copy()
        return None

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def make_procgen_env(
    env_name: str,
    *,
    distribution_mode: str = "easy",
    levels: LevelSplit = TRAIN_LEVELS,
    render_mode: str | None = None,
) -> ProcgenGymnasiumEnv:
    """A single-env Gymnasium view of a Procgen game; see :class:`ProcgenGymnasiumEnv`."""
    return ProcgenGymnasiumEnv(env_name, distribution_mode, levels, render_mode)
