"""RSA against rsatoolbox (the oracle: its RDMs and RDM comparisons), and its invariances."""

from __future__ import annotations

import numpy as np
import pytest
from rsatoolbox.data import Dataset
from rsatoolbox.rdm import RDMs, calc_rdm, compare

from repspace.errors import InputError
from repspace.metrics import rdm, rsa

TOOLBOX_METHOD = {"spearman": "spearman", "pearson": "corr"}


def toolbox_rdm(X: np.ndarray, metric: str) -> np.ndarray:
    """rsatoolbox's dissimilarities; its "euclidean" is the squared distance divided by d."""
    if metric == "correlation":
        return calc_rdm(Dataset(X), method="correlation").dissimilarities.ravel()
    squared = calc_rdm(Dataset(X), method="euclidean").dissimilarities.ravel() * X.shape[1]
    return squared if metric == "sqeuclidean" else np.sqrt(squared)


def toolbox_rsa(X: np.ndarray, Y: np.ndarray, metric: str, method: str) -> float:
    a, b = RDMs(toolbox_rdm(X, metric)[None]), RDMs(toolbox_rdm(Y, metric)[None])
    return float(compare(a, b, method=TOOLBOX_METHOD[method])[0, 0])


def pair(seed: int, n: int = 30, dx: int = 7, dy: int = 11) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dx)) + 2.0
    return X, X @ rng.normal(size=(dx, dy)) + 1.5 * rng.normal(size=(n, dy))


@pytest.mark.parametrize("metric", ["correlation", "euclidean", "sqeuclidean"])
def test_rdm_matches_rsatoolbox(metric):
    X, _ = pair(0)
    np.testing.assert_allclose(rdm(X, metric), toolbox_rdm(X, metric), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["spearman", "pearson"])
@pytest.mark.parametrize("metric", ["correlation", "euclidean", "sqeuclidean"])
def test_rsa_matches_rsatoolbox(metric, method):
    X, Y = pair(1)
    expected = toolbox_rsa(X, Y, metric, method)
    assert 0.1 < expected < 0.99
    assert rsa(X, Y, metric=metric, method=method) == pytest.approx(expected, abs=1e-12)
    assert rsa(Y, X, metric=metric, method=method) == pytest.approx(expected, abs=1e-12)


def test_spearman_handles_tied_dissimilarities_like_rsatoolbox():
    rng = np.random.default_rng(2)
    X = rng.integers(0, 3, size=(25, 4)).astype(float)  # many equal distances
    Y = X + rng.integers(0, 2, size=(25, 4))
    assert len(np.unique(rdm(X, "euclidean"))) < 20
    expected = toolbox_rsa(X, Y, "euclidean", "spearman")
    assert rsa(X, Y, metric="euclidean") == pytest.approx(expected, abs=1e-12)


def test_invariances():
    X, Y = pair(3)
    rng = np.random.default_rng(4)
    Q = np.linalg.qr(rng.normal(size=(7, 7)))[0]
    base = rsa(X, Y, metric="euclidean", method="pearson")
    assert rsa(3.0 * X @ Q + 1.0, Y, metric="euclidean", method="pearson") == pytest.approx(
        base, abs=1e-12
    )
    perm = rng.permutation(30)
    assert rsa(X[perm], Y[perm], metric="euclidean", method="pearson") == pytest.approx(
        base, abs=1e-12
    )
    # Correlation distance: per-sample affine maps of the values do not count, rotations do.
    scale, shift = rng.uniform(0.5, 2.0, size=(30, 1)), rng.normal(size=(30, 1))
    corr = rsa(X, Y)
    assert rsa(scale * X + shift, Y) == pytest.approx(corr, abs=1e-12)
    assert abs(rsa(X @ Q, Y) - corr) > 1e-3
    # Spearman sees only the order of the dissimilarities.
    assert rsa(X, Y, metric="euclidean") == pytest.approx(rsa(X, Y, metric="sqeuclidean"),
                                                          abs=1e-12)
    assert rsa(X, X) == pytest.approx(1.0, abs=1e-12)


def test_bad_inputs():
    X, Y = pair(5)
    with pytest.raises(InputError, match='metric must be "correlation", "euclidean"'):
        rsa(X, Y, metric="cosine")
    with pytest.raises(InputError, match='method must be "spearman" or "pearson"'):
        rsa(X, Y, method="kendall")
    with pytest.raises(InputError, match="same number of samples"):
        rsa(X, Y[:-1])
    flat = X.copy()
    flat[4] = 3.0
    with pytest.raises(InputError, match=r"X has a sample constant across its features \(sample 4"):
        rsa(flat, Y)
    with pytest.raises(InputError, match="at least 2 features"):
        rdm(X[:, :1])
    equilateral = np.eye(4)  # every pair at the same distance
    with pytest.raises(InputError, match="every pair of samples of X is equally dissimilar"):
        rsa(equilateral, Y[:4], metric="euclidean")
