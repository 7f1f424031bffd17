"""Observation attacks on any SB3 Procgen policy: ``adr-rl attack MODEL.zip --game coinrun``.

Loads a user's PPO, A2C or DQN zip trained on a Procgen game (or the project's own,
``agents/zoo/ppo_<game>.zip``), checks its spaces against Procgen's (64x64 RGB frames,
15 actions), and plays episodes on levels unseen in training (``envs.procgen``'s
``UNSEEN_LEVELS``) with the agent seeing clean observations and then observations
attacked by each method at each eps (pixel levels, 0..255). PGD and ADR use the same
objective (untargeted: cross-entropy against the clean greedy action; ``--targeted``:
the clean policy's least likely action), step size and steps (``adr_rl.attack``).
Episodes are split evenly over the seeds; each seed fixes the level sequence, the
agent's action sampling and the attack's randomness.

Writes ``results.json``, ``returns.png`` and ``summary.md`` to the run folder.

    adr-rl attack agents/zoo/ppo_coinrun.zip --game coinrun --eps 2 8 --method pgd adr
    python -m adr_rl_app.eval.attack_model agents/zoo/ppo_coinrun.zip --game coinrun
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
