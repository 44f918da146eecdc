"""3-D rope positions of Qwen2-VL-like models under prompt learning (prefix or prompt tuning).

Qwen2-VL (and its relatives) give every token three rope positions (time, height, width) that
``get_rope_index`` derives from ``input_ids``, ``mm_token_type_ids``, the image grids and the
attention mask. A PEFT prompt-learning wrapper breaks that computation:

prefix tuning
    passes a cache already holding ``P`` prefix keys/values and an attention mask widened by
    ``P`` ones at the front: the model calls ``get_rope_index`` with a mask that no longer fits
    ``input_ids`` (a shape error), or, once ``rope_deltas`` is cached, builds 1-D text positions
    from the widened mask and drops the image layout.
prompt tuning
    passes ``inputs_embeds`` with ``P`` virtual tokens in front and no ``input_ids``: the model
    silently falls back to plain 1-D positions for the image tokens.

:func:`attach_prompt_positions` registers a forward pre-hook on the multimodal model (the module
with ``get_rope_index``) that computes the positions on the ORIGINAL mask (the last ``L``
columns) and shifts them by ``P``, as a text model's positions shift under a prefix: the real
tokens get ``base positions + P`` in all three dimensions; prompt tuning's virtual tokens get
``0 .. P-1``. Text-only batches get ``P .. P+L-1`` (prefix) or ``0 .. P+L-1`` (prompt).

The hook acts only on the first forward of a sequence (for a prefix: when the attention mask is
the input's length plus ``P``); decoding steps after it are left to the model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

KINDS = ("prefix", "prompt")


class PromptPositions:
    """Forward pre-hook (with kwargs) computing 3-D rope positions under ``virtual`` prompt
    tokens of ``kind`` (``"prefix"`` or ``"prompt"``). Picklable, so deep copies keep it."""

    def __init__(self, virtual: int, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        self.virtual = int(virtual)
        self.kind = kind

    def _lengths(self, kwargs: dict[str, Any]) -> tuple[int, int] | None:
        """(batch, real length) when this forward is the first one of prompted sequences."""
        mask = kwargs.get("attention_mask")
        if kwargs.get("position_ids") is not None or mask is None or mask.dim() != 2:
            return None
        p = self.virtual
        if self.kind == "prefix":
            # The first forward of a prefixed sequence is told by shapes alone: the mask covers
            # the P prefix positions and the L real tokens. Later decoding steps feed one token
            # against a mask of P + L + steps. Reading the cache instead would depend on the name
            # of a private keyword argument (``past_key_values``, ``cache`` from 5.24).
            ids = kwargs.get("input_ids")
            if ids is None:
                return None
            length = ids.shape[1]
        else:
            embeds = kwargs.get("inputs_embeds")
            if kwargs.get("input_ids") is not None or embeds is None:
                return None
            length = embeds.shape[1] - p
        return (mask.shape[0], length) if mask.shape[1] == length + p else None

    def __call__(self, module: nn.Module, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        lengths = self._lengths(kwargs)
        if lengths is None:
            return None
        batch, length = lengths
        p, mask = self.virtual, kwargs["attention_mask"]
        grids = {k: kwargs.get(k) for k in ("image_grid_thw", "video_grid_thw")}
        types = kwargs.get("mm_token_type_ids")
        if types is not None and any(g is not None for g in grids.values()):
            types = types[:, -length:]
            # get_rope_index reads input_ids only for their shape and device
            positions, _ = module.get_rope_index(torch.zeros_like(types), types,
                                                 attention_mask=mask[:, p:], **grids)
            positions = positions + p
        else:
            positions = torch.arange(p, p + length, device=mask.device).view(1, 1, -1)
            positions = positions.expand(3, batch, -1)
        if self.kind == "prompt":
            virtual = torch.arange(p, device=mask.device).view(1, 1, -1).expand(3, batch, -1)
            positions = torch.cat([virtual, positions.to(virtual.dtype)], dim=2)
        kwargs["position_ids"] = positions
        return args, kwargs


def attach_prompt_positions(model: nn.Module, virtual: int, kind: str) -> int:
    """Register :class:`PromptPositions` on every module of ``model`` that computes 3-D rope
    positions (has ``get_rope_index`` and a ``language_model``); returns how many."""
    count = 0
    for module in model.modules():
        if callable(getattr(module, "get_rope_index", None)) and hasattr(module,
                                                                         "language_model"):
            module.register_forward_pre_hook(PromptPositions(virtual, kind), with_kwargs=True)
            count += 1
    return count
