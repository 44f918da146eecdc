"""Prompt learning through PEFT: prefix tuning (Li & Liang 2021, "Prefix-Tuning: Optimizing
Continuous Prompts for Generation"), prompt tuning (Lester et al. 2021, "The Power of Scale
for Parameter-Efficient Prompt Tuning") and P-tuning (Liu et al. 2021, "GPT Understands,
Too").

P-tuning trains T virtual-token embeddings (T x d) and a prompt encoder that maps them to the
prepended inputs: for the MLP encoder (hidden h) ``T*d + (d*h + h) + (h*h + h) + (h*d + d)``
entries. The checkpoint holds the encoder's output (T x d), as PEFT saves it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from repspace.errors import InputError
from repspace.tune.methods.base import Built, Method, register, task_type, with_included, wrap_peft
from repspace.tune.methods.options import (
    MethodOptions,
    PrefixOptions,
    PromptOptions,
    PtuningOptions,
)

if TYPE_CHECKING:
    import peft
    import torch
    from torch import nn


def prefix_config(o: MethodOptions, task: str) -> peft.PrefixTuningConfig:
    import peft

    po = o[PrefixOptions]
    return peft.PrefixTuningConfig(task_type=task_type(task), num_virtual_tokens=po.tokens,
                                   prefix_projection=po.projection, encoder_hidden_size=po.hidden)


def init_prefix_from_activations(peft_model: peft.PeftModel, token_ids: torch.Tensor) -> None:
    """Set a PEFT prefix to the keys and values the base decoder computes for ``token_ids``
    (one sequence of ``num_virtual_tokens`` ids), so that the prefixed model on an input x
    equals the base model on ``token_ids`` followed by x (Li & Liang 2021 report that a
    prefix initialised from activations of real words trains more stably than a random one).

    PEFT lays the prefix embedding out as (T, 2 L, H_kv, D): for token t, layer l's key is
    entry ``2 l`` and its value ``2 l + 1``.
    """
    import torch

    config = peft_model.active_peft_config
    if config.prefix_projection:
        raise InputError("--prefix-init activations sets the prefix itself; it cannot be "
                         "combined with --prefix-projection")
    if getattr(config, "num_transformer_submodules", 1) != 1:
        raise InputError("--prefix-init activations needs a decoder-only language model")
    base = peft_model.get_base_model()
    device = next(base.parameters()).device
    training = base.training
    base.eval()
    try:
        with torch.no_grad():
            output = base(input_ids=token_ids.reshape(1, -1).to(device), use_cache=True)
    finally:
        base.train(training)
    # transformers 5.24 renamed the output's past_key_values (now a warning) to cache
    cache = output.cache if "cache" in output else output.get("past_key_values")
    if cache is None or not hasattr(cache, "layers"):
        raise InputError("--prefix-init activations needs a decoder language model that "
                         "returns its key/value cache; use --prefix-init random")
    keys = torch.stack([layer.keys[0] for layer in cache.layers])      # (L, H, T, D)
    values = torch.stack([layer.values[0] for layer in cache.layers])
    embedding = peft_model.prompt_encoder[peft_model.active_adapter].embedding.weight
    prefix = torch.stack([keys, values], dim=1).permute(3, 0, 1, 2, 4).reshape(
        token_ids.numel(), -1)
    if prefix.shape != embedding.shape:
        raise InputError(f"the model's key/value cache gives a prefix of shape "
                         f"{tuple(prefix.shape)}, PEFT expects {tuple(embedding.shape)}; use "
                         "--prefix-init random")
    with torch.no_grad():
        embedding.copy_(prefix.to(embedding.dtype))


def build_prefix(model: nn.Module, o: MethodOptions, task: str) -> Built:
    import torch

    built = with_included(model, o, lambda: wrap_peft(model, prefix_config(o, task)))
    po = o[PrefixOptions]
    if po.init == "activations":
        vocab = built.peft_model.get_base_model().get_input_embeddings().num_embeddings
        # drawn from the trainer's seeded generator: the same tokens for the same seed
        init_prefix_from_activations(built.peft_model, torch.randint(vocab, (po.tokens,)))
    return built


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
