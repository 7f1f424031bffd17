import sys

from adr_rl.cli import main

sys.exit(main())
