"""The tuning methods: each one turns a fresh copy of the base into a model with some parameters
trainable, and says how to save what it trained (as checkpoint parts).

The configs (:class:`MethodOptions`) are kept apart from the modules, as in PEFT. PEFT provides
LoRA, DoRA, IA3, prefix tuning and prompt tuning; bottleneck adapters and the PT-PEFT
composition (prefix tuning over LoRA or adapters) are repspace's own.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import peft
from torch import nn

from repspace.errors import InputError
from repspace.models.adapters import BottleneckConfig, adapter_parameters, inject_bottleneck
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Built:
    """A model prepared for one method: the module to call, and how to save its tuned part."""

    module: nn.Module
    parts: Callable[[], list[Part]]
    peft_model: peft.PeftModel | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _freeze(model: nn.Module) -> None:
    for param in model.parameters():
        param.requires_grad_(False)


def _task_type(task: str) -> str:
    return "FEATURE_EXTRACTION" if task == "classification" else "CAUSAL_LM"


def _weights(model: nn.Module, names: list[str]) -> Callable[[], list[Part]]:
    params = dict(model.named_parameters())
    return lambda: [Part("weights", {}, {n: params[n].detach().to("cpu").clone()
                                         for n in names})]


def _full(model: nn.Module, o: MethodOptions, task: str) -> Built:
    for param in model.parameters():
        param.requires_grad_(True)
    return Built(model, _weights(model, [n for n, _ in model.named_parameters()]))


def _bitfit(model: nn.Module, o: MethodOptions, task: str) -> Built:
    _freeze(model)
    names = [n for n, p in model.named_parameters() if n.endswith("bias")]
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)
    if not names:
        raise InputError("bitfit: this model has no bias parameters")
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
    return Built(wrapped, lambda: [peft_part(wrapped)], peft_model=wrapped)


def lora_config(o: MethodOptions, dora: bool = False) -> peft.LoraConfig:
    return peft.LoraConfig(r=o.lora_r, lora_alpha=o.lora_alpha, lora_dropout=o.lora_dropout,
                           target_modules=o.lora_targets, use_dora=dora)


def prefix_config(o: MethodOptions, task: str) -> peft.PrefixTuningConfig:
    return peft.PrefixTuningConfig(task_type=_task_type(task), num_virtual_tokens=o.prefix_tokens,
                                   prefix_projection=o.prefix_projection,
                                   encoder_hidden_size=o.prefix_hidden)


def _lora(model: nn.Module, o: MethodOptions, task: str) -> Built:
    return _peft(model, lora_config(o))


def _dora(model: nn.Module, o: MethodOptions, task: str) -> Built:
    return _peft(model, lora_config(o, dora=True))


def _ia3(model: nn.Module, o: MethodOptions, task: str) -> Built:
    return _peft(model, peft.IA3Config())


def _prefix(model: nn.Module, o: MethodOptions, task: str) -> Built:
    return _peft(model, prefix_config(o, task))


def _prompt(model: nn.Module, o: MethodOptions, task: str) -> Built:
    return _peft(model, peft.PromptTuningConfig(task_type=_task_type(task),
                                                num_virtual_tokens=o.prompt_tokens))


def _adapter(placement: str) -> Callable[[nn.Module, MethodOptions, str], Built]:
    def build(model: nn.Module, o: MethodOptions, task: str) -> Built:
        _freeze(model)
        config = BottleneckConfig(reduction=o.adapter_reduction, placement=placement)
        inject_bottleneck(model, config)
        for param in adapter_parameters(model):
            param.requires_grad_(True)
        return Built(model, lambda: [bottleneck_part(model, config)])

    return build


CONNECTOR_NAMES = ("multi_modal_projector", "connector", "visual.merger", "mm_projector")


def _connector(model: nn.Module, o: MethodOptions, task: str) -> Built:
    names = [n for n, _ in model.named_modules() if n.endswith(CONNECTOR_NAMES)]
    if not names:
        raise InputError("connector tuning needs a multimodal model with a projector "
                         f"({', '.join(CONNECTOR_NAMES)}); this model has none")
    _freeze(model)
    trained = [n for n, p in model.named_parameters() if any(n.startswith(m + ".")
                                                            for m in names)]
    for name, param in model.named_parameters():
        param.requires_grad_(name in trained)
    return Built(model, _weights(model, trained))


def pt_peft_stage2(model: nn.Module, o: MethodOptions, task: str) -> Built:
    """PT-PEFT stage 2: LoRA or adapters injected into the base, under a PEFT prefix wrapper;
    both trainable. The caller loads the stage-1 prefix values into it."""
    _freeze(model)
    if o.second == "lora":
        config = lora_config(o)
        model = peft.inject_adapter_in_model(config, model)
        first = lambda: peft_injected_part(model, config)  # noqa: E731
    elif o.second == "adapter":
        bottleneck = BottleneckConfig(reduction=o.adapter_reduction)
        inject_bottleneck(model, bottleneck)
        first = lambda: bottleneck_part(model, bottleneck)  # noqa: E731
    else:
        raise InputError(f"pt-peft --second must be lora or adapter, not {o.second!r}")
    built = _peft(model, prefix_config(o, task))
    for name, param in built.module.named_parameters():
        if "lora_" in name or ".adapter." in name:
            param.requires_grad_(True)
    return Built(built.module, lambda: [first(), *built.parts()], peft_model=built.peft_model)


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
    Method("connector", "the multimodal projector only", 1e-4, _connector),
    Method("pt-peft", "PT-PEFT: stage 1 prefix tuning, then --second lora|adapter trained "
           "together with the prefix", 5e-4, _prefix),
]}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; methods: {', '.join(METHODS)}")
    return METHODS[name]
