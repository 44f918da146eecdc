"""Method options: one dataclass per group, PEFT style (configs apart from the modules that use
them), each field with its help text in its metadata, from which the CLI builds its flags.

A group's fields appear as flat keyword arguments of :func:`repspace.tune.tune` and as flags of
``repspace tune``: ``LoraOptions.r`` is ``lora_r=`` and ``--lora-r`` (``prefix`` + field name;
groups with an empty prefix use the field name alone: ``--include``, ``--second``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from repspace.errors import InputError
from repspace.utils.options import Options, option


@dataclass
class ScopeOptions(Options):
    """Which parts of a vision-language model a method acts on (every method has these)."""

    include: list[str] = option([], "vision-language models: also tune these parts "
                                "(comma-separated: connector,vision); methods apply to the "
                                "language model only by default")


@dataclass
class LoraOptions(Options):
    """LoRA and DoRA (Hu et al. 2021; Liu et al. 2024), through PEFT."""

    prefix: ClassVar[str] = "lora"
    r: int = option(8, "LoRA/DoRA rank")
    alpha: int = option(16, "LoRA alpha (the update is scaled by alpha / r)")
    dropout: float = option(0.0, "dropout on the LoRA input")
    targets: list[str] | None = option(None, "comma-separated module names (default: PEFT's "
                                       "for the model type, e.g. query,value for BERT; every "
                                       "linear layer of a vision-language model's language "
                                       "model)")


@dataclass
class AdapterOptions(Options):
    """Bottleneck adapters (Houlsby et al. 2019; He et al. 2022), repspace's own."""

    prefix: ClassVar[str] = "adapter"
    reduction: int = option(16, "bottleneck size = hidden size / reduction")


@dataclass
class PrefixOptions(Options):
    """Prefix tuning (Li & Liang 2021), through PEFT."""

    prefix: ClassVar[str] = "prefix"
    tokens: int = option(10, "virtual tokens of the prefix")
    projection: bool = option(False, "reparameterise the prefix through an MLP")
    hidden: int = option(256, "hidden size of the prefix MLP (with --prefix-projection)")


@dataclass
class PromptOptions(Options):
    """Prompt tuning (Lester et al. 2021), through PEFT."""

    prefix: ClassVar[str] = "prompt"
    tokens: int = option(10, "virtual tokens prepended to the input embeddings")


@dataclass
class PtPeftOptions(Options):
    """PT-PEFT: prefix tuning first, then a second method trained together with the prefix."""

    second: str = option("lora", "pt-peft stage 2 method", choices=("lora", "adapter"))
    stage1_epochs: int | None = option(None, "pt-peft prefix epochs (default: --epochs)")
    stage1_lr: float | None = option(None, "pt-peft prefix learning rate (default: prefix's)")


#: Every option group, in the order the CLI lists them.
GROUPS: tuple[type[Options], ...] = (ScopeOptions, LoraOptions, AdapterOptions, PrefixOptions,
                                     PromptOptions, PtPeftOptions)


@dataclass
class MethodOptions:
    """The option groups one run uses, by group class (see :func:`parse_options`)."""

    groups: dict[type[Options], Options] = field(default_factory=dict)

    def __getitem__(self, group: type[Options]) -> Any:
        return self.groups.get(group) or group()

    def to_dict(self, used: tuple[type[Options], ...]) -> dict[str, Any]:
        """The groups ``used`` as ``{prefix or "scope"...: fields}`` (the checkpoint's
        ``method_config``)."""
        return {(g.prefix or g.__name__.removesuffix("Options").lower()): self[g].to_dict()
                for g in used}


def parse_options(values: dict[str, Any]) -> MethodOptions:
    """The option groups of flat keywords (``lora_r=16``, ``include=["connector"]``); an
    unknown keyword is an :class:`~repspace.errors.InputError` listing the known ones."""
    rest = dict(values)
    groups = {g: g.from_keywords(rest) for g in GROUPS}
    if rest:
        known = sorted(g.keyword(f.name) for g in GROUPS for f in fields(g))
        raise InputError(f"unknown method option(s) {', '.join(sorted(rest))}; options: "
                         f"{', '.join(known)}")
    return MethodOptions(groups)
