"""Shared helpers of the benchmark scripts: interleaved timing, peak memory, tables, machine info.

Not a benchmark itself. The scripts run as ``python benchmarks/bench_*.py``, which puts this
folder on ``sys.path``.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any


def load_average() -> str:
    """The 1-minute load average, or ``n/a`` where the OS has none."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def machine_line() -> str:
    """One line naming the CPU count, Python, numpy's BLAS and its thread count."""
    parts = [f"{os.cpu_count()} CPUs", f"Python {platform.python_version()}"]
    try:
        import numpy as np

        parts.append(f"numpy {np.__version__}")
        from threadpoolctl import threadpool_info

        blas = {f"{pool['internal_api']} {pool['version']} ({pool['num_threads']} threads)"
                for pool in threadpool_info() if pool.get("user_api") == "blas"}
        parts.append("BLAS: " + " + ".join(sorted(blas)) if blas else "BLAS: unknown")
    except ImportError:
        pass
    return ", ".join(parts)


def time_interleaved(
    methods: Sequence[tuple[str, Callable[[], Any]]], repeats: int, *, trace_memory: bool = False
) -> tuple[dict[str, float], dict[str, Any], dict[str, float]]:
    """Median wall time of each method over ``repeats`` rounds, its last result and peak memory.

    The methods run round-robin (round 1: all methods, round 2: all methods, ...), so a change in
    background load hits every method alike instead of one.

    With ``trace_memory``, tracemalloc runs during the timed calls and the third dict holds each
    method's peak (MiB, largest over the rounds) of the memory it allocated above what was
    allocated when it was called; otherwise that dict is empty. tracemalloc sees numpy array
    buffers and Python objects, not BLAS work buffers nor torch's allocator. Its cost is per
    allocation, negligible next to the few large array allocations of numeric code.
    """
    times: dict[str, list[float]] = {name: [] for name, _ in methods}
    peaks: dict[str, float] = {}
    results: dict[str, Any] = {}
    if trace_memory:
        tracemalloc.start()
    try:
        for _ in range(repeats):
            for name, fn in methods:
                results.pop(name, None)
                if trace_memory:
                    tracemalloc.reset_peak()
                    before = tracemalloc.get_traced_memory()[0]
                start = time.perf_counter()
                results[name] = fn()
                times[name].append(time.perf_counter() - start)
                if trace_memory:
                    peak = (tracemalloc.get_traced_memory()[1] - before) / 2**20
                    peaks[name] = max(peaks.get(name, 0.0), peak)
    finally:
        if trace_memory:
            tracemalloc.stop()
    return {name: statistics.median(ts) for name, ts in times.items()}, results, peaks


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: left-aligned first column, right-aligned numbers."""
    widths = [max(len(str(cell)) for cell in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = (str(c) for c in cells)
        return "  ".join([first.ljust(widths[0]),
                          *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))])

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])
