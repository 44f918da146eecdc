"""Load, save and fingerprint models; apply tuned checkpoints onto their base.

Loading needs torch and transformers: the names below import their modules on first use, so
that light modules of this package (:mod:`~repspace.models.structure`) import without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from repspace.models.api import export_checkpoint, load_model, save_tuned_checkpoint
    from repspace.models.loaded import LoadedModel

_LAZY = {"export_checkpoint": "api", "load_model": "api", "save_tuned_checkpoint": "api",
         "LoadedModel": "loaded"}

__all__ = ["LoadedModel", "export_checkpoint", "load_model", "save_tuned_checkpoint"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"repspace.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'repspace.models' has no attribute {name!r}")
