"""Streaming metrics (moments over chunks), minibatch CKA, the torch backend and stores.

Every streamed number is checked against the in-memory metric on the same data (themselves
checked against explicit formulas in the other metric tests) and, for HSIC, against the Gram
matrix formula of Song et al. 2012 written out here.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from repspace import stream_metrics
from repspace.cli import main
from repspace.errors import InputError, MismatchError
from repspace.metrics import (
    CovarianceMoments,
    GramMoments,
    cka_matrix,
    effective_rank,
    minibatch_cka,
    minibatch_cka_matrix,
    procrustes_distance,
    singular_values,
)
from repspace.metrics.accumulators import moments_of
from repspace.store import FeatureStore, StoreWriter

TOL = 1e-10


def song_hsic(X: np.ndarray, Y: np.ndarray) -> float:
    """Unbiased HSIC_1 (Song et al. 2012, eq. 5) from explicit linear Gram matrices.

    Centring first changes nothing in exact arithmetic (HSIC_1 ignores K + a 1^T + 1 a^T) but
    keeps the rounding of this direct formula small for features with large means.
    """
    n = X.shape[0]
    X, Y = X - X.mean(0), Y - Y.mean(0)
    K, L = X @ X.T, Y @ Y.T
    np.fill_diagonal(K, 0.0)
    np.fill_diagonal(L, 0.0)
    one = np.ones(n)
    value = (np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
             - 2 / (n - 2) * (one @ K @ L @ one))
    return value / (n * (n - 3))


def song_cka(X: np.ndarray, Y: np.ndarray) -> float:
    return song_hsic(X, Y) / np.sqrt(song_hsic(X, X) * song_hsic(Y, Y))


def layers(seed: int, n: int, dims_x: list[int], dims_y: list[int]) -> tuple[list, list]:
    """Related layers with large, different means (to exercise the one-pass centring)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, max(dims_x + dims_y)))
    xs = [base[:, :d] @ rng.normal(size=(d, d)) + rng.normal(size=(n, d)) + 50 * rng.normal(size=d)
          for d in dims_x]
    ys = [base[:, :d] + 0.5 * rng.normal(size=(n, d)) - 30 for d in dims_y]
    return xs, ys


def stream_rows(xs: list, ys: list, chunk: int, device: object = None,
                precision: str = "float64") -> CovarianceMoments:
    acc = CovarianceMoments([X.shape[1] for X in xs], [Y.shape[1] for Y in ys], device=device,
                            precision=precision)
    for start in range(0, xs[0].shape[0], chunk):
        acc.update([X[start:start + chunk] for X in xs], [Y[start:start + chunk] for Y in ys])
    return acc


def stream_columns(xs: list, ys: list, width: int, device: object = None,
                   precision: str = "float64") -> GramMoments:
    acc = GramMoments(xs[0].shape[0], len(xs), len(ys), device=device, precision=precision)
    for side, mats in (("x", xs), ("y", ys)):
        for k, M in enumerate(mats):
            for start in range(0, M.shape[1], width):
                acc.update(side, k, M[:, start:start + width])
    return acc


def assert_matches_in_memory(acc: CovarianceMoments | GramMoments, xs: list, ys: list) -> None:
    for debiased in (False, True):
        expected = cka_matrix(xs, ys, debiased=debiased, device=None, precision="float64")
        np.testing.assert_allclose(acc.cka(debiased), expected, rtol=0, atol=TOL)
    for side, mats in (("x", xs), ("y", ys)):
        for k, M in enumerate(mats):
            s = singular_values(M)
            np.testing.assert_allclose(acc.singular_values(side, k), s, rtol=0, atol=TOL * s[0])
            assert acc.effective_rank(side, k) == pytest.approx(effective_rank(M), abs=TOL)
    for i, X in enumerate(xs):
        for j, Y in enumerate(ys):
            for metric in ("euclidean", "angular"):
                assert acc.procrustes(i, j, metric) == pytest.approx(
                    procrustes_distance(X, Y, metric=metric), abs=TOL)


@pytest.mark.parametrize("chunk", [1, 7, 64, 300])
def test_covariance_path_equals_in_memory_for_any_chunk_size(chunk: int) -> None:
    xs, ys = layers(0, 300, [5, 9], [7, 3, 9])
    assert_matches_in_memory(stream_rows(xs, ys, chunk), xs, ys)


