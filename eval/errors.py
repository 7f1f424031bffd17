"""The one exception type of the application's user-facing mistakes (no heavy imports,
so a command line can refuse bad flags before torch loads)."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user asked for; its message is the whole story."""
