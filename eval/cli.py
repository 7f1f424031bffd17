"""Command-line flags from a script's ``Args`` dataclass, parsed by tyro.

Every field becomes ``--field-name`` with its attribute docstring as help; booleans are
``--flag/--no-flag`` switches, lists take several values. The same dataclasses back the
``adr-rl`` console script (``app/cli.py``) and ``python -m adr_rl_app.eval.<script>``.
A flag tyro cannot parse (misspelled, missing value, wrong type) ends the program with
one ``<prog>: error: ...`` line and exit status 2, not tyro's multi-line box.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from typing import TypeVar

import tyro

T = TypeVar("T")

_BOX = re.compile(r"[╭╮╰╯│─┬┴├┤┼━┃]+")


def one_line(text: str) -> str:
    """tyro's boxed error as one sentence: the error without the box, the separators,
    the repeated help text and the help pointer; a suggestion as "did you mean"."""
    lines = []
    for raw in text.splitlines():
        line = " ".join(_BOX.sub(" ", raw).split()).strip()
        if not line or set(line) <= set("-=") or "--help" in line:
            continue
        lines.append(line)
    if not lines:
        return "invalid arguments"
    title, body = lines[0], lines[1:] or lines[:1]
    if title == "Required options":
        wanted = [ln for ln in body if ln.endswith("(required)")]
        return "missing required argument: " + "; ".join(wanted or body[-1:])
    kept: list[str] = []
    for i, line in enumerate(body):
        if line.startswith("Argument helptext"):
            break
        if line.startswith("Perhaps you meant"):
            if i + 1 < len(body):
                kept.append(f"did you mean {body[i + 1].split()[0]}?")
            break
        kept.append(line)
    return "; ".join(dict.fromkeys(kept))


def help_text(doc: str | None) -> str | None:
    """A script's ``--help`` description: the first paragraph of its docstring, without
    reST markup (the rest of the docstring is for readers of the code)."""
    if not doc:
        return doc
    first = doc.strip().split("\n\n", 1)[0]
    return " ".join(first.replace("``", "").replace(":class:", "").replace(":func:", "").split())


def parse_args(
    cls: type[T],
    description: str | None = None,
    argv: list[str] | None = None,
    prog: str | None = None,
) -> T:
    """Parse ``argv`` (default: ``sys.argv[1:]``) into an instance of the dataclass ``cls``."""
    args = list(sys.argv[1:] if argv is None else argv)
    description = help_text(description)
    if any(a in ("-h", "--help") for a in args):
        return tyro.cli(cls, args=args, description=description, prog=prog)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            return tyro.cli(cls, args=args, description=description, prog=prog)
    except SystemExit as exc:
        if exc.code in (0, None):
            raise
        name = prog or (sys.argv[0] if sys.argv and sys.argv[0] else "adr-rl")
        print(f"{name}: error: {one_line(captured.getvalue())} (see --help)", file=sys.stderr)
        raise SystemExit(2) from None
