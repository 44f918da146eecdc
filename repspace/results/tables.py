"""Plain-text tables of results: one cell format, one fixed-width layout that fits the
terminal (wider tables are wrapped into blocks of columns, each repeating the text columns)."""

from __future__ import annotations

import math
import os
import shutil
import sys
from typing import Any


def fmt(value: Any) -> str:
    """A table cell: ``-`` for a missing value, integers with thousands separators
    (``1,769,472``), floats with 4 decimals."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def fmt_bytes(size: int) -> str:
    """A size in bytes as people read it: ``229.4 MB`` (decimal units)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit}"
    return f"{size} B"


def terminal_width() -> int | None:
    """The width tables are fitted to: ``$COLUMNS`` when set, else the width of the terminal
    that standard output writes to; ``None`` (no limit) when it writes to a file or pipe."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size().columns


def _block(header: list[str], rows: list[list[str]], text_columns: int) -> str:
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(x.ljust(w) if i < text_columns else x.rjust(w)
                       for i, (x, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def fixed_width(header: list[str], rows: list[list[Any]], *, text_columns: int = 1,
                width: int | None = -1) -> str:
    """A plain-text table: the first ``text_columns`` columns left-aligned, the rest right.

    A table wider than ``width`` characters (default: :func:`terminal_width`; ``None``: no
    limit) is wrapped: its other columns are split into blocks that fit, one below the other,
    each with the text columns again.
    """
    limit = terminal_width() if width == -1 else width
    cells = [[str(x) for x in row] for row in [header, *rows]]
    widths = [max(len(x) for x in col) for col in zip(*cells, strict=True)]
    keep = list(range(min(text_columns, len(header))))
    used = sum(widths[i] + 2 for i in keep)
    blocks: list[list[int]] = [[]]
    for i in range(len(keep), len(header)):
        taken = sum(widths[j] + 2 for j in blocks[-1])
        if limit is not None and blocks[-1] and used + taken + widths[i] > limit:
            blocks.append([])
        blocks[-1].append(i)
    return "\n\n".join(_block([cells[0][i] for i in keep + block],
                              [[row[i] for i in keep + block] for row in cells[1:]],
                              len(keep))
                       for block in blocks)
