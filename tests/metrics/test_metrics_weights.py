"""Weight-space metrics against constructed cases with known answers and direct float64
formulas: rank-r updates, rotated singular vectors (intruders), rotated subspaces (angles)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import hadamard
from scipy.stats import ortho_group

from repspace import metrics
from repspace.errors import InputError


def _svd_matrix(U: np.ndarray, s: np.ndarray, V: np.ndarray) -> np.ndarray:
    return (U[:, : s.size] * s) @ V[:, : s.size].T


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.mark.parametrize("r", [1, 3, 7])
def test_rank_r_update_measures_rank_r(rng, r):
    W = rng.normal(size=(60, 40))
    dW = rng.normal(size=(60, r)) @ rng.normal(size=(r, 40))
    result = metrics.weight_change(W, W + dW)
    assert result["numerical_rank"] == r
    assert metrics.numerical_rank(dW) == r == np.linalg.matrix_rank(dW)
    assert result["energy_rank"] <= r
    assert sum(v > 1e-8 * result["spectrum"][0] for v in result["spectrum"]) == r


def test_rank_of_a_float32_update_needs_the_storage_epsilon(rng):
    W = rng.normal(size=(80, 50)).astype(np.float32)
    tuned = (W + 0.01 * rng.normal(size=(80, 2)) @ rng.normal(size=(2, 50))).astype(np.float32)
    # Rounding the tuned matrix to float32 adds full-rank noise of size ~eps32 * |W| ...
    assert metrics.weight_change(W, tuned)["numerical_rank"] == 50
    # ... which the stored dtype's epsilon accounts for.
    assert metrics.weight_change(W, tuned, eps=np.finfo(np.float32).eps)["numerical_rank"] == 2


def test_norms_and_effective_rank_against_direct_formulas(rng):
    U, V = ortho_group.rvs(30, random_state=1), ortho_group.rvs(20, random_state=2)
    s = np.array([5.0, 3.0, 2.0, 0.5])
    W = rng.normal(size=(30, 20))
    dW = _svd_matrix(U, s, V)
    result = metrics.weight_change(W, W + dW)
    p = s / s.sum()
    assert result["effective_rank"] == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-10)
    np.testing.assert_allclose(result["spectrum"][:4], s, rtol=1e-10)
    assert result["dw_frobenius"] == pytest.approx(np.sqrt(np.sum(s**2)), rel=1e-12)
    assert result["dw_spectral"] == pytest.approx(5.0, rel=1e-12)
    assert result["rel_frobenius"] == pytest.approx(np.sqrt(np.sum(s**2)) / np.sqrt(np.sum(W**2)))
    assert result["rel_spectral"] == pytest.approx(5.0 / np.linalg.eigvalsh(W.T @ W).max() ** 0.5)
    # energies 25, 9, 4, 0.25 of 38.25: 90% needs 3 directions, 60% one.
    assert result["energy_rank"] == 3
    assert metrics.energy_rank(s, 0.6) == 1
    assert metrics.energy_rank([3.0, 2.0, 1.0], 0.9) == 2  # 13/14 >= 0.9
    assert metrics.energy_rank([3.0, 2.0, 1.0], 0.95) == 3
    assert metrics.energy_rank([0.0, 0.0]) == 0


def test_energy_rank_counts_a_tiny_real_direction():
    # The third direction holds 1e-10 / 2 of the energy: real, so all of it needs 3 directions
    # (a relative cut of 1e-10 used to drop it); an exact zero adds nothing.
    assert metrics.energy_rank([1.0, 1.0, 1e-5], 1.0) == 3
    assert metrics.energy_rank([1.0, 1.0, 0.0], 1.0) == 2
    assert metrics.energy_rank([1.0, 1.0, 1e-5], 0.4) == 1


def test_vector_norms(rng):
    b = rng.normal(size=50)
    d = 0.1 * rng.normal(size=50)
    result = metrics.delta_norms(b, b + d)
    assert set(result) == {"norm_base", "dw_frobenius", "rel_frobenius"}
    assert result["rel_frobenius"] == pytest.approx(np.sqrt(d @ d) / np.sqrt(b @ b), rel=1e-12)
    assert np.isnan(metrics.delta_norms(np.zeros(3), np.ones(3))["rel_frobenius"])


def _base_and_mixed(m: int, block: int, rng: np.random.Generator):
    """W_base with distinct singular values, and W_tuned whose first ``block`` left singular
    vectors are replaced by a Hadamard mix of them: each new vector has |cos| = 1/sqrt(block)
    with each of the old ``block`` vectors and 0 with the rest."""
    U, V = ortho_group.rvs(m, random_state=3), ortho_group.rvs(m, random_state=4)
    s = np.linspace(10, 1, m)
    W_base = _svd_matrix(U, s, V)
    mixed = U.copy()
    mixed[:, :block] = U[:, :block] @ (hadamard(block) / np.sqrt(block))
    s_tuned = np.linspace(20, 1, m)
    return W_base, _svd_matrix(mixed, s_tuned, V), s_tuned


def test_rotated_singular_vectors_give_the_constructed_intruder_count(rng):
    W_base, W_tuned, s_tuned = _base_and_mixed(32, 8, rng)
    found = metrics.intruder_dimensions(W_base, W_tuned, k=10, epsilon=0.5)
    assert found.count == 8 and found.indices == list(range(8))
    np.testing.assert_allclose(found.max_cosines[:8], 1 / np.sqrt(8), atol=1e-9)
    np.testing.assert_allclose(found.max_cosines[8:], 1.0, atol=1e-9)
    assert found.energy_share == pytest.approx(np.sum(s_tuned[:8] ** 2) / np.sum(s_tuned**2))
    # 1/sqrt(8) = 0.354 is not below 0.3: no intruders at that threshold.
    assert metrics.intruder_dimensions(W_base, W_tuned, k=10, epsilon=0.3).count == 0
    # Only the top k are tested.
    assert metrics.intruder_dimensions(W_base, W_tuned, k=5).count == 5
    # The right singular vectors were not rotated.
    assert metrics.intruder_dimensions(W_base, W_tuned, side="right").count == 0
    assert metrics.weight_change(W_base, W_tuned)["intruders"] == 8


def test_a_two_vector_rotation_is_no_intruder(rng):
    """Intruders are judged against ALL base vectors: a 60-degree rotation in the plane of two
    base vectors keeps |cos| = cos(30 deg) = 0.87 with one of them."""
    U, V = ortho_group.rvs(16, random_state=5), ortho_group.rvs(16, random_state=6)
    s = np.linspace(5, 1, 16)
    theta = np.radians(60)
    rotated = U.copy()
    rotated[:, 0] = np.cos(theta) * U[:, 0] + np.sin(theta) * U[:, 5]
    rotated[:, 5] = -np.sin(theta) * U[:, 0] + np.cos(theta) * U[:, 5]
    found = metrics.intruder_dimensions(_svd_matrix(U, s, V), _svd_matrix(rotated, s, V))
    assert found.count == 0
    assert found.max_cosines[0] == pytest.approx(np.cos(np.radians(30)), abs=1e-9)


def test_principal_angles_of_rotated_top_subspaces():
    m, k = 24, 4
    U, V = ortho_group.rvs(m, random_state=7), ortho_group.rvs(m, random_state=8)
    s = np.linspace(10, 1, m)
    thetas = np.radians([5.0, 20.0, 45.0, 80.0])
    rotated = U.copy()
    for i, theta in enumerate(thetas):  # turn u_i towards u_{k+i}, outside the top-k
        rotated[:, i] = np.cos(theta) * U[:, i] + np.sin(theta) * U[:, k + i]
        rotated[:, k + i] = -np.sin(theta) * U[:, i] + np.cos(theta) * U[:, k + i]
    W_base, W_tuned = _svd_matrix(U, s, V), _svd_matrix(rotated, s, V)
    angles = metrics.singular_subspace_angles(W_base, W_tuned, k)
    np.testing.assert_allclose(angles, thetas, atol=1e-9)
    result = metrics.weight_change(W_base, W_tuned, top=k)
    np.testing.assert_allclose(result["angles_deg"], np.degrees(thetas), atol=1e-7)
    assert result["angle_max_deg"] == pytest.approx(80.0, abs=1e-7)
    np.testing.assert_allclose(metrics.singular_subspace_angles(W_base, W_tuned, k,
                                                                side="right"), 0, atol=1e-7)
    np.testing.assert_allclose(metrics.singular_subspace_angles(W_base, W_base, k), 0,
                               atol=1e-7)


def test_subspace_size_is_capped_at_the_ranks(rng):
    W_base = rng.normal(size=(12, 2)) @ rng.normal(size=(2, 9))  # rank 2
    W_tuned = W_base + rng.normal(size=(12, 9))
    result = metrics.weight_change(W_base, W_tuned, top=10, k=20)
    assert len(result["angles_deg"]) == 2 and len(result["intruder_max_cos"]) == 9
    empty = metrics.weight_change(np.zeros((4, 3)), np.ones((4, 3)))
    assert empty["angles_deg"] == [] and np.isnan(empty["angle_max_deg"])
    assert empty["numerical_rank"] == 1 and np.isnan(empty["rel_frobenius"])


def test_invariances(rng):
    W_base, W_tuned, _ = _base_and_mixed(16, 4, rng)
    W_tuned = W_tuned + 0.3 * rng.normal(size=W_tuned.shape)
    reference = metrics.weight_change(W_base, W_tuned, top=3)
    scale = metrics.weight_change(7.0 * W_base, 7.0 * W_tuned, top=3)
    Q = ortho_group.rvs(16, random_state=9)
    rotated = metrics.weight_change(Q @ W_base, Q @ W_tuned, top=3)
    right = metrics.weight_change(W_base @ Q, W_tuned @ Q, top=3)
    for other in (scale, rotated, right):
        for key in ("rel_frobenius", "rel_spectral", "numerical_rank", "effective_rank",
                    "energy_rank", "intruders", "intruder_share"):
            assert other[key] == pytest.approx(reference[key], rel=1e-9, abs=1e-9), key
        np.testing.assert_allclose(other["angles_deg"], reference["angles_deg"], atol=1e-6)
    assert scale["dw_frobenius"] == pytest.approx(7.0 * reference["dw_frobenius"])
    unchanged = metrics.weight_change(W_base, W_base)
    assert unchanged["dw_frobenius"] == 0 and unchanged["numerical_rank"] == 0
    assert unchanged["intruders"] == 0 and np.isnan(unchanged["effective_rank"])


def test_added_tensor_spectrum(rng):
    T = rng.normal(size=(6, 2)) @ rng.normal(size=(2, 30))
    result = metrics.tensor_spectrum(T)
    assert result["numerical_rank"] == 2
    assert result["norm"] == pytest.approx(np.sqrt(np.sum(T**2)))
    assert metrics.tensor_spectrum(np.ones(4))["norm"] == pytest.approx(2.0)


@pytest.mark.parametrize("call, message", [
    (lambda W: metrics.weight_change(W, W[:, :3]), "same shape"),
    (lambda W: metrics.weight_change(W, W, epsilon=1.5), "epsilon"),
    (lambda W: metrics.weight_change(W, W, k=0), "k must be"),
    (lambda W: metrics.weight_change(W, W, energy=0), "energy"),
    (lambda W: metrics.intruder_dimensions(W, W, k=9), "exceeds"),
    (lambda W: metrics.singular_subspace_angles(W, np.zeros_like(W), 2), "rank of W_tuned"),
    (lambda W: metrics.weight_change(W, W * np.nan), "NaN"),
    (lambda W: metrics.numerical_rank(W[0]), "2-D"),
])
def test_bad_inputs_raise_one_clear_error(rng, call, message):
    with pytest.raises(InputError, match=message):
        call(rng.normal(size=(8, 5)))
