"""PT-PEFT (prefix tuning first, then LoRA or adapters trained together with the prefix):
repspace's composition, since PEFT cannot mix prefix tuning with LoRA in one model.

Stage 1 is plain prefix tuning (:func:`~repspace.tune.methods.prompt.build_prefix`); stage 2
(:func:`build_stage2`) injects LoRA (PEFT's low-level ``inject_adapter_in_model``) or
bottleneck adapters under a PEFT prefix wrapper into which the trainer loads the stage-1
prefix."""

from __future__ import annotations

from typing import TYPE_CHECKING

from repspace.errors import InputError
from repspace.tune.methods.adapter import inject_adapters
from repspace.tune.methods.base import (
    Built,
    Method,
    Scope,
    freeze,
    register,
    train,
    weights_part,
    wrap_peft,
)
from repspace.tune.methods.lora import lora_config
from repspace.tune.methods.options import (
    AdapterOptions,
    LoraOptions,
    MethodOptions,
    PrefixOptions,
    PtPeftOptions,
)
from repspace.tune.methods.prompt import build_prefix, prefix_config

if TYPE_CHECKING:
    from torch import nn


def build_stage2(model: nn.Module, o: MethodOptions, task: str) -> Built:
    """PT-PEFT stage 2: LoRA or adapters injected into the (language) model, under a PEFT
    prefix wrapper; both trainable, and the included parts in full. The caller loads the
    stage-1 prefix (and included weights) into it."""
    import peft

    from repspace.models.tuned import peft_injected_part

    scope = Scope.of(model, o)
    freeze(model)
    extra = scope.included(model)
    weights = weights_part(model, extra)
    second = o[PtPeftOptions].second
    if second == "lora":
        config = lora_config(o, model=model, extra=False)
        model = peft.inject_adapter_in_model(config, model)
        first = lambda: [peft_injected_part(model, config)]  # noqa: E731
    elif second == "adapter":
        first = inject_adapters(model, scope, o[AdapterOptions].reduction, "serial")
    else:
        raise InputError(f"pt-peft --second must be lora or adapter, not {second!r}")
    built = wrap_peft(model, prefix_config(o, task))
    for name, param in built.module.named_parameters():
        if "lora_" in name or ".adapter." in name:
            param.requires_grad_(True)
    train(model, extra)
    return Built(built.module, lambda: [*weights(), *first(), *built.parts()],
                 peft_model=built.peft_model)


register(Method("pt-peft", "hybrid",
                "PT-PEFT: stage 1 prefix tuning, then --second lora|adapter trained together "
                "with the prefix", 5e-4, build_prefix,
                (PtPeftOptions, PrefixOptions, LoraOptions, AdapterOptions)), "ptpeft")
