"""Display names of the models of an analysis."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from repspace.models import LoadedModel


def model_names(sources: Sequence[str | Path | LoadedModel]) -> list[str]:
    """Display names of models: their file stems, made unique (never ``base``)."""
    names: list[str] = []
    for source in sources:
        text = source.source if isinstance(source, LoadedModel) else str(source)
        stem = Path(text.rstrip("/")).stem or text
        name, i = stem, 2
        while name in names or name == "base":
            name, i = f"{stem}-{i}", i + 1
        names.append(name)
    return names
