"""Finding the parts of a model by structure (not by architecture name)."""

from __future__ import annotations

from torch import nn

from repspace.errors import InputError


def block_stack(model: nn.Module) -> str:
    """The module path of the transformer blocks: the largest ``ModuleList`` (by parameter
    count) of two or more modules of one class."""
    best, best_size = None, 0
    for name, module in model.named_modules():
        children = list(module.children()) if isinstance(module, nn.ModuleList) else []
        if len(children) < 2 or len({type(c) for c in children}) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        if size > best_size:
            best, best_size = name, size
    if best is None:
        raise InputError("no stack of transformer blocks found in this model: name the layers "
                         "explicitly (e.g. --layers 'encoder.layer.*')")
    return best
