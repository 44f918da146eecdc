"""Exceptions raised by repspace.

Every error a user can cause (bad file, bad argument, degenerate data) is a
:class:`RepspaceError`. The command line prints such errors as one line and exits
with status 2; anything else is a bug.
"""

from __future__ import annotations


class RepspaceError(Exception):
    """Base class of every error repspace raises on purpose."""


class InputError(RepspaceError, ValueError):
    """Arguments or data that a function cannot work with (shape, NaN, too few samples, ...)."""


class FormatError(RepspaceError):
    """A file that is missing, corrupt, truncated, of an unknown format or version."""


class MismatchError(RepspaceError):
    """Two objects that must match do not (sample ids, base fingerprints, layer names)."""
