"""Finding the parts of a model by structure (not by architecture name)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from repspace.errors import InputError

if TYPE_CHECKING:
    from torch import nn


def block_stack(model: nn.Module) -> str:
    """The module path of the transformer blocks: the largest ``ModuleList`` (by parameter
    count) of two or more modules of one class."""
    from torch import nn

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


#: Last names of the modules (or parameters) that make up the parts of vision-language models,
#: in ``transformers`` 5 naming: LLaVA / LLaVA-NeXT ``model.{vision_tower, multi_modal_projector,
#: language_model}``, Qwen2-VL / Qwen2.5-VL ``model.visual`` (with ``visual.merger``) and
#: ``model.language_model``. A connector inside the vision tower (Qwen's ``visual.merger``)
#: belongs to the connector.
PART_NAMES = {
    "vision": ("vision_tower", "visual", "vision_model", "vision_encoder"),
    "connector": ("multi_modal_projector", "merger", "mm_projector", "connector"),
    "language": ("language_model", "text_model"),
}
#: Order in which a name is assigned to a part (inner parts first).
_PRECEDENCE = ("connector", "vision", "language")


def _within(name: str, root: str) -> bool:
    return name == root or name.startswith(root + ".")


def vlm_parts(model: nn.Module) -> dict[str, list[str]]:
    """The parts of a vision-language model: ``{"vision": [...], "connector": [...],
    "language": [...]}``, each the outermost module or parameter paths whose last name is one of
    :data:`PART_NAMES` (``language`` without the language-model head). Empty for a model
    without both a language model and a vision tower (a text model)."""
    names = [n for n, _ in model.named_modules() if n] + [n for n, _ in model.named_parameters()]
    parts: dict[str, list[str]] = {}
    for part, last in PART_NAMES.items():
        found = sorted({n for n in names if n.rsplit(".", 1)[-1] in last}, key=len)
        parts[part] = [n for i, n in enumerate(found)
                       if not any(_within(n, outer) for outer in found[:i])]
    if not parts["language"] or not parts["vision"]:
        return {}
    return parts


def part_of(name: str, parts: dict[str, list[str]]) -> str | None:
    """The part (``connector``, ``vision`` or ``language``, see :func:`vlm_parts`) that the
    module or parameter ``name`` lies in, or ``None`` (the language-model head, or a text
    model)."""
    for part in _PRECEDENCE:
        if any(_within(name, root) for root in parts.get(part, [])):
            return part
    return None


def find_part(model: nn.Module, part: str) -> str | None:
    """The module path of a vision-language model's ``part``: the shortest of
    :func:`vlm_parts`, or ``None``."""
    return min(vlm_parts(model).get(part, []), key=lambda n: n.count("."), default=None)
