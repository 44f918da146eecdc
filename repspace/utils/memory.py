"""Memory budgets: sizes as people write them (``2GB``, ``512MB``), and the default budget, a
fraction of the machine's physical memory."""

from __future__ import annotations

import os
import re

from repspace.errors import InputError

#: Share of physical memory that a computation may plan to hold by default.
DEFAULT_FRACTION = 0.5

#: The budget used where the operating system does not report its physical memory.
FALLBACK_BYTES = 4 * 10**9

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*")


def parse_size(size: int | float | str, what: str = "memory budget") -> int:
    """Bytes from a number of bytes or a string such as ``2GB``, ``1.5 GiB`` or ``512MB``
    (decimal kB/MB/GB/TB or K/M/G/T, binary KiB/MiB/GiB/TiB; case-insensitive). A size that
    is not positive, or a string in another form, is an InputError naming ``what``."""
    if isinstance(size, bool):
        raise InputError(f"{what} must be a size such as 2GB or 512MB, got {size!r}")
    if isinstance(size, int | float):
        value = float(size)
    else:
        match = _SIZE.fullmatch(str(size).lower())
        if match is None or match.group(2) not in _UNITS:
            raise InputError(f"{what} must be a size such as 2GB or 512MB, got {size!r}")
        value = float(match.group(1)) * _UNITS[match.group(2)]
    if not value >= 1:
        raise InputError(f"{what} must be at least 1 byte, got {size!r}")
    return int(value)


def physical_memory() -> int | None:
    """The machine's physical memory in bytes, or ``None`` where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


def default_memory_budget() -> int:
    """Half the physical memory (:data:`DEFAULT_FRACTION`), or :data:`FALLBACK_BYTES` where
    it is unknown."""
    total = physical_memory()
    return int(total * DEFAULT_FRACTION) if total else FALLBACK_BYTES


def memory_budget(size: int | float | str | None) -> int:
    """The budget in bytes: ``size`` parsed by :func:`parse_size`, or the default for
    ``None``."""
    return default_memory_budget() if size is None else parse_size(size)
