"""The HSIC building blocks that the in-memory CKA (:mod:`~repspace.metrics.cka`) and the
streaming accumulators (:mod:`~repspace.metrics.accumulators`) share: Gram centring (biased and
U-centred), the choice between feature and Gram products, and CKA from HSIC values."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from repspace.errors import InputError


def feature_path_cheaper(n: int, dims_x: Sequence[int], dims_y: Sequence[int]) -> bool:
    """Whether feature cross-products (d x d) need fewer operations than n x n Gram matrices.

    Feature path: n (D_x D_y + sum_i d_i^2) for the cross and self products; Gram path:
    n^2 (D_x + D_y + L_x L_y) for the Grams and the products of their flattened stacks.
    """
    dx, dy = sum(dims_x), sum(dims_y)
    feature_cost = n * (dx * dy + sum(d**2 for d in [*dims_x, *dims_y]))
    gram_cost = n * n * (dx + dy + len(dims_x) * len(dims_y))
    return feature_cost <= gram_cost


def center_gram(K: np.ndarray, debiased: bool) -> np.ndarray:
    """H K H (biased), or the U-centred K of Szekely & Rizzo 2014 (debiased).

    U-centring: U_ij = K_ij - (R_i + R_j) / (n - 2) + sum(R) / ((n - 1)(n - 2)) for i != j and
    U_ii = 0, with R the row sums of K with zeroed diagonal. Then <U(K), U(L)> / (n(n-3)) is
    the unbiased HSIC_1 of Song et al. 2012.
    """
    if not debiased:
        K = K - K.mean(axis=0)
        return K - K.mean(axis=1, keepdims=True)
    n = K.shape[0]
    K = K.copy()
    np.fill_diagonal(K, 0.0)
    rows = K.sum(axis=1)
    U = K - (rows[:, None] + rows[None, :]) / (n - 2) + rows.sum() / ((n - 1) * (n - 2))
    np.fill_diagonal(U, 0.0)
    return U


def cka_from_hsic(
    hsic: np.ndarray, hx: np.ndarray, hy: np.ndarray, xnames: list[str], ynames: list[str]
) -> np.ndarray:
    """CKA_ij = hsic_ij / sqrt(hx_i hy_j), after checking that no self-HSIC is zero.

    The Gram matrices have ||K||_F <= 1, so self-HSIC values below 1e-12 are rounding noise.
    The debiased self-HSIC is a squared norm too (of the U-centred Gram), hence never negative;
    it vanishes e.g. when all samples but one coincide.
    """
    for h, names in ((hx, xnames), (hy, ynames)):
        bad = np.flatnonzero(h <= 1e-12)
        if bad.size:
            name = names[bad[0]]
            raise InputError(
                f"the HSIC of {name} with itself is zero, so CKA is undefined: {name} is nearly "
                "constant or, with debiased=True, too degenerate for the unbiased estimator "
                "(e.g. all samples but one coincide)"
            )
    return hsic / np.sqrt(np.outer(hx, hy))
