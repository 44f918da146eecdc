"""Procrustes distance and principal angles against scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes, subspace_angles

from repspace.metrics import principal_angles, procrustes_distance


def normalized(X: np.ndarray) -> np.ndarray:
    Xc = X - X.mean(axis=0)
    return Xc / np.linalg.norm(Xc)


def pair(seed: int, n: int, dx: int, dy: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dx)) + 2.0
    return X, X @ rng.normal(size=(dx, dy)) + 0.5 * rng.normal(size=(n, dy))


def random_orthogonal(d: int, seed: int) -> np.ndarray:
    return np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))[0]


@pytest.mark.parametrize(("n", "dx", "dy"), [(40, 6, 6), (40, 4, 9), (8, 30, 20)])
def test_procrustes_matches_scipy(n, dx, dy):
    X, Y = pair(0, n, dx, dy)
    d = max(dx, dy)
    Xn = np.pad(normalized(X), ((0, 0), (0, d - dx)))
    Yn = np.pad(normalized(Y), ((0, 0), (0, d - dy)))
    R, nuclear = orthogonal_procrustes(Yn, Xn)
    euclidean = np.linalg.norm(Yn @ R - Xn)
    assert procrustes_distance(X, Y) == pytest.approx(euclidean, abs=1e-9)
    assert procrustes_distance(X, Y, metric="angular") == pytest.approx(
        np.arccos(nuclear), abs=1e-9
    )
    assert procrustes_distance(Y, X) == pytest.approx(procrustes_distance(X, Y), abs=1e-12)


def test_procrustes_reference_values_and_invariances():
    X, Y = pair(1, 30, 5, 5)
    same = 0.3 * X @ random_orthogonal(5, 2) - 7.0
    assert procrustes_distance(X, X) == pytest.approx(0.0, abs=1e-7)
    assert procrustes_distance(X, same) == pytest.approx(0.0, abs=1e-7)
    assert procrustes_distance(X, same, metric="angular") == pytest.approx(0.0, abs=1e-7)
    base = procrustes_distance(X, Y)
    perm = np.random.default_rng(3).permutation(30)
    for Xv, Yv in [
        (X @ random_orthogonal(5, 4), Y @ random_orthogonal(5, 5)),
        (12.0 * X, 0.02 * Y),
        (X + 3.0, Y - np.arange(5)),
        (X[perm], Y[perm]),
    ]:
        assert procrustes_distance(Xv, Yv) == pytest.approx(base, abs=1e-10)
    assert abs(procrustes_distance(X * np.arange(1.0, 6.0), Y) - base) > 1e-3


def test_procrustes_of_orthogonal_centred_representations_is_maximal():
    rng = np.random.default_rng(6)
    A = rng.normal(size=(20, 4))
    Q, _ = np.linalg.qr(A - A.mean(axis=0))
    X, Y = Q[:, :2], Q[:, 2:]
    assert procrustes_distance(X, Y) == pytest.approx(np.sqrt(2.0), abs=1e-12)
    assert procrustes_distance(X, Y, metric="angular") == pytest.approx(np.pi / 2, abs=1e-12)


def top_directions_reference(X: np.ndarray, k: int) -> np.ndarray:
    Xc = X - X.mean(axis=0)
    _, vecs = np.linalg.eigh(Xc.T @ Xc)
    return vecs[:, ::-1][:, :k]


@pytest.mark.parametrize("k", [1, 3, 5])
def test_principal_angles_match_scipy(k):
    rng = np.random.default_rng(7)
    scales = np.geomspace(10.0, 0.5, 8)
    X = rng.normal(size=(60, 8)) * scales
    Y = (rng.normal(size=(45, 8)) * scales) @ (np.eye(8) + 0.3 * rng.normal(size=(8, 8)))
    expected = np.sort(
        subspace_angles(top_directions_reference(X, k), top_directions_reference(Y, k))
    )
    angles = principal_angles(X, Y, k)
    assert angles.shape == (k,)
    assert np.all(np.diff(angles) >= 0)
    np.testing.assert_allclose(angles, expected, atol=1e-8)


def test_small_principal_angles_keep_precision():
    rng = np.random.default_rng(9)
    X = rng.normal(size=(50, 6)) * np.geomspace(5.0, 0.5, 6)
    Y = X + 1e-7 * rng.normal(size=(50, 6))
    expected = np.sort(
        subspace_angles(top_directions_reference(X, 3), top_directions_reference(Y, 3))
    )
    assert expected.max() < 1e-5
    np.testing.assert_allclose(principal_angles(X, Y, 3), expected, rtol=1e-5, atol=1e-14)


def test_principal_angles_reference_values_and_invariances():
    rng = np.random.default_rng(10)
    A = rng.normal(size=(40, 5))
    U, _ = np.linalg.qr(A - A.mean(axis=0))
    X = U * np.array([5.0, 4.0, 3.0, 0.2, 0.1])  # principal directions: the axes, exactly
    np.testing.assert_allclose(principal_angles(X, 3.0 * X + 1.0, 3), 0.0, atol=1e-7)
    # Top-2 of X spans axes 0, 1; Y's top-2 spans axes 0, 3: angles 0 and pi/2.
    Y = X[:, [0, 3, 2, 1, 4]] * np.array([1.0, 1.0, 0.01, 1.0, 0.01])
    np.testing.assert_allclose(principal_angles(X, Y, 2), [0.0, np.pi / 2], atol=1e-6)
    Z = rng.normal(size=(30, 5)) * np.array([3.0, 1.0, 2.0, 0.5, 0.1])
    base = principal_angles(X, Z, 2)
    Q = random_orthogonal(5, 11)
    np.testing.assert_allclose(principal_angles(X @ Q, Z @ Q, 2), base, atol=1e-10)
    np.testing.assert_allclose(principal_angles(2 * X - 1, Z[::-1] * 9, 2), base, atol=1e-10)
    assert np.abs(principal_angles(X @ Q, Z, 2) - base).max() > 1e-3
