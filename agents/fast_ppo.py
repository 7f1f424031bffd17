"""SB3 PPO with faster CNN numerics: channels-last memory and bf16 autocast in the extractor.

On a CPU the IMPALA CNN's convolutions are most of PPO's work per env step. Two
changes make them faster without touching what PPO computes elsewhere:

* **channels-last** (NHWC) weights and inputs, the layout oneDNN's convolution
  kernels are written for (about 1.7x on 2 cores, fp32, same arithmetic up to
  summation order);
* **bf16 autocast around the features extractor only**, where the CPU (or GPU)
  has native bf16 (:func:`adr_rl.machine.native_bf16`): its convolutions and
  linear layer run in bf16 and its output is cast back to fp32, so the policy
  and value heads, the log-probabilities, the PPO ratio, the losses, Adam and
  the weights stay fp32.

Both are installed by :class:`FastPPO` on its own policy (a memory-format
conversion and a pair of forward hooks on the features extractor), so the saved
zip is a plain ``ActorCriticCnnPolicy``: ``PPO.load`` runs it in fp32 with the
default layout, as attacks and evaluation use it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from adr_rl.extractors import cnn_policy_kwargs, init_baselines_heads
from adr_rl.machine import native_bf16

logger = logging.getLogger(__name__)

#: Numeric modes: ``fp32`` (SB3's default), ``fp32-cl`` (channels-last), ``bf16-cl``
#: (channels-last + bf16 autocast in the extractor), ``auto`` (``bf16-cl`` where the
#: device has native bf16, else ``fp32-cl``).
Numerics = Literal["auto", "fp32", "fp32-cl", "bf16-cl"]
NUMERICS: tuple[str, ...] = ("auto", "fp32", "fp32-cl", "bf16-cl")


def resolve_numerics(numerics: str, device: str | torch.device) -> str:
    """The concrete mode ``numerics`` means on ``device`` (``auto`` resolved)."""
    if numerics not in NUMERICS:
        raise ValueError(f"Unknown numerics {numerics!r}; pick one of {NUMERICS}.")
    if numerics == "auto":
        return "bf16-cl" if native_bf16(device) else "fp32-cl"
    return numerics


class _ExtractorAutocast:
    """Forward hooks that run one module under autocast and hand fp32 on.

    The pre-hook enters ``torch.autocast`` (and moves a 4-D input to
    channels-last); the post-hook, registered with ``always_call=True`` so that it
    runs even when the forward raises, leaves it and casts the output to fp32.
    """

    def __init__(self, device_type: str, dtype: torch.dtype | None, channels_last: bool) -> None:
        self.device_type = device_type
        self.dtype = dtype
        self.channels_last = channels_last
        self._contexts: list[torch.autocast] = []

    def pre(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if self.dtype is not None:
            ctx = torch.autocast(self.device_type, dtype=self.dtype)
            ctx.__enter__()
            self._contexts.append(ctx)
        if self.channels_last and args and isinstance(args[0], torch.Tensor):
            if args[0].dim() == 4:
                return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])
        return None

    def post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        if self.dtype is not None and self._contexts:
            self._contexts.pop().__exit__(None, None, None)
        if isinstance(output, torch.Tensor) and output.dtype != torch.float32:
            return output.float()
        return None


def apply_numerics(policy: nn.Module, numerics: str, device: str | torch.device) -> str:
    """Convert ``policy`` (an SB3 policy we own) to ``numerics``; returns the concrete mode.

    Only the training run's own policy is touched: its conv weights move to
    channels-last in place and its features extractor(s) get the autocast hooks.
    """
    mode = resolve_numerics(numerics, device)
    if mode == "fp32":
        return mode
    policy.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    device_type = torch.device(device).type
    dtype = torch.bfloat16 if mode == "bf16-cl" else None
    extractors = {
        id(m): m
        for name in ("features_extractor", "pi_features_extractor", "vf_features_extractor")
        if isinstance(m := getattr(policy, name, None), nn.Module)
    }
    for extractor in extractors.values():
        hooks = _ExtractorAutocast(device_type, dtype, channels_last=True)
        extractor.register_forward_pre_hook(hooks.pre)
        extractor.register_forward_hook(hooks.post, always_call=True)
    return mode


class FastPPO(PPO):
    """``PPO`` whose policy trains in the fastest numerics the device supports.

    :param numerics: One of :data:`NUMERICS`; ``"auto"`` picks ``bf16-cl`` on a
        device with native bf16 and ``fp32-cl`` elsewhere. The concrete mode is
        in :attr:`numerics_mode` and is logged.

    Everything else is SB3's ``PPO``. The numerics are not saved: ``PPO.load``
    gives a plain fp32 model, and ``FastPPO.load(path, numerics=...)`` a fast one.
    """

    def __init__(self, *args: Any, numerics: str = "auto", **kwargs: Any) -> None:
        self.numerics = numerics
        self.numerics_mode = ""
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        self.numerics_mode = apply_numerics(self.policy, self.numerics, self.device)
        logger.info("PPO numerics: %s (asked: %s)", self.numerics_mode, self.numerics)

    def _excluded_save_params(self) -> list[str]:
        # Keep the zip loadable by plain PPO: no FastPPO-only attributes in it.
        return [*super()._excluded_save_params(), "numerics", "numerics_mode"]


@dataclass(frozen=True)
class ProcgenRecipe:
    """PPO hyper-parameters for Procgen: CleanRL's ``ppo_procgen.py``, itself Cobbe et al.
    2020 (Table 2 of "Leveraging Procedural Generation to Benchmark RL")."""

    num_envs: int = 64
    num_steps: int = 256
    learning_rate: float = 5e-4
    anneal_lr: bool = True
    gamma: float = 0.999
    gae_lambda: float = 0.95
    num_minibatches: int = 8
    update_epochs: int = 3
    clip_coef: float = 0.2
    ent_coef: float = 0.01
    #: SB3's value term is ``vf_coef * MSE``; CleanRL's and baselines' is ``vf_coef * 0.5 *
    #: MSE`` with ``vf_coef = 0.5``. So their weight is 0.25 here. With 0.5 (the recipe
    #: until session 11) the value gradient was twice theirs; on CoinRun, whose sparse
    #: 10-point reward keeps returns large after normalization, it outweighed the policy
    #: term 21-29 times and the global norm clip shrank each update to 0.07-0.11 of its
    #: size (``results/ppo_gradient``, docs/procgen-policies.md).
    vf_coef: float = 0.25
    max_grad_norm: float = 0.5


#: The recipe's defaults, which the training script's flags start from.
RECIPE = ProcgenRecipe()


def make_procgen_ppo(
    venv: VecEnv,
    recipe: ProcgenRecipe = RECIPE,
    *,
    extractor: str = "impala",
    numerics: str = "auto",
    seed: int = 1,
    device: str = "cpu",
) -> FastPPO:
    """A fresh :class:`FastPPO` with ``recipe`` on ``venv`` (``recipe.num_envs`` envs).

    The value loss is clipped like the policy's (CleanRL's ``clip_vloss=True``) and the
    learning rate annealed linearly to 0 over the ``total_timesteps`` of ``learn``. The
    IMPALA CNN keeps PyTorch's default init and only the heads get baselines' orthogonal
    init, as in OpenAI's and CleanRL's runs (:func:`~adr_rl.extractors.impala_cnn_policy_kwargs`).
    """
    if venv.num_envs != recipe.num_envs:
        raise ValueError(f"venv has {venv.num_envs} envs, the recipe {recipe.num_envs}.")
    batch_size = recipe.num_envs * recipe.num_steps
    if batch_size % recipe.num_minibatches:
        raise ValueError("num_envs * num_steps must be divisible by num_minibatches.")
    lr: Any = (
        LinearSchedule(recipe.learning_rate, 0.0, 1.0) if recipe.anneal_lr else recipe.learning_rate
    )
    model = FastPPO(
        "CnnPolicy",
        venv,
        learning_rate=lr,
        n_steps=recipe.num_steps,
        batch_size=batch_size // recipe.num_minibatches,
        n_epochs=recipe.update_epochs,
        gamma=recipe.gamma,
        gae_lambda=recipe.gae_lambda,
        clip_range=recipe.clip_coef,
        clip_range_vf=recipe.clip_coef,
        ent_coef=recipe.ent_coef,
        vf_coef=recipe.vf_coef,
        max_grad_norm=recipe.max_grad_norm,
        policy_kwargs=cnn_policy_kwargs(extractor),
        seed=seed,
        device=device,
        verbose=0,
        numerics=numerics,
    )
    if extractor == "impala":
        init_baselines_heads(model.policy)
    return model
