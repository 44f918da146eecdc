"""The tuning methods: each one turns a fresh copy of the base into a model with some parameters
trainable, and says how to save what it trained (as checkpoint parts).

The configs (:class:`MethodOptions`) are kept apart from the modules, as in PEFT. PEFT provides
LoRA, DoRA, IA3, prefix tuning and prompt tuning; bottleneck adapters and the PT-PEFT
composition (prefix tuning over LoRA or adapters) are repspace's own.

Vision-language models (LLaVA, Qwen2-VL, ...) have three parts (:func:`vlm_parts`): the vision
tower, the connector (projector) and the language model. Every method applies to the language
model only (LoRA/DoRA on the linear layers of its blocks, IA3 on its keys, values and
feed-forward, adapters in its blocks, BitFit on its biases, prefix/prompt tuning on its
sequence), unless ``include`` names other parts: LoRA, DoRA, IA3 and BitFit then also adapt the
linear layers (biases) of those parts; adapters, prefix, prompt and PT-PEFT train those parts
in full beside the method. ``connector`` trains the projector only (plus the vision tower if
included); ``full`` trains everything. The rest stays frozen.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import peft
from peft.utils.constants import (
    TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING,
    TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
)
from torch import nn

from repspace.errors import InputError
from repspace.models.adapters import (
    BottleneckConfig,
    adapter_parameters,
    default_targets,
    inject_bottleneck,
)
from repspace.models.prompt_positions import attach_prompt_positions
from repspace.models.tuned import Part, bottleneck_part, peft_injected_part, peft_part


@dataclass
class MethodOptions:
    """Options of every method (unused ones are ignored); the CLI flags map one to one."""

    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: list[str] | None = None
    adapter_reduction: int = 16
    prefix_tokens: int = 10
    prefix_projection: bool = False
    prefix_hidden: int = 256
    prompt_tokens: int = 10
    second: str = "lora"
    stage1_epochs: int | None = None
    stage1_lr: float | None = None
    include: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Built:
    """A model prepared for one method: the module to call, and how to save its tuned part."""

    module: nn.Module
    parts: Callable[[], list[Part]]
    peft_model: peft.PeftModel | None = None


#: Parts of a vision-language model that ``MethodOptions.include`` may add to the language model.
INCLUDABLE = ("connector", "vision")
CONNECTOR_NAMES = ("multi_modal_projector", "connector", "visual.merger", "mm_projector")
VISION_NAMES = ("vision_tower", "visual", "vision_model")


def _within(name: str, roots: list[str]) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


def vlm_parts(model: nn.Module) -> dict[str, list[str]]:
    """Module paths of a vision-language model's parts: ``language`` (the language model
    without its head), ``connector`` (the projector) and ``vision`` (the vision tower; a
    connector inside it, as Qwen2-VL's ``visual.merger``, belongs to ``connector``). Empty for
    a text model."""
    names = [n for n, _ in model.named_modules()]
    language = [n for n in names if n.rsplit(".", 1)[-1] == "language_model"][:1]
    if not language:
        return {}
    return {"language": language,
            "connector": [n for n in names if n.endswith(CONNECTOR_NAMES)],
            "vision": [n for n in names if n.rsplit(".", 1)[-1] in VISION_NAMES]}


def part_of(name: str, parts: dict[str, list[str]]) -> str | None:
    """The part (``language``, ``connector``, ``vision``) that the module or parameter ``name``
    belongs to, or ``None`` (e.g. the language-model head)."""
    for part in ("connector", "vision", "language"):
        if _within(name, parts.get(part, [])):
            return part
    return None


class Scope:
    """Which modules a method acts on: everything for a text model; for a vision-language
    model the language model plus the parts in ``include``."""

    def __init__(self, model: nn.Module, include: list[str]) -> None:
        unknown = sorted(set(include) - set(INCLUDABLE))
        if unknown:
            raise InputError(f"cannot include {', '.join(unknown)}: the parts that can be "
                             f"included are {', '.join(INCLUDABLE)}")
        self.parts = vlm_parts(model)
        self.include = list(include)
        if self.include and not self.parts:
            raise InputError("--include names parts of a vision-language model; this model is "
                             "a text model")

    @property
    def multimodal(self) -> bool:
        return bool(self.parts)

    def covers(self, name: str, extra: bool = True) -> bool:
        """Whether ``name`` is in the language model (or, with ``extra``, an included part)."""
        if not self.parts:
            return True
        part = part_of(name, self.parts)
        return part == "language" or (extra and part in self.include)

    def included(self, model: nn.Module) -> list[str]:
        """Names of the parameters of the included parts."""
        return [n for n, _ in model.named_parameters()
                if self.parts and part_of(n, self.parts) in self.include]

    def linear(self, model: nn.Module, names: list[str] | None = None,
               parts: tuple[str, ...] = ("language",)) -> list[str]:
        """The linear layers of ``parts`` whose last name is in ``names`` (all when ``None``)."""
        return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
                and part_of(n, self.parts) in parts
                and (names is None or n.rsplit(".", 1)[-1] in names)]


def module_pattern(names: list[str]) -> str:
    """A regular expression (PEFT ``target_modules``) matching the modules ``names``, written
    compactly: block indices are generalised to ``\\d+`` (every block has the same modules)."""
    if not names:
        raise InputError("no linear layer to adapt in the language model: check --lora-targets")
    patterns = dict.fromkeys(re.sub(r"\\\.\d+\\\.", r"\\.\\d+\\.", re.escape(n))
                             for n in names)
    return "^(?:" + "|".join(patterns) + ")$"


def _freeze(model: nn.Module) -> None:
    for param in model.parameters():
        param.requires_grad_(False)


def _train(model: nn.Module, names: list[str]) -> None:
    chosen = set(names)
    for name, param in model.named_parameters():
        if name in chosen:
            param.requires_grad_(True)


def _task_type(task: str) -> str:
    return "FEATURE_EXTRACTION" if task == "classification" else "CAUSAL_LM"


def _weights(model: nn.Module, names: list[str]) -> Callable[[], list[Part]]:
    """A ``weights`` part with the current values of ``names`` (none when ``names`` is empty)."""
    params = dict(model.named_parameters())
    return lambda: [Part("weights", {}, {n: params[n].detach().to("cpu").clone()
                                         for n in names})] if names else []


def _full(model: nn.Module, o: MethodOptions, task: str) -> Built:
    for param in model.parameters():
        param.requires_grad_(True)
    return Built(model, _weights(model, [n for n, _ in model.named_parameters()]))


def _bitfit(model: nn.Module, o: MethodOptions, task: str) -> Built:
    scope = Scope(model, o.include)
    _freeze(model)
    names = [n for n, _ in model.named_parameters() if n.endswith("bias") and scope.covers(n)]
    if not names:
        where = " in the language model (see --include)" if scope.multimodal else ""
        raise InputError(f"bitfit: this model has no bias parameters{where}")
    _train(model, names)
    return Built(model, _weights(model, names))


def _linear_probe(model: nn.Module, o: MethodOptions, task: str) -> Built:
    if task != "classification":
        raise InputError("linear-probe trains a classification head: use --task classification")
    _freeze(model)
    return Built(model, lambda: [])


def _peft(model: nn.Module, config: peft.PeftConfig) -> Built:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*modify a model with PEFT.*")
        wrapped = peft.get_peft_model(model, config)
    if config.is_prompt_learning:
        kind = "prefix" if config.peft_type == peft.PeftType.PREFIX_TUNING else "prompt"
        attach_prompt_positions(wrapped, config.num_virtual_tokens, kind)
    return Built(wrapped, lambda: [peft_part(wrapped)], peft_model=wrapped)


def lora_config(o: MethodOptions, dora: bool = False, model: nn.Module | None = None,
                extra: bool = True) -> peft.LoraConfig:
    """LoRA/DoRA on ``o.lora_targets`` (PEFT's default when ``None``); on a vision-language
    ``model``: on those (default: all) linear layers of the language model, and with ``extra``
    of the included parts."""
    targets: list[str] | str | None = o.lora_targets
    scope = Scope(model, o.include) if model is not None else None
    if scope is not None and scope.multimodal:
        parts = ("language", *o.include) if extra else ("language",)
        targets = module_pattern(scope.linear(model, o.lora_targets, parts))
    # GPT-2-style Conv1D layers store their weight transposed (PEFT warns and fixes it itself)
    conv1d = model is not None and any(type(m).__name__ == "Conv1D" for m in model.modules())
    return peft.LoraConfig(r=o.lora_r, lora_alpha=o.lora_alpha, lora_dropout=o.lora_dropout,
                           target_modules=targets, use_dora=dora, fan_in_fan_out=conv1d)


def prefix_config(o: MethodOptions, task: str) -> peft.PrefixTuningConfig:
    return peft.PrefixTuningConfig(task_type=_task_type(task), num_virtual_tokens=o.prefix_tokens,
                                   prefix_projection=o.prefix_projection,
                                   encoder_hidden_size=o.prefix_hidden)


def _lora(model: nn.Module, o: MethodOptions, task: str) -> Built:
    return _peft(model, lora_config(o, model=model))


def _dora(model: nn.Module, o: MethodOptions, task: str) -> Built:
    return _peft(model, lora_config(o, dora=True, model=model))


def _ia3_names(model: nn.Module) -> tuple[list[str], list[str]]:
    """PEFT's IA3 target and feed-forward module names for the language model's type
    (Llama's when PEFT has none for it)."""
    kind = str(getattr(model.config.get_text_config(), "model_type", ""))
    key = next((k for k in (kind, kind.split("_")[0])
                if k in TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING), "llama")
    last = lambda names: [n.rsplit(".", 1)[-1] for n in names]  # noqa: E731
    return (last(TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING[key]),
            last(TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING[key]))


def _ia3(model: nn.Module, o: MethodOptions, task: str) -> Built:
    scope = Scope(model, o.include)
    if not scope.multimodal:
        return _peft(model, peft.IA3Config())
    names, feedforward = _ia3_names(model)
    targets = scope.linear(model, names) + scope.linear(model, None, tuple(o.include))
    return _peft(model, peft.IA3Config(
        target_modules=module_pattern(targets),
        feedforward_modules=module_pattern(scope.linear(model, feedforward))))


def _prompt_learning(model: nn.Module, config: peft.PeftConfig, o: MethodOptions) -> Built:
    """A PEFT prompt-learning wrapper; included parts are trained in full beside it."""
    scope = Scope(model, o.include)
    extra = scope.included(model)
    weights = _weights(model, extra)
    built = _peft(model, config)
    _train(model, extra)
    return Built(built.module, lambda: [*weights(), *built.parts()], peft_model=built.peft_model)


def _prefix(model: nn.Module, o: MethodOptions, task: str) -> Built:
    return _prompt_learning(model, prefix_config(o, task), o)


def _prompt(model: nn.Module, o: MethodOptions, task: str) -> Built:
    return _prompt_learning(model, peft.PromptTuningConfig(
        task_type=_task_type(task), num_virtual_tokens=o.prompt_tokens), o)


DECODER_ADAPTER_TARGETS = {"serial": ["self_attn.o_proj", "mlp.down_proj"], "parallel": ["mlp"]}


def _inject_adapters(model: nn.Module, scope: Scope, reduction: int,
                     placement: str) -> Callable[[], Part]:
    """Bottleneck adapters in the blocks of the language model (the whole model for a text
    model); returns the function that saves them."""
    root = scope.parts["language"][0] if scope.multimodal else ""
    target = model.get_submodule(root)
    targets = None
    if scope.multimodal:
        try:
            targets = default_targets(target, placement)
        except InputError:  # a language model type without defaults (e.g. qwen2_vl_text)
            targets = DECODER_ADAPTER_TARGETS[placement]
    config = BottleneckConfig(reduction=reduction, placement=placement, targets=targets)
    inject_bottleneck(target, config)
    for param in adapter_parameters(target):
        param.requires_grad_(True)
    return lambda: bottleneck_part(model, config, root)


def _adapter(placement: str) -> Callable[[nn.Module, MethodOptions, str], Built]:
    def build(model: nn.Module, o: MethodOptions, task: str) -> Built:
        scope = Scope(model, o.include)
        _freeze(model)
        extra = scope.included(model)
        weights = _weights(model, extra)
        _train(model, extra)
        adapters = _inject_adapters(model, scope, o.adapter_reduction, placement)
        return Built(model, lambda: [*weights(), adapters()])

    return build


def _connector(model: nn.Module, o: MethodOptions, task: str) -> Built:
    scope = Scope(model, o.include)
    if not scope.parts.get("connector"):
        raise InputError("connector tuning needs a multimodal model with a projector "
                         f"({', '.join(CONNECTOR_NAMES)}); this model has none")
    _freeze(model)
    chosen = {"connector", *o.include}
    trained = [n for n, _ in model.named_parameters() if part_of(n, scope.parts) in chosen]
    _train(model, trained)
    return Built(model, _weights(model, trained))


def pt_peft_stage2(model: nn.Module, o: MethodOptions, task: str) -> Built:
    """PT-PEFT stage 2: LoRA or adapters injected into the (language) model, under a PEFT
    prefix wrapper; both trainable, and the included parts in full. The caller loads the
    stage-1 prefix (and included weights) into it."""
    scope = Scope(model, o.include)
    _freeze(model)
    extra = scope.included(model)
    weights = _weights(model, extra)
    if o.second == "lora":
        config = lora_config(o, model=model, extra=False)
        model = peft.inject_adapter_in_model(config, model)
        first = lambda: peft_injected_part(model, config)  # noqa: E731
    elif o.second == "adapter":
        first = _inject_adapters(model, scope, o.adapter_reduction, "serial")
    else:
        raise InputError(f"pt-peft --second must be lora or adapter, not {o.second!r}")
    built = _peft(model, prefix_config(o, task))
    for name, param in built.module.named_parameters():
        if "lora_" in name or ".adapter." in name:
            param.requires_grad_(True)
    _train(model, extra)
    return Built(built.module, lambda: [*weights(), first(), *built.parts()],
                 peft_model=built.peft_model)


@dataclass(frozen=True)
class Method:
    """A tuning method: what it trains, its default learning rate and its builder."""

    name: str
    summary: str
    lr: float
    build: Callable[[nn.Module, MethodOptions, str], Built]


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("full", "full fine-tuning: every parameter", 5e-5, _full),
    Method("lora", "LoRA (PEFT) on --lora-targets (default: the model type's attention "
           "projections)", 5e-4, _lora),
    Method("dora", "DoRA (PEFT): LoRA with a learned magnitude per output", 5e-4, _dora),
    Method("adapter", "serial bottleneck adapters (Houlsby): after attention and feed-forward "
           "outputs", 1e-3, _adapter("serial")),
    Method("parallel-adapter", "parallel bottleneck adapter beside the feed-forward sublayer "
           "(He et al. 2022)", 1e-3, _adapter("parallel")),
    Method("prefix", "prefix tuning (PEFT): trained keys/values prepended in every layer",
           5e-3, _prefix),
    Method("prompt", "prompt tuning (PEFT): trained input embeddings prepended", 3e-2, _prompt),
    Method("ia3", "IA3 (PEFT): learned rescaling of keys, values and feed-forward", 5e-3, _ia3),
    Method("bitfit", "BitFit: bias terms only", 1e-3, _bitfit),
    Method("linear-probe", "the task head only; the model stays frozen", 1e-2, _linear_probe),
    Method("connector", "the multimodal projector only (plus the vision tower with --include "
           "vision)", 1e-4, _connector),
    Method("pt-peft", "PT-PEFT: stage 1 prefix tuning, then --second lora|adapter trained "
           "together with the prefix", 5e-4, _prefix),
]}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; methods: {', '.join(METHODS)}")
    return METHODS[name]
