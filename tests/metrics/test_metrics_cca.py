"""SVCCA and PWCCA against a closed-form CCA from the generalised eigenproblem."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import eigh

from repspace.metrics import pwcca, svcca
from repspace.metrics.cca import _basis


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


def qr_cca(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Direct float64 CCA of full-column-rank X, Y: correlations, unit variates of X, centred X.

    Householder QR keeps every column however small its scale: no direction is dropped.
    """
    Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
    Qx, Qy = np.linalg.qr(Xc)[0], np.linalg.qr(Yc)[0]
    A, rho, _ = np.linalg.svd(Qx.T @ Qy, full_matrices=False)
    return rho, Qx @ A, Xc


def qr_pwcca(X: np.ndarray, Y: np.ndarray) -> float:
    rho, H, Xc = qr_cca(X, Y)
    alpha = np.abs(H.T @ Xc).sum(axis=1)
    return float(alpha @ rho / alpha.sum())


def test_a_column_scaled_by_1e_5_is_kept():
    # CCA is invariant to the scale of each column: a small column is a real direction.
    # Before the fix (tolerance 1e-10 on the explained variance) this gave svcca 0.6241,
    # pwcca(X, Y) 0.6676 and pwcca(Y, X) 0.7261.
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(60, 6))
    Y = Z[:, :4] @ rng.normal(size=(4, 5)) + 1.5 * rng.normal(size=(60, 5))
    X = Z * np.array([1, 1, 1, 1, 1, 1e-5])
    assert svcca(X, Y, keep=1.0) == pytest.approx(0.62800868, abs=1e-8)
    assert svcca(X, Y, keep=1.0) == pytest.approx(svcca(Z, Y, keep=1.0), abs=1e-12)
    assert svcca(X, Y, keep=1.0) == pytest.approx(qr_cca(X, Y)[0].mean(), abs=1e-12)
    # The weights sum over X's own columns, so scaling one changes them, not the directions.
    assert pwcca(X, Y) == pytest.approx(0.67571029, abs=1e-8)
    assert pwcca(X, Y) == pytest.approx(qr_pwcca(X, Y), abs=1e-12)
    assert pwcca(Y, X) == pytest.approx(pwcca(Y, Z), abs=1e-12)  # invertible map of Y's side


def test_a_smoothly_decaying_full_rank_spectrum_keeps_every_direction():
    # Singular values from 1 down to 1e-7 (40 columns): all real. Before the fix the 10
    # smallest were dropped (svcca 0.6416, pwcca 0.6615).
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(200, 40))
    X = Z * np.geomspace(1.0, 1e-7, 40)
    Y = Z @ rng.normal(size=(40, 30)) + 4.0 * rng.normal(size=(200, 30))
    assert _basis(X - X.mean(axis=0), "X").shape[1] == 40
    assert svcca(X, Y, keep=1.0) == pytest.approx(0.78256573, abs=1e-8)
    assert svcca(X, Y, keep=1.0) == pytest.approx(qr_cca(X, Y)[0].mean(), abs=1e-12)
    assert pwcca(X, Y) == pytest.approx(0.80397688, abs=1e-8)
    assert pwcca(X, Y) == pytest.approx(qr_pwcca(X, Y), abs=1e-12)


def test_keep_below_one_takes_the_smallest_count_reaching_it():
    # Variances 4, 3, 2, 1 (an orthonormal centred design): cumulative fractions 0.4, 0.7,
    # 0.9, 1. Exactly 0.7 (up to rounding) is reached by 2 directions, 0.7 + 1e-9 needs 3.
    Q = np.linalg.qr(np.random.default_rng(2).normal(size=(50, 4)))[0]
    Q -= Q.mean(axis=0)
    Q = np.linalg.qr(Q)[0]
    X = Q * np.sqrt([4.0, 3.0, 2.0, 1.0])
    for keep, k in [(0.4, 1), (0.69, 2), (0.7, 2), (0.7 + 1e-9, 3), (0.9, 3), (0.95, 4), (1.0, 4)]:
        assert _basis(X - X.mean(axis=0), "X", keep).shape[1] == k
