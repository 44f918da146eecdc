"""Per-sample displacement against a direct Procrustes fit, the space-level identities it
must satisfy (Procrustes distance, mutual k-NN) and planted movements."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes

from repspace.errors import InputError
from repspace.metrics import Displacement, displacement, mutual_knn, procrustes_distance


def direct_distance(B: np.ndarray, T: np.ndarray) -> np.ndarray:
    Bn, Tn = B - B.mean(axis=0), T - T.mean(axis=0)
    Bn, Tn = Bn / np.linalg.norm(Bn), Tn / np.linalg.norm(Tn)
    R, _ = orthogonal_procrustes(Tn, Bn)  # argmin ||Tn R - Bn||_F over orthogonal R
    return np.sqrt(B.shape[0]) * np.linalg.norm(Tn @ R - Bn, axis=1)


def direct_knn_change(B: np.ndarray, T: np.ndarray, k: int) -> np.ndarray:
    def neighbours(X: np.ndarray, i: int) -> set[int]:
        cos = [(-(X[i] @ X[j]) / np.linalg.norm(X[i]) / np.linalg.norm(X[j]), j)
               for j in range(len(X)) if j != i]
        return {j for _, j in sorted(cos)[:k]}

    return np.array([1 - len(neighbours(B, i) & neighbours(T, i)) / k for i in range(len(B))])


def tuned_pair(seed: int, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    B = rng.normal(size=(n, d)) + 1.0
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    return B, 2.0 * (B + 0.4 * rng.normal(size=(n, d))) @ Q - 3.0


@pytest.mark.parametrize(("n", "d"), [(40, 6), (12, 50)])  # the second takes the row-space path
def test_displacement_matches_a_direct_procrustes_fit(n, d):
    B, T = tuned_pair(0, n, d)
    result = displacement(B, T, k=5)
    assert isinstance(result, Displacement) and result.k == 5
    np.testing.assert_allclose(result.distance, direct_distance(B, T), rtol=0, atol=1e-10)
    Bc, Tc = B - B.mean(axis=0), T - T.mean(axis=0)
    np.testing.assert_array_equal(result.knn_change, direct_knn_change(Bc, Tc, 5))
    assert np.sqrt(np.mean(result.distance**2)) == pytest.approx(procrustes_distance(B, T),
                                                                 abs=1e-10)
    assert result.knn_change.mean() == pytest.approx(1 - mutual_knn(Bc, Tc, k=5), abs=1e-12)


def test_a_planted_move_is_found_and_similarity_transforms_are_not_movement():
    rng = np.random.default_rng(1)
    B = rng.normal(size=(60, 8))
    Q = np.linalg.qr(rng.normal(size=(8, 8)))[0]
    still = displacement(B, 0.3 * B @ Q + 7.0)
    np.testing.assert_allclose(still.distance, 0.0, atol=1e-12)
    np.testing.assert_array_equal(still.knn_change, 0.0)
    moved = B.copy()
    moved[17] = -4.0 * B[17]  # one sample jumps across the space
    result = displacement(B, moved @ Q)
    assert int(np.argmax(result.distance)) == 17
    assert result.distance[17] > 5 * np.median(result.distance)
    assert result.knn_change[17] == 1.0


def test_bad_inputs():
    B, T = tuned_pair(2, 20, 4)
    with pytest.raises(InputError, match="base and tuned must have the same number of samples"):
        displacement(B, T[:-1])
    with pytest.raises(InputError, match="base and tuned must have the same number of features"):
        displacement(B, T[:, :3])
    with pytest.raises(InputError, match="k must be an integer with 1 <= k < n = 20"):
        displacement(B, T, k=20)
    with pytest.raises(InputError, match="tuned is constant"):
        displacement(B, np.ones_like(T))
