"""The embedded trainer and the tuning methods."""

from repspace.tune.methods import METHODS, MethodOptions
from repspace.tune.trainer import TuneResult, tune

__all__ = ["METHODS", "MethodOptions", "TuneResult", "tune"]
