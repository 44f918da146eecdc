"""Crash safety: captures and training killed with SIGKILL in a subprocess, at moments spread over
the run, resume to exactly the arrays and parameters of an uninterrupted run; stores are read by
several processes at once, and a store still being written is reported as incomplete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

import repspace
from repspace.errors import FormatError
from repspace.store import FeatureStore, partial_path, partial_progress

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "REPSPACE_DEBUG": "1"}
N = 48


def _capture_args(base_pt: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "repspace", "capture", str(base_pt), "--out", str(out),
            "--limit", str(N), "--batch-size", "2", "--tokens", "--device", "cpu", *extra]


def _run(args: list[str]) -> None:
    done = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def _kill_when(args: list[str], ready, timeout: float = 120.0) -> None:
    """Start ``args`` and SIGKILL it as soon as ``ready()`` is true (it must not finish first)."""
    process = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "timed out waiting for the moment to kill"
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL


def _contents(path: Path) -> dict[str, list[np.ndarray]]:
    with FeatureStore(path) as store:
        assert store.complete and store.meta["n_written"] == N
        out = {"ids": [np.array(store.sample_ids)]}
        for layer in store.layers:
            out[f"{layer}/pooled"] = [store.pooled(layer)]
            out[f"{layer}/tokens"] = store.tokens(layer)
        return out


def _assert_equal_stores(a: Path, b: Path) -> None:
    left, right = _contents(a), _contents(b)
    assert left.keys() == right.keys()
    for key, arrays in left.items():
        assert len(arrays) == len(right[key]), key
        for x, y in zip(arrays, right[key], strict=True):
            assert np.array_equal(x, y), key  # exactly the same bits


@pytest.fixture(scope="module")
def live(base_pt: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    """An uninterrupted capture, and what a reader polling its store all along saw."""
    out = tmp_path_factory.mktemp("live") / "whole.h5"
    process = subprocess.Popen(_capture_args(base_pt, out), env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    seen = set()
    try:
        while process.poll() is None:
            try:
                with FeatureStore(out) as store:
                    assert store.complete and len(store.sample_ids) == N
                    seen.add("complete")
            except FormatError as exc:  # anything else fails the test
                if "not found" in str(exc):
                    assert not seen, exc  # only before the capture creates its folder
                    continue
                assert "incomplete" in str(exc), exc
                assert "complete" not in seen  # once complete, it stays complete
                seen.add("incomplete")
            time.sleep(0.002)
    finally:
        process.kill()
        _, err = process.communicate()
    assert process.returncode == 0, err[-2000:]
    return out, seen


def test_a_store_being_written_reads_as_incomplete_never_as_a_crash(
        live: tuple[Path, set[str]]) -> None:
    out, seen = live
    assert "incomplete" in seen
    with FeatureStore(out) as store:
        assert store.complete


def test_killed_captures_resume_to_the_same_arrays(base_pt: Path, base, probe,
                                                   live: tuple[Path, set[str]],
                                                   tmp_path: Path) -> None:
    whole = live[0]
    cut = tmp_path / "cut.h5"
    args = _capture_args(base_pt, cut)
    # 1: killed after the first window (16 samples) is on disk.
    _kill_when(args, lambda: (partial_progress(cut) or (0, 0))[0] >= 16)
    with pytest.raises(FormatError, match=rf"incomplete \((16|32) of {N} samples") as info:
        FeatureStore(cut)
    assert "--resume" in str(info.value)
    written = partial_progress(cut)[0]
    # 2: resumed, then killed at once when it writes again: mid-window, mid-segment-write or
    # mid-assembly, whichever comes first.
    _kill_when([*args, "--resume"], lambda: any(
        p.name != "header.json" and int(p.name[17:29] if p.name.startswith("seg-") else 0)
        > written for p in partial_path(cut).iterdir()) or cut.with_name("cut.h5.tmp").exists())
    with pytest.raises(FormatError, match="incomplete"):
        FeatureStore(cut)
    _run([*args, "--resume"])
    assert not partial_path(cut).exists()
    _assert_equal_stores(whole, cut)
    # Resuming a complete store keeps it as it is.
    before = cut.stat().st_mtime_ns
    assert repspace.capture(base, probe, out=cut, tokens=True, batch_size=2, device="cpu",
                            resume=True, progress=False) == cut
    assert cut.stat().st_mtime_ns == before


def _read_all(path: str) -> tuple[list[str], dict[str, float]]:
    """Read every array of a store, several times over, in another process."""
    sums: dict[str, float] = {}
    for _ in range(5):
        with FeatureStore(path) as store:
            ids = store.sample_ids
            for layer in store.layers:
                sums[layer] = float(store.pooled(layer).astype(np.float64).sum()) + float(
                    sum(t.astype(np.float64).sum() for t in store.tokens(layer)))
    return ids, sums


def test_several_processes_read_one_store_at_once(live: tuple[Path, set[str]]) -> None:
    out = live[0]
    with FeatureStore(out) as held:  # a reader holds the store open all along
        want = _read_all(str(out))
        with ProcessPoolExecutor(3) as pool:
            results = list(pool.map(_read_all, [str(out)] * 3))
        assert len(held.sample_ids) == N
    assert results == [want] * 3
    assert len(want[1]) == 6 and all(np.isfinite(v) and v != 0 for v in want[1].values())


def _tune_args(base_pt: Path, task_files: tuple[Path, Path], out: Path) -> list[str]:
    return [sys.executable, "-m", "repspace", "tune", str(base_pt), "--method", "lora",
            "--data", str(task_files[0]), "--epochs", "2", "--batch-size", "8",
            "--max-length", "32", "--save-every", "2", "--device", "cpu", "--seed", "3",
            "--out", str(out)]


def _logged_steps(log: Path) -> list[tuple[int, int]]:
    import json

    if not log.exists():
        return []
    records = []
    for line in log.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # the line being written
            continue
    return [(r["epoch"], r["step"]) for r in records if "step" in r and "loss" in r]


def test_training_killed_mid_epoch_resumes_to_the_same_parameters(
        base_pt: Path, task_files: tuple[Path, Path], tmp_path: Path) -> None:
    """48 examples, batch 8: 6 steps an epoch, a saved state every 2 steps. The run is killed
    in its second epoch after step 3 (so between saved states), resumed, and must end with the
    bits of an uninterrupted run."""
    whole = tmp_path / "whole.pt"
    _run(_tune_args(base_pt, task_files, whole))
    cut = tmp_path / "cut.pt"
    log = tmp_path / "cut.log.jsonl"
    _kill_when(_tune_args(base_pt, task_files, cut), lambda: (1, 3) in _logged_steps(log))
    assert not cut.exists()
    state = torch.load(tmp_path / "cut.state.pt", weights_only=True)
    assert (state["epoch"], state["step"]) in {(1, 2), (1, 4)}  # mid-epoch, not at its end
    _run([*_tune_args(base_pt, task_files, cut), "--resume"])
    want = torch.load(whole, weights_only=True)
    got = torch.load(cut, weights_only=True)
    moved = 0.0
    for part in ("state_dict", "head"):
        assert want[part].keys() == got[part].keys()
        for key, value in want[part].items():
            assert torch.equal(got[part][key], value), key
            if "lora_B" in key:
                moved = max(moved, value.abs().max().item())
    assert moved > 0  # training did change the parameters
    assert not (tmp_path / "cut.state.pt").exists()
