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

:class:`FastPPO` also offers the value loss of OpenAI's baselines and CleanRL
(``value_loss="max"``), which SB3's ``PPO`` does not have: SB3 clips the value
prediction and takes its squared error, baselines takes the larger of the clipped
and the unclipped squared errors, so a prediction that an update pushed more than
the clip range away from its target is still pulled back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.utils import LinearSchedule, explained_variance
from stable_baselines3.common.vec_env import VecEnv
from torch import nn
from torch.nn import functional as F

from adr_rl.extractors import cnn_policy_kwargs, init_baselines_heads
from adr_rl.machine import native_bf16

logger = logging.getLogger(__name__)

#: Numeric modes: ``fp32`` (SB3's default), ``fp32-cl`` (channels-last), ``bf16-cl``
#: (channels-last + bf16 autocast in the extractor), ``auto`` (``bf16-cl`` where the
#: device has native bf16, else ``fp32-cl``).
Numerics = Literal["auto", "fp32", "fp32-cl", "bf16-cl"]
NUMERICS: tuple[str, ...] = ("auto", "fp32", "fp32-cl", "bf16-cl")

#: Value losses: ``clipped`` (SB3's: the squared error of the prediction clipped to
#: ``clip_range_vf`` around the rollout's value), ``max`` (OpenAI baselines' and
#: CleanRL's ``clip_vloss``: the larger of the clipped and the unclipped squared errors),
#: ``unclipped`` (the plain squared error; ``clip_range_vf`` is ignored).
ValueLoss = Literal["clipped", "max", "unclipped"]
VALUE_LOSSES: tuple[str, ...] = ("clipped", "max", "unclipped")


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


