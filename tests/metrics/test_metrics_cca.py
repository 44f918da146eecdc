"""SVCCA and PWCCA against a closed-form CCA from the generalised eigenproblem."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import eigh

from repspace.metrics import pwcca, svcca


def cca_reference(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical correlations (descending) and unit-norm canonical variates of X.

    Solves Sxy Syy^-1 Syx a = rho^2 Sxx a; needs full-rank covariances.
    """
    Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
    Sxx, Syy, Sxy = Xc.T @ Xc, Yc.T @ Yc, Xc.T @ Yc
    rho2, A = eigh(Sxy @ np.linalg.solve(Syy, Sxy.T), Sxx)
    m = min(X.shape[1], Y.shape[1])
    rho = np.sqrt(np.clip(rho2[::-1][:m], 0, 1))
    variates = Xc @ A[:, ::-1][:, :m]
    return rho, variates / np.linalg.norm(variates, axis=0)


def pca_reduce(X: np.ndarray, keep: float) -> np.ndarray:
    Xc = X - X.mean(axis=0)
    lam, V = np.linalg.eigh(Xc.T @ Xc)
    lam, V = lam[::-1], V[:, ::-1]
    k = int(np.argmax(np.cumsum(lam) / lam.sum() >= keep - 1e-12)) + 1
    return Xc @ V[:, :k]


def svcca_reference(X: np.ndarray, Y: np.ndarray, keep: float) -> float:
    return float(cca_reference(pca_reduce(X, keep), pca_reduce(Y, keep))[0].mean())


def pwcca_reference(X: np.ndarray, Y: np.ndarray) -> float:
    rho, H = cca_reference(X, Y)
    alpha = np.abs(H.T @ (X - X.mean(axis=0))).sum(axis=1)
    return float(np.sum(alpha * rho) / alpha.sum())


def pair(seed: int, n: int, dx: int, dy: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dx)) * np.geomspace(4.0, 0.3, dx) + 1.0
    Y = X @ rng.normal(size=(dx, dy)) + 2.0 * rng.normal(size=(n, dy))
    return X, Y


def random_orthogonal(d: int, seed: int) -> np.ndarray:
    return np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))[0]


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99, 1.0])
@pytest.mark.parametrize(("dx", "dy"), [(6, 6), (5, 9)])
def test_svcca_matches_closed_form_cca(dx, dy, keep):
    X, Y = pair(0, 80, dx, dy)
    assert svcca(X, Y, keep) == pytest.approx(svcca_reference(X, Y, keep), abs=1e-6)
    assert svcca(Y, X, keep) == pytest.approx(svcca(X, Y, keep), abs=1e-10)


@pytest.mark.parametrize(("dx", "dy"), [(6, 6), (5, 9), (9, 4)])
def test_pwcca_matches_closed_form_cca(dx, dy):
    X, Y = pair(1, 80, dx, dy)
    assert pwcca(X, Y) == pytest.approx(pwcca_reference(X, Y), abs=1e-6)


def test_pwcca_weights_favour_directions_that_explain_x():
    rng = np.random.default_rng(2)
    shared, private = rng.normal(size=(200, 1)), rng.normal(size=(200, 1))
    Y = np.hstack([shared, rng.normal(size=(200, 1))])
    # X is mostly the shared signal, so the high correlation gets most of the weight.
    X = np.hstack([10 * shared + 0.1 * rng.normal(size=(200, 1)), 0.1 * private])
    rho, _ = cca_reference(X, Y)
    assert pwcca(X, Y) > rho.mean() + 0.2


def test_identical_and_transformed_inputs_give_one():
    X, _ = pair(3, 50, 6, 6)
    Y = 0.1 * X @ random_orthogonal(6, 4) + 5.0
    assert svcca(X, X) == pytest.approx(1.0, abs=1e-10)
    assert svcca(X, Y) == pytest.approx(1.0, abs=1e-10)
    assert pwcca(X, X) == pytest.approx(1.0, abs=1e-10)
    assert pwcca(X, X @ np.random.default_rng(5).normal(size=(6, 8))) == pytest.approx(
        1.0, abs=1e-10
    )


def test_invariances():
    X, Y = pair(6, 60, 5, 7)
    perm = np.random.default_rng(7).permutation(60)
    Qx, Qy = random_orthogonal(5, 8), random_orthogonal(7, 9)
    base_sv, base_pw = svcca(X, Y), pwcca(X, Y)
    for Xv, Yv in [(X @ Qx, Y @ Qy), (3.0 * X, 0.2 * Y), (X - 4.0, Y + 9.0), (X[perm], Y[perm])]:
        assert svcca(Xv, Yv) == pytest.approx(base_sv, abs=1e-10)
    for Xv, Yv in [(X, Y @ Qy), (3.0 * X, 0.2 * Y), (X - 4.0, Y + 9.0), (X[perm], Y[perm])]:
        assert pwcca(Xv, Yv) == pytest.approx(base_pw, abs=1e-10)
    # PWCCA weights use X's neuron basis: rotating X changes them.
    assert abs(pwcca(X @ Qx, Y) - base_pw) > 1e-6
    assert abs(pwcca(Y, X) - base_pw) > 1e-6


def test_rank_deficient_inputs_are_handled():
    X, Y = pair(10, 70, 5, 6)
    redundant = np.hstack([X, X[:, :2] + X[:, 2:4], 3 * X[:, :1]])  # rank 5, 8 columns
    assert svcca(redundant, Y, keep=1.0) == pytest.approx(svcca(X, Y, keep=1.0), abs=1e-8)
    rho, H = cca_reference(X, Y)  # same column space, so same correlations and variates
    alpha = np.abs(H.T @ (redundant - redundant.mean(axis=0))).sum(axis=1)
    assert pwcca(redundant, Y) == pytest.approx(np.sum(alpha * rho) / alpha.sum(), abs=1e-8)
