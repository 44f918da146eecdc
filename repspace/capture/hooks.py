"""Forward hooks that collect layer outputs (or inputs) and are always removed afterwards."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from repspace.capture.layers import split_layer


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


@contextmanager
def collect(model: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, every forward of ``model`` fills the yielded dict with
    ``layer -> tensor`` (detached, float32, on the CPU). Hooks are removed on exit, also when the
    forward raises."""
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def keep(name: str, value: Any) -> None:
        tensor = _first_tensor(value)
        if tensor is not None:
            captured[name] = tensor.detach().to("cpu", torch.float32)

    try:
        for name in layers:
            path, use_input = split_layer(name)
            module = model.get_submodule(path)
            if use_input:
                handles.append(module.register_forward_pre_hook(
                    lambda _m, args, kwargs, name=name: keep(
                        name, args if args else kwargs.get("hidden_states", kwargs)),
                    with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(
                    lambda _m, _args, output, name=name: keep(name, output)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()
