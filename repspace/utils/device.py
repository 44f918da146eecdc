"""The one device resolver: what ``--device`` / ``device=`` means everywhere."""

from __future__ import annotations

from typing import Any

from repspace.errors import InputError


def resolve_device(device: Any = "auto") -> Any:
    """The :class:`torch.device` that ``device`` names: ``"auto"`` is CUDA when a GPU is
    present, else the CPU; ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a :class:`torch.device` as
    they are. Asking for CUDA without a GPU, or a name torch does not know, is an
    :class:`~repspace.errors.InputError`."""
    import torch

    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device} was asked for, but torch sees no CUDA GPU")
    return resolved
