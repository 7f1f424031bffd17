"""ADR's fused, in-place implementation against a plain autograd transcription of docs/method.md.

``adr_rl.optim`` computes the Lagrangian's gradients with one hand-written autograd node
per ReLU site and updates ``eta`` in place (speed); :func:`reference_iterates` below is
the same method written the obvious way (a loop over an MLP's layers, autograd on
``L(x, eta)``). Every iterate ``x_t`` must agree, so an optimization of the fast path
cannot silently change the method.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from adr_rl import ADRConfig, maximize
from tests.nets import mlp


def reference_iterates(
    net: nn.Sequential, x0: torch.Tensor, steps: int, lr: float, cfg: ADRConfig
) -> list[torch.Tensor]:
    """``[x_0, ..., x_T]`` of ADR (docs/method.md, ingredients 1-5) on a Linear/ReLU MLP.

    Activation variables are kept as gate logits ``w = alpha * (0.5 - eta)`` (so the
    gate is ``sigmoid(w)``); the noise kick and restarts are left out (the tests turn
    them off).
    """
    assert not cfg.use_noise and not cfg.restart_every
    a = cfg.alpha
    w_min, w_max = a * (0.5 - cfg.eta_max), a * (0.5 - cfg.eta_min)

    def pre_activations(x: torch.Tensor) -> list[torch.Tensor]:
        zs, h = [], x
        for layer in net:
            if isinstance(layer, nn.ReLU):
                zs.append(h)
                h = torch.relu(h)
            else:
                h = layer(h)
        return zs

    def pattern(x: torch.Tensor) -> list[torch.Tensor]:
        """Ingredient 1: eta = 0.5 - delta * sign(z), as logits."""
        with torch.no_grad():
            return [a * cfg.delta * (2.0 * (z > 0).to(x.dtype) - 1.0) for z in pre_activations(x)]

    def lagrangian(
        x: torch.Tensor, ws: list[torch.Tensor], c: torch.Tensor, scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ingredients 2-4: ``(L, C)`` per problem."""
        h, k, violation = x, 0, torch.zeros_like(c)
        for layer in net:
            if not isinstance(layer, nn.ReLU):
                h = layer(h)
                continue
            z, w = h, ws[k]
            k += 1
            h = torch.sigmoid(w) * z  # relu(z) -> g(eta) * z
            # Off gate with z > 0 or on gate with z < 0: relu(z * (eta - 0.5)) > 0.
            unit = torch.relu(-z * w)
            site = unit.max(dim=1).values if cfg.aggregate == "max" else unit.sum(dim=1)
            denominator = torch.full_like(c, a)
            if cfg.normalization == "layer":  # distance estimate: per-problem RMS of z
                rms = z.detach().norm(dim=1) * z.shape[1] ** -0.5
                denominator = (rms * a).clamp_min(1e-12)
            violation = violation + site / denominator
        j_hat = h.squeeze(1)
        if not cfg.use_constraint:
            return -j_hat / scale, torch.zeros_like(c)
        return -j_hat / scale + c * violation, violation

    x = x0.clone()
    ws = pattern(x)
    c = torch.full((x.shape[0],), cfg.c_init, dtype=x.dtype)
    scale = torch.ones_like(c)
    if cfg.objective_scale == "grad":
        xg = x.clone().requires_grad_(True)
        (g0,) = torch.autograd.grad(net(xg).sum(), xg)
        scale = g0.norm(dim=1).clamp_min(1e-12)
    iterates = [x.clone()]
    for t in range(1, steps + 1):
        if cfg.resync_freq and t % cfg.resync_freq == 0:
            ws = pattern(x)
        xv = x.clone().requires_grad_(True)
        wv = [w.clone().requires_grad_(cfg.use_eta_step) for w in ws]
        loss, violation = lagrangian(xv, wv, c, scale)
        wanted = [xv] + (wv if cfg.use_eta_step else [])
        grads = torch.autograd.grad(loss.sum(), wanted)
        gx = grads[0]
        if cfg.x_step == "sign":
            step = gx.sign()
        else:  # norm-clipped to L2 length <= 1
            step = gx / gx.norm(dim=1, keepdim=True).clamp_min(1.0)
        x = (x - lr * step).clamp(-1.0, 1.0)
        if cfg.use_eta_step:
            gw = torch.cat(grads[1:], dim=1)
            # dL/deta = -alpha dL/dw: a clipped step of length <= lr_eta in eta.
            norm = a * gw.norm(dim=1, keepdim=True)
            w_all = torch.cat(ws, dim=1) - (a**2 * cfg.lr_eta) * gw / norm.clamp_min(1.0)
            ws = list(w_all.clamp(w_min, w_max).split([w.shape[1] for w in ws], dim=1))
        v = violation.detach()
        c = torch.where(v > 0, c + cfg.lr_c * v, c * (1 - cfg.lr_c)).clamp(cfg.c_min, cfg.c_max)
        iterates.append(x.clone())
    return iterates


def library_iterates(
    net: nn.Sequential, x0: torch.Tensor, steps: int, lr: float, cfg: ADRConfig
) -> list[torch.Tensor]:
    """``[x_0, ..., x_T]`` as ``maximize`` visits them: it scores each iterate under the
    real network (without a graph) before stepping, and the last one after the loop."""
    scored: list[torch.Tensor] = []

    def objective(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            scored.append(x.detach().clone())
        return out.squeeze(1)

    maximize(net, x0, -1.0, 1.0, steps=steps, method="adr", lr=lr, config=cfg,
             objective=objective)  # fmt: skip
    return scored[-(steps + 1) :]


BASE = ADRConfig(use_noise=False)
CONFIGS = {
    "paper": BASE,
    "soft-gates": dataclasses.replace(BASE, alpha=20.0, lr_eta=0.5),
    "soft-resync-scaled": dataclasses.replace(
        BASE, alpha=30.0, resync_freq=3, objective_scale="grad"
    ),
    "sum-no-normalization": dataclasses.replace(
        BASE, alpha=20.0, aggregate="sum", normalization="none", c_init=2.0
    ),
    "sign-steps": dataclasses.replace(BASE, alpha=20.0, x_step="sign"),
    "no-eta-step": dataclasses.replace(BASE, alpha=20.0, use_eta_step=False),
    "no-constraint": dataclasses.replace(BASE, alpha=20.0, use_constraint=False),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_adr_iterates_match_the_plain_autograd_reference(name):
    cfg = CONFIGS[name]
    net = mlp((6, 24, 24, 1), seed=3, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(5, 6, generator=g, dtype=torch.float64) * 1.6 - 0.8
    lr = 0.05 if cfg.x_step == "sign" else 0.3
    expected = reference_iterates(net, x0, 12, lr, cfg)
    got = library_iterates(net, x0, 12, lr, cfg)
    assert len(got) == len(expected) == 13
    moved = (expected[-1] - expected[0]).abs().max()
    assert moved > 0.1  # the check is not vacuous: the iterates travel
    for t, (a, b) in enumerate(zip(got, expected, strict=True)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=f"iterate {t}")
