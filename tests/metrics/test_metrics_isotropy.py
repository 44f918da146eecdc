"""Anisotropy against the mean over explicit pairs, its range and invariances."""

from __future__ import annotations

import numpy as np
import pytest

from repspace.errors import InputError
from repspace.metrics import anisotropy


def mean_pairwise_cosine(X: np.ndarray) -> float:
    n = X.shape[0]
    cosines = [
        X[i] @ X[j] / (np.linalg.norm(X[i]) * np.linalg.norm(X[j]))
        for i in range(n)
        for j in range(n)
        if i != j
    ]
    return float(np.mean(cosines))


@pytest.mark.parametrize("offset", [0.0, 0.5, 3.0])
def test_anisotropy_is_the_mean_cosine_over_distinct_pairs(offset):
    X = np.random.default_rng(0).normal(size=(40, 12)) + offset
    assert anisotropy(X) == pytest.approx(mean_pairwise_cosine(X), abs=1e-12)


def test_range_and_reference_values():
    rng = np.random.default_rng(1)
    u = rng.normal(size=8)
    assert anisotropy(rng.uniform(0.1, 5.0, size=(10, 1)) * u) == pytest.approx(1.0, abs=1e-12)
    assert anisotropy(np.vstack([u, -u])) == pytest.approx(-1.0, abs=1e-12)  # -1 / (n - 1)
    simplex = np.eye(5) - 1 / 5  # 5 directions at equal angles summing to 0: the minimum
    assert anisotropy(simplex) == pytest.approx(-1 / 4, abs=1e-12)
    assert abs(anisotropy(rng.normal(size=(2000, 64)))) < 0.01  # isotropic


def test_invariances_and_extreme_scales():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 6)) + 1.0
    Q = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    base = anisotropy(X)
    assert anisotropy(X @ Q) == pytest.approx(base, abs=1e-12)
    assert anisotropy(rng.uniform(1e-150, 1e150, size=(30, 1)) * X) == pytest.approx(
        base, abs=1e-12
    )
    assert anisotropy(X[rng.permutation(30)]) == pytest.approx(base, abs=1e-12)
    assert abs(anisotropy(X - X.mean(axis=0)) - base) > 0.1  # translation is not


def test_zero_rows_and_single_samples_are_rejected():
    X = np.random.default_rng(3).normal(size=(5, 3))
    X[2] = 0.0
    with pytest.raises(InputError, match=r"X has an all-zero row \(sample 2\)"):
        anisotropy(X)
    with pytest.raises(InputError, match="at least 2 samples"):
        anisotropy(X[:1])
