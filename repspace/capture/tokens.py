"""Token rules: which positions of a hidden sequence are real input tokens, and pooling.

Metrics see real input tokens only: padding is masked with the attention mask and virtual tokens
that prompt tuning prepends are cut off, so a tuned model's positions align one to one with its
base's. Prefix tuning adds keys and values only and leaves hidden sequences as they are.
"""

from __future__ import annotations

import torch

from repspace.errors import InputError

POOLINGS = ("mean", "first", "last")


def real_positions(hidden: torch.Tensor, mask: torch.Tensor, virtual: int,
                   layer: str) -> torch.Tensor:
    """``hidden`` (B, T', d) cut to the T input positions of ``mask`` (B, T)."""
    length = mask.shape[1]
    if hidden.shape[1] == length + virtual:
        return hidden[:, virtual:]
    if hidden.shape[1] == length:
        return hidden
    raise InputError(f"layer {layer}: output has {hidden.shape[1]} positions but the input has "
                     f"{length} tokens (+{virtual} virtual): not a token sequence")


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool (B, T, d) over the real tokens of ``mask`` (B, T): mean, first or last real token."""
    weights = mask.to(hidden.dtype)
    if pooling == "mean":
        return (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)
    if pooling == "first":
        index = weights.argmax(1)
    elif pooling == "last":
        index = hidden.shape[1] - 1 - weights.flip(1).argmax(1)
    else:
        raise InputError(f"unknown pooling {pooling!r}; choose from {', '.join(POOLINGS)}")
    return hidden[torch.arange(hidden.shape[0]), index]


def without_first(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` (B, T) without each sample's first real token (the attention sink of decoder
    language models: Sun et al. 2024, "Massive Activations in Large Language Models")."""
    if (mask.sum(1) < 2).any():
        raise InputError("skip_first needs at least 2 tokens in every sample; a sample of the "
                         "probe has 1 (drop it or capture without skip_first)")
    kept = mask.clone()
    kept[torch.arange(mask.shape[0]), mask.argmax(1)] = 0
    return kept


def split_tokens(hidden: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """The (L_i, d) real-token matrix of every sample."""
    keep = mask.bool()
    return [h[k] for h, k in zip(hidden, keep, strict=True)]
