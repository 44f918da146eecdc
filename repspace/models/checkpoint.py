"""The repspace checkpoint file (``.pt``): writing it atomically and reading it safely.

A checkpoint is a dict of tensors and plain containers, loadable with
``torch.load(weights_only=True)``; loading never unpickles code. Keys:

``format`` (``"repspace-checkpoint"``), ``format_version``, ``kind`` (``"base"`` or ``"tuned"``),
``model_class`` (a ``transformers`` class name), ``config`` (the HF config as a dict),
``tokenizer_files`` (file name -> text, or a uint8 tensor for binary files), ``state_dict``,
``fingerprint``, ``source``, ``repspace_version``, ``created``; a tuned checkpoint adds
``base_fingerprint``, ``method``, ``parts`` (how its tensors are applied, in order: see
:mod:`repspace.models.tuned`), ``method_config``, ``head``, ``task`` and ``training``. Its
``state_dict`` holds only the tuned tensors.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from repspace.errors import FormatError

FORMAT = "repspace-checkpoint"
FORMAT_VERSION = 1
KINDS = ("base", "tuned")
_REQUIRED = {
    "base": ("model_class", "config", "tokenizer_files", "state_dict", "fingerprint"),
    "tuned": ("parts", "state_dict", "fingerprint", "base_fingerprint", "method"),
}


def write_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write ``payload`` to ``path`` atomically: a killed write never leaves a partial ``.pt``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise FormatError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from exc
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and validate a repspace checkpoint, refusing anything that would run code."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise FormatError(f"checkpoint is empty: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise FormatError(
            f"refusing to load {path}: it contains Python objects that would run code when "
            "unpickled (only tensors and plain containers are allowed)"
        ) from exc
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise FormatError(f"{path} is not a readable checkpoint (corrupt or truncated)") from exc
    return validate_checkpoint(payload, path)


def validate_checkpoint(payload: Any, path: str | Path = "<checkpoint>") -> dict[str, Any]:
    """Check the format name, version, kind and required keys of a loaded checkpoint."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise FormatError(f"{path} is not a repspace checkpoint (no format={FORMAT!r} key)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise FormatError(
            f"{path} has checkpoint format version {version!r}; this repspace reads version "
            f"{FORMAT_VERSION}"
        )
    kind = payload.get("kind")
    if kind not in KINDS:
        raise FormatError(f"{path} has unknown checkpoint kind {kind!r} (expected base or tuned)")
    missing = [key for key in _REQUIRED[kind] if key not in payload]
    if missing:
        raise FormatError(f"{path} is missing checkpoint entries: {', '.join(missing)}")
    return payload
