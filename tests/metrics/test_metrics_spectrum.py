"""Spectrum and rank measures against covariance eigenvalues and hand-worked examples."""

from __future__ import annotations

import numpy as np
import pytest

from repspace.metrics import (
    effective_rank,
    mean_normalized_spectrum,
    participation_ratio,
    rank_ratio,
    singular_values,
    stable_rank,
)


def reference_singular_values(X: np.ndarray, center: bool) -> np.ndarray:
    """Square roots of the eigenvalues of the smaller of X^T X and X X^T, descending."""
    if center:
        X = X - X.mean(axis=0)
    gram = X.T @ X if X.shape[1] <= X.shape[0] else X @ X.T
    return np.sqrt(np.clip(np.linalg.eigvalsh(gram)[::-1], 0, None))


def reference_measures(X: np.ndarray, center: bool) -> dict[str, float]:
    s = reference_singular_values(X, center)
    s = s[s > 1e-9 * s[0]]
    p = s / s.sum()
    lam = s**2
    return {
        "effective_rank": float(np.exp(-np.sum(p * np.log(p)))),
        "stable_rank": float(lam.sum() / lam.max()),
        "participation_ratio": float(lam.sum() ** 2 / np.sum(lam**2)),
    }


MEASURES = {
    "effective_rank": effective_rank,
    "stable_rank": stable_rank,
    "participation_ratio": participation_ratio,
}


def anisotropic(seed: int, n: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * np.geomspace(5.0, 0.1, d) + rng.normal(size=d)


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize(("n", "d"), [(50, 8), (6, 20)])
def test_singular_values_match_eigenvalues(n, d, center):
    X = anisotropic(0, n, d)
    s = singular_values(X, center=center)
    assert s.shape == (min(n, d),)
    assert np.all(np.diff(s) <= 0)
    np.testing.assert_allclose(s, reference_singular_values(X, center), atol=1e-9)


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize(("n", "d"), [(50, 8), (6, 20)])
@pytest.mark.parametrize("name", MEASURES)
def test_rank_measures_match_covariance_eigenvalues(name, n, d, center):
    X = anisotropic(1, n, d)
    expected = reference_measures(X, center)[name]
    assert MEASURES[name](X, center=center) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("name", MEASURES)
def test_k_equal_singular_values_give_rank_k(name, k):
    rng = np.random.default_rng(2)
    n, d = 30, 10
    A = rng.normal(size=(n, k))
    U, _ = np.linalg.qr(A - A.mean(axis=0))  # columns orthogonal to 1: centring is a no-op
    V, _ = np.linalg.qr(rng.normal(size=(d, k)))
    X = 4.0 * U @ V.T
    assert MEASURES[name](X, center=True) == pytest.approx(k, rel=1e-10)
    assert MEASURES[name](X, center=False) == pytest.approx(k, rel=1e-10)


@pytest.mark.parametrize("name", MEASURES)
def test_rank_measures_invariances(name):
    X = anisotropic(3, 40, 6)
    Q, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(6, 6)))
    perm = np.random.default_rng(5).permutation(40)
    base = MEASURES[name](X)
    for Xv in (X @ Q, 17.0 * X, X + 100.0, X[perm]):
        assert MEASURES[name](Xv) == pytest.approx(base, rel=1e-9)
    assert MEASURES[name](X + 100.0, center=False) != pytest.approx(base, rel=1e-3)
    assert MEASURES[name](X * np.arange(1.0, 7.0)) != pytest.approx(base, rel=1e-3)


def test_rank_ratio_worked_by_hand():
    # Sample A: singular values (6, 3, 1) -> (0.6, 0.3, 0.1).
    # Sample B: one token, singular value 5 -> (1,), padded to (1, 0, 0).
    # K = min(max L, d) = min(3, 3) = 3; mean spectrum (0.8, 0.15, 0.05);
    # cumulative (0.8, 0.95, 1.0).
    A = np.diag([6.0, 3.0, 1.0])
    B = np.array([[0.0, 5.0, 0.0]])
    np.testing.assert_allclose(mean_normalized_spectrum([A, B]), [0.8, 0.15, 0.05], atol=1e-15)
    assert rank_ratio([A, B], energy=0.8) == pytest.approx(1 / 3)
    assert rank_ratio([A, B], energy=0.9) == pytest.approx(2 / 3)
    assert rank_ratio([A, B], energy=0.95) == pytest.approx(2 / 3)
    assert rank_ratio([A, B], energy=0.96) == pytest.approx(1.0)
    assert rank_ratio([A, B], energy=1.0) == pytest.approx(1.0)
    assert rank_ratio([A, B]) == pytest.approx(2 / 3)


def test_rank_ratio_keeps_a_tiny_real_direction_at_full_energy():
    # (1, 1, 1e-5) -> mass 1e-5 / (2 + 1e-5) in the last direction: full energy needs all 3.
    A = np.diag([1.0, 1.0, 1e-5])
    assert rank_ratio([A], energy=1.0) == pytest.approx(1.0)
    assert rank_ratio([np.diag([1.0, 1.0, 0.0])], energy=1.0) == pytest.approx(2 / 3)


def test_common_length_is_min_of_longest_sample_and_dimension():
    rng = np.random.default_rng(6)
    assert mean_normalized_spectrum([rng.normal(size=(9, 4)), rng.normal(size=(2, 4))]).size == 4
    assert mean_normalized_spectrum([rng.normal(size=(2, 5)), rng.normal(size=(3, 5))]).size == 3


def test_mean_normalized_spectrum_matches_explicit_padding():
    rng = np.random.default_rng(7)
    mats = [rng.normal(size=(L, 6)) for L in (2, 9, 4, 1)]
    padded = np.zeros((len(mats), 6))
    for i, T in enumerate(mats):
        s = reference_singular_values(T, center=False)
        padded[i, : s.size] = s / s.sum()
    spectrum = mean_normalized_spectrum(mats)
    np.testing.assert_allclose(spectrum, padded.mean(axis=0), atol=1e-12)
    assert spectrum.sum() == pytest.approx(1.0)


def test_rank_ratio_invariances_and_3d_input():
    rng = np.random.default_rng(8)
    tokens = rng.normal(size=(5, 7, 6)) * np.geomspace(3.0, 0.01, 6)
    Q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    base = mean_normalized_spectrum(tokens)
    np.testing.assert_allclose(mean_normalized_spectrum(list(tokens)), base, atol=1e-15)
    np.testing.assert_allclose(mean_normalized_spectrum(tokens @ Q), base, atol=1e-12)
    scaled = [c * T for c, T in zip([1.0, 1e3, 1e-3, 2.0, 5.0], tokens, strict=True)]
    np.testing.assert_allclose(mean_normalized_spectrum(scaled), base, atol=1e-12)
    np.testing.assert_allclose(mean_normalized_spectrum(tokens[:, ::-1]), base, atol=1e-12)
    assert rank_ratio(tokens) == rank_ratio(tokens[::-1] @ Q)


def test_rank_ratio_drops_for_low_rank_tokens():
    rng = np.random.default_rng(9)
    full = rng.normal(size=(4, 16, 8))
    low = rng.normal(size=(4, 16, 2)) @ rng.normal(size=(2, 8))
    assert rank_ratio(low) <= 2 / 8 < rank_ratio(full)
