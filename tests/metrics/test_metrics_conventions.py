"""The conventions where repspace differs from peer code, and the numbers its docs give for both.

Each peer convention is written here from its formula (not from the peer's code); the peer
numbers were checked once against the peer code itself.
"""

from __future__ import annotations

import numpy as np
import pytest

from repspace.metrics import effective_rank, linear_cka, minibatch_cka, mutual_knn, pwcca


def inverse_sqrt(S: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh(S)
    return V @ np.diag(w**-0.5) @ V.T


def pwcca_svcca_repository(X: np.ndarray, Y: np.ndarray) -> float:
    """``compute_pwcca`` of google/svcca (fewer neurons in X): the CCA rotation u of
    Sxx^-1/2 Sxy Syy^-1/2 applied to the centred neurons without whitening, the neuron means
    added back, orthonormalised by QR; weights from the uncentred activations."""
    n = X.shape[0]
    Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
    Sxx, Syy, Sxy = Xc.T @ Xc / (n - 1), Yc.T @ Yc / (n - 1), Xc.T @ Yc / (n - 1)
    u, rho, _ = np.linalg.svd(inverse_sqrt(Sxx) @ Sxy @ inverse_sqrt(Syy))
    P = np.linalg.qr(Xc @ u + X.mean(axis=0))[0]
    weights = np.abs(P.T @ X).sum(axis=1)
    return float(weights @ rho[: X.shape[1]] / weights.sum())


def test_pwcca_against_the_svcca_repository_convention():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(500, 8))
    X = Z @ rng.normal(size=(8, 8)) + 1.0
    Y = Z[:, :5] @ rng.normal(size=(5, 12)) + 2.0 * rng.normal(size=(500, 12)) - 3.0
    assert pwcca(X, Y) == pytest.approx(0.63051, abs=1e-5)
    assert pwcca_svcca_repository(X, Y) == pytest.approx(0.69081, abs=1e-5)
    # Without whitening or means to differ in, the two conventions coincide.
    W = 10.0 * np.linalg.qr(X - X.mean(axis=0))[0]
    assert pwcca(W, Y) == pytest.approx(0.53809, abs=1e-5)
    assert pwcca_svcca_repository(W, Y) == pytest.approx(pwcca(W, Y), abs=1e-10)


def clip_like_platonic_rep(X: np.ndarray, q: float) -> np.ndarray:
    v = np.sort(np.abs(X).ravel())[int(q * X.size)]
    return np.clip(X, -v, v)


def massive_activations(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, d = 300, 64
    Z = rng.normal(size=(n, 16))
    X = Z @ rng.normal(size=(16, d)) + rng.normal(size=(n, d))
    Y = Z @ rng.normal(size=(16, d)) + 2 * rng.normal(size=(n, d))
    X[:, :2] = 40 + 10 * rng.standard_t(3, size=(n, 2))
    Y[:, 0] = -60 + 20 * rng.standard_t(3, size=n)
    return X, Y


def test_mutual_knn_clips_like_platonic_rep_only_when_asked():
    X, Y = massive_activations()
    assert mutual_knn(X, Y, k=10) == pytest.approx(0.21133, abs=1e-5)
    clipped = mutual_knn(clip_like_platonic_rep(X, 0.95), clip_like_platonic_rep(Y, 0.95), k=10)
    assert clipped == pytest.approx(0.37567, abs=1e-5)
    assert mutual_knn(X, Y, k=10, clip=0.95) == clipped
    assert mutual_knn(X, Y, k=10, clip=1.0) == mutual_knn(X, Y, k=10)


def test_effective_rank_centred_and_raw_as_roy_and_vetterli():
    X = np.random.default_rng(0).normal(size=(500, 32)) + 2.0
    s = np.linalg.svd(X, compute_uv=False)
    p = s / s.sum()
    assert effective_rank(X, center=False) == pytest.approx(np.exp(-p @ np.log(p)), abs=1e-10)
    assert effective_rank(X, center=False) == pytest.approx(21.7626, abs=1e-4)
    assert effective_rank(X) == pytest.approx(31.7176, abs=1e-4)


def hsic1(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. 2012, eq. (5), with explicit matrices."""
    n = K.shape[0]
    K, L = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    value = (
        np.trace(K @ L)
        + K.sum() * L.sum() / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one @ K @ L @ one)
    )
    return value / (n * (n - 3))


def minibatch_reference(X: np.ndarray, Y: np.ndarray, batches: list[np.ndarray]) -> float:
    sums = np.zeros(3)
    for rows in batches:
        K, L = X[rows] @ X[rows].T, Y[rows] @ Y[rows].T
        sums += [hsic1(K, L), hsic1(K, K), hsic1(L, L)]
    return float(sums[0] / np.sqrt(sums[1] * sums[2]))


def test_minibatch_cka_near_equal_batches_against_a_data_loader_last_batch():
    rng = np.random.default_rng(1)
    n, batch = 1030, 256
    Z = rng.normal(size=(n, 8))
    X = Z @ rng.normal(size=(8, 32)) + rng.normal(size=(n, 32))
    Y = Z[:, :4] @ rng.normal(size=(4, 24)) + rng.normal(size=(n, 24))
    near_equal = np.array_split(np.arange(n), n // batch)
    loader = [np.arange(start, min(start + batch, n)) for start in range(0, n, batch)]
    assert [len(b) for b in loader] == [256, 256, 256, 256, 6]
    value = minibatch_cka(X, Y, batch, device=None, precision="float64")
    assert value == pytest.approx(minibatch_reference(X, Y, near_equal), abs=1e-10)
    assert value == pytest.approx(0.3947, abs=1e-4)
    assert minibatch_reference(X, Y, loader) == pytest.approx(0.4151, abs=1e-4)
    assert linear_cka(X, Y, debiased=True) == pytest.approx(0.3953, abs=1e-4)
