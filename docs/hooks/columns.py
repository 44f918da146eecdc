"""MkDocs hook: tables of result columns, rendered from the dicts that define them.

A line ``<!-- columns: repspace.results.compare.COLUMNS -->`` becomes a table of that dict
(column name -> what it holds), so the file-format page lists exactly the columns the code
writes. The CLI hook (``cli_reference.py``) puts this checkout first on ``sys.path``.
"""

from __future__ import annotations

import importlib
import re

_MARKER = re.compile(r"<!-- columns: (?P<module>[\w.]+)\.(?P<name>\w+) -->")


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    return _MARKER.sub(_table, markdown)


def _table(match: re.Match) -> str:
    columns = getattr(importlib.import_module(match["module"]), match["name"])
    rows = [f"| `{name}` | {text.replace('|', chr(92) + '|')} |"
            for name, text in columns.items()]
    return "\n".join(["| column | what it holds |", "|---|---|", *rows])
