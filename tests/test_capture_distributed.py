"""Capture in several processes: two CPU ranks under torchrun (gloo), and shards captured as
separate jobs then merged, give exactly the store of a capture in one process."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from repspace.capture.shard import parse_shard, shard_span
from repspace.errors import InputError
from repspace.store import FeatureStore

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "REPSPACE_DEBUG": "1"}
N, BATCH = 40, 4  # windows of 32 samples: rank 0 takes 0-31, rank 1 takes 32-39


def _run(*args: str, torchrun: bool = False) -> str:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([sys.executable, *(launcher if torchrun else []), "-m", "repspace",
                           *args], env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _assert_same_store(a: Path, b: Path) -> None:
    with FeatureStore(a) as x, FeatureStore(b) as y:
        assert x.complete and y.complete
        assert x.sample_ids == y.sample_ids and len(x.sample_ids) == N
        for key in ("probe_fingerprint", "model_fingerprint", "settings", "layer_order",
                    "n_expected", "n_written", "tokens", "pooling"):
            assert x.meta[key] == y.meta[key], key
        assert "shard_of" not in y.meta
        for layer in x.layers:
            assert np.array_equal(x.pooled(layer), y.pooled(layer)), layer
            assert x.layer_attrs(layer) == y.layer_attrs(layer)
            tokens_x, tokens_y = x.tokens(layer), y.tokens(layer)
            assert len(tokens_x) == len(tokens_y) == N
            assert all(np.array_equal(s, t) for s, t in zip(tokens_x, tokens_y, strict=True))


def test_two_ranks_and_merged_shards_equal_one_process(base_pt: Path, tmp_path: Path) -> None:
    common = [str(base_pt), "--limit", str(N), "--batch-size", str(BATCH), "--tokens",
              "--device", "cpu"]
    one = tmp_path / "one.h5"
    _run("capture", *common, "--out", str(one))
    ranks = tmp_path / "ranks.h5"
    stdout = _run("capture", *common, "--out", str(ranks), torchrun=True)
    assert stdout.count("wrote") == 1  # rank 0 reports the merged store, rank 1 is quiet
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.h5", "ranks.h5"]
    _assert_same_store(one, ranks)

    for k in (1, 0):  # separate jobs, merged in any order
        _run("capture", *common, "--shard", f"{k}/2", "--out", str(tmp_path / f"part{k}.h5"))
    with FeatureStore(tmp_path / "part1.h5") as part:
        assert len(part.sample_ids) == N - 32
        assert part.meta["n_expected"] == N - 32
    merged = tmp_path / "merged.h5"
    _run("merge", str(merged), str(tmp_path / "part1.h5"), str(tmp_path / "part0.h5"))
    _assert_same_store(one, merged)


def test_shard_spans_are_whole_windows_covering_the_probe_once() -> None:
    for n, window, count in [(40, 32, 2), (100, 8, 3), (5, 8, 4), (64, 16, 4)]:
        spans = [shard_span(n, window, k, count) for k in range(count)]
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
        assert all(start % window == 0 for start, _ in spans)
    assert [shard_span(100, 8, k, 3) for k in range(3)] == [(0, 32), (32, 64), (64, 100)]
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "a/2", "1"):
        with pytest.raises(InputError, match="shard"):
            parse_shard(bad)
