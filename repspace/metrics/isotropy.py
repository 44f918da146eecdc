"""Anisotropy of one representation: how far its samples point in a common direction."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from repspace.errors import InputError
from repspace.metrics._validate import as_matrix


def anisotropy(X: ArrayLike) -> float:
    """Mean cosine similarity between distinct samples (Ethayarajh 2019).

    A = 1 / (n (n - 1)) sum_{i != j} cos(x_i, x_j). With u_i = x_i / ||x_i|| the sum over
    distinct pairs is ||sum_i u_i||^2 - n, so A costs O(n d) and is exact (no sampling of
    pairs). The features are not centred: anisotropy is the share of the geometry taken by the
    common direction that centring would remove.

    Reference: K. Ethayarajh 2019, "How Contextual are Contextualized Word Representations?
    Comparing the Geometry of BERT, ELMo, and GPT-2 Embeddings", EMNLP (its anisotropic
    baseline: the mean cosine similarity of randomly sampled pairs of representations).

    Parameters
    ----------
    X : array-like, shape (n, d)
        Rows are samples (n >= 2); no row may be all zeros.

    Returns
    -------
    float
        In [-1 / (n - 1), 1]. 1 means every sample points in the same direction (a degenerate
        cone); about 0 means directions spread evenly (isotropic); higher means more
        anisotropic. Not a similarity of two representations: compare the value of a base model
        with that of its tuned version.

    Notes
    -----
    Invariant to orthogonal transforms of the features, to positive scaling of each sample and
    to a permutation of the samples. Not invariant to translation.
    """
    X = as_matrix(X, "X", min_rows=2)
    peak = np.abs(X).max(axis=1)
    zero = np.flatnonzero(peak == 0)
    if zero.size:
        raise InputError(
            f"X has an all-zero row (sample {zero[0]}): its cosine similarity is undefined"
        )
    X = X / peak[:, None]  # no overflow or underflow in the norms
    n = X.shape[0]
    total = (X / np.linalg.norm(X, axis=1)[:, None]).sum(axis=0)
    return float((total @ total - n) / (n * (n - 1)))
