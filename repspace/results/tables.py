"""Plain-text tables of results: one cell format, one fixed-width layout."""

from __future__ import annotations

import math
from typing import Any


def fmt(value: Any) -> str:
    """A table cell: ``-`` for a missing value, floats with 4 decimals."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def fixed_width(header: list[str], rows: list[list[Any]], *, text_columns: int = 1) -> str:
    """A plain-text table: the first ``text_columns`` columns left-aligned, the rest right."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(x).ljust(w) if i < text_columns else str(x).rjust(w)
                       for i, (x, w) in enumerate(zip(row, widths, strict=True)))
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
