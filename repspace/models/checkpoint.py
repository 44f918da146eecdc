"""The repspace checkpoint file (``.pt``): writing it atomically and reading it safely.

A checkpoint is a dict of tensors and plain containers, loadable with
``torch.load(weights_only=True)``; loading never unpickles code. Keys:

``format`` (``"repspace-checkpoint"``), ``format_version``, ``kind`` (``"base"`` or ``"tuned"``),
``model_class`` (a ``transformers`` class name), ``config`` (the HF config as a dict),
``tokenizer_files`` (file name -> text, or a uint8 tensor for binary files), for a
vision-language model ``processor_files`` (the processor's files the same way: tokenizer, image
processor, chat template), ``state_dict``,
``fingerprint``, ``source``, ``repspace_version``, ``created``; a tuned checkpoint adds
``base_fingerprint``, ``method``, ``parts`` (how its tensors are applied, in order: see
:mod:`repspace.models.tuned`), ``method_config``, ``head``, ``task`` and ``training``. Its
``state_dict`` holds only the tuned tensors.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from repspace.errors import FormatError
from repspace.utils.files import atomic_path

FORMAT = "repspace-checkpoint"
FORMAT_VERSION = 1
KINDS = ("base", "tuned")
_REQUIRED = {
    "base": ("model_class", "config", "tokenizer_files", "state_dict", "fingerprint"),
    "tuned": ("parts", "state_dict", "fingerprint", "base_fingerprint", "method"),
}


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically and synced to disk (see
    :func:`repspace.utils.files.atomic_path`): a killed or failed write never leaves a partial
    file under that name, and a failure raises :class:`OSError` naming ``path``."""
    with atomic_path(path, sync=True) as tmp, open(tmp, "wb") as file:
        try:  # through a Python file object, so that a failed write raises its OSError
            torch.save(obj, file)
        except RuntimeError as exc:
            # torch.save reports a failed write as a RuntimeError raised while handling it
            if isinstance(exc.__context__, OSError):
                raise exc.__context__ from exc
            raise
    return Path(path)


def write_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write the checkpoint ``payload`` to ``path`` atomically (see :func:`save_atomic`)."""
    return save_atomic(payload, path)


_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([\w.]+)")


def _pickled_globals(data: bytes) -> list[str]:
    """The ``module.name`` of every global (class or function) a pickle would import, found by
    reading its opcodes (:mod:`pickletools`), never by unpickling it.

    Reading stops at the first malformed opcode (a corrupt or truncated pickle); the globals
    before it are returned.
    """
    found: list[str] = []
    strings: list[str] = []
    memo: dict[int, str] = {}
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(".".join(strings[-2:]))
            elif isinstance(arg, str) and ("UNICODE" in opcode.name or "STRING" in opcode.name):
                strings.append(arg)
            elif opcode.name == "MEMOIZE" and strings:
                memo[len(memo)] = strings[-1]
            elif opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and strings:
                memo[int(arg)] = strings[-1]
            elif opcode.name in ("GET", "BINGET", "LONG_BINGET") and int(arg) in memo:
                strings.append(memo[int(arg)])
    except (ValueError, KeyError, IndexError, EOFError, UnicodeDecodeError):
        pass
    return list(dict.fromkeys(found))


def _pickle_bytes(path: Path) -> bytes:
    """The pickle inside a torch zip checkpoint, or the whole file of a legacy one."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                return archive.read(name) if name else b""
        return path.read_bytes()
    except (OSError, zipfile.BadZipFile, EOFError):
        return b""


def _refusal(path: Path, exc: pickle.UnpicklingError) -> FormatError:
    """The error for a file that ``torch.load(weights_only=True)`` refused: code, or garbage."""
    named = _GLOBAL_IN_MESSAGE.findall(str(exc)) or _pickled_globals(_pickle_bytes(path))
    if named:
        return FormatError(
            f"{path}: repspace refuses to unpickle code (weights_only=True): the file would "
            f"import and call {', '.join(named[:3])}; a checkpoint may hold only tensors and "
            "plain containers")
    return FormatError(f"{path} is not a readable checkpoint (corrupt or truncated, or not a "
                       "torch file)")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and validate a repspace checkpoint, refusing anything that would run code.

    The file is read with ``torch.load(weights_only=True)``, whose unpickler builds only tensors
    and plain containers and imports no other global: a pickle that would call code is refused
    (:class:`FormatError` naming what it would call) before anything in it runs.
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise FormatError(f"checkpoint is empty: {path}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error says it
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refusal(path, exc) from exc
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError,
            IndexError, TypeError) as exc:  # what torch's unpickler raises on garbage
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
