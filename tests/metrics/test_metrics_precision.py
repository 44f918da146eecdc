"""Float32 products summed in float64 (the default) against float64 references written out
here, and the exact mode (``precision="float64"``).

The data have large feature means (1e3 against a spread of 1), where a float32 product of
uncentred rows loses every digit, and one stream starts with an outlier, where a product of
rows shifted by the first chunk's mean loses five: both pass only because each block is
centred on its own means before it is cast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from repspace import stream_metrics
from repspace.errors import InputError
from repspace.metrics import (
    CovarianceMoments,
    GramMoments,
    cka_matrix,
    minibatch_cka,
    minibatch_cka_matrix,
)
from repspace.metrics._backend import ieee_float32
from tests.metrics.test_metrics_accumulators import write_store

FLOAT32_TOL = 1e-6
EXACT_TOL = 1e-12


def reference_cka(X: np.ndarray, Y: np.ndarray, debiased: bool) -> float:
    """Linear CKA in float64, from the feature formula (biased) or from explicit Gram matrices
    with the unbiased HSIC of Song et al. 2012 (debiased)."""
    X, Y = X - X.mean(0), Y - Y.mean(0)
    if not debiased:
        return float(np.sum((X.T @ Y) ** 2)
                     / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y)))

    def hsic(K: np.ndarray, L: np.ndarray) -> float:
        n = K.shape[0]
        return float(np.vdot(K, L) + K.sum() * L.sum() / ((n - 1) * (n - 2))
                     - 2 / (n - 2) * K.sum(0) @ L.sum(1))

    K, L = X @ X.T, Y @ Y.T
    np.fill_diagonal(K, 0.0)
    np.fill_diagonal(L, 0.0)
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def reference_matrix(xs: list, ys: list, debiased: bool) -> np.ndarray:
    return np.array([[reference_cka(X, Y, debiased) for Y in ys] for X in xs])


def layers(seed: int, n: int, dims_x: list[int], dims_y: list[int],
           mean: float) -> tuple[list, list]:
    """Related layers, unit spread around feature means of size ``mean``."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, max(dims_x + dims_y)))
    xs = [latent[:, :d] @ rng.normal(size=(d, d)) / np.sqrt(d) + 0.5 * rng.normal(size=(n, d))
          + mean * (1 + rng.random(d)) for d in dims_x]
    ys = [latent[:, :d] + rng.normal(size=(n, d)) - mean * (1 + rng.random(d)) for d in dims_y]
    return xs, ys


def check(got: np.ndarray, exact: np.ndarray, expected: np.ndarray) -> None:
    """Float32 within 1e-6 of the reference and not identical to the exact mode (so float32
    products did run); the exact mode within 1e-12."""
    assert np.abs(got - expected).max() <= FLOAT32_TOL
    assert np.abs(got - exact).max() > 0
    assert np.abs(exact - expected).max() <= EXACT_TOL


@pytest.mark.parametrize("device", [None, "cpu"])
@pytest.mark.parametrize("mean", [0.0, 1e3])
@pytest.mark.parametrize("debiased", [False, True])
def test_cka_matrix_agrees_with_the_float64_reference(device, mean, debiased) -> None:
    xs, ys = layers(0, 600, [40, 64, 96], [48, 80], mean)
    check(cka_matrix(xs, ys, debiased=debiased, device=device),
          cka_matrix(xs, ys, debiased=debiased, device=device, precision="float64"),
          reference_matrix(xs, ys, debiased))


@pytest.mark.parametrize("mean", [0.0, 1e3])
def test_cka_matrix_on_the_gram_path_agrees_with_the_float64_reference(mean) -> None:
    xs, ys = layers(1, 48, [300, 500], [400], mean)  # n < d: n x n Gram products
    for debiased in (False, True):
        check(cka_matrix(xs, ys, debiased=debiased, device=None),
              cka_matrix(xs, ys, debiased=debiased, device=None, precision="float64"),
              reference_matrix(xs, ys, debiased))


