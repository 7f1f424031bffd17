"""Attacked Procgen rollouts, shared by the attack commands: the attack names and how
each is built, episodes played from attacked observations, their aggregate, and the
return-vs-eps panel."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from adr_rl_app.eval.stats import return_summary

if TYPE_CHECKING:
    from stable_baselines3 import PPO

    from adr_rl.attack import Attack
    from adr_rl_app.envs.procgen import LevelSplit

# torch, SB3 and Procgen load inside the functions that use them, so the attack command
# can check its flags against ATTACK_NAMES before they load.

#: Attack names beyond the maximize methods: (maximize method, loss).
STRONG_ATTACKS: dict[str, tuple[str, str]] = {
    "apgd-ce": ("apgd", "ce"),
    "apgd-dlr": ("apgd", "dlr"),
    "value": ("apgd", "value"),
}


#: Every attack name the phases take.
ATTACK_NAMES = ("random", "fgsm", "pgd", "adr", "adr_sync", *STRONG_ATTACKS, "ensemble")


#: Precisions of the attacks' search (``make_attack``'s ``autocast``).
AUTOCAST = ("none", "bf16")


def autocast_dtype(name: str) -> Any:
    """``ObservationAttack``'s ``autocast`` for a precision name of :data:`AUTOCAST`."""
    import torch

    if name not in AUTOCAST:
        raise ValueError(f"autocast must be one of {', '.join(AUTOCAST)}, got {name!r}")
    return torch.bfloat16 if name == "bf16" else None


def make_attack(
    model: PPO,
    name: str,
    eps: float,
    steps: int,
    targeted: bool,
    seed: int,
    members: Sequence[str] = (),
    config: Any = None,
    autocast: str = "none",
) -> Attack:
    """The attack ``name`` (module docstring); ``members``: the ensemble's names, with 'adr'
    already resolved to a variant; ``autocast``: ``"none"`` or ``"bf16"`` (the search's
    forward and backward passes in bf16, ``ObservationAttack(autocast=...)``)."""
    from adr_rl.attack import ObservationAttack, WorstCaseAttack

    dtype = autocast_dtype(autocast)
    if name == "ensemble":
        return WorstCaseAttack(
            [
                make_attack(model, m, eps, steps, targeted, seed, config=config, autocast=autocast)
                for m in members
            ]
        )
    method, loss = STRONG_ATTACKS.get(name, (name, None))
    return ObservationAttack(
        model,
        eps=eps,
        steps=steps,
        method=method,
        loss=loss,  # type: ignore[arg-type]
        targeted=targeted,
        seed=seed,
        config=config,
        autocast=dtype,
    )


def shipped_policy(game: str, suffix: str = "") -> PPO:
    """The shipped PPO policy of ``game`` (``suffix="_nature"``: the NatureCNN one it
    replaced), found wherever the command runs from."""
    from adr_rl_app.eval.loading import load_model, zoo_path

    return load_model(zoo_path(f"ppo_{game}{suffix}"), allowed=("ppo",), device="cpu")


def collect_observations(
    model: PPO, game: str, n: int, levels: LevelSplit, seed: int, n_envs: int = 16, stride: int = 4
) -> np.ndarray:
    """``(n, 64, 64, 3) uint8``: every ``stride``-th frame the clean policy sees (the
    attack command's fixed observation sets: ``UNSEEN_LEVELS``, seed 0, for the flip
    phase)."""
    from stable_baselines3.common.utils import set_random_seed

    from adr_rl_app.envs.procgen import make_procgen_vec_env

    venv = make_procgen_vec_env(game, n_envs, levels=levels, seed=seed)
    set_random_seed(seed)
    frames: list[np.ndarray] = []
    try:
        obs = venv.reset()
        t = 0
        while sum(len(f) for f in frames) < n:
            if t % stride == 0:
                frames.append(obs.copy())
            actions, _ = model.predict(obs, deterministic=False)
            obs, _, _, _ = venv.step(actions)
            t += 1
    finally:
        venv.close()
    return np.concatenate(frames)[:n]


def applies(name: str, mode: str) -> bool:
    """The value attack has no target (it lowers V); every other attack has both modes."""
    return not (name == "value" and mode == "targeted")


