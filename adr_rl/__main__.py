"""``python -m adr_rl`` was the command line; it moved to the application package."""

import sys

sys.exit(
    "adr-rl: the command line moved out of the library: run `adr-rl ...` "
    "or `python -m adr_rl_app ...` (same commands and flags)."
)
