"""Splitting a capture into shards: one per ``torchrun`` rank, or one per separate job.

A shard is a contiguous run of whole capture windows (see :data:`WINDOW_BATCHES`), so every
batch a shard runs is a batch an unsharded capture runs too: merged shards hold the same bits
as a capture in one process (same device and thread settings). Contiguous shards also make the
merge a plain concatenation in shard order (:func:`repspace.store.merge_stores`), and every
shard is itself a valid store of its samples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from repspace.errors import InputError
from repspace.probes import Probe

#: Capture runs the probe in windows of this many batches: within a window, samples are batched
#: shortest text first (less padding), and the window is written in probe order.
WINDOW_BATCHES = 8


def window_order(texts: Sequence[str]) -> list[int]:
    """The order capture runs a window's samples in: shortest text first (stable), so that
    batches of similar lengths carry little padding."""
    return sorted(range(len(texts)), key=lambda i: len(texts[i]))


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` (shard K of N, counted from 0) as ``(K, N)``."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise InputError(f"--shard expects K/N (shard K of N, from 0), got {text!r}") from None
    if not 0 <= index < count:
        raise InputError(f"--shard {text}: K must be between 0 and N - 1")
    return index, count


def shard_span(n: int, window: int, index: int, count: int) -> tuple[int, int]:
    """Samples ``[start, stop)`` of shard ``index`` of ``count`` over ``n`` samples: whole windows
    of ``window`` samples, contiguous, spread as evenly as the windows allow (may be empty)."""
    windows = -(-n // window)
    start = min(n, windows * index // count * window)
    stop = min(n, windows * (index + 1) // count * window)
    return start, stop


def shard_probe(probe: Probe, start: int, stop: int) -> Probe:
    """Samples ``start`` to ``stop - 1`` of ``probe`` (every per-sample field, images included)."""
    per_sample = {f.name: getattr(probe, f.name)[start:stop] for f in dataclasses.fields(probe)
                  if isinstance(getattr(probe, f.name), tuple)}
    return dataclasses.replace(probe, source=f"{probe.source}[{start}:{stop}]", **per_sample)


def shard_path(out: str | Path, rank: int) -> Path:
    """The store rank ``rank`` of a ``torchrun`` capture into ``x.h5`` writes: ``x.rank<k>.h5``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.rank{rank}{out.suffix}")
