"""LoRA and DoRA through PEFT (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language
Models"; Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from repspace.errors import InputError
from repspace.tune.methods.base import Built, Method, peft_targets, register, wrap_peft
from repspace.tune.methods.options import LoraOptions, MethodOptions

if TYPE_CHECKING:
    import peft
    from torch import nn


def lora_config(o: MethodOptions, dora: bool = False, model: nn.Module | None = None,
                extra: bool = True) -> peft.LoraConfig:
    """LoRA/DoRA on ``--lora-targets`` (PEFT's default when ``None``); on a vision-language
    ``model``: on those (default: all) linear layers of the language model, and with ``extra``
    of the included parts."""
    import peft

    lo = o[LoraOptions]
    targets = lo.targets if model is None else peft_targets(model, o, lo.targets, extra)
    # GPT-2-style Conv1D layers store their weight transposed (PEFT warns and fixes it itself)
    conv1d = model is not None and any(type(m).__name__ == "Conv1D" for m in model.modules())
    return peft.LoraConfig(r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout,
                           target_modules=targets, use_dora=dora, fan_in_fan_out=conv1d)


def build_lora(model: nn.Module, o: MethodOptions, task: str) -> Built:
    return wrap_peft(model, lora_config(o, model=model))


def build_dora(model: nn.Module, o: MethodOptions, task: str) -> Built:
    return wrap_peft(model, lora_config(o, dora=True, model=model))


register(Method("lora", "reparameterized",
                "LoRA (PEFT) on --lora-targets (default: the model type's attention projections)",
                5e-4, build_lora, (LoraOptions,)))
register(Method("dora", "reparameterized",
                "DoRA (PEFT): LoRA with a learned magnitude per output", 5e-4, build_dora,
                (LoraOptions,)))


def qlora_requirements() -> str | None:
    """Why QLoRA cannot run on this machine (``None`` when it can): it needs CUDA and the
    bitsandbytes package for its 4-bit NF4 base (Dettmers et al. 2023)."""
    import importlib.util

    import torch

    missing = [what for what, present in (
        ("CUDA", torch.cuda.is_available()),
        ("bitsandbytes", importlib.util.find_spec("bitsandbytes") is not None)) if not present]
    if not missing:
        return None
    return (f"qlora needs CUDA and bitsandbytes (a 4-bit NF4 base); this machine has no "
            f"{' and no '.join(missing)}: use --method lora here")


def build_qlora(model: nn.Module, o: MethodOptions, task: str) -> Built:
    reason = qlora_requirements()
    if reason:
        raise InputError(reason)
    raise InputError("qlora is not available in this version of repspace: its 4-bit base is "
                     "not yet written to tuned checkpoints; use --method lora")


register(Method("qlora", "reparameterized",
                "QLoRA: LoRA over a 4-bit NF4 base (needs CUDA and bitsandbytes)", 2e-4,
                build_qlora, (LoraOptions,)))
