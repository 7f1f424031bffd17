"""Refine an SB3 TD3/SAC/DDPG/TQC agent's actions against its critic and compare returns.

``adr-rl refine MODEL.zip --env ENV_ID``; what it does and writes is described in
:mod:`adr_rl_app.eval.refinement`, which the demo shares.

    adr-rl refine agents/zoo/td3_Pendulum-v1.zip --env Pendulum-v1 --method adr gd
"""

from __future__ import annotations

from adr_rl_app.eval import cli
from adr_rl_app.eval.refinement import Args, run

__all__ = ["Args", "main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> Args:
    return cli.parse_args(Args, __doc__, argv)


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
