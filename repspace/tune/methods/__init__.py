"""The tuning methods, one module per family (PEFT style: options in
:mod:`~repspace.tune.methods.options`, apart from the modules that build them).

Each method turns a fresh copy of the base into a model with some parameters trainable, and
says how to save what it trained (as checkpoint parts). PEFT provides LoRA, DoRA, IA3, prefix
tuning and prompt tuning; bottleneck adapters and the PT-PEFT composition (prefix tuning over
LoRA or adapters) are repspace's own.

Vision-language models (LLaVA, Qwen2-VL, ...) have three parts
(:func:`~repspace.models.structure.vlm_parts`): the vision tower, the connector (projector) and
the language model. Every method applies to the language model only (LoRA/DoRA on the linear
layers of its blocks, IA3 on its keys, values and feed-forward, adapters in its blocks, BitFit
on its biases, prefix/prompt tuning on its sequence), unless ``include`` names other parts:
LoRA, DoRA, IA3 and BitFit then also adapt the linear layers (biases) of those parts; adapters,
prefix, prompt and PT-PEFT train those parts in full beside the method. ``connector`` trains the
projector only (plus the vision tower if included); ``full`` trains everything.
"""

# Importing the families registers their methods, in the order the CLI lists them.
from repspace.tune.methods import (  # noqa: F401
    adapter,
    ia3,
    lora,
    lowrank,
    orthogonal,
    prompt,
    pt_peft,
    selective,
)
from repspace.tune.methods.base import (
    FAMILIES,
    METHODS,
    Built,
    Method,
    Scope,
    StepHooks,
    canonical_method,
    get_method,
)
from repspace.tune.methods.options import GROUPS, MethodOptions, Options, parse_options
from repspace.tune.methods.pt_peft import build_stage2

__all__ = ["FAMILIES", "GROUPS", "METHODS", "Built", "Method", "MethodOptions", "Options", "Scope",
           "StepHooks", "build_stage2", "canonical_method", "get_method", "parse_options"]
