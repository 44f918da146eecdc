"""Where and in which precision the metrics' matrix products run: numpy on the CPU, or torch on
a chosen device; float32 products accumulated in float64, or float64 throughout.

``device`` in the metrics' signatures means:

- ``None``: numpy on the CPU;
- ``"auto"``: torch on CUDA when a GPU is present, otherwise numpy;
- any torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a :class:`torch.device`): torch on that
  device (``"cpu"`` runs the torch code on the CPU, which the tests use to check it against
  numpy).

``precision`` means:

- ``"float32"`` (default): the large products (X^T Y of feature blocks, X X^T of Gram
  blocks) run in float32 over blocks of at most :data:`BLOCK_ROWS` rows of centred data, with
  TF32 and other reduced-precision float32 modes of torch switched off while they run, and the
  block products are summed in float64; everything else (means, centring, row norms, the
  rank-one corrections, the finalisers) stays in float64. Rounding of a block product is about
  eps32 sqrt(block rows) relative to the products of the centred magnitudes, and it averages
  out in the Frobenius sums of CKA: CKA agrees with the float64 value to about 1e-7 (the
  tests ask for 1e-6), also for features with large means, because the data are centred
  before they are cast. A block whose squared row norms (or, for Gram blocks, whose sum of
  squares) fall outside [2^-60, 2^60] is multiplied in float64, where float32 would underflow
  or overflow, and so is a product with fewer than 32 columns on either side (memory-bound:
  float32 gains nothing, and its rounding does not average out over few entries).
- ``"float64"``: every product in float64, the exact mode (agrees with a float64 reference
  to rounding, ~1e-13).

Float32 products run at twice the float64 rate on CPUs and at 2 to 64 times it on GPUs. Code
written against this module uses only operations that numpy arrays and torch tensors share
(``A.T @ B``, ``*``, ``-``, ``.sum(0)``), and hands finished moments back as numpy arrays.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np

from repspace.errors import InputError
from repspace.utils.device import resolve_device

Device = Any  # None, a device string, or a torch.device
Precision = Literal["float32", "float64"]

#: The precisions the products can run in; the first is the default.
PRECISIONS: tuple[str, ...] = ("float32", "float64")

#: Rows (samples) per float32 block product; the blocks are summed in float64. The rounding
#: of a block product grows with its rows, while each block costs one float64 addition of the
#: product (a few percent of the product's time at 2048 rows).
BLOCK_ROWS = 2048

#: Products with fewer columns than this on either side run in float64: they are memory-bound
#: (float32 saves no time), and with few entries their float32 rounding does not average out.
FLOAT32_MIN_WIDTH = 32

#: Squared magnitudes outside [2^-SAFE_EXPONENT, 2^SAFE_EXPONENT] are multiplied in float64.
SAFE_EXPONENT = 60


def compute_device(device: Device) -> Any:
    """The torch device to compute on, or ``None`` for numpy (see the module docstring; the
    device names themselves are resolved by :func:`repspace.utils.device.resolve_device`)."""
    if device is None:
        return None
    if isinstance(device, str) and device == "auto":
        import torch

        return torch.device("cuda") if torch.cuda.is_available() else None
    return resolve_device(device)


def check_precision(precision: Any) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else an InputError."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


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


def product_precision(precision: str, width_a: int, width_b: int) -> str:
    """The precision of one product A^T B (A with ``width_a`` columns, B with ``width_b``):
    ``precision``, except float64 for a product narrower than :data:`FLOAT32_MIN_WIDTH`."""
    return "float64" if min(width_a, width_b) < FLOAT32_MIN_WIDTH else precision


def fits_float32(squares: Any) -> bool:
    """Whether data multiply in float32 without overflow or underflow, given ``squares``: a
    sum of squares, or a (rows x layers) array of squared row norms of which each layer's
    largest must lie within [2^-60, 2^60] (the values' own magnitudes within 2^+-30)."""
    if getattr(squares, "ndim", 0) == 2:
        squares = squares.max(0) if isinstance(squares, np.ndarray) else squares.amax(0)
    s = to_numpy(squares)
    return bool(np.all((s >= 2.0**-SAFE_EXPONENT) & (s <= 2.0**SAFE_EXPONENT)))


def row_blocks(n: int, size: int = BLOCK_ROWS) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` of ``range(n)``."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def centred_stack(layers: Sequence[Any], means: Sequence[Any], precision: str,
                  device: Any) -> Any:
    """The layers side by side (rows x summed widths) minus their ``means``, in
    ``precision``: the subtraction runs in float64 and only its result is rounded."""
    rows, width = layers[0].shape[0], sum(A.shape[1] for A in layers)
    if device is None:
        out = np.empty((rows, width), dtype=np.dtype(precision))
        subtract = np.subtract
    else:
        import torch

        out = torch.empty((rows, width), dtype=getattr(torch, precision), device=device)
        subtract = torch.sub
    start = 0
    for A, mean in zip(layers, means, strict=True):
        stop = start + A.shape[1]
        if device is None:
            subtract(A, mean, out=out[:, start:stop], casting="same_kind")
        else:
            out[:, start:stop] = subtract(A, mean)
        start = stop
    return out


def add_outer(acc: Any, a: Any, b: Any, alpha: float) -> None:
    """acc += alpha a b^T in place, in float64, without an acc-sized temporary."""
    if isinstance(acc, np.ndarray):
        for rows in row_blocks(acc.shape[0], 256):
            acc[rows] += alpha * np.outer(a[rows], b)
    else:
        acc.addr_(a, b, alpha=alpha)


@contextmanager
def ieee_float32(device: Any) -> Iterator[None]:
    """Float32 products in full float32 precision while the block runs: torch's TF32 (and
    bfloat16-based) float32 matrix products switched off, and restored afterwards."""
    if device is None:
        yield
        return
    import torch

    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)
