"""Centered kernel alignment (CKA) between two representations of the same samples.

CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) for Gram matrices K, L over n samples
(Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited", ICML).

Two HSIC estimators are offered:

- biased (``debiased=False``): HSIC_0 = tr(K H L H) / (n - 1)^2 with H = I - 11^T / n; for the
  linear kernel this is ||Yc^T Xc||_F^2 / (n - 1)^2 with column-centred Xc, Yc.
- debiased (``debiased=True``): the unbiased estimator of Song et al. 2012 (JMLR 13), used for CKA
  by Kornblith et al. 2019 and by Nguyen, Raghu & Kornblith 2021 ("Do Wide and Deep Networks
  Learn the Same Things?", ICLR). With K~, L~ the Gram matrices with zeroed diagonals,
  HSIC_1 = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3)).
  It equals <U(K), U(L)>_F / (n(n-3)) where U is the "U-centring" of Szekely & Rizzo (2014),
  which needs only row sums, so no n x n matrix product is formed. Needs n >= 4.

Biased CKA drifts towards 1 when features far outnumber samples; prefer the debiased estimator
for small n and always report which one a number is.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial.distance import pdist, squareform

from repspace.errors import InputError
from repspace.metrics._backend import Device, Precision, check_precision, compute_device
from repspace.metrics._validate import (
    as_matrix,
    centered,
    check_layers,
    check_pair,
    max_abs,
    unit_norm,
)
from repspace.metrics.accumulators import moments_of
from repspace.metrics.hsic import center_gram, cka_from_hsic, feature_path_cheaper

_DEBIASED_WHY = " for the debiased HSIC estimator"


def linear_cka(X: ArrayLike, Y: ArrayLike, *, debiased: bool = False) -> float:
    """Linear CKA between two representations of the same n samples.

    CKA = HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y)) with the linear kernel K = Xc Xc^T, where Xc
    is X with centred columns. Biased: HSIC = ||Yc^T Xc||_F^2 / (n - 1)^2; debiased: the unbiased
    estimator of Song et al. 2012 (see the module docstring). The cheaper of the feature path
    (d x d cross products) and the Gram path (n x n Gram matrices) is used.

    Reference: Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited".

    Parameters
    ----------
    X : array-like, shape (n, d_x)
    Y : array-like, shape (n, d_y)
        Rows are samples (same samples, same order); the feature dimensions may differ.
    debiased : bool
        Use the unbiased HSIC estimator (needs n >= 4).

    Returns
    -------
    float
        In [0, 1] for the biased estimator; in [-1, 1] for the debiased one, which is near 0
        (either sign) for unrelated representations. 1 means identical up to an orthogonal
        transform, isotropic scaling and translation of the features; higher means more
        similar.

    Notes
    -----
    Invariant to orthogonal transforms and isotropic scaling of either X or Y, translation of
    either, and a permutation of the samples applied to both. Not invariant to non-isotropic
    scaling or general invertible linear maps.
    """
    min_rows, why = (4, _DEBIASED_WHY) if debiased else (2, "")
    X = as_matrix(X, "X", min_rows=min_rows, why=why)
    Y = as_matrix(Y, "Y", min_rows=min_rows, why=why)
    check_pair(X, Y)
    xs, ys = [_prepare(X, "X")], [_prepare(Y, "Y")]
    return float(np.clip(cka_from_hsic(*_linear_hsic(xs, ys, debiased), ["X"], ["Y"])[0, 0],
                         -1.0 if debiased else 0.0, 1.0))  # rounding: the documented range


def rbf_cka(
    X: ArrayLike,
    Y: ArrayLike,
    *,
    threshold: float = 1.0,
    debiased: bool = False,
    median: Literal["full", "pairs"] = "full",
) -> float:
    """CKA with Gaussian (RBF) kernels k(a, b) = exp(-||a - b||^2 / (2 sigma^2)).

    The bandwidth is set separately for X and for Y by the median heuristic of Kornblith et al.
    2019: sigma^2 = threshold^2 * m, with m the median of the squared Euclidean distances.
    By default (``median="full"``) m is the median of the full n x n squared-distance matrix,
    its n zeros on the diagonal included, exactly as in the authors' reference notebook
    (google-research ``representation_similarity/Demo.ipynb``, ``gram_rbf``), so that the
    published values are reproduced: its example (``np.random.seed(1337)``, X = randn(100, 10),
    Y = randn(100, 10) + X, threshold 0.5) gives 0.65483 here as there. ``median="pairs"``
    takes the median over the n(n - 1)/2 distinct pairs i < j instead (0.65401 on that
    example): the zeros pull the full-matrix median down slightly, and the two agree as n
    grows. HSIC as in :func:`linear_cka`, on the n x n kernel matrices.

    Reference: Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited".

    Parameters
    ----------
    X : array-like, shape (n, d_x)
    Y : array-like, shape (n, d_y)
        Rows are samples (same samples, same order); the feature dimensions may differ.
    threshold : float
        Bandwidth as a fraction of the median distance (> 0). Small values make the kernel local.
    debiased : bool
        Use the unbiased HSIC estimator (needs n >= 4).
    median : {"full", "pairs"}
        Which squared distances the median is taken over: the full n x n matrix, zeros
        included (the reference notebook), or the distinct pairs i < j.

    Returns
    -------
    float
        In [0, 1] for the biased estimator. 1 means the two kernel matrices are identical up to
        scale, which holds when X and Y agree up to an orthogonal transform, isotropic scaling
        and translation; higher means more similar.

    Notes
    -----
    Invariant to orthogonal transforms, isotropic scaling (the bandwidth scales with the data)
    and translation of either X or Y, and to a permutation of the samples applied to both.
    """
    min_rows, why = (4, _DEBIASED_WHY) if debiased else (2, "")
    X = as_matrix(X, "X", min_rows=min_rows, why=why)
    Y = as_matrix(Y, "Y", min_rows=min_rows, why=why)
    check_pair(X, Y)
    if not (isinstance(threshold, Real) and np.isfinite(threshold) and threshold > 0):
        raise InputError(f"threshold must be a positive finite number, got {threshold}")
    if median not in ("full", "pairs"):
        raise InputError(f'median must be "full" or "pairs", got {median!r}')
    K = center_gram(_rbf_gram(X, threshold, median, "X"), debiased)
    L = center_gram(_rbf_gram(Y, threshold, median, "Y"), debiased)
    hsic = np.array([[np.vdot(K, L)]])
    hx, hy = np.array([np.vdot(K, K)]), np.array([np.vdot(L, L)])
    return float(cka_from_hsic(hsic, hx, hy, ["X"], ["Y"])[0, 0])


def cka_matrix(
    Xs: Sequence[ArrayLike],
    Ys: Sequence[ArrayLike],
    *,
    debiased: bool = False,
    device: Device = "auto",
    precision: Precision = "float32",
) -> np.ndarray:
    """Linear CKA between every layer in ``Xs`` and every layer in ``Ys``.

    Entry (i, j) equals ``linear_cka(Xs[i], Ys[j], debiased=debiased)`` (to about 1e-7 with
    float32 products, to rounding with ``precision="float64"``). Each layer is centred once,
    and all pairs come from one batched product: either of the concatenated centred features
    (||Y_j^T X_i||_F^2 are block sums of the squared cross-covariance), or of the centred Gram
    matrices (their flattened stacks multiplied in float64), whichever needs fewer operations,
    through :func:`repspace.metrics.accumulators.moments_of`. The feature path holds a
    (sum of d_x) x (sum of d_y) matrix in memory, the Gram path (len(Xs) + len(Ys)) n x n
    matrices.

    Reference: Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited".

    Parameters
    ----------
    Xs, Ys : sequence of array-like, each of shape (n, d_i)
        Layers of the two models (or the same model); all share the same n samples in the
        same order, feature dimensions may differ. A 3-D array (layers, n, d) is accepted too.
    debiased : bool
        Use the unbiased HSIC estimator (needs n >= 4).
    device : None, "auto" or a torch device
        ``None``: numpy on the CPU. ``"auto"`` (default): torch on CUDA when a GPU is present,
        else numpy. A torch device (``"cpu"``, ``"cuda"``): the products run there through
        torch.
    precision : {"float32", "float64"}
        ``"float32"`` (default): the products of the centred features run in float32 (TF32
        off) over blocks of rows, summed in float64; about 1e-7 from the float64 values, also
        for features with large means. ``"float64"``: every product in float64, exact to
        rounding (see :mod:`repspace.metrics._backend`).

    Returns
    -------
    numpy.ndarray, shape (len(Xs), len(Ys))
        Linear CKA values; see :func:`linear_cka` for direction and invariances.
    """
    min_rows, why = (4, _DEBIASED_WHY) if debiased else (2, "")
    xs = check_layers(Xs, "Xs", min_rows=min_rows, why=why)
    ys = check_layers(Ys, "Ys", min_rows=min_rows, why=why)
    check_pair(xs[0], ys[0], "Xs[0]", "Ys[0]")
    precision = check_precision(precision)
    for M in [*xs, *ys]:
        _into_range(M)
    return moments_of(xs, ys, device=compute_device(device), precision=precision,
                      copy=False).cka(debiased)


def _into_range(X: np.ndarray) -> None:
    """Scale X in place by a power of two to max |X| in [1/2, 1) when max |X| lies outside
    [2^-30, 2^30] (exact, and CKA is scale-invariant), so that no product over- or underflows;
    other X are left as they are, saving a pass over the data. For arrays the caller owns
    (``check_layers`` returns copies); the accumulator centres them and refuses constant ones."""
    exponent = np.frexp(max_abs(X))[1]
    if abs(exponent) > 30:
        X *= 2.0 ** -exponent


def _prepare(X: np.ndarray, name: str, metric: str = "CKA") -> np.ndarray:
    """Centre X and scale it to unit Frobenius norm (CKA is scale-invariant; no overflow)."""
    return unit_norm(centered(X, name, metric))


def _linear_hsic(
    xs: list[np.ndarray], ys: list[np.ndarray], debiased: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scaled HSIC of every pair and of every layer with itself, for centred unit-norm layers.

    All values here and below are HSIC times (n - 1)^2 (biased) or n(n - 3) (debiased): the
    factor cancels in CKA.
    """
    if feature_path_cheaper(xs[0].shape[0], [M.shape[1] for M in xs], [M.shape[1] for M in ys]):
        return (
            _feature_hsic(xs, ys, debiased),
            np.array([_feature_hsic([M], [M], debiased)[0, 0] for M in xs]),
            np.array([_feature_hsic([M], [M], debiased)[0, 0] for M in ys]),
        )
    ex = np.stack([center_gram(M @ M.T, debiased).ravel() for M in xs])
    ey = np.stack([center_gram(M @ M.T, debiased).ravel() for M in ys])
    return ex @ ey.T, np.einsum("ij,ij->i", ex, ex), np.einsum("ij,ij->i", ey, ey)


