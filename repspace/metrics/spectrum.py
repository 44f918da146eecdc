"""Geometry of one representation: its singular value spectrum and rank measures.

All functions see X as (n samples x d features). With ``center=True`` the column means are
removed first, so the spectrum is that of the sample covariance (eigenvalues s_i^2 / (n - 1)).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from repspace.errors import InputError
from repspace.metrics._validate import as_matrix, centered, check_fraction, real_array


def singular_values(X: ArrayLike, *, center: bool = True) -> np.ndarray:
    """Singular values of X (column-centred if ``center``), in descending order.

    Parameters
    ----------
    X : array-like, shape (n, d)
        Rows are samples.
    center : bool
        Subtract the column means first (needs n >= 2).

    Returns
    -------
    numpy.ndarray, shape (min(n, d),)
        s_1 >= s_2 >= ... >= 0. The covariance eigenvalues are s_i^2 / (n - 1).

    Notes
    -----
    Invariant to orthogonal transforms of the features and permutations of the samples;
    with ``center=True`` also to translation. Scales linearly with X.
    """
    X = as_matrix(X, "X", min_rows=2 if center else 1)
    if center:
        X = X - X.mean(axis=0)
    return np.linalg.svd(X, compute_uv=False)


def effective_rank(X: ArrayLike, *, center: bool = True) -> float:
    """Effective rank of Roy & Vetterli 2007: exp of the entropy of the normalised spectrum.

    erank = exp(-sum_i p_i log p_i) with p_i = s_i / sum_j s_j and s the singular values
    (0 log 0 = 0).

    Reference: O. Roy and M. Vetterli, "The effective rank: A measure of effective
    dimensionality", EUSIPCO 2007. They define it on the matrix itself (``center=False``);
    repspace centres by default, so that a common offset of the samples (the mean, often the
    largest direction of a hidden state) does not count as a dimension. Example: 500 x 32
    standard normal samples shifted by 2: 31.72 centred, 21.76 raw (Roy & Vetterli).

    Parameters
    ----------
    X : array-like, shape (n, d)
        Rows are samples.
    center : bool
        Subtract the column means first (needs n >= 2).

    Returns
    -------
    float
        In [1, min(n, d)]: k for a matrix with k equal non-zero singular values; higher means
        the representation spreads over more dimensions.

    Notes
    -----
    Invariant to orthogonal transforms of the features, isotropic scaling and permutations of
    the samples; with ``center=True`` also to translation.
    """
    return effective_rank_from_spectrum(_nonzero_spectrum(X, center, "effective rank"))


def effective_rank_from_spectrum(s: ArrayLike) -> float:
    """Effective rank (Roy & Vetterli 2007) of given singular values s_i >= 0, not all zero:
    exp(-sum_i p_i log p_i) with p_i = s_i / sum_j s_j (see :func:`effective_rank`).

    Returns
    -------
    float
        In [1, number of non-zero s_i]; higher means the spectrum is spread more evenly.
    """
    s = real_array(s, "s").ravel()
    if s.size == 0 or (s < 0).any() or not s.any():
        raise InputError("s must be non-negative singular values, not all zero")
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))


def stable_rank(X: ArrayLike, *, center: bool = True) -> float:
    """Stable (numerical) rank ||X||_F^2 / ||X||_2^2 = sum_i s_i^2 / s_1^2.

    Reference: M. Rudelson and R. Vershynin, "Sampling from large matrices: An approach through
    geometric functional analysis", J. ACM 2007.

    Parameters
    ----------
    X : array-like, shape (n, d)
        Rows are samples.
    center : bool
        Subtract the column means first (needs n >= 2).

    Returns
    -------
    float
        In [1, rank(X)]; higher means the energy is less concentrated in the top direction.

    Notes
    -----
    Invariant to orthogonal transforms of the features, isotropic scaling and permutations of
    the samples; with ``center=True`` also to translation.
    """
    s = _nonzero_spectrum(X, center, "stable rank")
    return float(np.sum(s**2) / s[0] ** 2)


def participation_ratio(X: ArrayLike, *, center: bool = True) -> float:
    """Participation ratio (sum_i lambda_i)^2 / sum_i lambda_i^2 of the covariance eigenvalues.

    lambda_i = s_i^2 (the 1 / (n - 1) factor cancels). A standard measure of the
    dimensionality of neural representations, e.g. Gao et al. 2017, "A theory of multineuronal
    dimensionality, dynamics and measurement" (bioRxiv).

    Parameters
    ----------
    X : array-like, shape (n, d)
        Rows are samples.
    center : bool
        Subtract the column means first (needs n >= 2).

    Returns
    -------
    float
        In [1, rank(X)]: k for k equal non-zero eigenvalues; higher means more dimensions used.

    Notes
    -----
    Invariant to orthogonal transforms of the features, isotropic scaling and permutations of
    the samples; with ``center=True`` also to translation.
    """
    lam = _nonzero_spectrum(X, center, "participation ratio") ** 2
    return float(lam.sum() ** 2 / np.sum(lam**2))


def mean_normalized_spectrum(token_matrices: Sequence[ArrayLike]) -> np.ndarray:
    """Mean over samples of the sum-normalised singular value spectra of token matrices.

    For sample i with token matrix T_i (L_i x d, not centred): s_i = singular values of T_i,
    p_i = s_i / sum(s_i), zero-padded to length K = min(max_i L_i, d); the result is
    mean_i p_i. Padding with zeros is exact, not an approximation: a matrix with L_i rows has at
    most min(L_i, d) non-zero singular values, so the padded entries are its remaining
    (zero) singular values.

    Reference: Kim et al. 2024, "Preserving Pre-trained Representation Space: On Effectiveness
    of Prefix-tuning for Large Multi-modal Models" (arXiv:2411.00029).

    Parameters
    ----------
    token_matrices : sequence of array-like, each of shape (L_i, d)
        One matrix of token features per sample; L_i may differ, d may not. A 3-D array
        (samples, L, d) is accepted too.

    Returns
    -------
    numpy.ndarray, shape (K,)
        Non-negative, sums to 1.

    Notes
    -----
    Invariant to orthogonal transforms of the features, to scaling each sample, and to
    permutations of the tokens within a sample and of the samples. Not invariant to
    translation (the token matrices are not centred).
    """
    mats = _token_matrices(token_matrices)
    spectrum = np.zeros(min(max(T.shape[0] for T in mats), mats[0].shape[1]))
    for i, T in enumerate(mats):
        if not T.any():
            raise InputError(
                f"token_matrices[{i}] is all zeros: its normalised spectrum is undefined"
            )
    for shape in dict.fromkeys(T.shape for T in mats):  # one batched SVD per shape
        s = np.linalg.svd(np.stack([T for T in mats if T.shape == shape]), compute_uv=False)
        spectrum[: s.shape[1]] += (s / s.sum(axis=1, keepdims=True)).sum(axis=0)
    return spectrum / len(mats)


def rank_ratio(token_matrices: Sequence[ArrayLike], energy: float = 0.9) -> float:
    """Rank ratio of token feature matrices, the representation-space measure of PT-PEFT.

    With p = :func:`mean_normalized_spectrum` (length K = min(max_i L_i, d), padded with zeros
    for shorter samples, which is exact since an L_i x d matrix has at most min(L_i, d)
    non-zero singular values): rank_ratio = k* / K, where k* is the smallest k with
    p_1 + ... + p_k >= energy.

    Reference: Kim et al. 2024, "Preserving Pre-trained Representation Space: On Effectiveness
    of Prefix-tuning for Large Multi-modal Models" (arXiv:2411.00029), which compares this
    ratio between a pretrained model and its tuned versions.

    Parameters
    ----------
    token_matrices : sequence of array-like, each of shape (L_i, d)
        One matrix of token features per sample (real tokens only); L_i may differ, d may not.
    energy : float
        Fraction of the spectrum mass to reach, in (0, 1].

    Returns
    -------
    float
        In (0, 1]; higher means the token features spread over more dimensions (higher rank).
        A tuned model whose ratio stays close to the base's has kept the rank of its
        representation space.

    Notes
    -----
    Same invariances as :func:`mean_normalized_spectrum`.
    """
    energy = check_fraction(energy, "energy")
    spectrum = mean_normalized_spectrum(token_matrices)
    return energy_count(spectrum, energy) / spectrum.size


def energy_count(power: np.ndarray, energy: float) -> int:
    """The smallest k with ``sum_{i<=k} p_i >= energy * sum_i p_i`` for ``power`` sorted
    descending (squared singular values, or a spectrum's mass).

    A cumulative fraction within its rounding (k * eps) of ``energy`` counts as reaching it,
    and nothing else does: a trailing direction holding a tiny but real share of the mass (a
    column scaled by 1e-5 holds 1e-10 of it) is still counted at ``energy = 1``.
    """
    cumulative = np.cumsum(power) / np.sum(power)
    reached = cumulative >= energy - np.arange(1, power.size + 1) * np.finfo(np.float64).eps
    return int(np.argmax(reached)) + 1 if reached.any() else int(power.size)


def _nonzero_spectrum(X: ArrayLike, center: bool, metric: str) -> np.ndarray:
    """Singular values of X (centred if asked), raising if they are all zero."""
    X = as_matrix(X, "X", min_rows=2 if center else 1)
    if center:
        X = centered(X, "X", metric)
    elif not X.any():
        raise InputError(f"X is all zeros: {metric} is undefined")
    return np.linalg.svd(X, compute_uv=False)


def _token_matrices(token_matrices: Sequence[ArrayLike]) -> list[np.ndarray]:
    """Validate a non-empty list of (L_i x d) matrices with L_i >= 1 and a common d."""
    if len(token_matrices) == 0:
        raise InputError("token_matrices is empty: at least one sample is needed")
    mats = []
    for i, T in enumerate(token_matrices):
        T = as_matrix(T, f"token_matrices[{i}]", min_rows=0)
        if T.shape[0] == 0:
            raise InputError(f"token_matrices[{i}] has no tokens (zero rows)")
        if mats and T.shape[1] != mats[0].shape[1]:
            raise InputError(
                f"token_matrices[{i}] has {T.shape[1]} features but token_matrices[0] has "
                f"{mats[0].shape[1]}: all token matrices must share the feature dimension"
            )
        mats.append(T)
    return mats
