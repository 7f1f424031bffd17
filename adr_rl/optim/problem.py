"""One batch of box-constrained problems: the best iterate under the *true* network
(ingredient 6 of docs/method.md) and the box projection every method shares.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from adr_rl.surrogate import ReluSurrogate


@dataclass
class MaximizeResult:
    """What :func:`maximize` found.

    :param x: ``(B, *input_shape)``, same dtype/device as ``x0``: best iterate per problem.
    :param value: ``(B,)``: the true objective at ``x`` (real ReLUs).
    :param initial_value: ``(B,)``: the true objective at ``x0``.
    :param history: ``(steps + 1, B)`` best-so-far value after each step when
        ``record_history=True``, else ``None``.
    :param network_evaluations: forward + backward passes of the network, each over
        the whole batch (see :func:`network_evaluations`).
    :param upper_bound: ``(B,)`` float64, a proven upper bound on the maximum over the
        box where one was computed (``method="milp"``, or ``bound=True``), else ``None``:
        ``upper_bound - value`` is the optimality gap. The bound is exact arithmetic on
        the float64 weights; a float32 network's own value can exceed it by its
        rounding error.
    """

    x: torch.Tensor
    value: torch.Tensor
    initial_value: torch.Tensor
    method: str
    steps: int
    network_evaluations: int
    history: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    upper_bound: torch.Tensor | None = None


class Problem:
    def __init__(
        self,
        evaluate: Callable[[torch.Tensor], torch.Tensor],
        surrogate: ReluSurrogate,
        x0: torch.Tensor,
        lo: torch.Tensor,
        hi: torch.Tensor,
        generator: torch.Generator,
        record_history: bool,
    ) -> None:
        self.evaluate, self.surrogate = evaluate, surrogate
        self.lo, self.hi, self.generator = lo, hi, generator
        self.batch = x0.shape[0]
        self.best_x = x0.clone()
        with torch.no_grad():
            v0, self.signs0 = surrogate.real(lambda: evaluate(x0))
        self.initial_value = v0.detach().clone()
        self.best_value = self.initial_value.clone()
        self.history: list[torch.Tensor] | None = (
            [self.best_value.clone()] if record_history else None
        )

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return project(x, self.lo, self.hi)

    def uniform(self) -> torch.Tensor:
        u = torch.rand(
            self.lo.shape, generator=self.generator, device=self.lo.device, dtype=self.lo.dtype
        )
        return self.lo + u * (self.hi - self.lo)

    def offer(self, x: torch.Tensor, value: torch.Tensor) -> None:
        """Keep ``x`` where it beats the best so far (true objective, NaN never wins)."""
        self.best_x, self.best_value = keep_better(self.best_x, self.best_value, x, value)

    def record(self) -> None:
        if self.history is not None:
            self.history.append(self.best_value.clone())

    def finish(self, x: torch.Tensor) -> None:
        """Score the last iterate too (the loop scores each iterate before stepping)."""
        final, _ = self.true_value(x, record=False)
        self.offer(x, final)
        if self.history is not None:
            self.history[-1] = self.best_value.clone()

    def true_value(
        self, x: torch.Tensor, record: bool = True
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with torch.no_grad():
            return self.surrogate.real(lambda: self.evaluate(x), record=record)

    def result(self, method: str, steps: int, evals: int, info: dict[str, Any]) -> MaximizeResult:
        history = torch.stack(self.history) if self.history is not None else None
        return MaximizeResult(
            x=self.best_x,
            value=self.best_value,
            initial_value=self.initial_value,
            method=method,
            steps=steps,
            network_evaluations=evals,
            history=history,
            info=info,
        )


def project(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    return torch.maximum(torch.minimum(x, hi), lo)


def keep_better(
    best_x: torch.Tensor, best_v: torch.Tensor, x: torch.Tensor, value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ingredient 6: ``x`` and its value where they beat the best so far (NaN never wins)."""
    better = value > best_v
    mask = better.view(-1, *([1] * (x.dim() - 1)))
    return torch.where(mask, x.detach(), best_x), torch.where(better, value.detach(), best_v)


def rowwise_norm(t: torch.Tensor) -> torch.Tensor:
    """``(B, ...) -> (B, 1, ...)``: L2 norm of each row, shaped to broadcast back."""
    norm = torch.linalg.vector_norm(t.flatten(1), dim=1)
    return norm.view(-1, *([1] * (t.dim() - 1)))


def normalized(t: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    return t / rowwise_norm(t).clamp_min(eps)


def clipped(t: torch.Tensor) -> torch.Tensor:
    """Scale rows with norm > 1 down to norm 1 (the paper's norm clipping)."""
    return t / rowwise_norm(t).clamp_min(1.0)


def gradient(problem: Problem, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """True objective at ``x`` and its gradient (one forward, one backward pass)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        value, _ = problem.surrogate.real(lambda: problem.evaluate(x), record=False)
        (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad
