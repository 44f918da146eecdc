"""repspace: measure how fine-tuning bends the representation space of pretrained models.

The public API::

    import repspace
    base = repspace.load_model("base.pt")
    repspace.capture(base, out="base.h5")                 # per-layer features into HDF5
    result = repspace.compare("base.pt", ["tuned.pt"])   # CKA, ranks, Procrustes, k-NN
    print(result.table()); result.save("results/")
    report = repspace.weight_report("base.pt", ["tuned.pt"])  # dW spectra, intruders (no data)

Names are imported on first use (PEP 562), so ``import repspace`` and the command line start
without loading torch, transformers and PEFT until a function needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# ``capture`` is both a stage (the package) and its function: the package is imported here, at
# once (its __init__ is light), so that the function's name, bound after it, is what stays.
from repspace.capture import capture

#: Public name -> the module that defines it.
_EXPORTS = {
    "__version__": "repspace.version",  # lazy: importlib.metadata is slow to import
    "resolve_layers": "repspace.capture",
    "compare": "repspace.analysis.compare",
    "stream_metrics": "repspace.analysis.streaming",
    "weight_report": "repspace.analysis.weights",
    "FormatError": "repspace.errors",
    "InputError": "repspace.errors",
    "MismatchError": "repspace.errors",
    "RepspaceError": "repspace.errors",
    "LoadedModel": "repspace.models",
    "export_checkpoint": "repspace.models",
    "load_model": "repspace.models",
    "merge_weights": "repspace.models.merging",
    "save_tuned_checkpoint": "repspace.models",
    "Probe": "repspace.probes",
    "load_probe": "repspace.probes",
    "CompareResult": "repspace.results",
    "StreamResult": "repspace.results",
    "WeightReport": "repspace.results",
    "FeatureStore": "repspace.store",
    "StoreWriter": "repspace.store",
}
_SUBPACKAGES = ("analysis", "capture", "demo", "metrics", "models", "plots", "probes",
                "results", "store", "tune", "utils")

__all__ = [
    "CompareResult", "FeatureStore", "FormatError", "InputError", "LoadedModel", "MismatchError",
    "Probe", "RepspaceError", "StoreWriter", "StreamResult", "WeightReport", "__version__",
    "analysis", "capture", "compare", "demo", "export_checkpoint", "load_model", "load_probe",
    "merge_weights", "metrics", "models", "plots", "probes", "resolve_layers", "results",
    "save_tuned_checkpoint", "store", "stream_metrics", "tune", "utils", "weight_report",
]

if TYPE_CHECKING:
    from repspace import analysis, demo, metrics, models, plots, probes, results, store, utils
    from repspace.analysis.compare import compare
    from repspace.analysis.streaming import stream_metrics
    from repspace.analysis.weights import weight_report
    from repspace.capture import resolve_layers
    from repspace.errors import FormatError, InputError, MismatchError, RepspaceError
    from repspace.models import LoadedModel, export_checkpoint, load_model, save_tuned_checkpoint
    from repspace.models.merging import merge_weights
    from repspace.probes import Probe, load_probe
    from repspace.results import CompareResult, StreamResult, WeightReport
    from repspace.store import FeatureStore, StoreWriter
    from repspace.version import __version__


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"repspace.{name}")
    else:
        raise AttributeError(f"module 'repspace' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