@pytest.mark.parametrize("shape", [(600, [40, 64], [48]), (48, [300], [400, 500])])
@pytest.mark.parametrize("scale", [1e-200, 1e-12, 1e12, 1e200])
def test_cka_matrix_agrees_with_the_reference_at_any_scale(shape, scale) -> None:
    """Layers far outside float32's range, or only just inside it, are brought into range by a
    power of two (CKA is scale-invariant) and still take the float32 products; a layer with a
    feature mean 1e6 times its spread loses nothing to the centring either."""
    n, dims_x, dims_y = shape
    xs, ys = layers(11, n, dims_x, dims_y, 0.0)
    ys[0] = ys[0] + 1e6 * (1 + np.arange(ys[0].shape[1]))
    scaled = [scale * X for X in xs]
    for debiased in (False, True):
        check(cka_matrix(scaled, ys, debiased=debiased, device=None),
              cka_matrix(scaled, ys, debiased=debiased, device=None, precision="float64"),
              reference_matrix(xs, ys, debiased))


def streamed(xs: list, ys: list, chunks: list[slice], precision: str) -> CovarianceMoments:
    acc = CovarianceMoments([X.shape[1] for X in xs], [Y.shape[1] for Y in ys], device=None,
                            precision=precision)
    for rows in chunks:
        acc.update([X[rows] for X in xs], [Y[rows] for Y in ys])
    return acc


@pytest.mark.parametrize("chunk", [1, 37, 500, 3000])
def test_streamed_moments_agree_with_the_float64_reference(chunk) -> None:
    xs, ys = layers(2, 3000, [40, 72], [56], 1e3)
    chunks = [slice(start, start + chunk) for start in range(0, 3000, chunk)]
    found = {p: streamed(xs, ys, chunks, p) for p in ("float32", "float64")}
    for deb in (False, True):
        got, exact = found["float32"].cka(deb), found["float64"].cka(deb)
        expected = reference_matrix(xs, ys, deb)
        assert np.abs(got - expected).max() <= FLOAT32_TOL
        assert np.abs(exact - expected).max() <= EXACT_TOL
        if chunk > 1:  # one-row blocks are all mean: the float64 rank-one terms carry them
            assert np.abs(got - exact).max() > 0


def test_streamed_moments_stay_accurate_when_the_first_chunk_is_an_outlier() -> None:
    """The moments are shifted by the first chunk's mean; here that is one row 100 spreads
    away, so every later row is far from the shift. Centring each block on its own mean
    before the cast keeps the float32 products accurate (multiplying the shifted rows in
    float32 misses by 1e-5)."""
    xs, ys = layers(3, 3001, [40, 72], [56], 1e3)
    rng = np.random.default_rng(4)
    for M in (*xs, *ys):
        M[0] += 100 * rng.normal(size=M.shape[1])
    chunks = [slice(0, 1), *(slice(start, start + 1000) for start in range(1, 3001, 1000))]
    expected = reference_matrix(xs, ys, False)
    assert np.abs(streamed(xs, ys, chunks, "float32").cka() - expected).max() <= FLOAT32_TOL
    assert np.abs(streamed(xs, ys, chunks, "float64").cka() - expected).max() <= EXACT_TOL


def test_gram_moments_agree_with_the_float64_reference() -> None:
    xs, ys = layers(3, 40, [600], [450], 1e3)
    found = {}
    for precision in ("float32", "float64"):
        acc = GramMoments(40, 1, 1, device=None, precision=precision)
        for side, M in (("x", xs[0]), ("y", ys[0])):
            for start in range(0, M.shape[1], 128):
                acc.update(side, 0, M[:, start:start + 128])
        found[precision] = acc
    for deb in (False, True):
        check(found["float32"].cka(deb), found["float64"].cka(deb),
              reference_matrix(xs, ys, deb))


