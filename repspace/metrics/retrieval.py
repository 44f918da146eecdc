"""Paired retrieval: does each query find its own key among the most similar keys?"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from repspace.errors import InputError
from repspace.metrics._validate import as_matrix, check_pair, check_same_features

#: Cosine similarities closer than this count as tied (rounding of the similarities is ~1e-15).
TIE_TOLERANCE = 1e-12
_BLOCK_ELEMENTS = 1 << 22  # entries of the similarity matrix held in memory at once


def retrieval_accuracy(queries: ArrayLike, keys: ArrayLike, *, k: int = 1) -> float:
    """Top-k retrieval accuracy of matched pairs by cosine similarity.

    acc = (1/n) sum_i [rank_i < k], where rank_i is the number of keys ranked ahead of key i
    for query i: keys j with cos(q_i, k_j) > cos(q_i, k_i), plus tied keys (within 1e-12) with
    a lower index j < i. Ties are thus broken towards the lower index, deterministically. Row i
    of ``queries`` and row i of ``keys`` are a matched pair, e.g. a sentence and its
    paraphrase; all n keys are candidates for every query. Rows are L2-normalised; the features
    are not centred. The n x n similarities are computed in blocks of queries.

    Parameters
    ----------
    queries : array-like, shape (n, d)
    keys : array-like, shape (n, d)
        Matched pairs, same n and d, n >= 2; no row may be all zeros.
    k : int
        Count a hit when key i is among the top k keys (k >= 1; k >= n gives 1.0).

    Returns
    -------
    float
        In [0, 1]; 1 means every query's own key is among its k most similar keys. Chance
        level is k / n. Higher means the space keeps paraphrases closest to each other.

    Notes
    -----
    Invariant to an orthogonal transform and to isotropic scaling applied to both queries and
    keys (positive per-row scaling too), and to a permutation of the pairs up to how exact ties
    are broken. Not invariant to translation, nor to a transform applied to only one side.
    Not symmetric: swapping queries and keys generally changes the value.
    """
    Q = as_matrix(queries, "queries", min_rows=2, why=" for retrieval")
    K = as_matrix(keys, "keys", min_rows=2, why=" for retrieval")
    check_pair(Q, K, "queries", "keys")
    check_same_features(Q, K, "queries", "keys")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InputError(f"k must be an integer >= 1, got {k!r}")
    n = Q.shape[0]
    if k >= n:
        return 1.0
    Qn, Kn = _unit_rows(Q, "queries"), _unit_rows(K, "keys")
    hits = 0
    block = max(1, _BLOCK_ELEMENTS // n)
    columns = np.arange(n)
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        sim = Qn[rows] @ Kn.T
        own = sim[np.arange(rows.size), rows][:, None]
        ahead = sim > own + TIE_TOLERANCE
        ahead |= (np.abs(sim - own) <= TIE_TOLERANCE) & (columns < rows[:, None])
        hits += int(np.count_nonzero(ahead.sum(axis=1) < k))
    return hits / n


def _unit_rows(X: np.ndarray, name: str) -> np.ndarray:
    """Rows scaled to unit L2 norm (rescaled by their max first: no overflow or underflow)."""
    scale = np.abs(X).max(axis=1)
    zero = np.flatnonzero(scale == 0)
    if zero.size:
        raise InputError(
            f"{name} has an all-zero row (row {zero[0]}): its cosine similarity is undefined"
        )
    X = X / scale[:, None]
    return X / np.linalg.norm(X, axis=1, keepdims=True)
