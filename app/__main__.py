"""``python -m adr_rl_app ...``: the same program as the ``adr-rl`` command."""

import sys

from adr_rl_app.cli import main

sys.exit(main())
