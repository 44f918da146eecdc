"""IA3 through PEFT (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and
Cheaper than In-Context Learning"): learned rescaling of keys, values and feed-forward."""

from __future__ import annotations

from typing import TYPE_CHECKING

from repspace.tune.methods.base import Built, Method, Scope, module_pattern, register, wrap_peft
from repspace.tune.methods.options import MethodOptions

if TYPE_CHECKING:
    from torch import nn


def _ia3_names(model: nn.Module) -> tuple[list[str], list[str]]:
    """PEFT's IA3 target and feed-forward module names for the language model's type
    (Llama's when PEFT has none for it)."""
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING,
        TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
    )

    kind = str(getattr(model.config.get_text_config(), "model_type", ""))
    key = next((k for k in (kind, kind.split("_")[0])
                if k in TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING), "llama")

    def last(names: list[str]) -> list[str]:
        return [n.rsplit(".", 1)[-1] for n in names]

    return (last(TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING[key]),
            last(TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING[key]))


def build_ia3(model: nn.Module, o: MethodOptions, task: str) -> Built:
    import peft

    scope = Scope.of(model, o)
    if not scope.multimodal:
        return wrap_peft(model, peft.IA3Config())
    names, feedforward = _ia3_names(model)
    targets = scope.linear(model, names) + scope.linear(model, None, tuple(scope.include))
    return wrap_peft(model, peft.IA3Config(
        target_modules=module_pattern(targets),
        feedforward_modules=module_pattern(scope.linear(model, feedforward))))


register(Method("ia3", "additive",
                "IA3 (PEFT): learned rescaling of keys, values and feed-forward", 5e-3,
                build_ia3), "(ia)3")
