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


def block_stacks(model: nn.Module) -> list[str]:
    """The module paths of the block stacks of a (language) model: of an encoder-decoder
    (``config.is_encoder_decoder``, e.g. T5) the encoder's then the decoder's, else the one of
    :func:`block_stack`."""
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        names = {id(m): n for n, m in model.named_modules()}
        found = []
        for side in (model.get_encoder(), model.get_decoder()):
            root = names[id(side)]
            found.append(f"{root}.{block_stack(side)}" if root else block_stack(side))
        return found
    return [block_stack(model)]


#: Last names of the modules (or parameters) that make up the parts of vision-language models,
#: in ``transformers`` 5 naming: LLaVA / LLaVA-NeXT / LLaVA-OneVision ``model.{vision_tower,
#: multi_modal_projector, language_model}``, Qwen2-VL / Qwen2.5-VL ``model.visual`` (with
#: ``visual.merger``) and ``model.language_model``, BLIP-2 / InstructBLIP ``vision_model``,
#: ``{query_tokens, qformer, language_projection}`` (the Q-Former and its projection are the
#: connector) and ``language_model`` (a causal or an encoder-decoder language model with its
#: head), Idefics3 / SmolVLM ``model.{vision_model, connector, text_model}``. A connector inside
#: the vision tower (Qwen's ``visual.merger``) belongs to the connector.
PART_NAMES = {
    "vision": ("vision_tower", "visual", "vision_model", "vision_encoder"),
    "connector": ("multi_modal_projector", "merger", "mm_projector", "connector", "qformer",
                  "query_tokens", "language_projection"),
    "language": ("language_model", "text_model"),
}
#: Order in which a name is assigned to a part (inner parts first; the language-model head,
#: ``head``, belongs to no part).
_PRECEDENCE = ("head", "connector", "vision", "language")


def _within(name: str, root: str) -> bool:
    return name == root or name.startswith(root + ".")


def vlm_parts(model: nn.Module) -> dict[str, list[str]]:
    """The parts of a vision-language model: ``{"vision": [...], "connector": [...],
    "language": [...]}``, each the outermost module or parameter paths whose last name is one of
    :data:`PART_NAMES`, and ``"head"``: the path of the language-model head (the output
    embeddings), which belongs to no part even where it lies inside the language model
    (BLIP-2's ``language_model.lm_head``). Empty for a model without both a language model and a
    vision tower (a text model)."""
    names = [n for n, _ in model.named_modules() if n] + [n for n, _ in model.named_parameters()]
    parts: dict[str, list[str]] = {}
    for part, last in PART_NAMES.items():
        found = sorted({n for n in names if n.rsplit(".", 1)[-1] in last}, key=len)
        parts[part] = [n for i, n in enumerate(found)
                       if not any(_within(n, outer) for outer in found[:i])]
    if not parts["language"] or not parts["vision"]:
        return {}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    parts["head"] = [n for n, m in model.named_modules() if head is not None and m is head][:1]
    return parts


def part_of(name: str, parts: dict[str, list[str]]) -> str | None:
    """The part (``connector``, ``vision`` or ``language``, see :func:`vlm_parts`) that the
    module or parameter ``name`` lies in, or ``None`` (the language-model head, or a text
    model)."""
    for part in _PRECEDENCE:
        if any(_within(name, root) for root in parts.get(part, [])):
            return None if part == "head" else part
    return None


def find_part(model: nn.Module, part: str) -> str | None:
    """The module path of a vision-language model's ``part``: the shortest of
    :func:`vlm_parts`, or ``None``."""
    return min(vlm_parts(model).get(part, []), key=lambda n: n.count("."), default=None)