@pytest.mark.parametrize("width", [1, 6, 40])
def test_gram_path_equals_in_memory_for_any_block_width(width: int) -> None:
    xs, ys = layers(1, 12, [30, 40], [25])
    assert_matches_in_memory(stream_columns(xs, ys, width), xs, ys)


def test_hsic_equals_the_explicit_formulas() -> None:
    xs, ys = layers(2, 40, [6], [8])
    for acc in (stream_rows(xs, ys, 9), stream_columns(xs, ys, 5)):
        hsic, hx, hy = acc.hsic(debiased=True)
        assert hsic[0, 0] == pytest.approx(song_hsic(xs[0], ys[0]), rel=1e-10)
        assert hx[0] == pytest.approx(song_hsic(xs[0], xs[0]), rel=1e-10)
        assert hy[0] == pytest.approx(song_hsic(ys[0], ys[0]), rel=1e-10)
        Xc, Yc = xs[0] - xs[0].mean(0), ys[0] - ys[0].mean(0)
        biased = np.sum((Xc.T @ Yc) ** 2) / 39**2
        assert acc.hsic()[0][0, 0] == pytest.approx(biased, rel=1e-10)
        assert acc.cka(debiased=True)[0, 0] == pytest.approx(song_cka(xs[0], ys[0]), abs=TOL)