def check_value_loss(kind: str, clipped: bool) -> None:
    """``kind`` is one of :data:`VALUE_LOSSES`, and ``max`` has a clip range to use."""
    if kind not in VALUE_LOSSES:
        raise ValueError(f"Unknown value_loss {kind!r}; pick one of {VALUE_LOSSES}.")
    if kind == "max" and not clipped:
        raise ValueError('value_loss="max" needs a clip_range_vf.')


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    clip_range_vf: float | None,
    kind: str,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's value loss of ``kind`` (:data:`VALUE_LOSSES`) and how much the clip acted.

    ``clipped`` is SB3's expression, operation for operation (no clip when
    ``clip_range_vf`` is None). The diagnostics: ``clip_fraction``, the share of
    predictions that moved more than ``clip_range_vf`` from the rollout's value (their
    clipped error has no gradient), and ``away_fraction``, the share whose unclipped
    error is the larger one: ``max`` pulls those back, ``clipped`` leaves them.
    """
    check_value_loss(kind, clip_range_vf is not None)
    if kind == "unclipped" or clip_range_vf is None:
        return F.mse_loss(returns, values), {"clip_fraction": 0.0, "away_fraction": 0.0}
    values_pred = old_values + torch.clamp(values - old_values, -clip_range_vf, clip_range_vf)
    if kind == "clipped":
        loss = F.mse_loss(returns, values_pred)
    else:
        loss = torch.max((values - returns) ** 2, (values_pred - returns) ** 2).mean()
    with torch.no_grad():
        moved = (values - old_values).abs() > clip_range_vf
        away = (values - returns) ** 2 > (values_pred - returns) ** 2
        stats = {
            "clip_fraction": moved.float().mean().item(),
            "away_fraction": away.float().mean().item(),
        }
    return loss, stats


class FastPPO(PPO):
    """``PPO`` whose policy trains in the fastest numerics the device supports.

    :param numerics: One of :data:`NUMERICS`; ``"auto"`` picks ``bf16-cl`` on a
        device with native bf16 and ``fp32-cl`` elsewhere. The concrete mode is
        in :attr:`numerics_mode` and is logged.
    :param value_loss: One of :data:`VALUE_LOSSES`; ``"clipped"`` (the default) is
        SB3's, ``"max"`` baselines' and CleanRL's (see :func:`value_loss`).

    Everything else is SB3's ``PPO``. The numerics are not saved: ``PPO.load``
    gives a plain fp32 model, and ``FastPPO.load(path, numerics=...)`` a fast one.
    ``value_loss`` is saved, so a resumed run keeps it (``PPO.load`` ignores it).
    """

    def __init__(
        self, *args: Any, numerics: str = "auto", value_loss: str = "clipped", **kwargs: Any
    ) -> None:
        self.numerics = numerics
        self.numerics_mode = ""
        self.value_loss = value_loss
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        check_value_loss(self.value_loss, self.clip_range_vf is not None)
        self.numerics_mode = apply_numerics(self.policy, self.numerics, self.device)
        logger.info("PPO numerics: %s (asked: %s)", self.numerics_mode, self.numerics)

    def _excluded_save_params(self) -> list[str]:
        # Keep the zip loadable by plain PPO: no FastPPO-only attributes in it.
        return [*super()._excluded_save_params(), "numerics", "numerics_mode"]

    def train(self) -> None:
        """SB3's ``PPO.train`` with :func:`value_loss` in place of its value term.

        Everything else (minibatches, advantage normalization, the clipped surrogate,
        the entropy term, the KL early stop, the norm clip, the logged keys) follows
        SB3 2.x step for step; with ``value_loss="clipped"`` the weights after an
        update equal ``PPO.train``'s (a test checks it). Two more keys are logged:
        ``train/value_clip_fraction`` and ``train/value_away_fraction``.
        """
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        progress = self._current_progress_remaining
        clip_range = self.clip_range(progress)  # type: ignore[operator]
        clip_range_vf = None if self.clip_range_vf is None else self.clip_range_vf(progress)  # type: ignore[operator]

        entropy_losses, pg_losses, value_losses, clip_fractions = [], [], [], []
        value_clip_fractions, value_away_fractions = [], []
        approx_kl_divs: list[float] = []
        continue_training = True
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                actions = rollout_data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    actions = rollout_data.actions.long().flatten()
                values, log_prob, entropy = self.policy.evaluate_actions(
                    rollout_data.observations, actions
                )
                values = values.flatten()
                advantages = rollout_data.advantages
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

                ratio = torch.exp(log_prob - rollout_data.old_log_prob)
                policy_loss_1 = advantages * ratio
                policy_loss_2 = advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
                policy_loss = -torch.min(policy_loss_1, policy_loss_2).mean()
                pg_losses.append(policy_loss.item())
                clipped = (torch.abs(ratio - 1) > clip_range).float()
                clip_fractions.append(torch.mean(clipped).item())

                v_loss, v_stats = value_loss(
                    values,
                    rollout_data.old_values,
                    rollout_data.returns,
                    clip_range_vf,
                    self.value_loss,
                )
                value_losses.append(v_loss.item())
                value_clip_fractions.append(v_stats["clip_fraction"])
                value_away_fractions.append(v_stats["away_fraction"])

                entropy_loss = -torch.mean(-log_prob) if entropy is None else -torch.mean(entropy)
                entropy_losses.append(entropy_loss.item())
                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * v_loss

                with torch.no_grad():
                    log_ratio = log_prob - rollout_data.old_log_prob
                    approx_kl_div = torch.mean((torch.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)
                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch}: approx KL {approx_kl_div:.2f}")
                    break

                self.policy.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()

            self._n_updates += 1
            if not continue_training:
                break

        explained_var = explained_variance(
            self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten()
        )
        record = self.logger.record
        record("train/entropy_loss", np.mean(entropy_losses))
        record("train/policy_gradient_loss", np.mean(pg_losses))
        record("train/value_loss", np.mean(value_losses))
        record("train/approx_kl", np.mean(approx_kl_divs))
        record("train/clip_fraction", np.mean(clip_fractions))
        record("train/loss", loss.item())
        record("train/explained_variance", explained_var)
        record("train/value_clip_fraction", np.mean(value_clip_fractions))
        record("train/value_away_fraction", np.mean(value_away_fractions))
        if hasattr(self.policy, "log_std"):
            record("train/std", torch.exp(self.policy.log_std).mean().item())
        record("train/n_updates", self._n_updates, exclude="tensorboard")
        record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            record("train/clip_range_vf", clip_range_vf)


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
    #: baselines' and CleanRL's value clipping (the larger of the clipped and unclipped
    #: errors); SB3's own (``clipped``) was the recipe until session 12.
    value_loss: str = "max"


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

    The value loss is clipped like the policy's, as baselines and CleanRL's
    ``clip_vloss=True`` clip it (``recipe.value_loss``), and the
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
        value_loss=recipe.value_loss,
    )
    if extractor == "impala":
        init_baselines_heads(model.policy)
    return model
