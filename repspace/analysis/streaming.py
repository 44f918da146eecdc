"""Exact metrics between two feature stores, read chunk by chunk in bounded memory.

``stream_metrics`` reads the pooled features of two stores (e.g. a base and a tuned model on
the same probe set) and feeds the accumulators of :mod:`repspace.metrics.accumulators`:

- covariance path (n >= the widest layer): row chunks of ``chunk_rows`` samples, one pass over
  each store. Memory: the chunk plus 8 (D_a D_b + sum_l d_l^2) bytes of moments, with D_a, D_b
  the summed widths of the chosen layers of each store; independent of n.
- Gram path (n < the widest layer): blocks of columns with all n rows, as many columns as
  ``chunk_rows`` rows hold. Memory: 8 n^2 bytes per layer plus one block. A column block
  touches every row chunk of the file, so a layer wider than a block is read several times.

The sample ids are compared chunk by chunk too. With ``precision="float64"`` the results
equal the in-memory metrics (``cka_matrix``, ``singular_values``, ``effective_rank``,
``procrustes_distance``) to rounding; with the default ``"float32"`` (float32 products of the
centred rows, summed in float64; :mod:`repspace.metrics._backend`) CKA agrees to about 1e-7,
while singular values carry absolute errors up to ~1e-5 s_1, which reach the effective rank
and the Procrustes distance only for steeply decaying spectra (e.g. 7e-4 relative on an
effective rank of 5 with s_i ~ 1 / i^2; 3e-7 with s_i ~ 1 / i).
Stores are opened read-only without HDF5 file locking, so several processes can stream the
same store at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from tqdm import tqdm

from repspace.errors import InputError
from repspace.metrics._backend import Device, Precision
from repspace.metrics.accumulators import CovarianceMoments, GramMoments
from repspace.results.stream import StreamResult
from repspace.store import FeatureStore, check_aligned


def stream_metrics(store_a: str | Path | FeatureStore, store_b: str | Path | FeatureStore, *,
                   layers: Sequence[str] | None = None, chunk_rows: int = 4096,
                   device: Device = "auto", progress: bool = True,
                   precision: Precision = "float32") -> StreamResult:
    """Linear CKA (biased and debiased), spectra, effective ranks and Procrustes distances of
    two feature stores, computed exactly in one pass in memory independent of n.

    Parameters
    ----------
    store_a, store_b : path or FeatureStore
        Two complete stores holding the same sample ids in the same order (checked).
    layers : sequence of str, optional
        Layers to compare, present in both stores (default: store A's layers). The CKA
        matrices cover every pair of them; memory grows with the square of their summed width.
    chunk_rows : int
        Rows read per chunk (the Gram path reads blocks of as many values).
    device : None, "auto" or a torch device
        Where the chunk products run (``"auto"``: CUDA when present, else numpy).
    progress : bool
        Show a tqdm progress bar.
    precision : {"float32", "float64"}
        Products in float32 summed in float64 (default; CKA to about 1e-7, see the module
        docstring for the spectra), or in float64 throughout (exact to rounding).

    Returns
    -------
    StreamResult
        CKA: 1 = same representation up to rotation, isotropic scaling and translation (higher
        is more similar); Procrustes: 0 = the same (lower is more similar); effective rank:
        higher = more dimensions used.
    """
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise InputError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    with ExitStack() as stack:
        a, b = (s if isinstance(s, FeatureStore) else stack.enter_context(FeatureStore(s))
                for s in (store_a, store_b))
        n = _check_aligned(a, b, chunk_rows)
        names = list(layers) if layers is not None else a.layers
        if not names:
            raise InputError("no layers to compare")
        for store in (a, b):
            missing = [name for name in names if name not in store.layers]
            if missing:
                raise InputError(f"{store.path} has no layer {missing[0]!r}; it has: "
                                 f"{', '.join(store.layers)}")
        dims = {s: [int(store.pooled_block(name, slice(0, 1)).shape[1]) for name in names]
                for s, store in (("x", a), ("y", b))}
        labels = ([f"{a.path.name}:{name}" for name in names],
                  [f"{b.path.name}:{name}" for name in names])
        if n >= max(dims["x"] + dims["y"]):
            acc: CovarianceMoments | GramMoments = _covariance(
                a, b, names, dims, n, chunk_rows, device, labels, progress, precision)
        else:
            acc = _gram(a, b, names, dims, n, chunk_rows, device, labels, progress, precision)
    result = StreamResult(layers=names, n=n,
                          path="covariance" if isinstance(acc, CovarianceMoments) else "gram",
                          cka=acc.cka(), cka_debiased=acc.cka(debiased=True))
    for k, name in enumerate(names):
        result.procrustes[name] = acc.procrustes(k, k)
        for side, spectra, ranks in (("x", result.singular_values_a, result.effective_rank_a),
                                     ("y", result.singular_values_b, result.effective_rank_b)):
            spectra[name] = acc.singular_values(side, k)  # type: ignore[arg-type]
            ranks[name] = acc.effective_rank(side, k)  # type: ignore[arg-type]
    return result


def stream_memory(n: int, dims: Sequence[int], chunk_rows: int) -> int:
    """Estimated peak memory (bytes) of :func:`stream_metrics` on ``n`` samples of layers of
    widths ``dims`` in both stores, in float64: on the covariance path the D x D cross moments
    and one product of them (16 D^2, D = sum of ``dims``) and the self moments (16 sum d^2);
    on the Gram path (n below the widest layer) the n x n Grams with their centred copies
    (32 n^2 per layer); on both, the chunks read, copied and stacked (48 D per chunk row)."""
    width = sum(dims)
    if n >= max(dims):
        moments = 16 * width**2 + 16 * sum(d * d for d in dims)
    else:
        moments = 32 * len(dims) * n * n
    return moments + 48 * width * chunk_rows


def _check_aligned(a: FeatureStore, b: FeatureStore, chunk_rows: int) -> int:
    """The number of samples, after checking chunk by chunk (in memory independent of n) that
    both stores hold the same ids in the same order; on a difference, ``check_aligned`` reads
    all ids and raises its MismatchError."""
    n_a, n_b = (int(store.meta["n_written"]) for store in (a, b))
    if n_a != n_b or any(a.sample_ids_block(slice(i, i + chunk_rows))
                         != b.sample_ids_block(slice(i, i + chunk_rows))
                         for i in range(0, n_a, chunk_rows)):
        check_aligned(a, b)
    return n_a


def _covariance(a: FeatureStore, b: FeatureStore, names: list[str], dims: dict[str, list[int]],
                n: int, chunk_rows: int, device: Device, labels: tuple[list[str], list[str]],
                progress: bool, precision: Precision) -> CovarianceMoments:
    """One pass over row chunks of both stores."""
    acc = CovarianceMoments(dims["x"], dims["y"], device=device, names=labels,
                            precision=precision)
    with tqdm(total=n, unit="sample", desc="streaming metrics", disable=not progress) as bar:
        for start in range(0, n, chunk_rows):
            rows = slice(start, min(start + chunk_rows, n))
            acc.update([a.pooled_block(name, rows) for name in names],
                       [b.pooled_block(name, rows) for name in names])
            bar.update(rows.stop - rows.start)
    return acc


def _gram(a: FeatureStore, b: FeatureStore, names: list[str], dims: dict[str, list[int]],
          n: int, chunk_rows: int, device: Device, labels: tuple[list[str], list[str]],
          progress: bool, precision: Precision) -> GramMoments:
    """Column blocks (all n rows) of every layer of both stores."""
    acc = GramMoments(n, len(names), len(names), device=device, names=labels,
                      precision=precision)
    with tqdm(total=sum(dims["x"]) + sum(dims["y"]), unit="column",
              desc="streaming metrics (Gram)", disable=not progress) as bar:
        for side, store in (("x", a), ("y", b)):
            for k, (name, d) in enumerate(zip(names, dims[side], strict=True)):
                width = max(1, math.ceil(chunk_rows * d / n))
                for start in range(0, d, width):
                    cols = slice(start, min(start + width, d))
                    acc.update(side, k, store.pooled_block(name, slice(0, n), cols))  # type: ignore[arg-type]
                    bar.update(cols.stop - cols.start)
    return acc
