"""CKA against explicit Gram-matrix computations, invariances and properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from repspace.metrics import cka_matrix, linear_cka, rbf_cka

# (n, d_x, d_y): the first takes the feature path (n > d), the second the Gram path (d > n).
SHAPES = [(40, 5, 7), (10, 30, 50)]


def hsic_biased(K: np.ndarray, L: np.ndarray) -> float:
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return np.trace(K @ H @ L @ H) / (n - 1) ** 2


def hsic_unbiased(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. 2012, eq. (5), written out with explicit matrices."""
    n = K.shape[0]
    Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    value = (
        np.trace(Kt @ Lt)
        + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one @ Kt @ Lt @ one)
    )
    return value / (n * (n - 3))


def cka_reference(K: np.ndarray, L: np.ndarray, debiased: bool) -> float:
    hsic = hsic_unbiased if debiased else hsic_biased
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def rbf_kernel_reference(X: np.ndarray, threshold: float, median: str = "full") -> np.ndarray:
    """exp(-||x_i - x_j||^2 / (2 threshold^2 m)), m the median squared distance over the full
    n x n matrix, zero diagonal included (Kornblith et al.'s notebook), or over pairs i < j."""
    n = X.shape[0]
    sq = np.array([[np.sum((X[i] - X[j]) ** 2) for j in range(n)] for i in range(n)])
    if median == "full":
        m = np.median(sq.ravel())
    else:
        m = np.median([sq[i, j] for i in range(n) for j in range(i + 1, n)])
    return np.exp(-sq / (2 * threshold**2 * m))


def correlated_pair(seed: int, n: int, dx: int, dy: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dx)) + 3.0
    Y = X @ rng.normal(size=(dx, dy)) + 0.7 * rng.normal(size=(n, dy)) - 1.0
    return X, Y


def random_orthogonal(d: int, seed: int) -> np.ndarray:
    Q, R = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return Q * np.sign(np.diag(R))


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize(("n", "dx", "dy"), SHAPES)
def test_linear_cka_matches_explicit_gram_computation(n, dx, dy, debiased):
    X, Y = correlated_pair(0, n, dx, dy)
    expected = cka_reference(X @ X.T, Y @ Y.T, debiased)
    assert linear_cka(X, Y, debiased=debiased) == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("median", ["full", "pairs"])
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("threshold", [0.5, 1.0, 2.0])
def test_rbf_cka_matches_explicit_gaussian_kernels(threshold, debiased, median):
    X, Y = correlated_pair(1, 25, 4, 6)
    expected = cka_reference(
        rbf_kernel_reference(X, threshold, median),
        rbf_kernel_reference(Y, threshold, median),
        debiased,
    )
    value = rbf_cka(X, Y, threshold=threshold, debiased=debiased, median=median)
    assert value == pytest.approx(expected, abs=1e-10)


def test_cka_reproduces_the_published_values_of_the_reference_notebook():
    # Kornblith et al.'s "Demo: CKA" notebook (google-research, representation_similarity):
    # its tutorial data and the values it prints.
    legacy = np.random.RandomState(1337)  # the stream of the notebook's np.random.seed(1337)
    X = legacy.randn(100, 10)
    Y = legacy.randn(100, 10) + X
    assert round(linear_cka(X, Y), 5) == 0.55761
    assert round(linear_cka(X, Y, debiased=True), 5) == 0.51346
    assert round(rbf_cka(X, Y, threshold=0.5), 5) == 0.65483
    expected = cka_reference(rbf_kernel_reference(X, 0.5), rbf_kernel_reference(Y, 0.5), False)
    assert rbf_cka(X, Y, threshold=0.5) == pytest.approx(expected, abs=1e-12)
    # The median over distinct pairs is a documented option; it does not reproduce the notebook.
    assert round(rbf_cka(X, Y, threshold=0.5, median="pairs"), 5) == 0.65401


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize(("n", "dx", "dy"), SHAPES)
def test_cka_matrix_equals_pairwise_loop(n, dx, dy, debiased):
    rng = np.random.default_rng(2)
    Xs = [rng.normal(size=(n, d)) for d in (dx, dy, 3)]
    Ys = [Xs[0] @ rng.normal(size=(dx, dy)) + rng.normal(size=(n, dy)), rng.normal(size=(n, dx))]
    result = cka_matrix(Xs, Ys, debiased=debiased, precision="float64")
    loop = [[linear_cka(X, Y, debiased=debiased) for Y in Ys] for X in Xs]
    assert result.shape == (3, 2)
    np.testing.assert_allclose(result, loop, rtol=0, atol=1e-10)
    np.testing.assert_allclose(cka_matrix(Xs, Ys, debiased=debiased), loop, rtol=0, atol=1e-6)


def test_cka_matrix_of_a_list_with_itself_is_symmetric_with_unit_diagonal():
    rng = np.random.default_rng(3)
    layers = np.stack([rng.normal(size=(20, 8)) for _ in range(4)])
    result = cka_matrix(layers, layers, precision="float64")
    np.testing.assert_allclose(np.diag(result), 1.0, atol=1e-12)
    np.testing.assert_allclose(result, result.T, atol=1e-12)
    np.testing.assert_allclose(cka_matrix(layers, layers), result, rtol=0, atol=1e-6)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("cka", [linear_cka, rbf_cka])
