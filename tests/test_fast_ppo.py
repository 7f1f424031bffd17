"""agents/fast_ppo.py: numerics selection, fp32 zips, bf16 agreement with fp32; the
machine facts of adr_rl/machine.py; eval/bench_train_procgen.py's smoke run."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

from adr_rl import machine
from adr_rl.extractors import impala_cnn_policy_kwargs, init_baselines_heads
from adr_rl_app.agents.fast_ppo import (
    NUMERICS,
    FastPPO,
    ProcgenRecipe,
    apply_numerics,
    make_procgen_ppo,
    resolve_numerics,
    value_loss,
)


class ImageEnv(gym.Env):
    """A tiny image env (Procgen's observation and action spaces, random frames)."""

    observation_space = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    action_space = gym.spaces.Discrete(15)

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        obs = self.rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        return obs, float(action == 3), bool(self.rng.random() < 0.05), False, {}


def _model(numerics: str, **kwargs) -> FastPPO:
    venv = DummyVecEnv([ImageEnv, ImageEnv])
    return FastPPO(
        "CnnPolicy",
        venv,
        n_steps=16,
        batch_size=16,
        n_epochs=1,
        policy_kwargs=impala_cnn_policy_kwargs(),
        numerics=numerics,
        seed=0,
        device="cpu",
        **kwargs,
    )


def _obs(n: int = 64, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def test_resolve_numerics_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(machine, "_cpuinfo", lambda: ("Fake CPU", frozenset({"avx2"})))
    monkeypatch.setattr("adr_rl_app.agents.fast_ppo.native_bf16", machine.native_bf16)
    assert not machine.native_bf16("cpu")
    assert resolve_numerics("auto", "cpu") == "fp32-cl"
    monkeypatch.setattr(machine, "_cpuinfo", lambda: ("Fake CPU", frozenset({"avx512_bf16"})))
    assert machine.native_bf16("cpu")
    assert resolve_numerics("auto", "cpu") == "bf16-cl"
    assert resolve_numerics("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="Unknown numerics 'fp16'"):
        resolve_numerics("fp16", "cpu")


def _features_rms(model: PPO) -> float:
    obs = model.policy.obs_to_tensor(_obs(32))[0]
    with torch.no_grad():
        return model.policy.extract_features(obs).pow(2).mean().sqrt().item()


def test_impala_recipe_keeps_default_init_in_the_cnn_and_baselines_init_in_the_heads():
    recipe = ProcgenRecipe(num_envs=2, num_steps=16, num_minibatches=2)
    model = make_procgen_ppo(DummyVecEnv([ImageEnv, ImageEnv]), recipe, numerics="fp32", seed=0)
    assert model.policy_kwargs["ortho_init"] is False
    # PyTorch's default conv init: uniform with bound 1/sqrt(fan_in), std 1/sqrt(3 fan_in).
    for conv in (m for m in model.policy.features_extractor.modules() if isinstance(m, nn.Conv2d)):
        fan_in = conv.weight[0].numel()
        assert conv.weight.abs().max() <= 1 / fan_in**0.5
        assert conv.weight.std().item() == pytest.approx((3 * fan_in) ** -0.5, rel=0.25)
    pi, vf = model.policy.action_net, model.policy.value_net
    torch.testing.assert_close(pi.weight @ pi.weight.T, 1e-4 * torch.eye(15), atol=1e-8, rtol=0)
    assert vf.weight.norm().item() == pytest.approx(1.0, rel=1e-5)
    assert not pi.bias.any() and not vf.bias.any()
    # Why: SB3's orthogonal sqrt(2) init blows the residual network's features up.
    sb3_init = PPO(
        "CnnPolicy",
        DummyVecEnv([ImageEnv]),
        policy_kwargs={**impala_cnn_policy_kwargs(), "ortho_init": True},
        seed=0,
        device="cpu",
    )
    assert _features_rms(model) < 1.0 < 5.0 < _features_rms(sb3_init)


def test_init_baselines_heads_needs_linear_heads():
    policy = nn.Module()
    policy.action_net = nn.Sequential(nn.Linear(4, 2))
    policy.value_net = nn.Linear(4, 1)
    with pytest.raises(TypeError, match="policy.action_net is Sequential"):
        init_baselines_heads(policy)


def test_machine_info_names_the_cpu():
    info = machine.machine_info()
    assert info["cpu_model"] and isinstance(info["cpu_flags"], list)
    assert set(info["cpu_flags"]) <= set(machine.SPEED_FLAGS)
    assert info["torch"] == torch.__version__ and info["cpu_count"] >= 1


@pytest.mark.parametrize("numerics", ["fp32-cl", "bf16-cl"])
def test_fast_numerics_are_installed_on_the_training_policy(numerics):
    model = _model(numerics)
    assert model.numerics_mode == numerics
    conv = model.policy.features_extractor.conv_seqs[0].conv.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and conv.dtype == torch.float32
    seen = {}

    def probe(module, args, output):
        seen["dtype"] = output.dtype

    handle = model.policy.features_extractor.head[2].register_forward_hook(probe)
    obs_t = model.policy.obs_to_tensor(_obs(4))[0]
    with torch.no_grad():
        features = model.policy.extract_features(obs_t)
    handle.remove()
    assert features.dtype == torch.float32  # heads, losses and Adam stay fp32
    assert seen["dtype"] == (torch.bfloat16 if numerics == "bf16-cl" else torch.float32)
    assert not torch.is_autocast_enabled("cpu")  # the hooks left autocast
    model.learn(32)  # a real update runs in this mode


def test_autocast_is_left_when_the_extractor_raises():
    model = _model("bf16-cl")
    bad = torch.zeros(2, 3, 7, 7)  # too small for the IMPALA head's linear layer
    with pytest.raises(RuntimeError):
        model.policy.features_extractor(bad)
    assert not torch.is_autocast_enabled("cpu")


def test_saved_zip_is_plain_fp32_ppo(tmp_path):
    model = _model("bf16-cl")
    model.learn(32)
    path = tmp_path / "fast.zip"
    model.save(path)
    plain = PPO.load(path, device="cpu")
    extractor = plain.policy.features_extractor
    assert type(plain) is PPO and not extractor._forward_hooks and not extractor._forward_pre_hooks
    assert all(p.dtype == torch.float32 for p in plain.policy.parameters())
    assert extractor.conv_seqs[0].conv.weight.is_contiguous()  # default layout again
    for name, p in model.policy.state_dict().items():
        torch.testing.assert_close(plain.policy.state_dict()[name], p, rtol=0, atol=0)
    actions, _ = plain.predict(_obs(8), deterministic=True)
    assert actions.shape == (8,) and all(plain.action_space.contains(int(a)) for a in actions)
    again = FastPPO.load(path, device="cpu", numerics="fp32-cl")
    assert again.numerics_mode == "fp32-cl"


def test_fp32_cl_gives_fp32_actions_and_bf16_agrees_within_the_bound(tmp_path):
    """channels-last changes only the summation order; bf16 may flip near-tied argmaxes.

    Bound: bf16 autocast in the extractor gives the fp32 argmax action on >= 95% of
    256 observations (fp32-cl: >= 99%), and log-probabilities within 0.1 nats.
    """
    model = _model("fp32")
    model.learn(64)
    path = tmp_path / "m.zip"
    model.save(path)
    obs = _obs(256, seed=3)
    ref = PPO.load(path, device="cpu")
    obs_t = ref.policy.obs_to_tensor(obs)[0]
    with torch.no_grad():
        ref_logits = ref.policy.get_distribution(obs_t).distribution.logits
    for mode, min_agree in (("fp32-cl", 0.99), ("bf16-cl", 0.95)):
        fast = FastPPO.load(path, device="cpu", numerics=mode)
        with torch.no_grad():
            logits = fast.policy.get_distribution(obs_t).distribution.logits
        agree = (logits.argmax(1) == ref_logits.argmax(1)).float().mean().item()
        assert agree >= min_agree, (mode, agree)
        assert (logits - ref_logits).abs().max().item() < 0.1, mode


def test_numerics_choices_are_documented():
    assert NUMERICS == ("auto", "fp32", "fp32-cl", "bf16-cl")
    policy = _model("fp32").policy
    assert apply_numerics(policy, "fp32", "cpu") == "fp32"
    assert policy.features_extractor.conv_seqs[0].conv.weight.is_contiguous()


@pytest.mark.procgen
def test_bench_train_procgen_smoke(tmp_path):
    from adr_rl_app.eval import bench_train_procgen

    result = bench_train_procgen.main(
        ["--quick", "--threads", "1", "--extractors", "nature", "--out", str(tmp_path)]
    )
    rows = result["rows"]
    assert [r["numerics"] for r in rows] == [
        m for m in ("fp32", "fp32-cl", "bf16-cl") if m != "bf16-cl" or machine.native_bf16()
    ]
    assert all(r["steps_per_s"] > 0 and r["iterations"] == 1 for r in rows)
    saved = json.loads(Path(tmp_path / "results.json").read_text())
    assert saved["machine"]["cpu_model"] and saved["procgen_backend"] in ("procgen", "procgen_gym")


def _value_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rollout values 0, targets 1: sample 0 moved within the clip, 1 beyond it toward
    the target, 2 beyond it away from the target."""
    values = torch.tensor([0.1, 0.5, -0.5], requires_grad=True)
    return values, torch.zeros(3), torch.ones(3)


def test_value_losses_follow_sb3_and_baselines():
    values, old, returns = _value_case()
    clipped, stats = value_loss(values, old, returns, 0.2, "clipped")
    (grad,) = torch.autograd.grad(clipped, values)
    # SB3: the clipped prediction's error; no gradient once a prediction left the clip.
    assert clipped.item() == pytest.approx((0.9**2 + 0.8**2 + 1.2**2) / 3)
    torch.testing.assert_close(grad, torch.tensor([2 * -0.9 / 3, 0.0, 0.0]))
    assert stats == pytest.approx({"clip_fraction": 2 / 3, "away_fraction": 1 / 3})
    # baselines: the larger error, so sample 2 is pulled back toward its target.
    larger, _ = value_loss(values, old, returns, 0.2, "max")
    (grad,) = torch.autograd.grad(larger, values)
    assert larger.item() == pytest.approx((0.9**2 + 0.8**2 + 1.5**2) / 3)
    torch.testing.assert_close(grad, torch.tensor([2 * -0.9 / 3, 0.0, 2 * -1.5 / 3]))
    plain, stats = value_loss(values, old, returns, 0.2, "unclipped")
    assert plain.item() == pytest.approx((0.9**2 + 0.5**2 + 1.5**2) / 3)
    assert stats == {"clip_fraction": 0.0, "away_fraction": 0.0}


def test_value_loss_errors_name_the_problem():
    values, old, returns = _value_case()
    with pytest.raises(ValueError, match="Unknown value_loss 'huber'"):
        value_loss(values, old, returns, 0.2, "huber")
    with pytest.raises(ValueError, match="needs a clip_range_vf"):
        value_loss(values, old, returns, None, "max")
    with pytest.raises(ValueError, match="needs a clip_range_vf"):
        _model("fp32", value_loss="max")
    with pytest.raises(ValueError, match="Unknown value_loss"):
        _model("fp32", value_loss="huber", clip_range_vf=0.2)


class SeededImageEnv(ImageEnv):
    """ImageEnv whose first frame comes from its own generator too (reproducible)."""

    def reset(self, *, seed=None, options=None):
        gym.Env.reset(self, seed=seed)
        return self.rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), {}


def test_clipped_value_loss_trains_exactly_like_sb3_ppo():
    """FastPPO's own update loop, with SB3's value loss, gives PPO's weights bit for bit."""
    kwargs = dict(n_steps=32, batch_size=16, n_epochs=3, clip_range_vf=0.01, seed=0)

    def trained(cls: type[PPO], **extra) -> PPO:
        # Built and trained one after the other: each seeds the global RNGs at build.
        model = cls("CnnPolicy", DummyVecEnv([SeededImageEnv] * 2), device="cpu", **kwargs, **extra)
        return model.learn(64)

    sb3 = trained(PPO)
    fast = trained(FastPPO, numerics="fp32", value_loss="clipped")
    for name, p in sb3.policy.state_dict().items():
        torch.testing.assert_close(fast.policy.state_dict()[name], p, rtol=0, atol=0)
    logged = fast.logger.name_to_value
    assert 0 < logged["train/value_clip_fraction"] <= 1  # the tiny clip acted
    # baselines' loss changes the update where predictions were pushed away.
    other = trained(FastPPO, numerics="fp32", value_loss="max")
    assert any(
        not torch.equal(other.policy.state_dict()[name], p)
        for name, p in sb3.policy.state_dict().items()
    )
