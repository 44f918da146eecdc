"""Forward hooks, layer resolution, token selection and pooling; writes feature stores.

This package's ``__init__`` imports nothing heavy: :func:`capture` and the other names load
their modules (and torch) when first used, so ``import repspace`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

_LAZY = {"PRESETS": "repspace.capture.layers", "resolve_layers": "repspace.capture.layers",
         "POOLINGS": "repspace.capture.tokens"}

__all__ = ["POOLINGS", "PRESETS", "capture", "resolve_layers"]


def capture(model: Any, probe: Any = None, **options: Any) -> Path:
    """Run ``model`` over ``probe`` and write per-layer features to an HDF5 store: see
    :func:`repspace.capture.run.capture` for the parameters."""
    from repspace.capture.run import capture as run

    return run(model, probe, **options)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'repspace.capture' has no attribute {name!r}")