def test_minibatch_cka_agrees_with_a_float64_per_batch_reference() -> None:
    xs, ys = layers(4, 1000, [48, 64], [40], 1e3)
    batches = np.array_split(np.random.default_rng(5).permutation(1000), 1000 // 200)

    def reference(X: np.ndarray, Y: np.ndarray) -> float:
        X, Y = X - X.mean(0), Y - Y.mean(0)  # HSIC_1 ignores it; keeps the Grams accurate

        def hsic(A: np.ndarray, B: np.ndarray) -> float:
            K, L = A @ A.T, B @ B.T
            np.fill_diagonal(K, 0.0)
            np.fill_diagonal(L, 0.0)
            n = K.shape[0]
            return float(np.vdot(K, L) + K.sum() * L.sum() / ((n - 1) * (n - 2))
                         - 2 / (n - 2) * K.sum(0) @ L.sum(1)) / (n * (n - 3))

        sums = np.sum([[hsic(X[b], Y[b]), hsic(X[b], X[b]), hsic(Y[b], Y[b])]
                       for b in batches], axis=0)
        return sums[0] / np.sqrt(sums[1] * sums[2])

    expected = np.array([[reference(X, Y) for Y in ys] for X in xs])
    check(minibatch_cka_matrix(xs, ys, 200, seed=5, device=None),
          minibatch_cka_matrix(xs, ys, 200, seed=5, device=None, precision="float64"), expected)
    assert minibatch_cka(xs[1], ys[0], 200, seed=5) == pytest.approx(expected[1, 0],
                                                                     abs=FLOAT32_TOL)


def test_stream_metrics_takes_the_precision(tmp_path: Path) -> None:
    xs, ys = layers(6, 400, [64], [48], 1e3)
    ids = [f"s{i}" for i in range(400)]
    a = write_store(tmp_path / "a.h5", ids, {"h": xs[0].astype(np.float32)})
    b = write_store(tmp_path / "b.h5", ids, {"h": ys[0].astype(np.float32)})
    stored = [[xs[0].astype(np.float32).astype(np.float64)],
              [ys[0].astype(np.float32).astype(np.float64)]]
    runs = {p: stream_metrics(a, b, chunk_rows=150, device=None, progress=False, precision=p)
            for p in ("float32", "float64")}
    for deb, key in ((False, "cka"), (True, "cka_debiased")):
        check(getattr(runs["float32"], key), getattr(runs["float64"], key),
              reference_matrix(*stored, deb))


def test_narrow_products_and_extreme_scales_run_in_float64() -> None:
    """Float32 would gain nothing on narrow layers and would overflow or underflow on extreme
    scales: there the float32 mode gives the exact mode's bits."""
    rng = np.random.default_rng(7)
    narrow = [rng.normal(size=(200, 8)) + 1e3], [rng.normal(size=(200, 12))]
    assert np.array_equal(cka_matrix(*narrow, device=None),
                          cka_matrix(*narrow, device=None, precision="float64"))
    X, Y = rng.normal(size=(300, 40)), rng.normal(size=(300, 40))
    for scale in (1e-25, 1.0, 1e25):
        accs = {}
        for precision in ("float32", "float64"):
            accs[precision] = CovarianceMoments([40], [40], device=None, precision=precision)
            accs[precision].update([scale * X], [Y])
        same = np.array_equal(accs["float32"].cka(), accs["float64"].cka())
        assert same == (scale != 1.0)
        assert accs["float32"].cka()[0, 0] == pytest.approx(reference_cka(X, Y, False),
                                                            abs=FLOAT32_TOL)


def test_tf32_is_off_while_the_products_run_and_restored_after() -> None:
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")  # allows TF32 on CUDA
        with ieee_float32(torch.device("cpu")):
            assert torch.get_float32_matmul_precision() == "highest"
        assert torch.get_float32_matmul_precision() == "high"
        with pytest.raises(RuntimeError), ieee_float32(torch.device("cpu")):
            raise RuntimeError("inside")
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


def test_unknown_precision_is_an_input_error() -> None:
    X = np.random.default_rng(8).normal(size=(20, 4))
    for call in (lambda: cka_matrix([X], [X], precision="float16"),
                 lambda: CovarianceMoments([4], [4], precision="half"),
                 lambda: minibatch_cka(X, X, 5, precision=64)):
        with pytest.raises(InputError, match="precision must be one of float32, float64"):
            call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_float32_agrees_with_the_float64_reference() -> None:
    xs, ys = layers(9, 5000, [96, 128], [64], 1e3)
    for debiased in (False, True):
        check(cka_matrix(xs, ys, debiased=debiased, device="cuda"),
              cka_matrix(xs, ys, debiased=debiased, device="cuda", precision="float64"),
              reference_matrix(xs, ys, debiased))
