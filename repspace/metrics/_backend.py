"""Where the metrics' matrix products run: numpy on the CPU, or torch on a chosen device.

``device`` in the metrics' signatures means:

- ``None``: numpy, float64, on the CPU;
- ``"auto"``: torch on CUDA when a GPU is present, otherwise numpy;
- any torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a :class:`torch.device`): torch,
  float64, on that device (``"cpu"`` runs the torch code on the CPU, which the tests use to
  check it against numpy).

The products always run in float64 (a data-centre GPU runs float64 at half its float32 rate;
float32 would lose the 1e-6 agreement with the float64 reference over millions of rows). Code
written against this module uses only operations that numpy arrays and torch tensors share
(``A.T @ B``, ``*``, ``-``, ``.sum(0)``), and hands finished moments back as numpy arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from repspace.utils.device import resolve_device

Device = Any  # None, a device string, or a torch.device


def compute_device(device: Device) -> Any:
    """The torch device to compute on, or ``None`` for numpy (see the module docstring; the
    device names themselves are resolved by :func:`repspace.utils.device.resolve_device`)."""
    if device is None:
        return None
    if isinstance(device, str) and device == "auto":
        import torch

        return torch.device("cuda") if torch.cuda.is_available() else None
    return resolve_device(device)


def namespace(device: Any) -> Any:
    """The module with ``hstack`` and friends for ``device``: numpy for ``None``, else torch."""
    if device is None:
        return np
    import torch

    return torch


def asarray(A: Any, device: Any, *, copy: bool = False) -> Any:
    """``A`` as a float64 numpy array (``device`` None) or torch tensor on ``device``; with
    ``copy``, never one that shares memory with ``A`` (so that it may be changed in place)."""
    if device is None:
        return np.array(A, dtype=np.float64) if copy else np.asarray(A, dtype=np.float64)
    import torch

    return torch.as_tensor(np.asarray(A), device=device).to(torch.float64, copy=copy)


def zeros(shape: tuple[int, ...], device: Any) -> Any:
    """A float64 array (or tensor on ``device``) of zeros."""
    if device is None:
        return np.zeros(shape)
    import torch

    return torch.zeros(shape, dtype=torch.float64, device=device)


def to_numpy(A: Any) -> np.ndarray:
    """A numpy float64 copy of an array or tensor."""
    if isinstance(A, np.ndarray | np.generic):
        return np.asarray(A)
    return A.detach().cpu().numpy()
