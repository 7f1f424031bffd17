"""How much of the shipped CNN policies stays linear inside the attack's eps-ball? (issue 15)

The project's explanation for why ADR does not beat PGD at small eps is that the
ball around an observation hardly crosses ReLU boundaries, so the policy is (nearly)
one affine map there and the gradient already points to the best corner. This command
measures that: for each shipped Procgen PPO policy (``agents/zoo/ppo_<game>.zip``), on
the attack command's fixed observations (``collect_observations``: ``UNSEEN_LEVELS``,
seed 0, every 4th frame of the clean policy), and each L-inf radius ``eps`` in pixel
levels (ball ``[x - eps/255, x + eps/255] ∩ [0, 1]`` in SB3's scaled input), it bounds
every ReLU pre-activation of the logit network (``pi_features_extractor``,
``policy_net``, ``action_net``) with :func:`adr_rl.certify.cnn_bounds`:

- ``interval`` (IBP) on every observation;
- ``crown`` (back-substitution through convs and linear layers; 7-9 s per
  observation at eps 1-2 and about 70 s at eps 4 on one shared CPU thread) on the
  first ``--crown-obs`` of them, at the radii ``--crown-eps``.

Reported per game x eps x bound: the share of ReLU units provably stable (mean and
bootstrap 95% CI over observations, and per ReLU layer), and the share of observations
whose whole ball provably lies in one linear region (every ReLU stable and every
max-pool argmax fixed; the shipped NatureCNN policies have no max-pool). Both are
lower bounds on the truth: a unit not proven stable may still be stable.

Writes ``results.json`` (config, per-observation numbers, aggregates), ``summary.md``
and ``region_stability.png`` to the run folder (``--out``, default
``runs/region_stability-<time>``) and prints the table.

    python -m adr_rl_app.eval.region_stability --crown-obs 12 --crown-eps 1 2
    python -m adr_rl_app.eval.region_stability --quick      # smoke run: 4 CoinRun frames
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from adr_rl.certify import cnn_bounds  # noqa: E402
from adr_rl_app.envs.procgen import UNSEEN_LEVELS  # noqa: E402
from adr_rl_app.eval import cli, runs  # noqa: E402
from adr_rl_app.eval.loading import load_model, zoo_path  # noqa: E402
from adr_rl_app.eval.procgen_attacks import collect_observations  # noqa: E402
from adr_rl_app.eval.stats import bootstrap_mean_ci  # noqa: E402


@dataclass
class Args:
    games: list[str] = field(default_factory=lambda: ["coinrun", "fruitbot"])
    """Procgen games; the policy is agents/zoo/ppo_<game>.zip"""
    eps: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0])
    """L-inf radii in pixel levels (0..255)"""
    n_obs: int = 512
    """fixed observations per game (the attack command's flip set: 512)"""
    crown_obs: int = 16
    """observations per game (the first ones) also bounded by CROWN (0: IBP only)"""
    crown_eps: list[float] = field(default_factory=list)
    """radii at which CROWN runs (empty: every --eps); CROWN slows down as eps grows
    (about 70 s per observation at eps 4 on one shared CPU thread)"""
    batch: int = 64
    """observations per IBP call"""
    threads: int = 1
    """torch.set_num_threads"""
    out: str = ""
    """run folder (default runs/region_stability-<time>)"""
    quick: bool = False
    """smoke run: CoinRun, 4 observations, eps 1 and 8, CROWN on 2"""


def parse_args(argv: list[str] | None = None) -> Args:
    args = cli.parse_args(Args, __doc__, argv)
    if args.quick:  # smoke settings, where the flags were not given
        defaults = Args()
        quick = {"games": ["coinrun"], "n_obs": 4, "eps": [1.0, 8.0], "crown_obs": 2}
        for name, value in quick.items():
            if getattr(args, name) == getattr(defaults, name):
                setattr(args, name, value)
    return args


def logit_network(model: Any) -> list[torch.nn.Module]:
    """The modules that map SB3's scaled observation to the policy's logits."""
    p = model.policy
    return [p.pi_features_extractor, p.mlp_extractor.policy_net, p.action_net]


def bound_rows(
    network: list[torch.nn.Module], x: torch.Tensor, eps: float, method: str, batch: int
) -> dict[str, Any]:
    """Per-observation stability numbers of ``x: (N, 3, 64, 64)`` float in [0, 1]."""
    share, layers, stable, fixed, region = [], [], [], [], []
    names: tuple[str, ...] = ()
    sizes: tuple[int, ...] = ()
    step = batch if method == "interval" else 1
    for start in range(0, x.shape[0], step):
        b = cnn_bounds(network, x[start : start + step], eps / 255.0, method=method)
        names, sizes = b.names, b.site_sizes()
        share.append(b.stable_share())
        layers.append(b.layer_stable_share())
        stable.append(b.all_stable())
        fixed.append(b.pools_fixed())
        region.append(b.one_region())
    return {
        "sites": list(names),
        "site_units": list(sizes),
        "stable_share": torch.cat(share).tolist(),
        "layer_stable_share": torch.cat(layers).tolist(),
        "all_relu_stable": torch.cat(stable).tolist(),
        "pools_fixed": torch.cat(fixed).tolist(),
        "one_region": torch.cat(region).tolist(),
    }


def summarize(rows: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    share = np.asarray(rows["stable_share"])
    low, high = bootstrap_mean_ci(share, seed=seed)
    layers = np.asarray(rows["layer_stable_share"])
    return {
        "n_obs": int(share.size),
        "stable_share_mean": float(share.mean()),
        "stable_share_ci95": [low, high],
        "layer_stable_share_mean": layers.mean(axis=0).tolist(),
        "one_region_share": float(np.mean(rows["one_region"])),
        "all_relu_stable_share": float(np.mean(rows["all_relu_stable"])),
        "pools_fixed_share": float(np.mean(rows["pools_fixed"])),
    }


def table(results: dict[str, Any]) -> str:
    layer_note: list[str] = []
    lines = [
        "| game | eps | bound | obs | stable ReLU share (95% CI) | per layer | one region |",
        "|---|---|---|---|---|---|---|",
    ]
    for game, entry in results["games"].items():
        for eps, per_method in entry["eps"].items():
            if not layer_note:
                case = next(iter(per_method.values()))
                sites = ", ".join(
                    f"{n} ({u})" for n, u in zip(case["sites"], case["site_units"], strict=True)
                )
                layer_note.append(f"Per layer: ReLU sites (units) in order: {sites}.")
            for method, case in per_method.items():
                s = case["summary"]
                lo, hi = s["stable_share_ci95"]
                per_layer = " / ".join(f"{v:.3f}" for v in s["layer_stable_share_mean"])
                lines.append(
                    f"| {game} | {eps} | {method} | {s['n_obs']} | "
                    f"{s['stable_share_mean']:.4f} [{lo:.4f}, {hi:.4f}] | {per_layer} | "
                    f"{s['one_region_share']:.3f} |"
                )
    return "\n".join([*lines, "", *layer_note])


def plot(results: dict[str, Any], path: Any) -> None:
    games = list(results["games"])
    fig, axes = plt.subplots(1, len(games), figsize=(5 * len(games), 3.8), squeeze=False)
    for ax, game in zip(axes[0], games, strict=True):
        entry = results["games"][game]
        eps = [float(e) for e in entry["eps"]]
        for method, style in (("interval", "-o"), ("crown", "--s")):
            cases = [entry["eps"][e].get(method) for e in entry["eps"]]
            if any(c is None for c in cases):
                continue
            mean = np.array([c["summary"]["stable_share_mean"] for c in cases])
            ci = np.array([c["summary"]["stable_share_ci95"] for c in cases])
            n = cases[0]["summary"]["n_obs"]
            ax.errorbar(
                eps,
                mean,
                yerr=[mean - ci[:, 0], ci[:, 1] - mean],
                fmt=style,
                capsize=3,
                label=f"{method} ({n} obs)",
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("eps (pixel levels of 255)")
        ax.set_ylabel("share of ReLU units provably stable")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{game}: ReLU stability in the eps-ball")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    run_dir = runs.output_dir(args.out, "region_stability")
    results: dict[str, Any] = {
        "config": asdict(args),
        "observations": "collect_observations(model, game, n_obs, UNSEEN_LEVELS, seed=0)",
        "platform": f"{platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)",
        "games": {},
    }
    for game in args.games:
        model = load_model(zoo_path(f"ppo_{game}"), allowed=("ppo",), device="cpu")
        obs = collect_observations(model, game, args.n_obs, UNSEEN_LEVELS, seed=0)
        # SB3's preprocessing: channels first (VecTransposeImage), then /255
        x = torch.as_tensor(obs).permute(0, 3, 1, 2).to(torch.float64) / 255.0
        network = logit_network(model)
        entry: dict[str, Any] = {"n_obs": int(x.shape[0]), "eps": {}}
        results["games"][game] = entry
        for eps in args.eps:
            per_method: dict[str, Any] = {}
            n_crown = min(args.crown_obs, len(x))
            if args.crown_eps and eps not in args.crown_eps:
                n_crown = 0
            for method, n in (("interval", x.shape[0]), ("crown", n_crown)):
                if n == 0:
                    continue
                start = time.perf_counter()
                rows = bound_rows(network, x[:n], eps, method, args.batch)
                rows["wall_s"] = time.perf_counter() - start
                rows["summary"] = summarize(rows)
                per_method[method] = rows
                s = rows["summary"]
                print(
                    f"{game} eps={eps:g} {method}: stable share {s['stable_share_mean']:.4f} "
                    f"one-region share {s['one_region_share']:.3f} ({n} obs, "
                    f"{rows['wall_s']:.1f} s)",
                    flush=True,
                )
            entry["eps"][f"{eps:g}"] = per_method
        runs.write_results(run_dir / "results.json", results)
    plot(results, run_dir / "region_stability.png")
    runs.write_results(run_dir / "results.json", results)
    runs.finish(run_dir, table(results))
    return results


if __name__ == "__main__":
    main()
