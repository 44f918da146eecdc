"""Neighbourhood agreement between two representations of the same samples."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from repspace.errors import InputError
from repspace.metrics._validate import as_matrix, check_fraction, check_pair


def mutual_knn(X: ArrayLike, Y: ArrayLike, k: int = 10, *, clip: float | None = None) -> float:
    """Mutual k-nearest-neighbour overlap of Huh et al. 2024.

    m = (1/n) sum_i |N_X(i) ∩ N_Y(i)| / k, where N_X(i) are the k samples with the highest cosine
    similarity to sample i in X, sample i itself excluded. As in the reference code
    (github.com/minyoungg/platonic-rep, ``metrics.py`` with ``normalize=True``), rows are
    L2-normalised and neighbours ranked by inner product; the features are not centred. Ties
    are broken in favour of the lower sample index.

    Outlier clipping differs by default: the reference pipeline (``measure_alignment.py``,
    ``prepare_features``) always clamps every feature value to [-v, v] first, v the 0.95
    quantile of |X| over all entries (the sorted |X| at index int(q * X.size)); repspace clips
    only when asked (``clip=0.95`` reproduces it). The two can differ a lot when a few features
    carry massive activations, as in LLM hidden states: on two 300 x 64 representations sharing
    a 16-dim signal, with outlier features of scale 40-60, k = 10 gives 0.2113 here and 0.3757
    in platonic-rep (0.3757 here with ``clip=0.95``).

    Reference: Huh, Cheung, Wang & Isola 2024, "The Platonic Representation Hypothesis", ICML.

    Parameters
    ----------
    X : array-like, shape (n, d_x)
    Y : array-like, shape (n, d_y)
        Rows are samples (same samples, same order); the feature dimensions may differ. No row
        may be all zeros.
    k : int
        Number of neighbours, 1 <= k < n.
    clip : float, optional
        Clamp each of X and Y to its ``clip`` quantile of absolute values first, in (0, 1]
        (platonic-rep: 0.95); ``None`` or 1 leaves the features as they are.

    Returns
    -------
    float
        In [0, 1]. 1 means every sample has the same k nearest neighbours in X and Y; chance
        level is about k / (n - 1); higher means more similar.

    Notes
    -----
    Invariant to orthogonal transforms and to isotropic (and per-sample positive) scaling of X
    or Y, and to a permutation of the samples applied to both. Not invariant to translation.
    Symmetric in X and Y.
    """
    X = as_matrix(X, "X", min_rows=2)
    Y = as_matrix(Y, "Y", min_rows=2)
    check_pair(X, Y)
    if clip is not None:
        q = check_fraction(clip, "clip")
        X, Y = _clip_outliers(X, q), _clip_outliers(Y, q)
    return float(knn_overlap(X, Y, k).mean())


def knn_overlap(X: np.ndarray, Y: np.ndarray, k: int, names: tuple[str, str] = ("X", "Y")
                ) -> np.ndarray:
    """|N_X(i) ∩ N_Y(i)| / k for every sample i of validated float64 X, Y sharing n rows, with
    the cosine neighbourhoods of :func:`mutual_knn` (whose value is the mean of these)."""
    n = X.shape[0]
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k < n:
        raise InputError(f"k must be an integer with 1 <= k < n = {n}, got {k!r}")
    rows = np.arange(n)[:, None]
    in_x = np.zeros((n, n), dtype=bool)
    in_x[rows, _knn(X, k, names[0])] = True
    return in_x[rows, _knn(Y, k, names[1])].sum(axis=1) / k


def _clip_outliers(X: np.ndarray, q: float) -> np.ndarray:
    """X clamped to [-v, v], v the entry at index int(q * X.size) of the sorted |X| (q < 1)."""
    if q == 1.0:
        return X
    index = int(q * X.size)
    v = np.partition(np.abs(X).ravel(), index)[index]
    return np.clip(X, -v, v)


def _knn(X: np.ndarray, k: int, name: str) -> np.ndarray:
    """Indices (n x k) of each sample's k most cosine-similar other samples."""
    norms = np.linalg.norm(X, axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise InputError(
            f"{name} has an all-zero row (sample {zero[0]}): its cosine similarity is undefined"
        )
    Xn = X / norms[:, None]
    similarity = Xn @ Xn.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]