def test_known_answers() -> None:
    """A rotated, scaled, shifted copy: CKA 1 and Procrustes 0; a spectrum built by hand."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 6))
    Q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    acc = stream_rows([X], [3 * X @ Q + 7], 33)
    assert acc.cka()[0, 0] == pytest.approx(1.0, abs=1e-12)
    assert acc.cka(debiased=True)[0, 0] == pytest.approx(1.0, abs=1e-12)
    assert acc.procrustes(0, 0) == pytest.approx(0.0, abs=1e-6)
    U, _ = np.linalg.qr(rng.normal(size=(200, 4)))
    U -= U.mean(0)  # centred columns: the centred spectrum is exactly the one built in
    U, _ = np.linalg.qr(U)
    s = np.array([5.0, 3.0, 2.0, 1.0])
    V, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    Z = U * s @ V.T + 4.0
    acc = stream_rows([Z], [Z], 17)
    np.testing.assert_allclose(acc.singular_values("x", 0), s, atol=1e-10)
    p = s / s.sum()
    assert acc.effective_rank("x", 0) == pytest.approx(np.exp(-np.sum(p * np.log(p))), abs=1e-10)


def test_torch_backend_on_cpu_equals_numpy() -> None:
    xs, ys = layers(4, 120, [6, 10], [8])
    for make in (lambda dev: stream_rows(xs, ys, 50, dev),
                 lambda dev: stream_columns([X[:8] for X in xs], [Y[:8] for Y in ys], 4, dev)):
        a, b = make(None), make("cpu")
        for debiased in (False, True):
            np.testing.assert_allclose(a.cka(debiased), b.cka(debiased), rtol=0, atol=1e-10)
        np.testing.assert_allclose(a.singular_values("y", 0), b.singular_values("y", 0),
                                   rtol=1e-10)
        assert a.procrustes(1, 0) == pytest.approx(b.procrustes(1, 0), abs=1e-10)
    for n in (120, 8):  # feature path, Gram path
        sub_x, sub_y = [X[:n] for X in xs], [Y[:n] for Y in ys]
        for debiased in (False, True):
            np.testing.assert_allclose(cka_matrix(sub_x, sub_y, debiased=debiased, device="cpu"),
                                       cka_matrix(sub_x, sub_y, debiased=debiased, device=None),
                                       rtol=0, atol=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_equals_numpy_within_float32_tolerance() -> None:
    xs, ys = layers(5, 3000, [64, 32], [48])
    for debiased in (False, True):
        np.testing.assert_allclose(cka_matrix(xs, ys, debiased=debiased, device="cuda"),
                                   cka_matrix(xs, ys, debiased=debiased, device=None),
                                   rtol=0, atol=1e-6)
    a, b = stream_rows(xs, ys, 700, "cuda"), stream_rows(xs, ys, 700, None)
    np.testing.assert_allclose(a.cka(True), b.cka(True), rtol=0, atol=1e-6)


def test_bad_inputs_raise_input_error() -> None:
    acc = CovarianceMoments([3], [2], device=None)
    with pytest.raises(InputError, match="at least 2 samples are needed, got 0"):
        acc.cka()
    with pytest.raises(InputError, match="shape"):
        acc.update([np.zeros((4, 2))], [np.zeros((4, 2))])
    with pytest.raises(InputError, match="same rows"):
        acc.update([np.zeros((4, 3))], [np.zeros((5, 2))])
    with pytest.raises(InputError, match="NaN"):
        acc.update([np.full((4, 3), np.nan)], [np.zeros((4, 2))])
    assert acc.n == 0  # a rejected chunk leaves no trace
    rng = np.random.default_rng(0)
    acc.update([np.ones((6, 3)) * 2.5], [rng.normal(size=(6, 2))])
    with pytest.raises(InputError, match="constant"):
        acc.cka()
    with pytest.raises(InputError, match="at least 4 samples"):
        stream_rows([rng.normal(size=(3, 2))], [rng.normal(size=(3, 2))], 2).cka(debiased=True)
    gram = GramMoments(5, 1, 1, device=None)
    gram.update("x", 0, rng.normal(size=(5, 3)))
    with pytest.raises(InputError, match="received no columns"):
        gram.cka()
    with pytest.raises(InputError, match="device"):
        CovarianceMoments([3], [2], device="no-such-device")


def test_minibatch_cka_equals_a_direct_per_batch_computation() -> None:
    xs, ys = layers(6, 103, [5, 12], [9])
    seed, batch = 11, 20
    order = np.random.default_rng(seed).permutation(103)
    batches = np.array_split(order, 103 // batch)
    assert [len(b) for b in batches] == [21, 21, 21, 20, 20]

    def mb(X: np.ndarray, Y: np.ndarray) -> float:
        hxy = sum(song_hsic(X[b], Y[b]) for b in batches)
        hxx = sum(song_hsic(X[b], X[b]) for b in batches)
        hyy = sum(song_hsic(Y[b], Y[b]) for b in batches)
        return hxy / np.sqrt(hxx * hyy)

    expected = np.array([[mb(X, Y) for Y in ys] for X in xs])
    for device in (None, "cpu"):
        got = minibatch_cka_matrix(xs, ys, batch, seed=seed, device=device)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert minibatch_cka(xs[1], ys[0], batch, seed=seed) == pytest.approx(expected[1, 0],
                                                                          abs=1e-12)


def test_minibatch_cka_converges_to_the_full_debiased_value() -> None:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(20000, 8))
    Y = X @ rng.normal(size=(8, 8)) + 2.0 * rng.normal(size=(20000, 8))
    full = cka_matrix([X], [Y], debiased=True)[0, 0]
    assert 0.2 < full < 0.9
    assert minibatch_cka(X, Y, 500, seed=0) == pytest.approx(full, abs=0.01)


def test_minibatch_cka_equals_ckatorch() -> None:
    ckatorch = pytest.importorskip("ckatorch")
    xs, ys = layers(8, 120, [6], [10])
    # ckatorch forms uncentred Gram matrices: centre first (HSIC_1 ignores translation) so that
    # its rounding on the large means does not dominate the comparison.
    X, Y = xs[0] - xs[0].mean(0), ys[0] - ys[0].mean(0)
    expected = float(ckatorch.cka_batch(torch.from_numpy(X.reshape(4, 30, 6)),
                                        torch.from_numpy(Y.reshape(4, 30, 10))))
    assert minibatch_cka(xs[0], ys[0], 30) == pytest.approx(expected, abs=1e-12)


def test_minibatch_cka_rejects_bad_batch_sizes() -> None:
    X = np.random.default_rng(0).normal(size=(10, 3))
    for bad in (3, 11, 2.5, True):
        with pytest.raises(InputError, match="batch_size"):
            minibatch_cka(X, X, bad)


def test_moments_of_picks_the_cheaper_path() -> None:
    wide = [np.random.default_rng(0).normal(size=(10, 50))]
    tall = [np.random.default_rng(0).normal(size=(50, 10))]
    assert isinstance(moments_of(wide, wide, device=None), GramMoments)
    assert isinstance(moments_of(tall, tall, device=None), CovarianceMoments)


# ---------------------------------------------------------------- stores

LAYER_DIMS = {"block.0": 6, "block.1": 10}


def write_store(path: Path, ids: list[str], data: dict[str, np.ndarray], batch: int = 37) -> Path:
    meta = {"model_fingerprint": path.stem, "model_source": "synthetic", "probe_fingerprint": "p",
            "pooling": "mean", "settings": {}, "n_expected": len(ids)}
    layer_attrs = {name: {"module_path": name, "dim": M.shape[1], "token_selection": "all",
                          "modality": "text"} for name, M in data.items()}
    with StoreWriter(path, meta=meta, layers=layer_attrs) as writer:
        for start in range(0, len(ids), batch):
            writer.append(ids[start:start + batch],
                          {name: M[start:start + batch] for name, M in data.items()})
        return writer.finish()


@pytest.fixture(scope="module")
def two_stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("stores")
    n = 250
    xs, ys = layers(9, n, list(LAYER_DIMS.values()), list(LAYER_DIMS.values()))
    ids = [f"s{i}" for i in range(n)]
    a = write_store(folder / "a.h5", ids, dict(zip(LAYER_DIMS, xs, strict=True)))
    b = write_store(folder / "b.h5", ids, dict(zip(LAYER_DIMS, ys, strict=True)))
    return a, b


def in_memory(a: Path, b: Path, names: list[str]) -> dict:
    with FeatureStore(a) as sa, FeatureStore(b) as sb:
        xs = [sa.pooled(name).astype(np.float64) for name in names]
        ys = [sb.pooled(name).astype(np.float64) for name in names]
    return {"xs": xs, "ys": ys}


def assert_result_matches(result: object, data: dict, names: list[str]) -> None:
    xs, ys = data["xs"], data["ys"]
    exact = {"device": None, "precision": "float64"}
    np.testing.assert_allclose(result.cka, cka_matrix(xs, ys, **exact), atol=TOL)
    np.testing.assert_allclose(result.cka_debiased, cka_matrix(xs, ys, debiased=True, **exact),
                               atol=TOL)
    for k, name in enumerate(names):
        assert result.procrustes[name] == pytest.approx(procrustes_distance(xs[k], ys[k]),
                                                        abs=TOL)
        assert result.effective_rank_a[name] == pytest.approx(effective_rank(xs[k]), abs=TOL)
        assert result.effective_rank_b[name] == pytest.approx(effective_rank(ys[k]), abs=TOL)
        s = singular_values(ys[k])
        np.testing.assert_allclose(result.singular_values_b[name], s, atol=TOL * s[0])


@pytest.mark.parametrize("chunk_rows", [16, 100, 1000])
def test_stream_metrics_from_stores_equals_in_memory(two_stores: tuple[Path, Path],
                                                     chunk_rows: int) -> None:
    a, b = two_stores
    names = list(LAYER_DIMS)
    result = stream_metrics(a, b, chunk_rows=chunk_rows, device=None, progress=False,
                            precision="float64")
    assert result.path == "covariance" and result.n == 250 and result.layers == names
    assert_result_matches(result, in_memory(a, b, names), names)
    json.dumps(result.to_dict())
    assert "block.1" in result.table()


def test_stream_metrics_gram_path_from_stores(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    ids = [f"s{i}" for i in range(14)]
    X = rng.normal(size=(14, 40)) + 3
    a = write_store(tmp_path / "a.h5", ids, {"wide": X}, batch=5)
    b = write_store(tmp_path / "b.h5", ids, {"wide": X + rng.normal(size=(14, 40))}, batch=5)
    result = stream_metrics(a, b, chunk_rows=9, device=None, progress=False,
                            precision="float64")  # 26-column blocks
    assert result.path == "gram"
    assert_result_matches(result, in_memory(a, b, ["wide"]), ["wide"])


def test_stream_metrics_checks_alignment_and_layers(two_stores: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    a, _ = two_stores
    rng = np.random.default_rng(0)
    other = write_store(tmp_path / "c.h5", [f"t{i}" for i in range(250)],
                        {name: rng.normal(size=(250, d)) for name, d in LAYER_DIMS.items()})
    with pytest.raises(MismatchError, match="different samples"):
        stream_metrics(a, other, progress=False)
    ids = [f"s{i}" for i in range(250)]
    ids[200], ids[201] = ids[201], ids[200]  # past the first chunk of ids
    swapped = write_store(tmp_path / "d.h5", ids,
                          {name: rng.normal(size=(250, d)) for name, d in LAYER_DIMS.items()})
    with pytest.raises(MismatchError, match="different order"):
        stream_metrics(a, swapped, chunk_rows=16, progress=False)
    with pytest.raises(InputError, match="no layer 'missing'"):
        stream_metrics(a, a, layers=["missing"], progress=False)
    with pytest.raises(InputError, match="chunk_rows"):
        stream_metrics(a, a, chunk_rows=0, progress=False)


def test_cli_metrics_prints_and_writes_the_streamed_numbers(
        two_stores: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = two_stores
    names = list(LAYER_DIMS)
    assert main(["metrics", str(a), str(b), "--chunk-rows", "16", "--device", "numpy",
                 "--out", str(tmp_path / "out")]) == 0
    table = capsys.readouterr().out
    data = in_memory(a, b, names)
    expected = np.diag(cka_matrix(data["xs"], data["ys"], debiased=True, device=None))
    saved = json.loads((tmp_path / "out" / "stream_metrics.json").read_text())
    np.testing.assert_allclose(np.diag(saved["cka_debiased"]), expected, atol=TOL)
    with open(tmp_path / "out" / "stream_metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["layer"] for r in rows] == names
    np.testing.assert_allclose([float(r["cka_debiased"]) for r in rows], expected, atol=1e-9)
    for name, value in zip(names, expected, strict=True):
        assert any(line.startswith(name) and f"{value:.4f}" in line
                   for line in table.splitlines())


def test_cli_metrics_refuses_misaligned_stores_in_one_line(
        two_stores: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, _ = two_stores
    rng = np.random.default_rng(1)
    other = write_store(tmp_path / "c.h5", [f"t{i}" for i in range(250)],
                        {name: rng.normal(size=(250, d)) for name, d in LAYER_DIMS.items()})
    assert main(["metrics", str(a), str(other), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("repspace: error:")
    assert "different samples" in err[0]
    assert not (tmp_path / "out").exists()


CHILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from repspace import stream_metrics
    go = Path(sys.argv[3])
    Path(sys.argv[4]).touch()  # ready: imports done
    while not go.exists():
        time.sleep(0.01)
    started = time.time()
    r = stream_metrics(sys.argv[1], sys.argv[2], chunk_rows=1, device=None, progress=False)
    print(json.dumps({"cka": r.cka_debiased.tolist(), "procrustes": r.procrustes,
                      "start": started, "end": time.time()}))
""")


