"""Command-line flags from a script's ``Args`` dataclass, parsed by tyro.

Every field becomes ``--field-name`` with its attribute docstring as help; booleans are
``--flag/--no-flag`` switches, lists take several values. The same dataclasses back the
``adr-rl`` console script (``adr_rl/cli.py``) and ``python -m eval.<script>``.
"""

from __future__ import annotations

from typing import TypeVar

import tyro

T = TypeVar("T")


def parse_args(
    cls: type[T],
    description: str | None = None,
    argv: list[str] | None = None,
    prog: str | None = None,
) -> T:
    """Parse ``argv`` (default: ``sys.argv[1:]``) into an instance of the dataclass ``cls``."""
    return tyro.cli(cls, args=argv, description=description, prog=prog)
