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


#: Attribute names of the parts of vision-language models, in ``transformers`` 5 naming:
#: LLaVA / LLaVA-NeXT ``model.{vision_tower, multi_modal_projector, language_model}``,
#: Qwen2-VL / Qwen2.5-VL ``model.visual`` (with ``visual.merger``) and ``model.language_model``.
PART_NAMES = {
    "vision": ("vision_tower", "visual", "vision_model", "vision_encoder"),
    "connector": ("multi_modal_projector", "merger", "mm_projector", "connector"),
    "language": ("language_model", "text_model"),
}


def find_part(model: nn.Module, part: str) -> str | None:
    """The module path of a vision-language model's ``part`` (``vision``, ``connector`` or
    ``language``; see :data:`PART_NAMES`): the shortest matching path, or ``None``."""
    names = PART_NAMES[part]
    found = [name for name, _ in model.named_modules() if name.rsplit(".", 1)[-1] in names]
    return min(found, key=lambda name: name.count("."), default=None)


def part_of(model: nn.Module, path: str) -> str:
    """Which part of ``model`` the module ``path`` belongs to: ``vision``, ``connector`` or
    ``language`` (anything outside the vision tower and the connector)."""
    for part in ("connector", "vision"):
        root = find_part(model, part)
        if root is not None and (path == root or path.startswith(root + ".")):
            return part
    return "language"
