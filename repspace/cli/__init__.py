"""The ``repspace`` command line (:func:`main`): argument parsing and printing only."""

import os
import sys

try:  # an interrupt while the command line starts is one line (see repspace.cli.main)
    from repspace.cli.main import build_parser, main
except KeyboardInterrupt:
    sys.stderr.write("repspace: error: interrupted\n")
    sys.stderr.flush()
    os._exit(130)

__all__ = ["build_parser", "main"]
