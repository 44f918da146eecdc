"""Two CPU processes under torchrun (gloo) train the same parameters as one process with the
same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

import repspace
from repspace.tune import tune


def test_two_processes_match_one(base_pt, task_files, tmp_path):
    common = ["--method", "lora", "--data", str(task_files[0]), "--epochs", "1",
              "--batch-size", "8", "--grad-accum", "2", "--max-length", "32", "--dropout", "0",
              "--device", "cpu", "--seed", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REPSPACE_DEBUG": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "repspace", "tune", str(base_pt), *common, "--out", str(tmp_path / "ddp.pt")],
        env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    single = tune(repspace.load_model(base_pt), "lora", data=task_files[0],
                  out=tmp_path / "one.pt", epochs=1, batch_size=8, grad_accum=2, max_length=32,
                  dropout=0.0, device="cpu", seed=3, progress=False)
    two = torch.load(tmp_path / "ddp.pt", weights_only=True)
    one = torch.load(single.checkpoint, weights_only=True)
    assert two["training"]["processes"] == 2 and one["training"]["processes"] == 1
    assert set(two["state_dict"]) == set(one["state_dict"])
    moved = 0.0
    for key, value in one["state_dict"].items():
        torch.testing.assert_close(two["state_dict"][key], value, atol=1e-5, rtol=1e-4)
        if "lora_B" in key:
            moved = max(moved, value.abs().max().item())
    assert moved > 1e-4  # the runs did train
    for key, value in one["head"].items():
        torch.testing.assert_close(two["head"][key], value, atol=1e-5, rtol=1e-4)
