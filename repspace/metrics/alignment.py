"""Alignment of two representations: orthogonal Procrustes distance and principal angles."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from repspace.errors import InputError
from repspace.metrics._validate import (
    as_matrix,
    centered,
    check_pair,
    check_same_features,
    unit_norm,
)


def procrustes_distance(
    X: ArrayLike, Y: ArrayLike, *, metric: Literal["euclidean", "angular"] = "euclidean"
) -> float:
    """Orthogonal Procrustes distance between two representations of the same samples.

    Both are centred and scaled to unit Frobenius norm (Xn, Yn). Then
    min_Q ||Xn - Yn Q||_F^2 over orthogonal Q equals 2 - 2 ||Xn^T Yn||_* (nuclear norm), so

    - ``metric="euclidean"``: d = sqrt(max(0, 2 - 2 ||Xn^T Yn||_*)), in [0, sqrt(2)];
    - ``metric="angular"``: d = arccos(||Xn^T Yn||_*), in [0, pi/2], a metric on shapes.

    When the dimensions differ, the narrower one is implicitly padded with zero columns (the
    nuclear norm is unchanged). The nuclear norm is computed from at most n columns per side,
    so wide features (d >> n) stay cheap.

    References: Ding, Denain & Steinhardt 2021, "Grounding Representation Similarity Through
    Statistical Testing" (they report the square, 2 - 2 ||Xn^T Yn||_*); Williams et al. 2021,
    "Generalized Shape Metrics on Neural Representations" (angular form).

    Parameters
    ----------
    X : array-like, shape (n, d_x)
    Y : array-like, shape (n, d_y)
        Rows are samples (same samples, same order); the feature dimensions may differ.
    metric : {"euclidean", "angular"}

    Returns
    -------
    float
        0 means identical up to an orthogonal transform, isotropic scaling and translation;
        lower means more similar.

    Notes
    -----
    Invariant to orthogonal transforms, isotropic scaling and translation of either X or Y,
    and to a permutation of the samples applied to both. Symmetric in X and Y.
    """
    if metric not in ("euclidean", "angular"):
        raise InputError(f'metric must be "euclidean" or "angular", got {metric!r}')
    X = as_matrix(X, "X", min_rows=2)
    Y = as_matrix(Y, "Y", min_rows=2)
    check_pair(X, Y)
    Xn = unit_norm(centered(X, "X", "the Procrustes distance"))
    Yn = unit_norm(centered(Y, "Y", "the Procrustes distance"))
    return procrustes_from_nuclear(_cross_nuclear_norm(Xn, Yn), metric)


def procrustes_from_nuclear(nuclear: float, metric: Literal["euclidean", "angular"]) -> float:
    """The Procrustes distance from ||Xn^T Yn||_* of unit-norm centred Xn, Yn (see
    :func:`procrustes_distance`); rounding above 1 is clipped."""
    if metric not in ("euclidean", "angular"):
        raise InputError(f'metric must be "euclidean" or "angular", got {metric!r}')
    nuclear = min(float(nuclear), 1.0)
    if metric == "angular":
        return float(np.arccos(nuclear))
    return float(np.sqrt(max(0.0, 2.0 - 2.0 * nuclear)))


def principal_angles(X: ArrayLike, Y: ArrayLike, k: int) -> np.ndarray:
    """Principal angles between the top-k principal subspaces of X and of Y in feature space.

    With Vx, Vy (d x k) the top-k right singular vectors of the column-centred X and Y (their
    top-k principal directions), the angles are theta_i = arccos(sigma_i(Vx^T Vy)); they are
    computed as arctan2(sin, cos), with the sines from (I - Vx Vx^T) Vy, so that small angles
    keep full precision (Bjorck & Golub 1973, "Numerical methods for computing angles between
    linear subspaces").

    X and Y must live in the same feature space (same d, e.g. one layer of a base model and of
    its tuned version); they need not share samples.

    Parameters
    ----------
    X : array-like, shape (n_x, d)
    Y : array-like, shape (n_y, d)
        Rows are samples; same number of features d.
    k : int
        Subspace dimension, 1 <= k <= the rank of each centred matrix. If s_k = s_{k+1} the
        top-k subspace is not unique and the angles are not meaningful.

    Returns
    -------
    numpy.ndarray, shape (k,)
        Angles in radians, ascending, in [0, pi/2]. All zero means the same top-k subspace;
        larger means the principal subspaces moved further apart.

    Notes
    -----
    Invariant to isotropic scaling and translation of X or Y, to permutations of the samples,
    and to one orthogonal transform of the feature space applied to both (not to separate
    transforms: the feature axes must correspond).
    """
    X = as_matrix(X, "X", min_rows=2)
    Y = as_matrix(Y, "Y", min_rows=2)
    check_same_features(X, Y)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    Vx = _top_directions(centered(X, "X", "principal angles"), k, "X")
    Vy = _top_directions(centered(Y, "Y", "principal angles"), k, "Y")
    return subspace_angles(Vx, Vy)


def subspace_angles(Qa: np.ndarray, Qb: np.ndarray) -> np.ndarray:
    """Principal angles between the column spaces of two orthonormal bases Qa, Qb (d x k).

    theta_i = arccos(sigma_i(Qa^T Qb)), computed as arctan2(sin, cos) with the sines from
    (I - Qa Qa^T) Qb so that small angles keep full precision (Bjorck & Golub 1973).

    Parameters
    ----------
    Qa, Qb : numpy.ndarray, shape (d, k)
        Orthonormal columns (e.g. top-k singular vectors); not checked.

    Returns
    -------
    numpy.ndarray, shape (k,)
        Angles in radians, ascending, in [0, pi/2]; all zero means the same subspace.
    """
    cosines = np.linalg.svd(Qa.T @ Qb, compute_uv=False)
    sines = np.linalg.svd(Qb - Qa @ (Qa.T @ Qb), compute_uv=False)
    return np.arctan2(np.sort(sines), np.minimum(cosines, 1.0))


def _top_directions(Xc: np.ndarray, k: int, name: str) -> np.ndarray:
    """Top-k right singular vectors (d x k) of Xc; k must not exceed its numerical rank."""
    _, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    rank = int(np.count_nonzero(s > s[0] * max(Xc.shape) * np.finfo(np.float64).eps))
    if k > rank:
        raise InputError(
            f"k={k} exceeds the rank of the centred {name} ({rank}): its top-k principal "
            "subspace is undefined"
        )
    return Vt[:k].T


def _cross_nuclear_norm(A: np.ndarray, B: np.ndarray) -> float:
    """||A^T B||_* for A (n x d_a), B (n x d_b), working with at most n columns per side.

    If d > n, A is replaced by A Q = R^T from the QR factorisation A^T = Q R; this keeps the row
    Gram A A^T and hence the singular values of A^T B.
    """
    A, B = (np.linalg.qr(M.T, mode="r").T if M.shape[1] > M.shape[0] else M for M in (A, B))
    return float(np.linalg.svd(A.T @ B, compute_uv=False).sum())
