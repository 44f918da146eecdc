"""What a model argument names, told without loading anything (no torch): a file or folder
that must exist, a feature store given where a model goes, or a hub id.

The command line checks its model arguments with :func:`check_model_source` before any work,
and :func:`repspace.models.sources.load_base` with the same function, so that ``lora.pth``
(a typo for ``lora.pt``) is "not found" at once instead of a hub lookup.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from repspace.errors import FormatError

#: File name endings that make a model argument a path, never a hub id.
_FILE_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".h5", ".hdf5",
                            ".gguf", ".onnx", ".json", ".jsonl", ".txt", ".npz", ".npy", ".pkl",
                            ".zip", ".tar", ".gz"})
#: What a hub id looks like: NAME or OWNER/NAME.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def looks_like_path(text: str) -> bool:
    """True when ``text`` can only be a file or folder (``lora.pth``, ``./m``, ``a/b/c``), so
    that a missing one is "not found" at once instead of a hub lookup."""
    return (Path(text).suffix.lower() in _FILE_SUFFIXES or text.startswith((".", "~", "/"))
            or "\\" in text or not _HUB_ID.fullmatch(text))


def did_you_mean(path: Path) -> str:
    """``"; did you mean NAME?"`` for the closest existing name beside a missing ``path``."""
    try:
        names = [p.name for p in path.parent.iterdir()] if path.parent.is_dir() else []
    except OSError:
        names = []
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.75)
    return f"; did you mean {path.with_name(close[0])}?" if close else ""


def is_feature_store(path: Path) -> bool:
    """True for an HDF5 file (a repspace feature store), told by its signature."""
    try:
        with open(path, "rb") as file:
            return file.read(8) == _HDF5_SIGNATURE
    except OSError:
        return False


def check_model_source(source: str | Path) -> None:
    """Raise the error for a model argument that cannot be a model: a path-like name (see
    :func:`looks_like_path`) that does not exist (``checkpoint not found: lora.pth; did you
    mean lora.pt?``), or a feature store. Hub ids and existing paths pass."""
    text, path = str(source), Path(source)
    if path.is_file() and is_feature_store(path):
        raise FormatError(f"{path} is a feature store (HDF5), not a model: compare two stores "
                          "with 'repspace metrics A.h5 B.h5' (repspace.stream_metrics)")
    if path.exists() or not looks_like_path(text):
        return
    what = {".pt": "checkpoint", ".safetensors": "file"}.get(path.suffix, "model")
    raise FormatError(f"{what} not found: {text}{did_you_mean(path)}")
