"""The baselines ADR is compared with: gradient ascent (normalized, sign, one-step
FGSM, Adam, with restarts or kicks), Auto-PGD, the cross-entropy method and uniform
sampling.
"""

from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm

from adr_rl.optim.configs import APGDConfig, CEMConfig
from adr_rl.optim.problem import Problem, gradient, keep_better, normalized


def run_gradient(
    problem: Problem, method: str, steps: int, lr: float, config: Any, bar: tqdm
) -> dict[str, Any]:
    x = problem.best_x.clone()
    m = torch.zeros_like(x)
    v = torch.zeros_like(x)
    last_check = problem.initial_value.clone()
    info: dict[str, Any] = {"lr": lr}
    for t in range(1, steps + 1):
        value, grad = gradient(problem, x)
        problem.offer(x, value)
        if method == "gd" or method == "restart_gd" or method == "perturbed_gd":
            x = x + lr * normalized(grad)
        elif method == "pgd":
            x = x + lr * grad.sign()
        elif method == "fgsm":
            x = torch.where(grad > 0, problem.hi, torch.where(grad < 0, problem.lo, x))
        elif method == "adam":
            b1, b2 = config.beta1, config.beta2
            m = b1 * m + (1 - b1) * grad
            v = b2 * v + (1 - b2) * grad * grad
            m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
            x = x + lr * m_hat / (v_hat.sqrt() + config.eps)
        x = problem.project(x)
        if method == "restart_gd" and t % config.restart_every == 0:
            x = problem.uniform()
        elif method == "perturbed_gd" and t % config.perturb_freq == 0:
            stalled = (value <= last_check).view(-1, *([1] * (x.dim() - 1)))
            width = torch.where(
                torch.isfinite(problem.hi - problem.lo), problem.hi - problem.lo, 2.0
            )
            kick = torch.randn(x.shape, generator=problem.generator, device=x.device, dtype=x.dtype)
            x = problem.project(torch.where(stalled, x + config.noise_scale * width * kick, x))
            last_check = torch.maximum(last_check, value)
        problem.record()
        bar.update()
    problem.finish(x)
    return info


def run_apgd(
    problem: Problem, steps: int, lr: float | None, cfg: APGDConfig, bar: tqdm
) -> dict[str, Any]:
    """Auto-PGD (Croce & Hein 2020, Algorithm 1) on all problems at once.

    Each problem keeps its own step size (``(B, *input_shape)``, halved per problem at
    the checkpoints) and its own run's best point ``x_max`` to restart from; every
    iterate is also offered to the problem's best-iterate record. One gradient per
    iterate (the last one of a run needs only its value), as PGD.

    :param lr: one initial step size for every coordinate; ``None``: ``2 * half-width``
        of each coordinate's box (the paper's ``2 * eps``).
    """
    lo, hi = problem.lo, problem.hi
    eta0 = (hi - lo).clone() if lr is None else torch.full_like(lo, float(lr))
    checkpoints = set(cfg.checkpoint_steps(steps))
    b = problem.batch
    halvings = torch.zeros(b, dtype=torch.long, device=lo.device)
    x_start = problem.best_x.clone()
    info: dict[str, Any] = {"lr": lr, "n_restarts": cfg.n_restarts}
    info["checkpoints"] = sorted(checkpoints)
    if steps == 0:
        return {**info, "halvings": halvings.cpu()}

    def rows(mask: torch.Tensor) -> torch.Tensor:
        return mask.view(-1, *([1] * (lo.dim() - 1)))

    for restart in range(cfg.n_restarts):
        x = x_start if restart == 0 else problem.uniform()
        eta = eta0.clone()
        value, grad = gradient(problem, x)
        problem.offer(x, value)
        x_max, f_max = x.clone(), value.clone()
        g_max = grad.clone()
        x_prev, prev_value = x, value
        increases = torch.zeros(b, device=lo.device)
        f_max_at_check = f_max.clone()
        halved_at_check = torch.zeros(b, dtype=torch.bool, device=lo.device)
        last_check = 0
        for k in range(1, steps + 1):
            # Eq. (2): a sign step, then the momentum step between it and the last move.
            a = 1.0 if k == 1 else cfg.momentum
            z = problem.project(x + eta * grad.sign())
            x_prev, x = x, problem.project(x + a * (z - x) + (1 - a) * (x - x_prev))
            if k < steps:
                value, grad = gradient(problem, x)
            else:
                value, _ = problem.true_value(x, record=False)
            problem.offer(x, value)
            increases += (value > prev_value).to(increases.dtype)
            prev_value = value
            better = value > f_max
            g_max = torch.where(rows(better), grad, g_max)
            x_max, f_max = keep_better(x_max, f_max, x, value)
            if k in checkpoints:
                cond1 = increases < cfg.rho * (k - last_check)
                cond2 = ~halved_at_check & ~(f_max > f_max_at_check)
                halve = cond1 | cond2
                eta = torch.where(rows(halve), eta / 2, eta)
                # Restart the halved problems from their best point, with its gradient.
                x = torch.where(rows(halve), x_max, x)
                grad = torch.where(rows(halve), g_max, grad)
                prev_value = torch.where(halve, f_max, prev_value)
                halvings += halve.long()
                halved_at_check, f_max_at_check = halve, f_max.clone()
                increases.zero_()
                last_check = k
            problem.record()
            bar.update()
    return {**info, "halvings": halvings.cpu()}


def run_random(problem: Problem, steps: int, bar: tqdm) -> dict[str, Any]:
    for _ in range(steps):
        x = problem.uniform()
        value, _ = problem.true_value(x, record=False)
        problem.offer(x, value)
        problem.record()
        bar.update()
    return {}


def run_cem(problem: Problem, steps: int, cfg: CEMConfig, bar: tqdm) -> dict[str, Any]:
    """CEM on all problems at once: one call evaluates ``population * B`` rows."""
    lo, hi = problem.lo, problem.hi
    half = (hi - lo) / 2
    mean, std = problem.best_x.clone(), cfg.init_std * half
    n, b = cfg.population, problem.batch
    for _ in range(steps):
        eps = torch.randn(
            (n, *mean.shape), generator=problem.generator, device=mean.device, dtype=mean.dtype
        )
        samples = torch.maximum(torch.minimum(mean + std * eps, hi), lo)  # (n, B, ...)
        value, _ = problem.true_value(samples.reshape(n * b, *mean.shape[1:]), record=False)
        value = value.view(n, b)
        top, idx = value.topk(cfg.elites, dim=0)  # (elites, B)
        gather = idx.view(cfg.elites, b, *([1] * (mean.dim() - 1))).expand(-1, *mean.shape)
        elite = samples.gather(0, gather)
        problem.offer(elite[0], top[0])
        mean = elite.mean(dim=0)
        std = torch.maximum(elite.std(dim=0, unbiased=False), cfg.min_std * half)
        problem.record()
        bar.update()
    return {"population": n, "elites": cfg.elites}
