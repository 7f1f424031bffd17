"""Cross-check of the project's PGD and APGD against torchattacks' on the same policy logits.

torchattacks is an outside implementation (optional extra ``attack-check``; install it
with ``pip install --no-deps torchattacks`` plus scipy, tqdm and requests, because it
declares torchvision, which would pull a CUDA build of torch). Both attacks get the same
observations, labels (the clean greedy action), eps, step size and steps, no random
start, inputs mapped to [0, 1] for torchattacks; their action-flip rates must agree
within sampling noise. APGD (CE and DLR losses) likewise, both from a random start in
the ball (torchattacks always draws one) with the initial step ``2 * eps``; the schedules
differ only in rounding (see ``APGDConfig.checkpoints``). Run with ``-s`` to see the rates.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from adr_rl_app.envs.procgen import UNSEEN_LEVELS, make_procgen_vec_env

torchattacks = pytest.importorskip("torchattacks")
pytestmark = pytest.mark.procgen

from stable_baselines3 import PPO  # noqa: E402

from adr_rl.attack import ObservationAttack  # noqa: E402
from adr_rl.optim.configs import APGDConfig  # noqa: E402


class _UnitLogits(nn.Module):
    """The policy's logits as a function of a channel-first image in [0, 1]."""

    def __init__(self, policy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.policy
        features = p.pi_features_extractor(x)  # SB3 divides by 255: x is already in [0, 1]
        return p.action_net(p.mlp_extractor.policy_net(features))


def _observations(model, n: int) -> np.ndarray:
    venv = make_procgen_vec_env("coinrun", 16, levels=UNSEEN_LEVELS, seed=7)
    frames = []
    try:
        obs = venv.reset()
        for t in range(4 * n // 16):
            if t % 4 == 0:
                frames.append(obs.copy())
            actions, _ = model.predict(obs, deterministic=True)
            obs, _, _, _ = venv.step(actions)
    finally:
        venv.close()
    return np.concatenate(frames)[:n]


@pytest.fixture(scope="module")
def coinrun():
    model = PPO.load("agents/zoo/ppo_coinrun.zip", device="cpu")
    return model, _observations(model, 128)


def _tolerance(rate: float, n: int) -> float:
    return 3 * np.sqrt(max(rate * (1 - rate), 0.05) / n)


@pytest.mark.parametrize("eps", [1.0, 2.0])
def test_pgd_flip_rate_matches_torchattacks(eps):
    model = PPO.load("agents/zoo/ppo_coinrun.zip", device="cpu")
    obs = _observations(model, 128)
    steps, alpha = 10, 2.5 * eps / 10
    # Float observations: no rounding to integers, as torchattacks returns floats.
    ours = ObservationAttack(model, eps=eps, steps=steps, method="pgd", step_size=alpha).perturb(
        obs.astype(np.float32)
    )
    net = _UnitLogits(model.policy).eval()
    images = torch.as_tensor(obs, dtype=torch.float32).permute(0, 3, 1, 2) / 255.0
    labels = torch.as_tensor(ours.clean_actions)
    pgd = torchattacks.PGD(net, eps=eps / 255, alpha=alpha / 255, steps=steps, random_start=False)
    adv = pgd(images, labels)
    with torch.no_grad():
        theirs = (net(adv).argmax(1) != labels).float().mean().item()
    mine = float(ours.flipped.mean())
    noise = 3 * np.sqrt(max(mine * (1 - mine), 0.05) / len(obs))
    print(
        f"eps={eps:g}: flip rate ours {mine:.3f}, torchattacks {theirs:.3f}, tolerance {noise:.3f}"
    )
    assert abs(mine - theirs) <= noise


@pytest.mark.parametrize("loss", ["ce", "dlr"])
@pytest.mark.parametrize("eps", [1.0, 2.0])
def test_apgd_flip_rate_matches_torchattacks(coinrun, eps, loss):
    model, obs = coinrun
    steps = 10
    net = _UnitLogits(model.policy).eval()
    images = torch.as_tensor(obs, dtype=torch.float32).permute(0, 3, 1, 2) / 255.0
    ours = ObservationAttack(
        model, eps=eps, steps=steps, method="apgd", loss=loss, random_start=True, seed=0
    ).perturb(obs.astype(np.float32))
    labels = torch.as_tensor(ours.clean_actions)
    apgd = torchattacks.APGD(net, norm="Linf", eps=eps / 255, steps=steps, seed=0, loss=loss)
    adv = apgd(images, labels)
    assert (adv - images).abs().max() <= eps / 255 + 1e-6
    with torch.no_grad():
        theirs = (net(adv).argmax(1) != labels).float().mean().item()
    mine = float(ours.flipped.mean())
    # The reference code's rounding of the checkpoints (int(0.22 N), then every step).
    code = ObservationAttack(
        model,
        eps=eps,
        steps=steps,
        method="apgd",
        loss=loss,
        random_start=True,
        config=APGDConfig(checkpoints=tuple(range(2, steps))),
    ).perturb(obs.astype(np.float32))
    rounded = float(code.flipped.mean())
    noise = _tolerance(mine, len(obs))
    print(
        f"APGD-{loss} eps={eps:g}: flip rate ours {mine:.3f} (code's checkpoints {rounded:.3f}), "
        f"torchattacks {theirs:.3f}, tolerance {noise:.3f}"
    )
    assert abs(mine - theirs) <= noise and abs(rounded - theirs) <= noise