def test_identical_and_rotated_scaled_translated_inputs_give_one(cka, debiased):
    X, _ = correlated_pair(4, 30, 6, 6)
    Y = 3.5 * X @ random_orthogonal(6, 5) + 2.0
    assert cka(X, X, debiased=debiased) == pytest.approx(1.0, abs=1e-12)
    assert cka(X, Y, debiased=debiased) == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("cka", [linear_cka, rbf_cka])
def test_invariances(cka, debiased):
    X, Y = correlated_pair(6, 30, 5, 7)
    base = cka(X, Y, debiased=debiased)
    perm = np.random.default_rng(7).permutation(30)
    variants = {
        "orthogonal": (X @ random_orthogonal(5, 8), Y @ random_orthogonal(7, 9)),
        "isotropic scaling": (0.01 * X, 250.0 * Y),
        "translation": (X - 40.0, Y + np.arange(7)),
        "sample permutation": (X[perm], Y[perm]),
    }
    for name, (Xv, Yv) in variants.items():
        assert cka(Xv, Yv, debiased=debiased) == pytest.approx(base, abs=1e-10), name


def test_linear_cka_is_not_invariant_to_non_isotropic_scaling():
    X, Y = correlated_pair(10, 40, 5, 5)
    stretched = X * np.array([10.0, 1.0, 1.0, 0.1, 1.0])
    assert abs(linear_cka(stretched, Y) - linear_cka(X, Y)) > 1e-3


def test_linear_cka_is_not_invariant_to_permuting_one_side_only():
    X, Y = correlated_pair(11, 40, 5, 5)
    assert linear_cka(X[::-1], Y) < linear_cka(X, Y) - 0.1


def test_biased_cka_of_independent_wide_features_drifts_up_and_debiased_does_not():
    rng = np.random.default_rng(12)
    X, Y = rng.normal(size=(20, 2000)), rng.normal(size=(20, 2000))
    assert linear_cka(X, Y) > 0.5
    assert abs(linear_cka(X, Y, debiased=True)) < 0.1


def test_float32_and_torch_inputs_are_computed_in_float64():
    X, Y = correlated_pair(13, 30, 4, 4)
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    expected = linear_cka(X32.astype(np.float64), Y32.astype(np.float64))
    assert linear_cka(X32, Y32) == expected
    assert linear_cka(torch.from_numpy(X32), torch.from_numpy(Y32)) == expected
    assert isinstance(linear_cka(X32, Y32), float)


def test_extreme_scales_do_not_overflow_or_underflow():
    X, Y = correlated_pair(14, 30, 4, 6)
    assert linear_cka(1e-200 * X, 1e200 * Y) == pytest.approx(linear_cka(X, Y), abs=1e-12)
    assert rbf_cka(1e-200 * X, 1e200 * Y) == pytest.approx(rbf_cka(X, Y), abs=1e-12)


matrices = st.integers(3, 10).flatmap(
    lambda n: st.tuples(
        *(
            arrays(
                np.float64,
                st.tuples(st.just(n), st.integers(1, 6)),
                elements=st.floats(-10, 10, allow_subnormal=False),
            )
            for _ in range(2)
        )
    )
)


def not_constant(X: np.ndarray) -> bool:
    return np.abs(X - X.mean(axis=0)).max() > 1e-3


@settings(max_examples=25, deadline=None, database=None)
@given(matrices)
def test_biased_linear_cka_is_symmetric_and_in_unit_interval(pair):
    X, Y = pair
    assume(not_constant(X) and not_constant(Y))
    value = linear_cka(X, Y)
    assert -1e-12 <= value <= 1 + 1e-12
    assert linear_cka(Y, X) == pytest.approx(value, abs=1e-10)
    assert linear_cka(X, X) == pytest.approx(1.0, abs=1e-10)


@settings(max_examples=25, deadline=None, database=None)
@given(matrices)
def test_biased_rbf_cka_is_symmetric_and_in_unit_interval(pair):
    X, Y = pair
    assume(not_constant(X) and not_constant(Y))
    assume(np.median(np.abs(X[:, None] - X[None]).sum(-1)) > 1e-3)
    assume(np.median(np.abs(Y[:, None] - Y[None]).sum(-1)) > 1e-3)
    value = rbf_cka(X, Y)
    assert -1e-12 <= value <= 1 + 1e-12
    assert rbf_cka(Y, X) == pytest.approx(value, abs=1e-10)


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_matrix_equals_the_peer_library_ckatorch(debiased):
    ckatorch = pytest.importorskip("ckatorch")
    rng = np.random.default_rng(3)
    xs = [rng.normal(size=(60, d)) for d in (5, 12)]
    ys = [xs[0] @ rng.normal(size=(5, 7)) + rng.normal(size=(60, 7)), rng.normal(size=(60, 30))]
    expected = [[float(ckatorch.cka_base(torch.from_numpy(X), torch.from_numpy(Y),
                                         unbiased=debiased)) for Y in ys] for X in xs]
    np.testing.assert_allclose(cka_matrix(xs, ys, debiased=debiased, precision="float64"),
                               expected, atol=1e-10)
