"""repspace: measure how fine-tuning bends the representation space of pretrained models.

The public API::

    import repspace
    base = repspace.load_model("base.pt")
    repspace.capture(base, out="base.h5")                 # per-layer features into HDF5
    result = repspace.compare("base.pt", ["tuned.pt"])   # CKA, ranks, Procrustes, k-NN
    print(result.table()); result.save_figures("figures/")
    report = repspace.weight_report("base.pt", ["tuned.pt"])  # dW spectra, intruders (no data)
"""

from repspace import metrics
from repspace.capture import capture, resolve_layers
from repspace.comparison import compare
from repspace.errors import FormatError, InputError, MismatchError, RepspaceError
from repspace.models import LoadedModel, export_checkpoint, load_model, save_tuned_checkpoint
from repspace.probes import Probe, load_probe
from repspace.results import CompareResult
from repspace.store import FeatureStore, StoreWriter
from repspace.streaming import StreamResult, stream_metrics
from repspace.version import __version__
from repspace.weight_results import WeightReport
from repspace.weightspace import weight_report

__all__ = [
    "CompareResult",
    "FeatureStore",
    "FormatError",
    "InputError",
    "LoadedModel",
    "MismatchError",
    "Probe",
    "RepspaceError",
    "StoreWriter",
    "StreamResult",
    "WeightReport",
    "__version__",
    "capture",
    "compare",
    "export_checkpoint",
    "load_model",
    "load_probe",
    "metrics",
    "resolve_layers",
    "save_tuned_checkpoint",
    "stream_metrics",
    "weight_report",
]
