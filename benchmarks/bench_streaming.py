"""Benchmark: streaming metrics over two 1,000,000-row feature stores, against one plain read.

What is measured
    Two feature stores (a "base" and a "tuned" model), each one layer of N = 1,000,000 samples
    x d = 1,024 float32 features (about 4 GB per store), written with ``repspace.StoreWriter``
    under ``--dir`` (default: a folder in /tmp) unless they are there already. The tuned layer is
    the base layer plus noise; the base layer has a shared low-rank part and non-zero means.

    - baseline: one plain read of both stores, chunk by chunk (``FeatureStore.pooled_block``,
      the reads streaming does), the data discarded;
    - floor: the float64 products streaming cannot avoid (X^T X, Y^T Y and X^T Y of every
      chunk, 4 N d^2 flops), on chunks already in memory: no reading, converting or centring;
    - ``repspace.stream_metrics``: linear CKA (biased and debiased), both singular spectra and
      effective ranks and the Procrustes distance, exact (``precision="float64"``, the mode
      the float64 floor is about; the default float32 products are measured by
      ``bench_cka.py``), in one pass over both stores.

    Each runs in a fresh child process (``--child``), so that its peak resident memory
    (``ru_maxrss``) is its own; the table also gives the resident memory right after the imports
    (numpy, torch, h5py: the same in both) and tracemalloc's peak of the numpy buffers.
    The two runs alternate for ``--repeats`` rounds and the table shows the median time.
    The page cache is not dropped (that needs root): when both stores fit in RAM the reads may
    come from memory, for the baseline and for streaming alike.

Goal (issue #6): peak memory <= 1 GiB and independent of N; time close to one read of the data
(on a CPU the float64 products, not the reading, set the pace: hence the floor row).

Run: ``nice python benchmarks/bench_streaming.py`` (stores: ~8 GB of disk, a few minutes to
write; ``--keep`` leaves them for the next run) or ``--quick`` (N = 100,000).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from _common import load_average, machine_line, table

from repspace import FeatureStore, StoreWriter, stream_metrics

LAYER = "layer"


def build_stores(folder: Path, n: int, d: int, batch: int = 32768) -> tuple[Path, Path]:
    """Write base.h5 and tuned.h5 (n x d float32 each) unless they already hold n rows."""
    paths = folder / "base.h5", folder / "tuned.h5"
    if all(_rows(p) == (n, d) for p in paths):
        return paths
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((32, d), dtype=np.float32)
    offset = 2 * rng.standard_normal(d, dtype=np.float32)
    meta = {"model_source": "synthetic", "probe_fingerprint": f"bench-{n}", "pooling": "mean",
            "settings": {}, "n_expected": n}
    attrs = {LAYER: {"module_path": LAYER, "dim": d, "token_selection": "all",
                     "modality": "text"}}
    writers = [StoreWriter(p, meta={**meta, "model_fingerprint": p.stem}, layers=attrs)
               for p in paths]
    start = time.perf_counter()
    for lo in range(0, n, batch):
        b = min(batch, n - lo)
        X = rng.standard_normal((b, d), dtype=np.float32)
        X += rng.standard_normal((b, 32), dtype=np.float32) @ mix + offset
        ids = [f"s{i}" for i in range(lo, lo + b)]
        writers[0].append(ids, {LAYER: X})
        X += 0.5 * rng.standard_normal((b, d), dtype=np.float32)
        writers[1].append(ids, {LAYER: X})
        print(f"\rwriting stores: {lo + b:,} / {n:,} rows", end="", flush=True)
    for w in writers:
        w.finish()
    print(f"\rwrote 2 stores of {n:,} x {d} in {time.perf_counter() - start:.0f} s")
    return paths


def _rows(path: Path) -> tuple[int, int] | None:
    if not path.exists():
        return None
    with FeatureStore(path) as store:
        return (len(store.sample_ids), store.pooled_block(LAYER, slice(0, 1)).shape[1])


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB: VmHWM on Linux (reset by exec, unlike
    ``ru_maxrss``, which would include the parent's memory at the fork), else ru_maxrss."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def floor_products(n: int, d: int, chunk_rows: int) -> None:
    """The float64 products streaming needs (X^T X, Y^T Y, X^T Y per chunk), on chunks that are
    already in memory: the arithmetic floor, without reading or centring."""
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((chunk_rows, d)), rng.standard_normal((chunk_rows, d))
    for lo in range(0, n, chunk_rows):
        b = min(chunk_rows, n - lo)
        X[:b].T @ X[:b]
        Y[:b].T @ Y[:b]
        X[:b].T @ Y[:b]


def child(kind: str, a: str, b: str, chunk_rows: int) -> None:
    """Run one timed method in this (fresh) process and print a JSON line."""
    rss_imports = peak_rss_mib()
    tracemalloc.start()
    start = time.perf_counter()
    out: dict = {}
    if kind == "floor":
        with FeatureStore(a) as store:
            n = int(store.meta["n_written"])
            d = store.pooled_block(LAYER, slice(0, 1)).shape[1]
        start = time.perf_counter()
        floor_products(n, d, chunk_rows)
    elif kind == "read":
        for path in (a, b):
            with FeatureStore(path) as store:
                n = int(store.meta["n_written"])
                for lo in range(0, n, chunk_rows):
                    store.pooled_block(LAYER, slice(lo, lo + chunk_rows))
    else:
        result = stream_metrics(a, b, layers=[LAYER], chunk_rows=chunk_rows, progress=False,
                                precision="float64")
        out = {"cka": float(result.cka[0, 0]), "cka_debiased": float(result.cka_debiased[0, 0]),
               "procrustes": result.procrustes[LAYER],
               "erank_base": result.effective_rank_a[LAYER],
               "erank_tuned": result.effective_rank_b[LAYER], "path": result.path}
    seconds = time.perf_counter() - start
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    rss = peak_rss_mib()
    print(json.dumps({"seconds": seconds, "rss_mib": rss, "rss_imports_mib": rss_imports,
                      "traced_mib": traced, **out}))


def run_child(kind: str, paths: tuple[Path, Path], chunk_rows: int) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--chunk-rows", str(chunk_rows),
           str(paths[0]), str(paths[1])]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 100,000 (about 1 minute)")
    parser.add_argument("--n", type=int, default=None, help="rows per store (default 1,000,000)")
    parser.add_argument("--d", type=int, default=1024, help="features (default 1024)")
    parser.add_argument("--chunk-rows", type=int, default=4096, help="rows per chunk")
    parser.add_argument("--repeats", type=int, default=1, help="timing rounds (default 1)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the stores go (default: a temporary folder in /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the stores afterwards")
    parser.add_argument("--child", choices=["floor", "read", "stream"], help=argparse.SUPPRESS)
    parser.add_argument("stores", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, *args.stores, args.chunk_rows)
        return
    n = args.n or (100_000 if args.quick else 1_000_000)
    folder = args.dir or Path(tempfile.gettempdir()) / "repspace-bench-streaming"
    folder.mkdir(parents=True, exist_ok=True)
    need = 2 * n * args.d * 4 * 1.6  # both stores, plus one store's segments while finishing
    free = shutil.disk_usage(folder).free
    if free < need and not all(_rows(p) == (n, args.d)
                               for p in (folder / "base.h5", folder / "tuned.h5")):
        fitting = int(n * free / need) // 1000 * 1000
        print(f"only {free / 2**30:.1f} GiB free in {folder}: N reduced from {n:,} to {fitting:,}")
        n = fitting

    print(f"streaming metrics: 2 stores x {n:,} rows x d = {args.d} float32 "
          f"({n * args.d * 4 / 2**30:.2f} GiB per store), chunks of {args.chunk_rows} rows")
    print(f"machine: {machine_line()}; load average at start {load_average()}")
    try:
        paths = build_stores(folder, n, args.d)
        size = sum(p.stat().st_size for p in paths) / 2**30
        runs: dict[str, list[dict]] = {"floor": [], "read": [], "stream": []}
        for _ in range(args.repeats):
            for kind in runs:
                runs[kind].append(run_child(kind, paths, args.chunk_rows))
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)
    seconds = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    names = {"floor": "floor: float64 products of the chunks, no I/O",
             "read": "plain read of both stores (baseline)",
             "stream": "repspace stream_metrics (CKA x2, spectra, eranks, Procrustes)"}
    rows = [[names[k], f"{seconds[k]:.1f}", f"{seconds[k] / seconds['read']:.2f}",
             f"{seconds[k] / seconds['floor']:.2f}",
             f"{n * 2 * args.d * 4 / 2**20 / seconds[k]:.0f}",
             f"{max(r['rss_mib'] for r in v):.0f}",
             f"{max(r['rss_imports_mib'] for r in v):.0f}",
             f"{max(r['traced_mib'] for r in v):.0f}"] for k, v in runs.items()]
    print()
    print(table(["method", f"seconds (median of {args.repeats})", "ratio to read",
                 "ratio to floor",
                 "MiB/s of float32 data", "peak RSS MiB", "RSS after imports MiB",
                 "tracemalloc peak MiB"], rows))
    last = runs["stream"][-1]
    print(f"\nstores on disk: {size:.2f} GiB; path: {last['path']}; CKA {last['cka']:.4f}, "
          f"debiased {last['cka_debiased']:.4f}, Procrustes {last['procrustes']:.4f}, "
          f"effective rank base {last['erank_base']:.1f}, tuned {last['erank_tuned']:.1f}")
    print(f"load average at end {load_average()}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
