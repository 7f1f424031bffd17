"""PPO's update on one rollout of a Procgen checkpoint: per numeric mode and per loss term.

Two checks of issue 13 on one checkpoint and one rollout of the Procgen recipe (64 envs
x 256 steps, fp32, training levels, GAE), on the same minibatches of 2,048 frames:

* **Numerics.** A ``bf16-cl`` run and an ``fp32`` one from the same seed drift apart after
  a few updates, so their learning curves mix the numerics with seed-to-seed spread.
  Here PPO's loss gradient is computed with each mode's copy of the same weights; per
  mode against the first (``fp32``): cosine and relative L2 difference of the gradient
  (whole, extractor, heads) and the largest change of log-probabilities and values. The
  scale of ordinary noise is the reference's cosine between two minibatches.
* **The loss terms.** The gradient norm of the policy term, of the entropy term and of
  the unweighted value term (SB3's MSE), and for each ``--vf-coefs`` value the total's
  norm and the factor the global norm clip (``max_grad_norm``) scales the update by. A
  value term that dominates the total sets the update's direction and, through the clip,
  shrinks the policy's step.

    python -m adr_rl_app.eval.ppo_gradient --game coinrun \\
        --model agents/zoo/training/ppo_coinrun_impala/latest.zip --out results/ppo_gradient/coinrun
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecNormalize

from adr_rl.machine import machine_info
from adr_rl_app.agents.fast_ppo import RECIPE, FastPPO
from adr_rl_app.envs.procgen import make_procgen_vec_env
from adr_rl_app.eval import cli
from adr_rl_app.eval.errors import UserError
from adr_rl_app.eval.runs import finish, output_dir, write_results


@dataclass
class Args:
    model: str = "agents/zoo/training/ppo_coinrun_impala/latest.zip"
    """A FastPPO/PPO checkpoint (its ``<stem>_vecnormalize.pkl`` beside it is used)."""
    game: str = "coinrun"
    """Procgen game of the checkpoint."""
    numerics: list[str] = field(default_factory=lambda: ["fp32", "fp32-cl", "bf16-cl"])
    """Modes to compare (the first is the reference)."""
    vf_coefs: list[float] = field(default_factory=lambda: [0.5, 0.25])
    """SB3 value weights at which to report the total gradient and the clip factor."""
    minibatches: int = 4
    """Minibatches (of the recipe's 2,048 samples) whose gradients are compared."""
    seed: int = 0
    """Seed of the rollout's env and sampled actions."""
    threads: int = 1
    """torch threads."""
    out: str = "results/ppo_gradient/coinrun"
    """Output folder (results.json, summary.md)."""
    quick: bool = False
    """Smoke run: 4 envs x 16 steps, 2 minibatches of 32."""


class _Stop(BaseCallback):
    def _on_step(self) -> bool:
        return True


def collect(args: Args, num_envs: int, num_steps: int) -> Any:
    """One rollout with GAE from the checkpoint in fp32: SB3's own buffer."""
    venv = make_procgen_vec_env(
        args.game,
        num_envs,
        distribution_mode="easy",
        start_level=0,
        num_levels=200,
        seed=args.seed,
    )
    venv = VecNormalize(
        venv, norm_obs=False, norm_reward=True, clip_reward=10.0, gamma=RECIPE.gamma
    )
    stats = Path(args.model).with_name(Path(args.model).stem + "_vecnormalize.pkl")
    if stats.exists():
        venv.ret_rms = VecNormalize.load(str(stats), venv.venv).ret_rms
    model = FastPPO.load(
        args.model, env=venv, device="cpu", numerics="fp32", n_steps=num_steps, seed=args.seed
    )
    _, callback = model._setup_learn(num_steps * num_envs, _Stop(), reset_num_timesteps=False)
    model.collect_rollouts(
        model.get_env(), callback, model.rollout_buffer, n_rollout_steps=num_steps
    )
    venv.close()
    return model.rollout_buffer


def _parts(policy: torch.nn.Module) -> dict[str, list[str]]:
    names = [n for n, p in policy.named_parameters() if p.requires_grad]
    return {
        "extractor": [n for n in names if "features_extractor" in n],
        "policy head": [n for n in names if n.startswith("action_net")],
        "value head": [n for n in names if n.startswith("value_net")],
        "all": names,
    }


def _loss_terms(model: FastPPO, batch: Any) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Values, log-probabilities and PPO's three loss terms on one minibatch at the
    rollout's own weights (ratio 1): the policy term, the entropy term and the unweighted
    value term (SB3's MSE)."""
    policy = model.policy
    policy.set_training_mode(True)
    values, log_prob, entropy = policy.evaluate_actions(
        batch.observations, batch.actions.long().flatten()
    )
    adv = batch.advantages
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    terms = {
        "policy": -(adv * torch.exp(log_prob - batch.old_log_prob)).mean(),
        "entropy": -entropy.mean(),
        "value (MSE)": torch.nn.functional.mse_loss(batch.returns, values.flatten()),
    }
    return values.detach().flatten(), log_prob.detach(), terms


def gradient(model: FastPPO, batch: Any) -> tuple[dict[str, torch.Tensor], dict[str, float], dict]:
    """PPO's loss gradient on one minibatch at the rollout's own weights (ratio 1)."""
    policy = model.policy
    policy.zero_grad(set_to_none=True)
    values, log_prob, terms = _loss_terms(model, batch)
    pg, ent, vf = terms["policy"], terms["entropy"], terms["value (MSE)"]
    loss = pg + model.ent_coef * ent + model.vf_coef * vf  # the checkpoint's own weights
    loss.backward()
    grads = {
        n: p.grad.detach().flatten().clone()
        for n, p in policy.named_parameters()
        if p.grad is not None
    }
    policy.zero_grad(set_to_none=True)
    losses = {"policy_loss": pg.item(), "value_loss": vf.item(), "entropy": -ent.item()}
    return grads, losses, {"log_prob": log_prob, "values": values}


def term_gradients(model: FastPPO, batch: Any) -> dict[str, torch.Tensor]:
    """Flat gradients (all parameters, zeros where a term does not reach) of each of
    PPO's loss terms (:func:`_loss_terms`) on one minibatch."""
    params = [p for p in model.policy.parameters() if p.requires_grad]
    _, _, terms = _loss_terms(model, batch)
    out = {}
    for name, term in terms.items():
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        out[name] = torch.cat(
            [
                (g if g is not None else torch.zeros_like(p)).flatten()
                for g, p in zip(grads, params, strict=True)
            ]
        ).double()
    return out


def term_rows(model: FastPPO, batches: list[Any], vf_coefs: list[float]) -> list[dict[str, Any]]:
    rows = []
    for k, batch in enumerate(batches):
        g = term_gradients(model, batch)
        base = g["policy"] + model.ent_coef * g["entropy"]
        row: dict[str, Any] = {"minibatch": k}
        row |= {f"norm {name}": float(v.norm()) for name, v in g.items()}
        for c in vf_coefs:
            total = float((base + c * g["value (MSE)"]).norm())
            row[f"vf_coef {c:g}"] = {
                "total_norm": total,
                "clip_factor": min(1.0, model.max_grad_norm / total),
                # The value term's part of the two terms' norms (0: none, 1: all).
                "value_share": c
                * float(g["value (MSE)"].norm())
                / (float(base.norm()) + c * float(g["value (MSE)"].norm())),
            }
        rows.append(row)
    return rows


def compare(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], names: list[str]) -> dict:
    x = torch.cat([a[n] for n in names if n in a]).double()
    y = torch.cat([b[n] for n in names if n in b]).double()
    return {
        "cosine": float(torch.nn.functional.cosine_similarity(x, y, dim=0)),
        "relative_l2": float((x - y).norm() / x.norm()),
    }


def main(argv: list[str] | None = None) -> None:
    args = cli.parse_args(Args, __doc__, argv)
    torch.set_num_threads(args.threads)
    if not Path(args.model).exists():
        raise UserError(f"--model {args.model} does not exist")
    num_envs, num_steps, size = (
        (4, 16, 32)
        if args.quick
        else (
            RECIPE.num_envs,
            RECIPE.num_steps,
            RECIPE.num_envs * RECIPE.num_steps // RECIPE.num_minibatches,
        )
    )
    minibatches = 2 if args.quick else args.minibatches
    buffer = collect(args, num_envs, num_steps)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(num_envs * num_steps)
    buffer_batches = list(buffer.get(batch_size=None))  # one batch: everything, flattened
    full = buffer_batches[0]
    batches = []
    for k in range(minibatches):
        idx = torch.as_tensor(order[k * size : (k + 1) * size])
        batches.append(type(full)(*(t[idx] for t in full)))
    ref_mode = args.numerics[0]
    models = {mode: FastPPO.load(args.model, device="cpu", numerics=mode) for mode in args.numerics}
    per_mode = {mode: [gradient(model, b) for b in batches] for mode, model in models.items()}
    reference = models[ref_mode]
    parts = _parts(reference.policy)
    rows = []
    for mode in args.numerics:
        for k in range(minibatches):
            g, losses, out = per_mode[mode][k]
            g0, _, out0 = per_mode[ref_mode][k]
            row: dict[str, Any] = {"mode": mode, "minibatch": k, **losses}
            for part, names in parts.items():
                row[part] = compare(g0, g, names)
            row["max_abs_log_prob_diff"] = float((out["log_prob"] - out0["log_prob"]).abs().max())
            row["max_abs_value_diff"] = float((out["values"] - out0["values"]).abs().max())
            rows.append(row)
    terms = term_rows(reference, batches, args.vf_coefs)
    # The scale of ordinary noise: the reference mode's gradients on two minibatches.
    spread = [
        {
            part: compare(per_mode[ref_mode][k][0], per_mode[ref_mode][k + 1][0], names)
            for part, names in parts.items()
        }
        for k in range(minibatches - 1)
    ]
    results = {
        "config": vars(args),
        "machine": machine_info(),
        "rows": rows,
        "minibatch_to_minibatch_" + ref_mode: spread,
        "checkpoint": {
            "num_timesteps": int(reference.num_timesteps),
            "vf_coef": float(reference.vf_coef),
            "ent_coef": float(reference.ent_coef),
            "max_grad_norm": float(reference.max_grad_norm),
        },
        "rollout_returns": {
            "mean": float(full.returns.mean()),
            "std": float(full.returns.std()),
        },
        "loss_terms": terms,
    }
    out = output_dir(args.out, "ppo_gradient")
    write_results(out / "results.json", results)
    lines = [
        f"Reference: {ref_mode}, same weights, same minibatch.",
        "",
        "| mode | minibatch | cosine (all) | rel. L2 (all) | cosine extractor | cosine policy "
        "head | cosine value head | max abs log-prob diff | max abs value diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['minibatch']} | {r['all']['cosine']:.4f} | "
            f"{r['all']['relative_l2']:.4f} | {r['extractor']['cosine']:.4f} | "
            f"{r['policy head']['cosine']:.4f} | {r['value head']['cosine']:.4f} | "
            f"{r['max_abs_log_prob_diff']:.2e} | {r['max_abs_value_diff']:.2e} |"
        )
    lines += [
        "",
        f"Minibatch to minibatch ({ref_mode}): cosine (all) "
        + ", ".join(f"{s['all']['cosine']:.4f}" for s in spread),
        "",
        f"Loss terms ({ref_mode}; checkpoint at {reference.num_timesteps:,} steps trained with "
        f"vf_coef {reference.vf_coef:g}, max_grad_norm {reference.max_grad_norm:g}; rollout "
        f"returns {full.returns.mean():.2f} +/- {full.returns.std():.2f}):",
        "",
        "| minibatch | norm policy | norm entropy | norm value (MSE) | "
        + " | ".join(f"vf_coef {c:g}: total, clip factor, value share" for c in args.vf_coefs)
        + " |",
        "|---|---|---|---|" + "---|" * len(args.vf_coefs),
    ]
    for r in terms:
        cells = [
            f"{r[f'vf_coef {c:g}']['total_norm']:.3f}, {r[f'vf_coef {c:g}']['clip_factor']:.3f}, "
            f"{r[f'vf_coef {c:g}']['value_share']:.2f}"
            for c in args.vf_coefs
        ]
        lines.append(
            f"| {r['minibatch']} | {r['norm policy']:.3f} | {r['norm entropy']:.4f} | "
            f"{r['norm value (MSE)']:.3f} | " + " | ".join(cells) + " |"
        )
    finish(out, "\n".join(lines))


if __name__ == "__main__":
    main()
