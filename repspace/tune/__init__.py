"""The embedded trainer (:func:`tune`) and the tuning methods (:mod:`repspace.tune.methods`).

The trainer (and torch) load on first use of :func:`tune`; the method registry is light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from repspace.tune.methods import METHODS, MethodOptions, get_method

if TYPE_CHECKING:
    from repspace.tune.trainer import TuneResult, tune

__all__ = ["METHODS", "MethodOptions", "TuneResult", "get_method", "tune"]


def __getattr__(name: str) -> Any:
    if name in ("tune", "TuneResult"):
        from repspace.tune import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'repspace.tune' has no attribute {name!r}")
