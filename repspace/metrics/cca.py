"""CCA-based similarity: SVCCA and projection-weighted CCA (PWCCA).

Canonical correlations are computed in closed form: with Qx, Qy orthonormal bases of the
column spaces of the centred X and Y (from their SVDs, dropping only the directions whose
singular values are rounding noise, at or below max(n, d) * eps * s_1), the canonical
correlations are the singular values of Qx^T Qy and the canonical variates of X are Qx A, A the
left singular vectors. This is exact and robust to rank deficiency. A centred matrix of rank
r >= n - 1 spans every centred direction of sample space, which makes every canonical
correlation 1; the functions therefore require n > r + 1 for the dimension r actually used.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from repspace.errors import InputError
from repspace.metrics._validate import as_matrix, centered, check_fraction, check_pair
from repspace.metrics.spectrum import energy_count


def svcca(X: ArrayLike, Y: ArrayLike, keep: float = 0.99) -> float:
    """SVCCA: mean canonical correlation between the top singular directions of X and Y.

    Each of X, Y is centred and reduced to its top singular directions that explain a fraction
    ``keep`` of its variance (the smallest k with sum_{i<=k} s_i^2 >= keep * sum_i s_i^2).
    The result is the mean of the min(k_x, k_y) canonical correlations between the reduced
    sets.

    Reference: Raghu et al. 2017, "SVCCA: Singular Vector Canonical Correlation Analysis for
    Deep Learning Dynamics and Interpretability", NeurIPS.

    Parameters
    ----------
    X : array-like, shape (n, d_x)
    Y : array-like, shape (n, d_y)
        Rows are samples (same samples, same order); the feature dimensions may differ.
    keep : float
        Fraction of variance to keep in each, in (0, 1]. ``keep=1`` keeps every direction whose
        singular value exceeds the rounding level max(n, d) * eps * s_1, however small (CCA is
        invariant to the scale of each column). Requires n > k + 1 for the number k of kept
        directions.

    Returns
    -------
    float
        In [0, 1]. 1 means the kept subspaces coincide (X and Y agree up to an invertible linear
        map on them); higher means more similar.

    Notes
    -----
    Invariant to orthogonal transforms, isotropic scaling and translation of either X or Y,
    and to a permutation of the samples applied to both. Symmetric in X and Y.
    """
    keep = check_fraction(keep, "keep")
    X, Y = _pair(X, Y, "SVCCA")
    rho, _ = _cca(_basis(X, "X", keep), _basis(Y, "Y", keep))
    return float(rho.mean())


def pwcca(X: ArrayLike, Y: ArrayLike) -> float:
    """Projection-weighted CCA: canonical correlations weighted by how much of X they explain.

    With canonical correlations rho_i and the unit-norm canonical variates h_i (n-vectors) of X,
    i = 1..min(r_x, r_y), the weights are alpha_i = sum_j |<h_i, x_j>| over the columns x_j of
    the centred X (its neurons), and PWCCA = sum_i alpha_i rho_i / sum_i alpha_i. The canonical
    variates of one side are mutually orthogonal, so they need no further orthonormalisation.

    Reference: Morcos, Raghu & Bengio 2018, "Insights on representational similarity in neural
    networks with canonical correlation", NeurIPS; Google's svcca repository, ``pwcca.py``.

    ``compute_pwcca`` of ``pwcca.py`` follows another convention in three ways: its directions
    apply the CCA rotation to the centred neurons without the whitening by Sigma_xx^{-1/2}
    (then add the neuron means back and orthonormalise them by QR), so they are not the
    canonical variates of the paper, which repspace uses; its weights project the uncentred
    activations; and it takes the weights from whichever side has fewer neurons, whereas here
    they always come from X. Example: X (500 x 8, an invertible mix of an 8-dim signal, means
    1), Y (500 x 12, noisy, sharing 5 dimensions of it): 0.6305 here, 0.6908 with ``pwcca.py``.
    For a centred X with orthonormal columns the conventions coincide (0.5381 in both).

    Parameters
    ----------
    X : array-like, shape (n, d_x)
        The representation whose neurons define the weights.
    Y : array-like, shape (n, d_y)
        Same samples in the same order; the feature dimensions may differ. Requires
        n > rank + 1 for the rank of each centred matrix.

    Returns
    -------
    float
        In [0, 1]. 1 means the column spaces of X and Y coincide; higher means more similar.
        Not symmetric: pwcca(X, Y) != pwcca(Y, X) in general.

    Notes
    -----
    Invariant to translation and isotropic scaling of X or Y, to any invertible linear
    transform of Y, and to a permutation of the samples applied to both. Not invariant to
    orthogonal transforms of X: the weights sum over X's neurons in its own basis.
    """
    X, Y = _pair(X, Y, "PWCCA")
    Qx = _basis(X, "X")
    rho, A = _cca(Qx, _basis(Y, "Y"))
    variates = Qx @ A
    alpha = np.abs(variates.T @ X).sum(axis=1)
    return float(alpha @ rho / alpha.sum())


def _pair(X: ArrayLike, Y: ArrayLike, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate X and Y as paired samples and return them centred."""
    X = as_matrix(X, "X", min_rows=3)
    Y = as_matrix(Y, "Y", min_rows=3)
    check_pair(X, Y)
    return centered(X, "X", metric), centered(Y, "Y", metric)


def _basis(Xc: np.ndarray, name: str, keep: float = 1.0) -> np.ndarray:
    """Orthonormal basis (n x k) of the top singular directions of Xc explaining ``keep``.

    Singular values at or below max(n, d) * eps * s_1 are rounding noise of a rank-deficient
    matrix and count as zero; every other direction is real, however small (CCA is invariant
    to the scale of each column). ``keep = 1`` keeps all real directions; ``keep < 1`` the
    smallest count k with sum_{i<=k} s_i^2 >= keep * sum_i s_i^2, where a cumulative fraction
    within the rounding of its sum (k * eps) of ``keep`` counts as reaching it.
    """
    eps = np.finfo(np.float64).eps
    U, s, _ = np.linalg.svd(Xc, full_matrices=False)
    s = s[s > s[0] * max(Xc.shape) * eps]
    k = s.size
    if keep < 1.0:
        k = energy_count(s**2, keep)
    n = Xc.shape[0]
    if n <= k + 1:
        raise InputError(
            f"{name} uses {k} dimensions but has only {n} samples: CCA needs n > dimensions + 1 "
            "(otherwise every canonical correlation is 1)"
        )
    return U[:, :k]


def _cca(Qx: np.ndarray, Qy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical correlations (descending, m = min(r_x, r_y)) and the rotation A (r_x x m).

    The canonical variates of X are Qx A.
    """
    A, rho, _ = np.linalg.svd(Qx.T @ Qy, full_matrices=False)
    return np.minimum(rho, 1.0), A
