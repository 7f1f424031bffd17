"""Test-session settings."""

import importlib
import importlib.util

import pytest
import torch

# The suite's networks are tiny: one thread is faster and immune to a busy second core.
torch.set_num_threads(1)

# procgen2 pulls in the unmaintained gym 0.26, whose import prints a four-line notice
# (from gym_notices) to stderr; it is not about this project, so keep the run quiet, as
# the adr-rl command does.
if importlib.util.find_spec("gym_notices") is not None:
    importlib.import_module("gym_notices.notices").notices = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip tests marked ``procgen`` (before their fixtures load a policy) when no
    Procgen backend is installed: the games come with the optional procgen extra."""
    from adr_rl_app.envs.procgen import procgen_available

    if item.get_closest_marker("procgen") is not None and not procgen_available():
        pytest.skip("no Procgen backend: install the procgen extra")
