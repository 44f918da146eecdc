"""Two CPU processes under torchrun (gloo) train the same parameters as one process with the
same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
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


def _torchrun(args, tmp_path, name, env):
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "repspace", "tune", *args, "--out", str(tmp_path / name)],
        env=env, capture_output=True, text=True, timeout=600)


def test_fsdp_two_processes_match_one_and_resume_from_shards(base_pt, task_files, tmp_path,
                                                            monkeypatch):
    """Full fine-tuning sharded over 2 gloo processes (FSDP2) trains the parameters of one
    process; a run killed after its first epoch resumes from its shards to the same end."""
    common = ["--method", "full", "--data", str(task_files[0]), "--eval", str(task_files[1]),
              "--epochs", "2", "--batch-size", "8", "--grad-accum", "2", "--max-length", "32",
              "--dropout", "0", "--device", "cpu", "--seed", "3", "--lr", "1e-4",
              "--sharding", "fsdp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REPSPACE_DEBUG": "1"}
    run = _torchrun([str(base_pt), *common], tmp_path, "fsdp.pt", env)
    assert run.returncode == 0, run.stderr[-3000:]
    single = tune(repspace.load_model(base_pt), "full", data=task_files[0],
                  eval_data=task_files[1], out=tmp_path / "one.pt", epochs=2, batch_size=8,
                  grad_accum=2, max_length=32, dropout=0.0, device="cpu", seed=3, lr=1e-4,
                  progress=False)
    two = torch.load(tmp_path / "fsdp.pt", weights_only=True)
    one = torch.load(single.checkpoint, weights_only=True)
    assert two["training"]["processes"] == 2 and two["training"]["sharding"] == "fsdp"
    assert set(two["state_dict"]) == set(one["state_dict"])
    base = torch.load(base_pt, weights_only=True)["state_dict"]
    moved = 0.0
    for key, value in one["state_dict"].items():
        torch.testing.assert_close(two["state_dict"][key], value, atol=1e-5, rtol=1e-4)
        moved = max(moved, (value - base[key.split("/", 1)[1]]).abs().max().item())
    assert moved > 1e-4  # the runs did train
    for key, value in one["head"].items():
        torch.testing.assert_close(two["head"][key], value, atol=1e-5, rtol=1e-4)
    evals = [h["eval_loss"] for h in two["training"]["history"]]
    assert evals == pytest.approx([h["eval_loss"] for h in one["training"]["history"]],
                                  abs=1e-4)
    assert not list(tmp_path.glob("fsdp.state*"))

    # killed once the first epoch's shards are saved; resumed from them
    kill = tmp_path / "sitecustomize.py"
    kill.write_text(KILL_AFTER_EPOCH)
    env_kill = {**env, "PYTHONPATH": os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])}
    cut = _torchrun([str(base_pt), *common], tmp_path, "cut.pt", {**env_kill, "KILL": "1"})
    assert cut.returncode != 0
    shards = list(tmp_path.glob("cut.state.shards.*"))
    assert (tmp_path / "cut.state.pt").is_file() and len(shards) == 1
    assert not (tmp_path / "cut.pt").exists()
    resumed = _torchrun([str(base_pt), *common, "--resume"], tmp_path, "cut.pt", env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = torch.load(tmp_path / "cut.pt", weights_only=True)
    for key, value in two["state_dict"].items():
        assert torch.equal(again["state_dict"][key], value), key
    assert not list(tmp_path.glob("cut.state*"))


#: A ``sitecustomize`` that makes every rank exit once epoch 0's state is saved (``KILL=1``).
KILL_AFTER_EPOCH = '''
import os

if os.environ.get("KILL") == "1":
    from repspace.tune import trainer

    real = trainer._save_state

    def save_then_die(setup, stage, epoch, step, *args):
        real(setup, stage, epoch, step, *args)
        if epoch == 1 and step == 0:
            setup.world.barrier()
            os._exit(3)

    trainer._save_state = save_then_die
'''
