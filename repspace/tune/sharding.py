"""Sharded training with PyTorch FSDP2 (``torch.distributed.fsdp.fully_shard``) under ``torchrun``.

Every transformer block (each module of a ``ModuleList`` of two or more modules of one class)
becomes one FSDP unit and the task model the root unit, so each of the N processes holds 1/N of
the parameters, gradients and AdamW states, and a block's full weights exist only while it runs
(all-gathered before its forward and backward, gradients reduce-scattered after). On CUDA the
weights are gathered in bf16 and gradients reduced in float32; on the CPU (gloo) everything stays
float32, so a 2-process run trains the parameters of a 1-process run to rounding.

The resumable state of a sharded run is a ``torch.distributed.checkpoint`` folder (each process
writes its own shards) named by the state file.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: Folders of sharded resumable state: ``<out stem>.state.shards.<stage>-<epoch>-<step>``.
SHARDS = ".state.shards."


def units(model: nn.Module) -> list[nn.Module]:
    """The modules that become FSDP units: the members of every ``ModuleList`` of two or more
    modules of one class (transformer blocks, of the language model and of a vision tower),
    outermost first, none inside another."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        children = list(module.named_children()) if isinstance(module, nn.ModuleList) else []
        if len(children) < 2 or len({type(c) for _, c in children}) != 1:
            continue
        for child, block in children:
            path = f"{name}.{child}" if name else child
            if not any(path.startswith(outer + ".") for outer, _ in found):
                found.append((path, block))
    return [block for _, block in found]


def shard(runner: nn.Module, device: torch.device, size: int) -> nn.Module:
    """Apply ``fully_shard`` to each of :func:`units` and then to ``runner`` (in place), over a
    one-dimensional mesh of the ``size`` processes; the shards move to ``device``."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (size,))
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if device.type == "cuda" else MixedPrecisionPolicy())
    for block in units(runner):
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(runner, mesh=mesh, mp_policy=policy)
    return runner


def _options(**extra: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(ignore_frozen_params=True, **extra)


def full_trainable(runner: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters of a sharded ``runner``, gathered whole onto the CPU of rank 0
    (empty on the other ranks; every rank must call it)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(runner, options=_options(full_state_dict=True, cpu_offload=True))


def save_shards(runner: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Write each process's shards of the trainable parameters and of the optimizer state to
    ``folder`` (every rank must call it)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(runner, optimizer, options=_options())
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(folder))


def load_shards(runner: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Read the shards :func:`save_shards` wrote into ``runner`` and ``optimizer``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(runner, optimizer, options=_options())
    state = {"model": model_state, "optimizer": optim_state}
    # parameters that never had a gradient (BERT's unused pooler) have no saved AdamW state;
    # get_state_dict gives every parameter one, which those keep (AdamW skips them anyway)
    dcp.load(state, checkpoint_id=str(folder),
             planner=DefaultLoadPlanner(allow_partial_load=True))
    set_state_dict(runner, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optimizer"], options=_options())


def remove_shards(state_path: Path, keep: str | None = None) -> None:
    """Delete the shard folders of ``state_path`` but ``keep``."""
    stem = state_path.name.removesuffix(".state.pt")
    for folder in state_path.parent.glob(f"{stem}{SHARDS}*"):
        if folder.name != keep:
            shutil.rmtree(folder, ignore_errors=True)


def local(value: Any) -> Any:
    """A tensor as a plain tensor: the whole value of a DTensor (a collective), else itself."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value
