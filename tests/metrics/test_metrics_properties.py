"""Property-based tests (hypothesis) of the similarity and geometry metrics.

For random shapes, data and chunkings: symmetry, bounds, invariance to orthogonal transforms,
isotropic scaling, translation and a sample permutation applied to both, and equality of the
streamed (chunked) and in-memory results on both the covariance and the Gram path.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repspace.metrics import (
    CovarianceMoments,
    GramMoments,
    cka_matrix,
    effective_rank,
    linear_cka,
    minibatch_cka,
    procrustes_distance,
    singular_values,
)

SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def pairs(draw: st.DrawFn, max_n: int = 30, max_d: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Two related (n x d_x), (n x d_y) matrices with random means and scales."""
    n = draw(st.integers(6, max_n))
    dx, dy = draw(st.integers(1, max_d)), draw(st.integers(1, max_d))
    seed = draw(st.integers(0, 2**32 - 1))
    mix = draw(st.floats(0.0, 3.0))
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dx)) * rng.uniform(0.1, 10) + rng.normal(size=dx) * 5
    Y = mix * X @ rng.normal(size=(dx, dy)) + rng.normal(size=(n, dy)) + rng.normal(size=dy)
    return X, Y


def orthogonal(d: int, seed: int) -> np.ndarray:
    Q, R = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return Q * np.sign(np.diag(R))


def streamed(X: np.ndarray, Y: np.ndarray, chunk: int) -> CovarianceMoments | GramMoments:
    """Row chunks (covariance path) when n >= d, column blocks (Gram path) otherwise."""
    n, d = X.shape[0], max(X.shape[1], Y.shape[1])
    if n >= d:
        acc: CovarianceMoments | GramMoments = CovarianceMoments(
            [X.shape[1]], [Y.shape[1]], device=None, precision="float64")
        for start in range(0, n, chunk):
            acc.update([X[start:start + chunk]], [Y[start:start + chunk]])
        return acc
    acc = GramMoments(n, 1, 1, device=None, precision="float64")
    for side, M in (("x", X), ("y", Y)):
        for start in range(0, M.shape[1], chunk):
            acc.update(side, 0, M[:, start:start + chunk])
    return acc


@SETTINGS
@given(pairs(), st.booleans())
def test_cka_and_procrustes_are_symmetric_and_bounded(data: tuple, debiased: bool) -> None:
    X, Y = data
    cka = linear_cka(X, Y, debiased=debiased)
    assert cka == pytest.approx(linear_cka(Y, X, debiased=debiased), abs=1e-12)
    assert (-1 - 1e-12 if debiased else -1e-12) <= cka <= 1 + 1e-12
    d = procrustes_distance(X, Y)
    assert d == pytest.approx(procrustes_distance(Y, X), abs=1e-7)
    assert 0 <= d <= np.sqrt(2) + 1e-12
    assert 0 <= procrustes_distance(X, Y, metric="angular") <= np.pi / 2 + 1e-12
    erank = effective_rank(X)
    assert 1 - 1e-9 <= erank <= min(X.shape[0] - 1, X.shape[1]) + 1e-9


@SETTINGS
@given(pairs(), st.integers(0, 2**32 - 1), st.floats(1e-3, 1e3), st.booleans())
def test_invariances(data: tuple, seed: int, scale: float, debiased: bool) -> None:
    """Orthogonal map, isotropic scaling and translation of X; one permutation of both."""
    X, Y = data
    rng = np.random.default_rng(seed)
    X2 = scale * X @ orthogonal(X.shape[1], seed) + rng.normal(size=X.shape[1]) * 10
    perm = rng.permutation(X.shape[0])
    for A, B in ((X2, Y), (X[perm], Y[perm])):
        assert linear_cka(A, B, debiased=debiased) == pytest.approx(
            linear_cka(X, Y, debiased=debiased), abs=1e-9)
        assert procrustes_distance(A, B) == pytest.approx(procrustes_distance(X, Y), abs=1e-6)
    assert effective_rank(X2) == pytest.approx(effective_rank(X), abs=1e-9)
    np.testing.assert_allclose(singular_values(X2), scale * singular_values(X), rtol=1e-9,
                               atol=1e-9 * scale * singular_values(X)[0])


@SETTINGS
@given(pairs(max_n=40, max_d=50), st.integers(1, 17))
def test_streaming_equals_in_memory(data: tuple, chunk: int) -> None:
    X, Y = data
    acc = streamed(X, Y, chunk)
    for debiased in (False, True):
        assert acc.cka(debiased)[0, 0] == pytest.approx(
            cka_matrix([X], [Y], debiased=debiased, device=None, precision="float64")[0, 0],
            abs=1e-9)
    assert acc.procrustes(0, 0) == pytest.approx(procrustes_distance(X, Y), abs=1e-6)
    s = singular_values(Y)
    np.testing.assert_allclose(acc.singular_values("y", 0), s, rtol=0, atol=1e-6 * s[0])
    assert acc.effective_rank("x", 0) == pytest.approx(effective_rank(X), rel=1e-5)


@SETTINGS
@given(pairs(), st.integers(1, 17), st.integers(0, 2**32 - 1))
def test_streaming_is_invariant_to_chunking_and_to_row_order(data: tuple, chunk: int,
                                                             seed: int) -> None:
    X, Y = data
    perm = np.random.default_rng(seed).permutation(X.shape[0])
    a, b = streamed(X, Y, chunk), streamed(X[perm], Y[perm], X.shape[0])
    np.testing.assert_allclose(a.cka(True), b.cka(True), atol=1e-9)
    assert a.procrustes(0, 0) == pytest.approx(b.procrustes(0, 0), abs=1e-6)


@SETTINGS
@given(pairs(max_n=60), st.integers(4, 12), st.integers(0, 100))
def test_minibatch_cka_is_symmetric_and_invariant(data: tuple, batch: int, seed: int) -> None:
    X, Y = data
    if batch > X.shape[0]:
        batch = X.shape[0]
    value = minibatch_cka(X, Y, batch, seed=seed, device=None)
    assert value == pytest.approx(minibatch_cka(Y, X, batch, seed=seed, device=None), abs=1e-12)
    assert -1 - 1e-12 <= value <= 1 + 1e-12
    rotated = 3.0 * X @ orthogonal(X.shape[1], seed) - 2.0
    assert minibatch_cka(rotated, Y, batch, seed=seed, device=None) == pytest.approx(value,
                                                                                    abs=1e-9)
