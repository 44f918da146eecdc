"""Representational similarity analysis (RSA): compare representational dissimilarity matrices.

A representational dissimilarity matrix (RDM) holds the dissimilarity of every pair of samples
in one representation; RSA correlates the upper triangles of two RDMs over the same samples,
so it compares geometries without any map between the feature spaces (Kriegeskorte, Mur &
Bandettini 2008, "Representational similarity analysis - connecting the branches of systems
neuroscience", Front. Syst. Neurosci.). The conventions follow rsatoolbox (``calc_rdm``,
``compare``), which the tests use as the oracle.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial.distance import pdist
from scipy.stats import rankdata

from repspace.errors import InputError
from repspace.metrics._validate import as_matrix, check_pair

RdmMetric = Literal["correlation", "euclidean", "sqeuclidean"]
_METRICS = ("correlation", "euclidean", "sqeuclidean")
_METHODS = ("spearman", "pearson")


def rdm(X: ArrayLike, metric: RdmMetric = "correlation") -> np.ndarray:
    """The upper triangle of the representational dissimilarity matrix of X.

    Entry (i, j), i < j, in row-major order (that of ``scipy.spatial.distance.pdist`` and of
    rsatoolbox's ``RDMs.dissimilarities``):

    - ``"correlation"``: 1 - r(x_i, x_j), r the Pearson correlation of the two samples across
      features (rsatoolbox's ``"correlation"``);
    - ``"euclidean"``: ||x_i - x_j||;
    - ``"sqeuclidean"``: ||x_i - x_j||^2 (rsatoolbox's ``"euclidean"`` divides this by d, a
      factor no correlation of RDMs sees).

    Parameters
    ----------
    X : array-like, shape (n, d)
        Rows are samples (n >= 2); ``"correlation"`` needs d >= 2 and no sample constant
        across its features.
    metric : {"correlation", "euclidean", "sqeuclidean"}

    Returns
    -------
    numpy.ndarray, shape (n (n - 1) / 2,)
        Dissimilarities, >= 0 (correlation distance in [0, 2]); 0 means the two samples are
        identical (for ``"correlation"``: equal up to a positive affine map of their values).
    """
    _check_metric(metric)
    X = as_matrix(X, "X", min_rows=2)
    return _rdm(X, metric, "X")


def rsa(
    X: ArrayLike,
    Y: ArrayLike,
    *,
    metric: RdmMetric = "correlation",
    method: Literal["spearman", "pearson"] = "spearman",
) -> float:
    """RSA: correlation between the dissimilarity matrices of X and Y over the same samples.

    rho = corr(rdm(X), rdm(Y)) over the n (n - 1) / 2 sample pairs, with the Spearman rank
    correlation (ties get their average rank; rsatoolbox's ``"spearman"``) or the Pearson
    correlation (rsatoolbox's ``"corr"``); the RDMs are those of :func:`rdm`.

    Reference: Kriegeskorte, Mur & Bandettini 2008, "Representational similarity analysis -
    connecting the branches of systems neuroscience", Front. Syst. Neurosci.; rsatoolbox
    (Schütt et al. 2023, "Statistical inference on representational geometries", eLife).

    Parameters
    ----------
    X : array-like, shape (n, d_x)
    Y : array-like, shape (n, d_y)
        Rows are samples (same samples, same order; n >= 3); the feature dimensions may differ.
    metric : {"correlation", "euclidean", "sqeuclidean"}
        Dissimilarity of two samples within a representation (see :func:`rdm`).
    method : {"spearman", "pearson"}
        How the two RDMs are correlated.

    Returns
    -------
    float
        In [-1, 1]. 1 means the two representations order (Spearman) or scale linearly
        (Pearson) all pairwise dissimilarities alike; near 0 for unrelated representations;
        higher means more similar.

    Notes
    -----
    Symmetric in X and Y, and invariant to a permutation of the samples applied to both. With
    ``"euclidean"`` or ``"sqeuclidean"`` invariant to orthogonal transforms, translation and
    isotropic scaling of X or Y; with ``"correlation"`` to adding a constant to, or positively
    scaling, any one sample's features, and to a permutation of the features, but not to
    rotations. Spearman is also invariant to any increasing transform of the dissimilarities
    (so ``"euclidean"`` and ``"sqeuclidean"`` agree).
    """
    _check_metric(metric)
    if method not in _METHODS:
        raise InputError(f'method must be "spearman" or "pearson", got {method!r}')
    X = as_matrix(X, "X", min_rows=3)
    Y = as_matrix(Y, "Y", min_rows=3)
    check_pair(X, Y)
    a, b = _rdm(X, metric, "X"), _rdm(Y, metric, "Y")
    if method == "spearman":
        a, b = rankdata(a), rankdata(b)
    return float(np.clip(_pearson(a, b), -1.0, 1.0))  # rounding: the documented range


def _check_metric(metric: str) -> None:
    if metric not in _METRICS:
        raise InputError(f'metric must be "correlation", "euclidean" or "sqeuclidean", got '
                         f"{metric!r}")


def _rdm(X: np.ndarray, metric: str, name: str) -> np.ndarray:
    """Condensed RDM of validated X, raising where a correlation distance is undefined."""
    if metric == "correlation":
        if X.shape[1] < 2:
            raise InputError(f"{name} needs at least 2 features for the correlation distance")
        spread = np.ptp(X, axis=1)
        flat = np.flatnonzero(spread <= X.shape[1] * np.finfo(np.float64).eps
                              * np.abs(X).max(axis=1))
        if flat.size:
            raise InputError(f"{name} has a sample constant across its features (sample "
                             f"{flat[0]}): its correlation distance is undefined")
    return pdist(X, metric)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two vectors; raise if either is constant (all pairs alike)."""
    for v, name in ((a, "X"), (b, "Y")):
        if np.ptp(v) <= v.size * np.finfo(np.float64).eps * np.abs(v).max():
            raise InputError(f"every pair of samples of {name} is equally dissimilar: "
                             "the correlation of the RDMs is undefined")
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
