"""Paired retrieval accuracy against a brute-force ranking loop."""

from __future__ import annotations

import numpy as np
import pytest

from repspace.errors import InputError
from repspace.metrics import retrieval_accuracy


def retrieval_reference(Q: np.ndarray, K: np.ndarray, k: int) -> float:
    n = Q.shape[0]
    hits = 0
    for i in range(n):
        cos = [Q[i] @ K[j] / (np.linalg.norm(Q[i]) * np.linalg.norm(K[j])) for j in range(n)]
        order = sorted(range(n), key=lambda j: (-cos[j], j))
        hits += i in order[:k]
    return hits / n


def pairs(seed: int, n: int = 50, d: int = 8, noise: float = 2.0):
    rng = np.random.default_rng(seed)
    Q = rng.normal(size=(n, d))
    return Q, Q + noise * rng.normal(size=(n, d))


@pytest.mark.parametrize("k", [1, 3, 10])
def test_matches_brute_force(k):
    Q, K = pairs(0)
    expected = retrieval_reference(Q, K, k)
    assert 0 < expected < 1
    assert retrieval_accuracy(Q, K, k=k) == pytest.approx(expected, abs=1e-15)


def test_ties_go_to_the_lower_index():
    # Keys 0 and 1 point the same way: query 1 (= key 1) ties with key 0, which wins.
    K = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    assert retrieval_accuracy(K, K, k=1) == 0.75
    assert retrieval_accuracy(K, K, k=2) == 1.0
    assert retrieval_reference(K, K, 1) == 0.75


def test_blocks_match_brute_force(monkeypatch):
    import repspace.metrics.retrieval as retrieval

    Q, K = pairs(1, n=37)
    expected = retrieval_reference(Q, K, 2)
    monkeypatch.setattr(retrieval, "_BLOCK_ELEMENTS", 37 * 5)  # blocks of 5 queries
    assert retrieval_accuracy(Q, K, k=2) == pytest.approx(expected, abs=1e-15)


def test_invariances_and_non_invariance_to_translation():
    Q, K = pairs(2)
    base = retrieval_accuracy(Q, K, k=2)
    R = np.linalg.qr(np.random.default_rng(3).normal(size=(8, 8)))[0]
    perm = np.random.default_rng(4).permutation(50)
    per_row = np.random.default_rng(5).uniform(0.1, 10.0, size=(50, 1))
    for Qv, Kv in [(Q @ R, K @ R), (1e-3 * Q, 1e-3 * K), (Q[perm], K[perm]), (per_row * Q, K)]:
        assert retrieval_accuracy(Qv, Kv, k=2) == base
    assert retrieval_accuracy(Q + 3.0, K + 3.0, k=2) != base


def test_reference_values():
    Q, _ = pairs(6, n=40)
    assert retrieval_accuracy(Q, Q) == 1.0
    assert retrieval_accuracy(Q, 5.0 * Q, k=1) == 1.0
    Q, K = pairs(7, n=30)
    assert retrieval_accuracy(Q, K, k=30) == 1.0
    assert retrieval_accuracy(Q, K, k=100) == 1.0
    rng = np.random.default_rng(8)
    chance = retrieval_accuracy(rng.normal(size=(400, 5)), rng.normal(size=(400, 5)), k=20)
    assert chance == pytest.approx(20 / 400, abs=0.03)
    assert retrieval_accuracy(Q.tolist(), K.astype(np.float32)) == pytest.approx(
        retrieval_accuracy(Q, K.astype(np.float32).astype(np.float64))
    )


def test_errors():
    Q, K = pairs(9, n=10)
    with pytest.raises(InputError, match="same number of samples"):
        retrieval_accuracy(Q, K[:9])
    with pytest.raises(InputError, match="same number of features"):
        retrieval_accuracy(Q, K[:, :5])
    for k in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="k must be"):
            retrieval_accuracy(Q, K, k=k)
    bad = K.copy()
    bad[3, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        retrieval_accuracy(Q, bad)
    zero = K.copy()
    zero[4] = 0.0
    with pytest.raises(InputError, match="all-zero row"):
        retrieval_accuracy(Q, zero)
    with pytest.raises(InputError, match="at least 2"):
        retrieval_accuracy(Q[:1], K[:1])
    with pytest.raises(InputError, match="2-D"):
        retrieval_accuracy(Q[0], K[0])
