"""Benchmark: a 6 x 6 layer linear CKA matrix, repspace against a float64 reference and the floor.

What is measured
    Wall time (median over rounds that run every method in turn) of the 6 x 6 linear CKA matrix
    between two "models" of 6 layers each (base layers and tuned layers, as in
    ``repspace.compare``), every layer N = 4,000 samples x d = 768 float32 features with shared
    structure (a common latent that drifts from layer to layer, a shared low-rank part, non-zero
    means; tuned = base + layer-dependent noise). Methods:

    - ``repspace.metrics.cka_matrix`` (biased and debiased), called on the float32 layers;
    - the reference: plain float64 numpy, one pair at a time in a loop. Biased: the
      feature-space formula ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), centring and all
      three products redone for every pair. Debiased: the estimator of Song et al. 2012 written
      out on centred Gram matrices with zeroed diagonals (each layer's Gram formed once, the
      formula applied per pair);
    - ``repspace.metrics.linear_cka`` called once per pair, biased only (the debiased call takes
      the same path and products, plus two row-norm reductions);
    - ``cka_matrix(..., device="cpu")``: the same products through torch (the code path a GPU
      runs), and ``device="cuda"`` when a GPU is present;
    - peer libraries when installed, otherwise their rows say so: anatome, and ckatorch
      (``ckatorch.cka_base`` per pair, torch float64 N x N Gram matrices, centred by
      ``center_gram_matrix``, biased and ``unbiased=True``). ckatorch needs about a minute per
      estimator on 2 cores, so its rows are timed in one extra round after the others (``1*``
      in the rounds column).

Baseline ("floor")
    The bare float64 matrix products that the cheapest exact algorithm needs, on inputs already
    converted to float64 and centred, nothing else (no centring, no reductions):

    - feature path: one (6d x N) @ (N x 6d) cross-product of the stacked layers plus the 12
      d x d self products X_c^T X_c (numpy runs these as SYRK);
    - Gram path: the 12 N x N Gram matrices X_c X_c^T (SYRK) plus the product of the two
      stacked, flattened Gram stacks (6 x N^2) @ (N^2 x 6).

    "ratio to floor" divides by the faster of the two, measured in the same run.

Accuracy: max |difference| of each 6 x 6 matrix to the float64 reference of the same estimator.
Memory: peak memory allocated by each call, by tracemalloc, which runs during the timed rounds
(numpy buffers and Python objects; not BLAS work buffers; the inputs are allocated before and
not counted).

Run: ``python benchmarks/bench_cka.py`` (about 2 minutes on 2 cores) or ``--quick``.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from _common import load_average, machine_line, table, time_interleaved

from repspace.metrics import cka_matrix, linear_cka

Layers = list[np.ndarray]


def make_layers(n: int, d: int, n_layers: int, seed: int = 0) -> tuple[Layers, Layers]:
    """Base and tuned layers (float32, n x d each) with structure shared across layers."""
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((n, d), dtype=np.float32)
    low_rank = (rng.standard_normal((n, 16), dtype=np.float32)
                @ rng.standard_normal((16, d), dtype=np.float32)) / 16
    base, tuned = [], []
    for layer in range(n_layers):
        hidden = 0.7 * hidden + 0.714 * rng.standard_normal((n, d), dtype=np.float32)
        offset = 2 * rng.standard_normal(d, dtype=np.float32)
        X = hidden + low_rank + offset
        base.append(X)
        noise = (0.3 + 0.2 * layer) * rng.standard_normal((n, d), dtype=np.float32)
        tuned.append(X + noise)
    return base, tuned


def _centred64(X: np.ndarray) -> np.ndarray:
    X = X.astype(np.float64)
    X -= X.mean(axis=0)
    return X


def reference_biased(xs: Layers, ys: Layers) -> np.ndarray:
    """Biased linear CKA, float64, one pair at a time, everything recomputed per pair."""
    out = np.empty((len(xs), len(ys)))
    for i, X in enumerate(xs):
        for j, Y in enumerate(ys):
            Xc, Yc = _centred64(X), _centred64(Y)
            hsic = np.sum((Yc.T @ Xc) ** 2)
            out[i, j] = hsic / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))
    return out


def _zero_diag_gram(X: np.ndarray) -> np.ndarray:
    Xc = _centred64(X)
    K = Xc @ Xc.T
    np.fill_diagonal(K, 0.0)
    return K


def _song_hsic(K: np.ndarray, L: np.ndarray) -> float:
    """Unbiased HSIC_1 (Song et al. 2012) of two Gram matrices with zeroed diagonals."""
    n = K.shape[0]
    total = (np.vdot(K, L) + K.sum() * L.sum() / ((n - 1) * (n - 2))
             - 2 / (n - 2) * (K.sum(axis=0) @ L.sum(axis=1)))
    return float(total / (n * (n - 3)))


def reference_debiased(xs: Layers, ys: Layers) -> np.ndarray:
    """Debiased linear CKA, float64, from explicit N x N Gram matrices, one pair at a time."""
    grams_x = [_zero_diag_gram(X) for X in xs]
    self_x = [_song_hsic(K, K) for K in grams_x]
    out = np.empty((len(xs), len(ys)))
    for j, Y in enumerate(ys):
        L = _zero_diag_gram(Y)
        self_y = _song_hsic(L, L)
        for i, K in enumerate(grams_x):
            out[i, j] = _song_hsic(K, L) / np.sqrt(self_x[i] * self_y)
    return out


def per_pair(fn: Callable[..., float], xs: Layers, ys: Layers, **kwargs: Any) -> np.ndarray:
    """``fn(X, Y, **kwargs)`` for every pair, as a matrix."""
    return np.array([[fn(X, Y, **kwargs) for Y in ys] for X in xs])


def floor_feature(xcs: Layers, ycs: Layers, xcat: np.ndarray, ycat: np.ndarray) -> None:
    """The products of the feature path: the stacked cross-product and 12 d x d self products."""
    xcat.T @ ycat
    for M in (*xcs, *ycs):
        M.T @ M


def floor_gram(xcs: Layers, ycs: Layers) -> None:
    """The products of the Gram path: 12 N x N Grams and one Gram-stack product."""
    n = xcs[0].shape[0]
    ex = np.empty((len(xcs), n * n))
    ey = np.empty((len(ycs), n * n))
    for stack, mats in ((ex, xcs), (ey, ycs)):
        for k, M in enumerate(mats):
            stack[k] = (M @ M.T).ravel()
    ex @ ey.T


def anatome_matrix(xs: Layers, ys: Layers, debiased: bool) -> np.ndarray:
    """CKA matrix from anatome's per-pair ``linear_cka_distance`` (1 - CKA), torch float64."""
    import torch
    from anatome.distance import linear_cka_distance

    return np.array([[1.0 - float(linear_cka_distance(torch.from_numpy(X.astype(np.float64)),
                                                      torch.from_numpy(Y.astype(np.float64)),
                                                      debiased))
                      for Y in ys] for X in xs])


