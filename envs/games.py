"""What every Procgen game shares: the names, the difficulty modes, the observation
shape and the action count (no imports: command lines check their flags against these
before anything heavy loads)."""

from __future__ import annotations

#: The 16 Procgen games.
PROCGEN_GAMES: tuple[str, ...] = (
    "bigfish",
    "bossfight",
    "caveflyer",
    "chaser",
    "climber",
    "coinrun",
    "dodgeball",
    "fruitbot",
    "heist",
    "jumper",
    "leaper",
    "maze",
    "miner",
    "ninja",
    "plunder",
    "starpilot",
)
DISTRIBUTION_MODES: tuple[str, ...] = ("easy", "hard", "extreme", "memory", "exploration")

#: Observation of one env: an RGB frame, ``(64, 64, 3) uint8 in [0, 255]``.
OBS_SHAPE: tuple[int, int, int] = (64, 64, 3)
#: Every Procgen game exposes the same 15 discrete actions.
N_ACTIONS = 15
