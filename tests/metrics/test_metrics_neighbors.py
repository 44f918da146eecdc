"""Mutual k-NN overlap against brute-force neighbour sorting."""

from __future__ import annotations

import numpy as np
import pytest

from repspace.errors import InputError
from repspace.metrics import mutual_knn


def neighbours_reference(X: np.ndarray, k: int) -> list[set[int]]:
    n = X.shape[0]
    result = []
    for i in range(n):
        cos = [
            (-(X[i] @ X[j]) / (np.linalg.norm(X[i]) * np.linalg.norm(X[j])), j)
            for j in range(n)
            if j != i
        ]
        result.append({j for _, j in sorted(cos)[:k]})
    return result


def mutual_knn_reference(X: np.ndarray, Y: np.ndarray, k: int) -> float:
    nx, ny = neighbours_reference(X, k), neighbours_reference(Y, k)
    return float(np.mean([len(a & b) / k for a, b in zip(nx, ny, strict=True)]))


def pair(seed: int, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    return X, X @ rng.normal(size=(6, 9)) + 0.8 * rng.normal(size=(n, 9))


@pytest.mark.parametrize("k", [1, 5, 10])
def test_mutual_knn_matches_brute_force(k):
    X, Y = pair(0)
    expected = mutual_knn_reference(X, Y, k)
    assert 0 < expected < 1
    assert mutual_knn(X, Y, k) == pytest.approx(expected, abs=1e-12)
    assert mutual_knn(Y, X, k) == pytest.approx(expected, abs=1e-12)


def test_reference_values():
    X, Y = pair(1)
    assert mutual_knn(X, X, k=5) == 1.0
    assert mutual_knn(X, Y, k=39) == 1.0  # every other sample is a neighbour
    rng = np.random.default_rng(2)
    chance = mutual_knn(rng.normal(size=(200, 5)), rng.normal(size=(200, 5)), 10)
    assert chance == pytest.approx(10 / 199, abs=0.03)


def test_invariances_and_non_invariance_to_translation():
    X, Y = pair(3)
    base = mutual_knn(X, Y, 5)
    Q = np.linalg.qr(np.random.default_rng(4).normal(size=(6, 6)))[0]
    perm = np.random.default_rng(5).permutation(40)
    per_sample = np.random.default_rng(6).uniform(0.1, 10.0, size=(40, 1))
    for Xv, Yv in [(X @ Q, Y), (7.0 * X, 0.1 * Y), (per_sample * X, Y), (X[perm], Y[perm])]:
        assert mutual_knn(Xv, Yv, 5) == pytest.approx(base, abs=1e-12)
    assert mutual_knn(X + 3.0, Y, 5) != pytest.approx(base, abs=1e-3)


def test_clip_must_be_a_fraction():
    X, Y = pair(3)
    for clip in (0.0, 1.5, -0.1):
        with pytest.raises(InputError, match=r"clip must be in \(0, 1\]"):
            mutual_knn(X, Y, 5, clip=clip)