# --------------------------------------------------------------------------------------
# rollouts with attacked observations
# --------------------------------------------------------------------------------------
def play(
    model: PPO,
    attack: Attack | None,
    game: str,
    n_episodes: int,
    seed: int,
    n_envs: int,
    max_steps: int,
    desc: str,
) -> dict[str, Any]:
    """Episodes on unseen levels; the agent samples its action from the attacked view.

    Only envs still owing episodes are attacked (the others keep playing clean until the
    batch is done, and their episodes do not count).
    """
    from stable_baselines3.common.utils import set_random_seed

    from adr_rl.online import AttackStats
    from adr_rl_app.envs.procgen import UNSEEN_LEVELS, make_procgen_vec_env
    from adr_rl_app.eval.episodes import episode_quotas
    from adr_rl_app.eval.episodes import play as play_episodes

    n_envs = min(n_envs, n_episodes)
    venv = make_procgen_vec_env(game, n_envs, levels=UNSEEN_LEVELS, seed=seed)
    set_random_seed(seed)
    stats = AttackStats()  # steps stays 0: only attacked observations are counted
    missed = [0]  # ensemble: observations a member succeeds on and the ensemble does not

    def act(obs: np.ndarray, active: np.ndarray, starts: np.ndarray) -> np.ndarray:
        seen = obs
        if attack is not None and active.any():
            res = attack.perturb(obs[active])
            seen = obs.copy()
            seen[active] = res.obs
            stats.count(res)
            if res.member_success is not None:  # the ensemble's own guarantee
                missed[0] += int((res.member_success.any(axis=0) & ~res.success).sum())
        actions, _ = model.predict(seen, deterministic=False)
        return actions

    try:
        episodes = play_episodes(
            venv, act, episode_quotas(n_episodes, n_envs), max_steps=max_steps, desc=desc
        )
    finally:
        venv.close()
    return {
        "returns": episodes.returns.tolist(),
        "lengths": episodes.lengths.tolist(),
        "truncated": episodes.truncated.tolist(),
        # Each sub-env's level sequence depends on the seed only, not on the actions, so
        # (seed, env, level) names the same episode start under every attack: the key
        # that pairs two settings' episodes (eval/attack_summary.py).
        "seed": seed,
        "env_ids": episodes.env_ids.tolist(),
        "level_seeds": [int(info.get("prev_level_seed", -1)) for info in episodes.infos],
        "attacked_obs": stats.attacked,
        "flipped": stats.flipped,
        "succeeded": stats.succeeded,
        "attack_seconds": stats.seconds,
        "attack_calls": stats.calls,
        "wins": {str(m): n for m, n in sorted(stats.wins.items())},
        "ensemble_missed": missed[0],
    }


def aggregate(runs: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    returns = np.concatenate([r["returns"] for r in runs])
    lengths = np.concatenate([r["lengths"] for r in runs])
    attacked = sum(r["attacked_obs"] for r in runs)
    seconds = sum(r["attack_seconds"] for r in runs)
    calls = sum(r["attack_calls"] for r in runs)
    return {
        **return_summary(returns, lengths, seed=seed),
        "truncated": int(sum(sum(r["truncated"]) for r in runs)),
        "flip_rate": sum(r["flipped"] for r in runs) / attacked if attacked else None,
        "success_rate": sum(r["succeeded"] for r in runs) / attacked if attacked else None,
        "attack_ms_per_obs": 1e3 * seconds / attacked if attacked else None,
        "attack_ms_per_call": 1e3 * seconds / calls if calls else None,
        "attacked_obs": attacked,
        "wins": wins_of(runs),
    }


def wins_of(runs: list[dict[str, Any]]) -> dict[str, int] | None:
    """The ensemble's member win counts summed over runs (member index -> attacked
    observations its output was kept on); ``None`` for a single attack."""
    total: dict[str, int] = {}
    for r in runs:
        for m, n in r.get("wins", {}).items():
            total[m] = total.get(m, 0) + n
    return total or None


LineStyle = tuple[str, dict[str, Any], float]  # label, errorbar options, eps scale


def mode_style(method: str, mode: str, steps: int) -> LineStyle:
    """Default lines: colours in order, solid untargeted, dashed targeted."""
    label = f"{method}" + (f" ({steps} steps)" if method not in ("fgsm",) else "")
    return f"{label}, {mode}", {"capsize": 3, "ls": "-" if mode == "untargeted" else "--"}, 1.0


def draw_returns_vs_eps(
    ax: Any,
    rows: list[dict[str, Any]],
    title: str,
    style: Callable[[str, str, int], LineStyle] = mode_style,
    legend_size: float = 6,
) -> None:
    """One game's mean return (95% CI) vs eps, one line per method/mode/steps, the clean
    policy (a ``none`` row, if any) as a band; ``style`` labels and draws each line (also
    ``eval.attacking``'s and ``eval.attack_summary``'s plots)."""
    clean = next((r for r in rows if r["method"] == "none"), None)
    if clean is not None:
        ax.axhspan(clean["ci95_low"], clean["ci95_high"], color="gray", alpha=0.2)
        ax.axhline(clean["mean_return"], color="gray", lw=1, label="no attack")
    keys = sorted({(r["method"], r["mode"], r["steps"]) for r in rows if r["method"] != "none"})
    for method, mode, steps in keys:
        sel = sorted(
            (r for r in rows if (r["method"], r["mode"], r["steps"]) == (method, mode, steps)),
            key=lambda r: r["eps"],
        )
        label, options, scale = style(method, mode, steps)
        eps = np.array([r["eps"] for r in sel]) * scale
        mean = np.array([r["mean_return"] for r in sel])
        err = np.array(
            [[m - r["ci95_low"], r["ci95_high"] - m] for m, r in zip(mean, sel, strict=True)]
        ).T
        ax.errorbar(eps, mean, yerr=err, marker="o", label=label, **options)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("eps (pixel levels of 255)")
    ax.set_ylabel("mean episode return (95% CI)")
    ax.set_title(title)
    ax.legend(fontsize=legend_size)
