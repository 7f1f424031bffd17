"""Interval estimates shared by the eval and training scripts (no env dependencies)."""

from __future__ import annotations

import sys

import numpy as np


def bootstrap_mean_ci(
    values: np.ndarray, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean.

    :param values: ``(n,)`` float, e.g. episode returns.
    :param confidence: Coverage of the interval.
    :param n_resamples: Bootstrap resamples.
    :param seed: Seed of the resampling.
    :return: ``(low, high)``.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {values.shape}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}.")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_resamples, values.size))
    means = values[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_diff_ci(
    a: np.ndarray, b: np.ndarray, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of ``mean(a) - mean(b)`` for two
    independent samples (each resampled on its own), e.g. two methods' episode returns.

    :return: ``(low, high)``.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    for name, v in (("a", a), ("b", b)):
        if v.ndim != 1 or v.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D array, got shape {v.shape}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}.")
    rng = np.random.default_rng(seed)
    means_a = a[rng.integers(0, a.size, size=(n_resamples, a.size))].mean(axis=1)
    means_b = b[rng.integers(0, b.size, size=(n_resamples, b.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means_a - means_b, [alpha, 1 - alpha])
    return float(low), float(high)


def paired_difference(a: np.ndarray, b: np.ndarray) -> dict[str, object]:
    """Per-observation comparison of two success arrays over the same observations (e.g.
    two attacks' flips, seed-averaged): ``b - a``'s mean with its bootstrap 95% CI, and how
    many observations only ``a`` or only ``b`` succeeds on."""
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    low, high = bootstrap_mean_ci(diff)
    return {
        "diff": float(diff.mean()),
        "diff_ci95": [low, high],
        "only_a": int((diff < 0).sum()),
        "only_b": int((diff > 0).sum()),
    }


def return_summary(
    returns: np.ndarray, lengths: np.ndarray | None = None, seed: int = 0
) -> dict[str, float | int]:
    """The one schema of an episode-return metric, used by every eval script and read by
    every table: ``n_episodes``, ``mean_return``, ``ci95_low``/``ci95_high`` (percentile
    bootstrap of the mean), ``std_return`` and, with ``lengths``, ``mean_length``.

    :param returns: ``(n,)`` episode returns.
    :param lengths: ``(n,)`` episode lengths, or ``None``.
    :param seed: Seed of the bootstrap resampling.
    """
    returns = np.asarray(returns, dtype=np.float64)
    low, high = bootstrap_mean_ci(returns, seed=seed)
    summary: dict[str, float | int] = {
        "n_episodes": int(returns.size),
        "mean_return": float(returns.mean()),
        "ci95_low": low,
        "ci95_high": high,
        "std_return": float(returns.std()),
    }
    if lengths is not None:
        summary["mean_length"] = float(np.mean(lengths))
    return summary


#: Episodes per setting below which a comparison of means is mostly noise: with the
#: returns' usual spread, the 95% CI of a difference spans the whole effect sizes seen
#: here (e.g. ADR "raised" CoinRun's return from 0 to 5 over 2 episodes).
MIN_EPISODES = 10


def warn_if_few_episodes(n_episodes: int, what: str = "setting") -> bool:
    """Print a one-line warning to stderr when ``n_episodes`` < :data:`MIN_EPISODES`;
    ``True`` when it warned."""
    if n_episodes >= MIN_EPISODES:
        return False
    print(
        f"warning: {n_episodes} episodes per {what} give confidence intervals too wide to "
        f"compare methods; use at least {MIN_EPISODES}",
        file=sys.stderr,
    )
    return True
