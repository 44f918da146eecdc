"""Prompt learning through PEFT: prefix tuning (Li & Liang 2021, "Prefix-Tuning: Optimizing
Continuous Prompts for Generation"), prompt tuning (Lester et al. 2021, "The Power of Scale
for Parameter-Efficient Prompt Tuning") and P-tuning (Liu et al. 2021, "GPT Understands,
Too").

P-tuning trains T virtual-token embeddings (T x d) and a prompt encoder that maps them to the
prepended inputs: for the MLP encoder (hidden h) ``T*d + (d*h + h) + (h*h + h) + (h*d + d)``
entries. The checkpoint holds the encoder's output (T x d), as PEFT saves it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from repspace.tune.methods.base import Built, Method, register, task_type, with_included, wrap_peft
from repspace.tune.methods.options import (
    MethodOptions,
    PrefixOptions,
    PromptOptions,
    PtuningOptions,
)

if TYPE_CHECKING:
    import peft
    from torch import nn


def prefix_config(o: MethodOptions, task: str) -> peft.PrefixTuningConfig:
    import peft

    po = o[PrefixOptions]
    return peft.PrefixTuningConfig(task_type=task_type(task), num_virtual_tokens=po.tokens,
                                   prefix_projection=po.projection, encoder_hidden_size=po.hidden)


def build_prefix(model: nn.Module, o: MethodOptions, task: str) -> Built:
    return with_included(model, o, lambda: wrap_peft(model, prefix_config(o, task)))


def build_prompt(model: nn.Module, o: MethodOptions, task: str) -> Built:
    import peft

    config = peft.PromptTuningConfig(task_type=task_type(task),
                                     num_virtual_tokens=o[PromptOptions].tokens)
    return with_included(model, o, lambda: wrap_peft(model, config))


def build_ptuning(model: nn.Module, o: MethodOptions, task: str) -> Built:
    import peft

    po = o[PtuningOptions]
    config = peft.PromptEncoderConfig(task_type=task_type(task), num_virtual_tokens=po.tokens,
                                      encoder_reparameterization_type=po.encoder.upper(),
                                      encoder_hidden_size=po.hidden, encoder_num_layers=po.layers)
    return with_included(model, o, lambda: wrap_peft(model, config))


register(Method("prefix", "additive",
                "prefix tuning (PEFT): trained keys/values prepended in every layer", 5e-3,
                build_prefix, (PrefixOptions,)), "prefix-tuning", "prefixtuning")
register(Method("prompt", "additive",
                "prompt tuning (PEFT): trained input embeddings prepended", 3e-2, build_prompt,
                (PromptOptions,)), "prompt-tuning", "prompttuning")
register(Method("p-tuning", "additive",
                "P-tuning (PEFT): prepended embeddings produced by a trained prompt encoder",
                1e-2, build_ptuning, (PtuningOptions,)), "ptuning", "prompt-encoder")
