"""``python -m repspace``."""

import sys

from repspace.cli import main

sys.exit(main())
