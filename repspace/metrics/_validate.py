"""Input checks shared by the metrics: every bad input becomes one :class:`InputError`."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import numpy as np
from numpy.typing import ArrayLike

from repspace.errors import InputError


def real_array(X: ArrayLike, name: str = "X") -> np.ndarray:
    """Return ``X`` as a finite float64 array of any shape.

    Accepts any array-like of real numbers (lists, numpy arrays of any float or int dtype,
    CPU torch tensors).
    """
    try:
        arr = np.asarray(X)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{name} cannot be read as a numeric array ({exc})") from exc
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return arr


def as_matrix(X: ArrayLike, name: str = "X", *, min_rows: int = 1, why: str = "") -> np.ndarray:
    """Return ``X`` as a finite float64 (samples x features) array (see :func:`real_array`).

    ``why`` completes the message raised when there are fewer than ``min_rows`` rows, e.g.
    ``" for the debiased HSIC estimator"``.
    """
    arr = real_array(X, name)
    if arr.ndim != 2:
        raise InputError(f"{name} must be a 2-D array (samples x features), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise InputError(f"{name} has no features (shape {arr.shape})")
    if arr.shape[0] < min_rows:
        raise InputError(
            f"{name} needs at least {min_rows} samples (rows){why}, got {arr.shape[0]}"
        )
    return arr


def check_pair(X: np.ndarray, Y: np.ndarray, xname: str = "X", yname: str = "Y") -> None:
    """Require the same number of samples (rows) in ``X`` and ``Y``."""
    if X.shape[0] != Y.shape[0]:
        raise InputError(
            f"{xname} and {yname} must have the same number of samples (rows): "
            f"{X.shape[0]} != {Y.shape[0]}"
        )


def check_same_features(X: np.ndarray, Y: np.ndarray, xname: str = "X", yname: str = "Y") -> None:
    """Require the same number of features (columns) in ``X`` and ``Y``."""
    if X.shape[1] != Y.shape[1]:
        raise InputError(
            f"{xname} and {yname} must have the same number of features (columns): "
            f"{X.shape[1]} != {Y.shape[1]}"
        )


def centered(X: np.ndarray, name: str, metric: str) -> np.ndarray:
    """Subtract the column means; raise if nothing is left, which leaves ``metric`` undefined.

    "Nothing left" allows for the rounding error of the means: |Xc| <= n * eps * max |X|.
    """
    return centre_in_place(X.copy(), name, metric)


def centre_in_place(X: np.ndarray, name: str, metric: str) -> np.ndarray:
    """:func:`centered` without the copy: X (which the caller owns) is centred in place and
    returned."""
    largest = max_abs(X)
    X -= X.mean(axis=0)
    if max_abs(X) <= X.shape[0] * np.finfo(np.float64).eps * largest:
        raise InputError(
            f"{name} is constant (zero variance after centering): {metric} is undefined"
        )
    return X


def check_layers(
    layers: Sequence[ArrayLike], name: str, *, min_rows: int, why: str
) -> list[np.ndarray]:
    """Validate a non-empty list of (n x d_i) layers that share n; return them as float64."""
    if (isinstance(layers, np.ndarray) and layers.ndim != 3) or len(layers) == 0:
        raise InputError(f"{name} must be a non-empty list of 2-D arrays (one per layer)")
    mats = [as_matrix(L, f"{name}[{i}]", min_rows=min_rows, why=why) for i, L in enumerate(layers)]
    for i, M in enumerate(mats[1:], start=1):
        check_pair(mats[0], M, f"{name}[0]", f"{name}[{i}]")
    return mats


def unit_norm(A: np.ndarray) -> np.ndarray:
    """A / ||A||_F for a non-zero A, without overflow or underflow for extreme scales."""
    A = A / max_abs(A)
    A /= np.linalg.norm(A)
    return A


def max_abs(A: np.ndarray) -> float:
    """max |A| without an |A|-sized temporary."""
    return max(float(A.max()), -float(A.min()))


def check_fraction(value: float, name: str) -> float:
    """Require ``0 < value <= 1``."""
    if not (isinstance(value, Real) and 0.0 < value <= 1.0):
        raise InputError(f"{name} must be in (0, 1], got {value}")
    return float(value)
