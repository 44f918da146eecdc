"""Resolving layer specifications to canonical module paths.

Canonical names are the base model's module paths (PEFT wrappers removed). A spec is a preset,
an exact path, a glob (``*`` matches within one dotted component, ``**`` across components:
``encoder.layer.*.output``, ``**.mlp``), a regular expression (``re:...``), or a list of these.
``PATH:input`` names the input of a module instead of its output.

Presets:

``blocks``
    The outputs of the transformer blocks: the children of the largest ``ModuleList`` of
    identical modules.
``embeddings``
    The embedding output, i.e. the input of the first block (``<blocks>.0:input``), so it is the
    same point in every architecture.

Presets of vision-language models (see :data:`repspace.models.structure.PART_NAMES`):

``vision``
    The blocks of the vision tower (LLaVA ``model.vision_tower.encoder.layers.*``, Qwen2-VL
    ``model.visual.blocks.*``).
``connector``
    The output of the projector that maps image features into the language model (LLaVA
    ``model.multi_modal_projector``, Qwen2-VL ``model.visual.merger``); a connector with blocks
    gives its blocks, then its projection (BLIP-2 ``qformer.encoder.layer.*``,
    ``language_projection``).
``language``
    The blocks of the language model (``model.language_model.layers.*``); of an encoder-decoder
    language model (BLIP-2 with Flan-T5) the encoder's blocks, then the decoder's.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from torch import nn

from repspace.errors import InputError
from repspace.models.structure import PART_NAMES, block_stack, block_stacks, find_part, vlm_parts

INPUT_SUFFIX = ":input"


def _part(model: nn.Module, preset: str) -> str:
    root = find_part(model, preset)
    if root is None:
        raise InputError(f"layer preset {preset!r} needs a vision-language model: no module "
                         f"named {' or '.join(PART_NAMES[preset])} in {type(model).__name__}")
    return root


def _connector_layers(model: nn.Module) -> list[str]:
    """The connector's modules in model order, each one its blocks when it has a stack of them
    (BLIP-2's Q-Former), else itself (a projector)."""
    _part(model, "connector")
    roots = vlm_parts(model)["connector"]
    layers: list[str] = []
    for name, module in model.named_modules():
        if name not in roots:
            continue
        stacks = [n for n, m in module.named_modules() if isinstance(m, nn.ModuleList) and len(m)
                  and len({type(c) for c in m.children()}) == 1]
        if stacks:
            layers.extend(f"{name}.{stacks[0]}.{i}"
                          for i in range(len(module.get_submodule(stacks[0]))))
        else:
            layers.append(name)
    return layers


def preset_layers(model: nn.Module, preset: str) -> list[str]:
    """The module paths a preset names in ``model``."""
    if preset == "connector":
        return _connector_layers(model)
    if preset in ("vision", "language"):
        root = _part(model, preset)
        stacks = [f"{root}.{s}" for s in block_stacks(model.get_submodule(root))]
        return [f"{stack}.{i}" for stack in stacks
                for i in range(len(model.get_submodule(stack)))]
    stack = block_stack(model)
    count = len(model.get_submodule(stack))
    if preset == "blocks":
        return [f"{stack}.{i}" for i in range(count)]
    if preset == "embeddings":
        return [f"{stack}.0{INPUT_SUFFIX}"]
    raise InputError(f"unknown layer preset {preset!r}; presets: {', '.join(PRESETS)}")


PRESETS = ("blocks", "embeddings", "vision", "connector", "language")


def _closest(item: str, names: Sequence[str]) -> str:
    literal = re.split(r"[*?\[]", item.removeprefix("re:"), maxsplit=1)[0] or item
    close = difflib.get_close_matches(literal, names, n=3, cutoff=0.3)
    if not close:
        close = [n for n in names if n.startswith(literal.rsplit(".", 1)[0])][:3]
    return ", ".join(close) if close else ", ".join(list(names)[1:4])


def _glob(pattern: str) -> re.Pattern[str]:
    """A module-path glob as a regex: ``**`` spans dots, ``*`` and ``?`` do not."""
    parts = re.split(r"(\*\*|\*|\?|\[[^\]]*\])", pattern)
    wildcards = {"**": ".*", "*": "[^.]*", "?": "[^.]"}
    return re.compile("".join(
        wildcards.get(part) or (part if part.startswith("[") else re.escape(part))
        for part in parts))


def _match(item: str, names: list[str]) -> list[str]:
    base, suffix = (item[: -len(INPUT_SUFFIX)], INPUT_SUFFIX) if item.endswith(
        INPUT_SUFFIX) else (item, "")
    if base.startswith("re:"):
        try:
            pattern = re.compile(base[3:])
        except re.error as exc:
            raise InputError(f"invalid layer regular expression {base[3:]!r}: {exc}") from exc
        found = [n for n in names if pattern.fullmatch(n)]
    elif any(ch in base for ch in "*?["):
        pattern = _glob(base)
        found = [n for n in names if pattern.fullmatch(n)]
    else:
        found = [base] if base in names else []
    return [n + suffix for n in found]


def resolve_layers(model: nn.Module, spec: str | Sequence[str]) -> list[str]:
    """Canonical layer names selected by ``spec`` in ``model`` (in order, without repeats).

    ``spec`` may be a comma-separated string. A pattern that matches nothing is an error naming
    the closest module paths.
    """
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    items = [s for s in items if s]
    if not items:
        raise InputError("no layers given")
    names = [n for n, _ in model.named_modules() if n]
    resolved: list[str] = []
    for item in items:
        found = preset_layers(model, item) if item in PRESETS else _match(item, names)
        if not found:
            raise InputError(f"layer {item!r} matches no module; closest: "
                             f"{_closest(item, names)}")
        resolved.extend(n for n in found if n not in resolved)
    return resolved


def split_layer(name: str) -> tuple[str, bool]:
    """(module path, whether the input rather than the output is captured)."""
    if name.endswith(INPUT_SUFFIX):
        return name[: -len(INPUT_SUFFIX)], True
    return name, False
