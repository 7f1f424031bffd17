"""The adr-rl application around the library: the ``adr-rl`` command (``cli``), env
factories (``envs``), training scripts and shipped agents (``agents``), and the
experiments (``eval``).

Installed as one namespaced package, ``adr_rl_app``, mapped from the repository's
folders ``app/``, ``envs/``, ``agents/`` and ``eval/`` (``pyproject.toml``), so a user's
site-packages gets no top-level ``eval``, ``envs`` or ``agents``. The library
(``adr_rl``) never imports it.
"""

import importlib as _importlib
import importlib.util as _importlib_util

# procgen2 and procgen-mirror install the unmaintained gym 0.26, which SB3 imports for
# compatibility; its import prints a four-line notice (from ``gym_notices``) that no
# user of this application can act on. Empty the table it is read from, before anything
# imports gym (cheap: gym itself is not imported here).
if _importlib_util.find_spec("gym_notices") is not None:
    _importlib.import_module("gym_notices.notices").notices = {}
