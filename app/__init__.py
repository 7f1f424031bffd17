"""The adr-rl application around the library: the ``adr-rl`` command (``cli``), env
factories (``envs``), training scripts and shipped agents (``agents``), and the
experiments (``eval``).

Installed as one namespaced package, ``adr_rl_app``, mapped from the repository's
folders ``app/``, ``envs/``, ``agents/`` and ``eval/`` (``pyproject.toml``), so a user's
site-packages gets no top-level ``eval``, ``envs`` or ``agents``. The library
(``adr_rl``) never imports it.
"""
