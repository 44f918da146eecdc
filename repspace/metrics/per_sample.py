"""Per-sample displacement: which samples did tuning move, and how far?

The space-level measures (CKA, Procrustes, ...) give one number per layer; these give one per
sample, so that the samples tuning moved most (and least) can be read off by their inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from repspace.metrics._validate import (
    as_matrix,
    centered,
    check_pair,
    check_same_features,
    unit_norm,
)
from repspace.metrics.neighbors import knn_overlap


@dataclass(frozen=True)
class Displacement:
    """How far each sample moved from a base representation to a tuned one.

    Attributes
    ----------
    distance : numpy.ndarray, shape (n,)
        sqrt(n) ||b_i - t_i Q|| after centring, unit Frobenius scaling and the orthogonal
        Procrustes alignment Q of the tuned space onto the base (see :func:`displacement`).
        0 means the sample kept its place; 1 that it moved by the root-mean-square distance
        of a base sample from the base centroid. Its root mean square is the Procrustes
        distance of the two spaces.
    knn_change : numpy.ndarray, shape (n,)
        1 - |N_base(i) ∩ N_tuned(i)| / k: the fraction of the sample's k nearest neighbours
        (by cosine similarity of the centred features) that tuning replaced; 0 means the same
        neighbours, 1 all new ones. Its mean is 1 - mutual_knn of the centred features.
    k : int
        The number of neighbours.
    """

    distance: np.ndarray
    knn_change: np.ndarray
    k: int


def displacement(base: ArrayLike, tuned: ArrayLike, *, k: int = 10) -> Displacement:
    """Per-sample displacement of a tuned representation from its base, and its k-NN change.

    Both are centred and scaled to unit Frobenius norm (B, T); Q is the orthogonal matrix
    minimising ||B - T Q||_F (orthogonal Procrustes: Q = U V^T for T^T B = U S V^T; Schönemann
    1966, "A generalized solution of the orthogonal Procrustes problem", Psychometrika), so
    that rotations, reflections, isotropic scaling and translations of the whole space do not
    count as movement. Then

        distance_i = sqrt(n) ||b_i - t_i Q||,   knn_change_i = 1 - |N_B(i) ∩ N_T(i)| / k,

    with N(i) the k samples most cosine-similar to sample i (itself excluded) in the centred
    features, the neighbourhoods of :func:`repspace.metrics.mutual_knn` (Huh et al. 2024)
    after centring, so that both measures ignore a shift of the whole space (which moves the
    raw cosine neighbourhoods). The first says how far a sample moved relative to the spread
    of the space, the second whether its neighbourhood changed. For d > 2n the alignment is
    computed in the joint row space of B and T (the same residuals, at O(n^2 d) cost).

    Parameters
    ----------
    base : array-like, shape (n, d)
    tuned : array-like, shape (n, d)
        One layer of the base and of the tuned model on the same samples in the same order.
    k : int
        Number of neighbours, 1 <= k < n.

    Returns
    -------
    Displacement
        ``distance`` and ``knn_change`` per sample (shape (n,)); for both 0 means the sample
        did not move and higher means tuning moved it more. sqrt(mean(distance**2)) equals
        ``procrustes_distance(base, tuned)`` and mean(knn_change) equals
        ``1 - mutual_knn(base - base.mean(0), tuned - tuned.mean(0), k)``.

    Notes
    -----
    Both are invariant to an orthogonal transform, isotropic scaling and translation of
    either space, and are permuted with the samples.
    """
    B = as_matrix(base, "base", min_rows=2)
    T = as_matrix(tuned, "tuned", min_rows=2)
    check_pair(B, T, "base", "tuned")
    check_same_features(B, T, "base", "tuned")
    Bc = unit_norm(centered(B, "base", "the displacement"))
    Tc = unit_norm(centered(T, "tuned", "the displacement"))
    knn_change = 1.0 - knn_overlap(Bc, Tc, k, ("base", "tuned"))
    residual = _procrustes_residual(Bc, Tc)
    distance = np.sqrt(B.shape[0]) * np.linalg.norm(residual, axis=1)
    return Displacement(distance=distance, knn_change=knn_change, k=int(k))


def _procrustes_residual(B: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Rows of B - T Q for the orthogonal Q minimising ||B - T Q||_F, possibly in coordinates
    of the joint row space (d > 2n), which keep every row norm."""
    n, d = B.shape
    if d > 2 * n:
        P = np.linalg.qr(np.vstack([B, T]).T)[0]
        B, T = B @ P, T @ P
    U, _, Vt = np.linalg.svd(T.T @ B)
    return B - T @ (U @ Vt)