def test_two_processes_stream_the_same_stores_at_once(two_stores: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    a, b = two_stores
    before = (a.stat().st_mtime_ns, b.stat().st_mtime_ns)
    go = tmp_path / "go"
    with FeatureStore(a):  # a third reader holds the file open meanwhile
        ready = [tmp_path / f"ready{k}" for k in range(2)]
        children = [subprocess.Popen([sys.executable, "-c", CHILD, str(a), str(b), str(go),
                                      str(flag)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for flag in ready]
        deadline = time.monotonic() + 120
        while not all(flag.exists() for flag in ready) and time.monotonic() < deadline:
            time.sleep(0.01)
        go.touch()
        outputs = [child.communicate(timeout=120) for child in children]
    for child, (_, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
    results = [json.loads(out) for out, _ in outputs]
    # The two reads overlapped in time, and gave the numbers of an in-process run.
    assert max(r["start"] for r in results) < min(r["end"] for r in results)
    expected = stream_metrics(a, b, device=None, progress=False)
    for r in results:
        np.testing.assert_allclose(r["cka"], expected.cka_debiased, atol=TOL)
        assert r["procrustes"] == pytest.approx(expected.procrustes, abs=TOL)
    assert (a.stat().st_mtime_ns, b.stat().st_mtime_ns) == before  # opened read-only
