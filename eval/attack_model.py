"""Attack an SB3 PPO/A2C/DQN Procgen policy's observations and compare returns.

``adr-rl attack MODEL.zip --game GAME``; what it does and writes is described in
:mod:`adr_rl_app.eval.attacking`, which the demo shares.

    adr-rl attack agents/zoo/ppo_coinrun.zip --game coinrun --eps 2 8 --method pgd adr
"""

from __future__ import annotations

from adr_rl_app.eval import cli
from adr_rl_app.eval.attacking import Args, run

__all__ = ["Args", "main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> Args:
    return cli.parse_args(Args, __doc__, argv)


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
