"""Command-line flags from a script's ``Args`` dataclass (CleanRL style, no dependency).

Every field becomes ``--field-name``; booleans are switches, lists take several values.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def parse_args(cls: type[T], description: str | None = None, argv: list[str] | None = None) -> T:
    """Parse ``argv`` (default: ``sys.argv``) into an instance of the dataclass ``cls``."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults: Any = cls()
    for f in dataclasses.fields(defaults):
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", default=default)
        elif isinstance(default, list):
            kind = type(default[0]) if default else str
            parser.add_argument(flag, nargs="*", type=kind, default=default)
        else:
            parser.add_argument(flag, type=type(default), default=default)
    return cls(**vars(parser.parse_args(argv)))
