"""Action refinement on any SB3 off-policy agent: ``adr-rl refine MODEL.zip --env ENV_ID``.

Loads a user's TD3, SAC, DDPG (stable-baselines3) or TQC (sb3-contrib) zip, checks it
against the env, and plays the same episodes with the actor's own action and with each
refinement method (the critic's ``Q(s, a)`` maximized over ``[a - r, a + r]`` in SB3's
scaled action space). Episode ``i`` of seed ``s`` runs in an env seeded ``1000 s + i``,
so every method sees the same starts. Reports the mean return with a bootstrap 95% CI
over episodes, per-seed means, the critic's gain per step and the time per call.

Writes ``results.json``, ``returns.png`` and ``summary.md`` to the run folder.

    adr-rl refine agents/zoo/td3_Pendulum-v1.zip --env Pendulum-v1 --method adr gd
    python -m adr_rl_app.eval.refine_model agents/zoo/td3_Pendulum-v1.zip --env Pendulum-v1
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
