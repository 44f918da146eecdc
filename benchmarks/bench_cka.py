"""Benchmark: a 6 x 6 layer linear CKA matrix, repspace's float32 and exact modes against the
GEMM floors and a float64 reference.

What is measured
    Wall time (median over rounds that run every method in turn) of the 6 x 6 linear CKA matrix
    between two "models" of 6 layers each (base layers and tuned layers, as in
    ``repspace.compare``), every layer N = 4,000 samples x d = 768 float32 features with shared
    structure (a common latent that drifts from layer to layer, a shared low-rank part, non-zero
    means; tuned = base + layer-dependent noise). Methods:

    - ``repspace.metrics.cka_matrix`` (biased and debiased), called on the float32 layers, in
      its default mode (``precision="float32"``: float32 products of the centred features over
      blocks of rows, summed in float64) and its exact mode (``precision="float64"``);
    - the reference: plain float64 numpy, one pair at a time in a loop. Biased: the
      feature-space formula ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), centring and all
      three products redone for every pair. Debiased: the estimator of Song et al. 2012 written
      out on centred Gram matrices with zeroed diagonals (each layer's Gram formed once, the
      formula applied per pair);
    - ``repspace.metrics.linear_cka`` called once per pair, biased only (float64; the debiased
      call takes the same path and products, plus two row-norm reductions);
    - ``cka_matrix(..., device="cpu")``: the same products through torch (the code path a GPU
      runs), and ``device="cuda"`` when a GPU is present;
    - peer libraries when installed, otherwise their rows say so: anatome, and ckatorch
      (``ckatorch.cka_base`` per pair, torch float64 N x N Gram matrices, centred by
      ``center_gram_matrix``, biased and ``unbiased=True``). ckatorch needs about a minute per
      estimator on 2 cores, so its rows are timed in one extra round after the others (``1*``
      in the rounds column).

Baseline ("floor")
    The bare matrix products that ``cka_matrix`` needs, as GEMMs of distinct buffers (no SYRK
    shortcut for the self products, so every floor performs all the flops), on inputs already
    converted to the floor's precision and centred, nothing else (no centring, no reductions),
    in float32 and in float64:

    - feature path: one (6d x N) @ (N x 6d) cross-product of the stacked layers plus the 12
      d x d self products X_c^T X_c', with X_c' a copy of X_c;
    - Gram path: the 12 N x N Gram matrices X_c X_c'^T plus the product of the two stacked,
      flattened Gram stacks (6 x N^2) @ (N^2 x 6).

    "/ float32 floor" divides by the faster float32 floor, "/ float64 floor" by the faster
    float64 one, both measured in the same run. With a GPU the CUDA rows get CUDA floors
    (torch, TF32 off). The goal of issue 18: the float32 mode within 1.3x of the float32 floor.

Accuracy: max |difference| of each 6 x 6 matrix to the float64 reference of the same estimator,
and, after the table, between the float32 and the exact mode on the same layers shifted by a
feature mean of 1e3 (large means; the float32 products see centred data).
Memory: peak memory allocated by each call, by tracemalloc, which runs during the timed rounds
(numpy buffers and Python objects; not BLAS work buffers; the inputs are allocated before and
not counted).

TF32 is switched off for the whole run (``torch.set_float32_matmul_precision("highest")``);
``cka_matrix`` switches it off for its own products anyway.

Run: ``python benchmarks/bench_cka.py`` (about 3 minutes on 2 idle cores) or ``--quick``
(N = 1,000, d = 256, one round: a smoke test, figures meaningless).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
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


def floor_feature(xcs: Layers, ycs: Layers, copies: Layers, xcat: Any, ycat: Any) -> None:
    """The products of the feature path: the stacked cross-product and 12 d x d self products,
    each a GEMM of two distinct buffers (numpy arrays or torch tensors)."""
    xcat.T @ ycat
    for M, C in zip((*xcs, *ycs), copies, strict=True):
        M.T @ C


def floor_gram(xcs: Layers, ycs: Layers, copies: Layers) -> None:
    """The products of the Gram path: 12 N x N Grams of distinct buffers and one Gram-stack
    product (numpy arrays or torch tensors)."""
    mats = [(M @ C.T).reshape(-1) for M, C in zip((*xcs, *ycs), copies, strict=True)]
    xp = np if isinstance(mats[0], np.ndarray) else torch
    xp.stack(mats[:len(xcs)]) @ xp.stack(mats[len(xcs):]).T


def floors_for(xcs: Layers, ycs: Layers, where: str,
               sync: Callable[[], None]) -> list[tuple[str, Callable[[], Any]]]:
    """Feature- and Gram-path floors of the centred layers, in the layers' precision."""
    copies = [M.copy() if isinstance(M, np.ndarray) else M.clone() for M in (*xcs, *ycs)]
    xp = np if isinstance(xcs[0], np.ndarray) else torch
    xcat, ycat = xp.hstack(xcs), xp.hstack(ycs)
    dtype = str(xcs[0].dtype).removeprefix("torch.")
    return [(f"floor: feature-path GEMMs ({dtype}{where})",
             lambda: (floor_feature(xcs, ycs, copies, xcat, ycat), sync())),
            (f"floor: Gram-path GEMMs ({dtype}{where})",
             lambda: (floor_gram(xcs, ycs, copies), sync()))]


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
                        help="N = 1,000, d = 256, one round, no memory tracing, no ckatorch "
                        "(a smoke test: seconds, figures meaningless)")
    parser.add_argument("--n", type=int, default=None, help="samples per layer (default 4000)")
    parser.add_argument("--d", type=int, default=None, help="features per layer (default 768)")
    parser.add_argument("--repeats", type=int, default=None, help="timing rounds (default 3)")
    parser.add_argument("--no-memory", action="store_true", help="run without tracemalloc")
    parser.add_argument("--no-ckatorch", action="store_true",
                        help="skip the slow ckatorch rows (about 2 minutes at N = 4,000)")
    args = parser.parse_args(argv)
    n = args.n or (1000 if args.quick else 4000)
    d = args.d or (256 if args.quick else 768)
    repeats = args.repeats or (1 if args.quick else 3)
    memory = not (args.no_memory or args.quick)
    n_layers = 6
    torch.set_float32_matmul_precision("highest")  # no TF32 anywhere in the run

    print(f"linear CKA matrix: {n_layers} x {n_layers} layers, N = {n:,}, d = {d}, "
          f"float32 inputs; median of {repeats} round(s)")
    print(f"machine: {machine_line()}; load average at start {load_average()}")
    xs, ys = make_layers(n, d, n_layers)
    xcs, ycs = [_centred64(X) for X in xs], [_centred64(Y) for Y in ys]
    floors = [*floors_for([X.astype(np.float32) for X in xcs],
                          [Y.astype(np.float32) for Y in ycs], "", lambda: None),
              *floors_for(xcs, ycs, "", lambda: None)]
    del xcs, ycs
    exact = {"precision": "float64"}
    methods: list[tuple[str, Callable[[], Any]]] = [
        ("repspace cka_matrix, biased, float32 products", lambda: cka_matrix(xs, ys)),
        ("repspace cka_matrix, debiased, float32 products",
         lambda: cka_matrix(xs, ys, debiased=True)),
        ("repspace cka_matrix, biased, exact (float64)", lambda: cka_matrix(xs, ys, **exact)),
        ("repspace cka_matrix, debiased, exact (float64)",
         lambda: cka_matrix(xs, ys, debiased=True, **exact)),
        ("repspace cka_matrix, biased, float32, torch device=cpu",
         lambda: cka_matrix(xs, ys, device="cpu")),
        ("repspace cka_matrix, debiased, float32, torch device=cpu",
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
    cuda = torch.cuda.is_available()
    if cuda:
        gpu = {"device": "cuda"}
        centred = [torch.from_numpy(_centred64(M)).cuda() for M in (*xs, *ys)]
        for dtype in (torch.float32, torch.float64):
            on_gpu = [M.to(dtype) for M in centred]
            floors += floors_for(on_gpu[:n_layers], on_gpu[n_layers:], ", cuda",
                                 torch.cuda.synchronize)
        del centred, on_gpu
        methods += [
            ("repspace cka_matrix, biased, float32, device=cuda",
             lambda: cka_matrix(xs, ys, **gpu)),
            ("repspace cka_matrix, debiased, float32, device=cuda",
             lambda: cka_matrix(xs, ys, debiased=True, **gpu)),
            ("repspace cka_matrix, biased, exact (float64), device=cuda",
             lambda: cka_matrix(xs, ys, **gpu, **exact)),
            ("repspace cka_matrix, debiased, exact (float64), device=cuda",
             lambda: cka_matrix(xs, ys, debiased=True, **gpu, **exact)),
        ]
    seconds, results, peaks = time_interleaved(floors + methods, repeats, trace_memory=memory)
    rounds = dict.fromkeys(seconds, str(repeats))
    slow: list[tuple[str, Callable[[], Any]]] = []
    if (importlib.util.find_spec("ckatorch") is not None and not args.no_ckatorch
            and not args.quick):
        xs64, ys64 = [X.astype(np.float64) for X in xs], [Y.astype(np.float64) for Y in ys]
        slow = [("peer ckatorch cka_base per pair, biased",
                 lambda: ckatorch_matrix(xs64, ys64, False)),
                ("peer ckatorch cka_base per pair, debiased",
                 lambda: ckatorch_matrix(xs64, ys64, True))]
        more = time_interleaved(slow, 1, trace_memory=memory)
        for found, extra in zip((seconds, results, peaks), more, strict=True):
            found.update(extra)
        rounds.update(dict.fromkeys(more[0], "1*"))

    def floor_of(dtype: str, where: str) -> float:
        return min(seconds[name] for name, _ in floors
                   if f"({dtype}{where})" in name)

    references = {"biased": results["reference float64 per pair, biased"],
                  "debiased": results["reference float64 per pair, debiased"]}
    rows = []
    for name, _ in floors + methods + slow:
        where = ", cuda" if "cuda" in name else ""
        if name.startswith("floor"):
            diff = "-"
        elif name.startswith("reference"):
            diff = "(reference)"
        else:
            ref = references["debiased" if "debiased" in name else "biased"]
            diff = f"{np.abs(results[name] - ref).max():.1e}"
        rows.append([name, rounds[name], f"{seconds[name]:.3f}",
                     f"{seconds[name] / floor_of('float32', where):.2f}",
                     f"{seconds[name] / floor_of('float64', where):.2f}",
                     diff, f"{peaks[name]:.0f}" if memory else "-"])
    if not peer:
        rows.append(["peer anatome: not installed, skipped", *["-"] * 6])
    if not slow:
        rows.append(["peer ckatorch: not installed, --quick or --no-ckatorch, skipped",
                     *["-"] * 6])
    if not cuda:
        rows.append(["device=cuda: no GPU, skipped", *["-"] * 6])
    header = ["method", "rounds", "seconds (median)", "/ float32 floor", "/ float64 floor",
              "max |diff| vs float64 ref", "peak MiB (tracemalloc)"]
    print()
    print(table(header, rows))
    print("load average with the table (1, 5, 15 min): "
          + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    biased, debiased = references["biased"], references["debiased"]
    print(f"\nreference CKA values: biased in [{biased.min():.3f}, {biased.max():.3f}], "
          f"debiased in [{debiased.min():.3f}, {debiased.max():.3f}]")
    shifted_x, shifted_y = [X + 1e3 for X in xs], [Y + 1e3 for Y in ys]
    for device in (None, "cuda") if cuda else (None,):
        diffs = [np.abs(cka_matrix(shifted_x, shifted_y, debiased=deb, device=device)
                        - cka_matrix(shifted_x, shifted_y, debiased=deb, device=device, **exact)
                        ).max() for deb in (False, True)]
        print(f"large feature means (layers + 1e3), device={device or 'numpy'}: max |float32 "
              f"- exact| biased {diffs[0]:.1e}, debiased {diffs[1]:.1e}")
    print(f"load average at end {load_average()}")


if __name__ == "__main__":
    main()
