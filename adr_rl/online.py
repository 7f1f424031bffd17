"""Attacks while the agent plays: the agent sees perturbed observations, the env's state
stays clean.

:class:`AttackedPolicy` wraps anything that calls SB3's ``predict`` (e.g. for SB3's
``evaluate_policy``) and :class:`AttackedVecEnv` is a ``VecEnvWrapper``; both attack every
``every``-th step and a ``fraction`` of the envs, with any :data:`adr_rl.attack.Attack`
(an :class:`~adr_rl.attack.ObservationAttack` or a
:class:`~adr_rl.attack.WorstCaseAttack`), and count what the attacks did in
:class:`AttackStats`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from adr_rl.attack import Attack, AttackResult

__all__ = ["AttackStats", "AttackedPolicy", "AttackedVecEnv", "Schedule", "attack_rows"]


# --------------------------------------------------------------------------------------
# online: who gets attacked when
# --------------------------------------------------------------------------------------
class Schedule:
    """Attack on every ``every``-th step, each env independently with prob. ``fraction``."""

    def __init__(self, every: int, fraction: float, seed: int) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
        self.every, self.fraction = every, fraction
        self.rng = np.random.default_rng(seed)
        self.t = 0

    def mask(self, n: int) -> np.ndarray:
        on = self.t % self.every == 0
        self.t += 1
        if not on:
            return np.zeros(n, dtype=bool)
        if self.fraction >= 1.0:
            return np.ones(n, dtype=bool)
        return self.rng.random(n) < self.fraction


@dataclass
class AttackStats:
    """Running counts of an online attack.

    :param steps: observations seen; :param attacked: observations perturbed;
    :param flipped: attacked observations whose greedy action changed;
    :param succeeded: attacked observations where the attack succeeded (flip, or target hit);
    :param seconds: time spent attacking; :param calls: attack calls;
    :param wins: :class:`WorstCaseAttack` only: member index -> attacked observations
        where that member's output was kept (empty for a single attack).
    """

    steps: int = 0
    attacked: int = 0
    flipped: int = 0
    succeeded: int = 0
    seconds: float = 0.0
    calls: int = 0
    wins: dict[int, int] = field(default_factory=dict)

    @property
    def flip_rate(self) -> float:
        return self.flipped / self.attacked if self.attacked else float("nan")

    @property
    def success_rate(self) -> float:
        return self.succeeded / self.attacked if self.attacked else float("nan")

    def count(self, res: AttackResult) -> None:
        """Add one :meth:`ObservationAttack.perturb` call's observations."""
        self.attacked += len(res.clean_actions)
        self.flipped += int(res.flipped.sum())
        self.succeeded += int(res.success.sum())
        self.seconds += res.seconds
        self.calls += 1
        if res.winner is not None:
            members, counts = np.unique(res.winner, return_counts=True)
            for m, c in zip(members.tolist(), counts.tolist(), strict=True):
                self.wins[m] = self.wins.get(m, 0) + c


def attack_rows(
    attack: Attack, schedule: Schedule, stats: AttackStats, obs: np.ndarray
) -> np.ndarray:
    """Perturb the rows of a batch the schedule picks; the input is not modified."""
    n = obs.shape[0]
    stats.steps += n
    rows = np.flatnonzero(schedule.mask(n))
    if rows.size == 0:
        return obs
    res = attack.perturb(obs[rows])
    out = obs.copy()
    out[rows] = res.obs
    stats.count(res)
    return out


class AttackedPolicy:
    """An SB3 model whose ``predict`` sees attacked observations (drop-in ``predict``).

    :param model: the agent (anything with SB3's ``predict``; the attack holds its network).
    :param attack: the attack to apply (an :class:`ObservationAttack` or a
        :class:`WorstCaseAttack`).
    :param every: attack on every ``every``-th call only.
    :param fraction: on those calls, attack each observation with this probability.
    :param seed: seed of the schedule's generator.
    """

    def __init__(
        self,
        model: Any,
        attack: Attack,
        every: int = 1,
        fraction: float = 1.0,
        seed: int = 0,
    ) -> None:
        if not hasattr(model, "predict"):
            raise TypeError(f"model must have SB3's predict(), got {type(model).__name__}")
        self.model, self.attack = model, attack
        self.schedule = Schedule(every, fraction, seed)
        self.stats = AttackStats()

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's ``predict`` on the attacked observations.

        :param observation: ``(n_envs, *obs_shape)`` or one ``obs_shape``, as the env gives it.
        """
        obs = np.asarray(observation)
        space = self.attack.adapter.space
        batched = space is None or obs.ndim == len(space.shape) + 1
        adv = attack_rows(self.attack, self.schedule, self.stats, obs if batched else obs[None])
        return self.model.predict(
            adv if batched else adv[0],
            state=state,
            episode_start=episode_start,
            deterministic=deterministic,
        )


class AttackedVecEnv(VecEnvWrapper):
    """A ``VecEnv`` whose observations are attacked before the agent sees them.

    The wrapped env's state is untouched (only what ``reset``/``step`` return changes);
    ``clean_obs`` holds the last clean batch.

    :param venv: the env, observations ``(n_envs, *obs_shape)`` as the attack's model takes.
    :param attack: the attack to apply (an :class:`ObservationAttack` or a
        :class:`WorstCaseAttack`).
    :param every: attack on every ``every``-th step only (``reset`` counts as a step).
    :param fraction: on those steps, attack each env with this probability.
    :param seed: seed of the schedule's generator.
    """

    def __init__(
        self,
        venv: VecEnv,
        attack: Attack,
        every: int = 1,
        fraction: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(venv)
        self.attack = attack
        self.schedule = Schedule(every, fraction, seed)
        self.stats = AttackStats()
        self.clean_obs: np.ndarray | None = None

    def _perturb(self, obs: VecEnvObs) -> np.ndarray:
        if not isinstance(obs, np.ndarray):
            raise TypeError("AttackedVecEnv needs array observations (not dict or tuple spaces)")
        self.clean_obs = obs
        return attack_rows(self.attack, self.schedule, self.stats, obs)

    def reset(self) -> VecEnvObs:
        return self._perturb(self.venv.reset())

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        return self._perturb(obs), rewards, dones, infos