def _feature_hsic(xs: list[np.ndarray], ys: list[np.ndarray], debiased: bool) -> np.ndarray:
    """Scaled linear-kernel HSIC of every pair of centred layers, from feature cross-products.

    ||X_i^T Y_j||_F^2 = tr(K L) for K = X_i X_i^T, L = Y_j Y_j^T. With centred features K 1 = 0,
    so the debiased terms reduce to the squared row norms r = diag(K): tr(K~ L~) =
    tr(K L) - r_K . r_L, 1^T K~ 1 = -sum(r_K) and 1^T K~ L~ 1 = r_K . r_L.
    """
    n = xs[0].shape[0]
    cross = np.hstack(xs).T @ np.hstack(ys)
    hsic = np.add.reduceat(
        np.add.reduceat(cross**2, _block_starts(xs), axis=0), _block_starts(ys), axis=1
    )
    if not debiased:
        return hsic
    rx = np.stack([np.einsum("ij,ij->i", M, M) for M in xs])
    ry = np.stack([np.einsum("ij,ij->i", M, M) for M in ys])
    return hsic - n / (n - 2) * (rx @ ry.T) + np.outer(rx.sum(1), ry.sum(1)) / ((n - 1) * (n - 2))


def _block_starts(mats: list[np.ndarray]) -> np.ndarray:
    """Column index where each layer starts in the horizontal concatenation of ``mats``."""
    return np.cumsum([0] + [M.shape[1] for M in mats[:-1]])


def _rbf_gram(X: np.ndarray, threshold: float, median: str, name: str) -> np.ndarray:
    """Gaussian kernel matrix with sigma^2 = threshold^2 * the median squared distance, over
    the full n x n matrix (``median="full"``) or the distinct pairs (``"pairs"``).

    Divided by n, so that ||K||_F <= 1 like the linear Gram of a unit-norm X (CKA is unchanged).
    """
    pairs = pdist(_prepare(X, name, "RBF CKA"), "sqeuclidean")
    sq_dists = squareform(pairs)
    m = np.median(sq_dists if median == "full" else pairs)
    if m <= 0:
        over = "entries of the distance matrix" if median == "full" else "sample pairs"
        raise InputError(
            f"{name} has a zero median pairwise distance (at least half of the {over} are "
            "zero: samples coincide): the RBF bandwidth is undefined"
        )
    return np.exp(-sq_dists / (2 * threshold**2 * m)) / X.shape[0]
