"""The ``repspace`` command line (:func:`main`): argument parsing and printing only."""

from repspace.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