def ckatorch_matrix(xs: Layers, ys: Layers, debiased: bool) -> np.ndarray:
    """CKA matrix from ckatorch's per-pair ``cka_base`` (linear kernel, torch float64)."""
    import torch
    from ckatorch import cka_base

    return np.array([[float(cka_base(torch.from_numpy(X), torch.from_numpy(Y),
                                     unbiased=debiased))
                      for Y in ys] for X in xs])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="N = 1,000 samples, one round, no memory tracing (about 20 seconds)")
    parser.add_argument("--n", type=int, default=None, help="samples per layer (default 4000)")
    parser.add_argument("--repeats", type=int, default=None, help="timing rounds (default 3)")
    parser.add_argument("--no-memory", action="store_true", help="run without tracemalloc")
    parser.add_argument("--no-ckatorch", action="store_true",
                        help="skip the slow ckatorch rows (about 2 minutes at N = 4,000)")
    args = parser.parse_args(argv)
    n = args.n or (1000 if args.quick else 4000)
    repeats = args.repeats or (1 if args.quick else 3)
    memory = not (args.no_memory or args.quick)
    d, n_layers = 768, 6

    print(f"linear CKA matrix: {n_layers} x {n_layers} layers, N = {n:,}, d = {d}, "
          f"float32 inputs; median of {repeats} round(s)")
    print(f"machine: {machine_line()}; load average at start {load_average()}")
    xs, ys = make_layers(n, d, n_layers)
    xcs, ycs = [_centred64(X) for X in xs], [_centred64(Y) for Y in ys]
    xcat, ycat = np.hstack(xcs), np.hstack(ycs)

    floors: list[tuple[str, Callable[[], Any]]] = [
        ("floor: feature-path matmuls (float64)", lambda: floor_feature(xcs, ycs, xcat, ycat)),
        ("floor: Gram-path matmuls (float64)", lambda: floor_gram(xcs, ycs)),
    ]
    methods: list[tuple[str, Callable[[], Any]]] = [
        ("repspace cka_matrix, biased", lambda: cka_matrix(xs, ys)),
        ("repspace cka_matrix, debiased", lambda: cka_matrix(xs, ys, debiased=True)),
        ("repspace cka_matrix, biased, torch device=cpu",
         lambda: cka_matrix(xs, ys, device="cpu")),
        ("repspace cka_matrix, debiased, torch device=cpu",
         lambda: cka_matrix(xs, ys, debiased=True, device="cpu")),
        ("repspace linear_cka per pair, biased", lambda: per_pair(linear_cka, xs, ys)),
        ("reference float64 per pair, biased", lambda: reference_biased(xs, ys)),
        ("reference float64 per pair, debiased", lambda: reference_debiased(xs, ys)),
    ]
    peer = importlib.util.find_spec("anatome") is not None
    if peer:
        methods += [
            ("peer anatome per pair, biased", lambda: anatome_matrix(xs, ys, False)),
            ("peer anatome per pair, debiased", lambda: anatome_matrix(xs, ys, True)),
        ]
    if torch.cuda.is_available():
        methods += [
            ("repspace cka_matrix, biased, device=cuda",
             lambda: cka_matrix(xs, ys, device="cuda")),
            ("repspace cka_matrix, debiased, device=cuda",
             lambda: cka_matrix(xs, ys, debiased=True, device="cuda")),
        ]
    seconds, results, peaks = time_interleaved(floors + methods, repeats, trace_memory=memory)
    rounds = dict.fromkeys(seconds, str(repeats))
    slow: list[tuple[str, Callable[[], Any]]] = []
    if importlib.util.find_spec("ckatorch") is not None and not args.no_ckatorch:
        xs64, ys64 = [X.astype(np.float64) for X in xs], [Y.astype(np.float64) for Y in ys]
        slow = [("peer ckatorch cka_base per pair, biased",
                 lambda: ckatorch_matrix(xs64, ys64, False)),
                ("peer ckatorch cka_base per pair, debiased",
                 lambda: ckatorch_matrix(xs64, ys64, True))]
        more = time_interleaved(slow, 1, trace_memory=memory)
        for found, extra in zip((seconds, results, peaks), more, strict=True):
            found.update(extra)
        rounds.update(dict.fromkeys(more[0], "1*"))
    floor = min(seconds[name] for name, _ in floors)

    references = {"biased": results["reference float64 per pair, biased"],
                  "debiased": results["reference float64 per pair, debiased"]}
    rows = []
    for name, _ in floors + methods + slow:
        if name.startswith("floor"):
            diff = "-"
        elif name.startswith("reference"):
            diff = "(reference)"
        else:
            ref = references["debiased" if "debiased" in name else "biased"]
            diff = f"{np.abs(results[name] - ref).max():.1e}"
        rows.append([name, rounds[name], f"{seconds[name]:.3f}", f"{seconds[name] / floor:.2f}",
                     diff, f"{peaks[name]:.0f}" if memory else "-"])
    if not peer:
        rows.append(["peer anatome: not installed, skipped", "-", "-", "-", "-", "-"])
    if not slow:
        rows.append(["peer ckatorch: not installed or --no-ckatorch, skipped", "-", "-", "-",
                     "-", "-"])
    header = ["method", "rounds", "seconds (median)", "ratio to floor",
              "max |diff| vs float64 ref", "peak MiB (tracemalloc)"]
    print()
    print(table(header, rows))
    biased, debiased = references["biased"], references["debiased"]
    print(f"\nreference CKA values: biased in [{biased.min():.3f}, {biased.max():.3f}], "
          f"debiased in [{debiased.min():.3f}, {debiased.max():.3f}]")
    print(f"load average at end {load_average()}")


if __name__ == "__main__":
    main()
