"""The ``adr-rl`` command line: one entry point for the demo, evaluations, benchmarks,
training and sweeps.

Each subcommand is a script of the project (``eval/``, ``agents/``) whose flags come from
its ``Args`` dataclass (parsed by tyro, ``--help`` on every one); this module only routes
to it, so ``adr-rl bench attack ...`` and ``python -m adr_rl_app.eval.bench_attack ...``
are the same program. Scripts are imported on demand, so ``adr-rl --help`` is instant.
Results go to a
fresh run folder ``runs/<command>-<time>/`` unless ``--out`` names one. Mistakes a user
can make (a missing model file, an unknown env id, mismatched spaces, eps < 0, CUDA on a
machine without it, ...) end with one ``adr-rl: error: ...`` line and exit status 2.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
from collections.abc import Mapping, Sequence

#: name -> (module inside ``adr_rl_app``, one-line help, extra argv put after the user's).
_Leaf = tuple[str, str, tuple[str, ...]]

COMMANDS: dict[str, _Leaf | dict[str, _Leaf]] = {
    "demo": (
        "eval.demo",
        "the main job: ADR refinement and ADR/PGD attacks on the shipped agents (~2.5 min)",
        (),
    ),
    "refine": ("eval.refine_model", "refine a TD3/SAC/DDPG/TQC agent's actions with ADR", ()),
    "attack": ("eval.attack_model", "attack a Procgen PPO/A2C/DQN policy's observations", ()),
    "bench": {
        "random-relu": ("eval.bench_random_relu", "ADR vs baselines on random ReLU nets", ()),
        "refine": ("eval.bench_refine", "refinement latency and batched throughput", ()),
        "attack": ("eval.bench_attack", "cost of one ADR vs one PGD attack iteration", ()),
    },
    "train": {
        "td3": ("agents.train_offpolicy", "train TD3 on a control task", ("--algo", "td3")),
        "sac": ("agents.train_offpolicy", "train SAC on a control task", ("--algo", "sac")),
        "ppo-procgen": ("agents.train_ppo_procgen", "train PPO on a Procgen game", ()),
    },
    "sweep": ("eval.sweep", "run a grid from a YAML file, locally or on Ray", ()),
}


def _usage(prefix: str, table: Mapping[str, _Leaf | Mapping[str, _Leaf]]) -> str:
    lines = [f"usage: {prefix} COMMAND [--help] [ARGS...]", "", "commands:"]
    for name, entry in table.items():
        if isinstance(entry, Mapping):
            lines.append(f"  {name:<12} {' | '.join(entry)}")
        else:
            lines.append(f"  {name:<12} {entry[1]}")
    lines.append("")
    lines.append(f"'{prefix} COMMAND --help' describes a command's flags.")
    return "\n".join(lines)


def _resolve(argv: list[str]) -> tuple[str, _Leaf, list[str]] | int:
    """The command path, its entry and the remaining argv; or an exit status."""
    table: Mapping[str, _Leaf | Mapping[str, _Leaf]] = COMMANDS
    path: list[str] = []
    while True:
        prefix = " ".join(["adr-rl", *path])
        if not argv or argv[0] in ("-h", "--help"):
            print(_usage(prefix, table))
            return 0 if argv else 2
        name, argv = argv[0], argv[1:]
        entry = table.get(name)
        if entry is None:
            print(
                f"{prefix}: error: unknown command {name!r}; choose from {', '.join(table)}",
                file=sys.stderr,
            )
            return 2
        path.append(name)
        if isinstance(entry, Mapping):
            table = entry
            continue
        return " ".join(path), entry, argv


def _wants_run_dir(module: object, argv: Sequence[str]) -> bool:
    args_cls = getattr(module, "Args", None)
    if args_cls is None or not dataclasses.is_dataclass(args_cls):
        return False
    names = {f.name for f in dataclasses.fields(args_cls)}
    return "out" in names and not any(a == "--out" or a.startswith("--out=") for a in argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    resolved = _resolve(argv)
    if isinstance(resolved, int):
        return resolved
    command, (module_name, _, extra), rest = resolved
    from adr_rl_app.eval.errors import UserError

    module = importlib.import_module(f"adr_rl_app.{module_name}")
    program = f"adr-rl {command}"
    try:
        if _wants_run_dir(module, rest) and not any(a in ("-h", "--help") for a in rest):
            from adr_rl_app.eval.runs import new_run_dir

            rest += ["--out", str(new_run_dir(command.replace(" ", "-"), create=False))]
        saved, sys.argv = sys.argv, [program, *rest, *extra]
        try:
            status = module.main([*rest, *extra])
        finally:
            sys.argv = saved
    except UserError as exc:
        print(f"adr-rl: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from adr_rl.surrogate import NonReluNetworkError  # torch is loaded by now

        if not isinstance(exc, NonReluNetworkError):
            raise
        print(f"adr-rl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("adr-rl: interrupted", file=sys.stderr)
        return 130
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
