"""What every tuning method shares: the :class:`Method` record and its registry, the
:class:`Built` model a builder returns, the :class:`Scope` of a vision-language model, and
small helpers to freeze, train and save parameters."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from repspace.errors import InputError
from repspace.models.structure import part_of, vlm_parts
from repspace.tune.methods.options import MethodOptions, Options, ScopeOptions

if TYPE_CHECKING:  # the registry is read by the CLI parser, which must not load torch or PEFT
    import peft
    from torch import nn

    from repspace.models.tuned import Part


@dataclass
class StepHooks:
    """What a method does around each optimizer step of the trainer; ``step`` counts the
    optimizer steps of the run from 1 to ``total``.

    ``before(step, total)`` runs once the step's gradients are complete (before clipping),
    ``after(step, total)`` after the update (before the gradients are cleared), and
    ``trainable()`` counts the entries the method trains when that is not every entry of its
    trainable tensors (importance masks)."""

    before: Callable[[int, int], None] | None = None
    after: Callable[[int, int], None] | None = None
    trainable: Callable[[], int] | None = None


@dataclass
class Built:
    """A model prepared for one method: the module to call, how to save its tuned part, and
    the hooks the trainer calls around each optimizer step (if any)."""

    module: nn.Module
    parts: Callable[[], list[Part]]
    peft_model: peft.PeftModel | None = None
    hooks: StepHooks | None = None


#: ``build(model, options, task) -> Built``: prepares a fresh copy of the base for a method.
Builder = Callable[["nn.Module", MethodOptions, str], Built]


#: The families of the PEFT survey (Han et al. 2024, "Parameter-Efficient Fine-Tuning for Large
#: Models: A Comprehensive Survey"), in the order ``repspace tune --help`` lists them.
FAMILIES = ("selective", "reparameterized", "additive", "hybrid")


@dataclass(frozen=True)
class Method:
    """A tuning method: what it trains, its family (:data:`FAMILIES`), its default learning
    rate, its builder and the option groups it reads
    (:class:`~repspace.tune.methods.options.ScopeOptions` always)."""

    name: str
    family: str
    summary: str
    lr: float
    build: Builder
    options: tuple[type[Options], ...] = field(default=())

    @property
    def groups(self) -> tuple[type[Options], ...]:
        return (ScopeOptions, *self.options)


#: Every method, by name, in the order ``repspace tune --help`` lists them.
METHODS: dict[str, Method] = {}
#: Other spellings of method names (compared case-insensitively).
ALIASES: dict[str, str] = {}


def register(method: Method, *aliases: str) -> Method:
    """Add ``method`` (and its ``aliases``) to :data:`METHODS`."""
    METHODS[method.name] = method
    ALIASES.update({alias.lower(): method.name for alias in aliases})
    return method


def canonical_method(name: str) -> str:
    """The registered name of ``name`` (case-insensitive; aliases such as ``LoRA`` or
    ``prefix-tuning`` accepted), or an :class:`~repspace.errors.InputError` with the methods
    and the closest name."""
    key = name.strip().lower().replace("_", "-")
    if key in METHODS:
        return key
    if key in ALIASES:
        return ALIASES[key]
    import difflib

    close = difflib.get_close_matches(key, [*METHODS, *ALIASES], n=1)
    hint = f" (did you mean {ALIASES.get(close[0], close[0])}?)" if close else ""
    listed = [m.name for family in FAMILIES for m in METHODS.values() if m.family == family]
    raise InputError(f"unknown method {name!r}{hint}; methods: {', '.join(listed)}")


def get_method(name: str) -> Method:
    """The :class:`Method` called ``name`` (see :func:`canonical_method`)."""
    return METHODS[canonical_method(name)]


#: Parts of a vision-language model that ``--include`` may add to the language model.
INCLUDABLE = ("connector", "vision")


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

    @classmethod
    def of(cls, model: nn.Module, o: MethodOptions) -> Scope:
        return cls(model, o[ScopeOptions].include)

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
        from torch import nn

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


def peft_targets(model: nn.Module, o: MethodOptions, names: list[str] | None,
                 extra: bool = True) -> list[str] | str | None:
    """PEFT ``target_modules`` for the linear layers ``names`` (PEFT's default for the model
    type when ``None``); on a vision-language model those (default: all) linear layers of the
    language model, and with ``extra`` of the included parts, as one pattern."""
    scope = Scope.of(model, o)
    if not scope.multimodal:
        return names
    parts = ("language", *scope.include) if extra else ("language",)
    return module_pattern(scope.linear(model, names, parts))


def freeze(model: nn.Module) -> None:
    """Make every parameter of ``model`` frozen."""
    for param in model.parameters():
        param.requires_grad_(False)


def train(model: nn.Module, names: list[str]) -> None:
    """Make the parameters ``names`` of ``model`` trainable."""
    chosen = set(names)
    for name, param in model.named_parameters():
        if name in chosen:
            param.requires_grad_(True)


def task_type(task: str) -> str:
    """PEFT's task type for a repspace task."""
    return "FEATURE_EXTRACTION" if task == "classification" else "CAUSAL_LM"


def weights_part(model: nn.Module, names: list[str]) -> Callable[[], list[Part]]:
    """A ``weights`` part with the current values of ``names`` (none when ``names`` is empty)."""
    from repspace.models.tuned import Part

    params = dict(model.named_parameters())
    return lambda: [Part("weights", {}, {n: params[n].detach().to("cpu").clone()
                                         for n in names})] if names else []


def wrap_peft(model: nn.Module, config: peft.PeftConfig) -> Built:
    """``model`` wrapped by PEFT with ``config`` (prompt learning with its rope-position hook,
    see :mod:`repspace.models.prompt_positions`)."""
    import peft

    from repspace.models.prompt_positions import attach_prompt_positions
    from repspace.models.tuned import peft_part

    if config.task_type == "CAUSAL_LM" and getattr(model.config, "is_encoder_decoder", False):
        config.task_type = "SEQ_2_SEQ_LM"  # BLIP-2 with Flan-T5: prefixes for both stacks
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*modify a model with PEFT.*")
        wrapped = peft.get_peft_model(model, config)
    if config.is_prompt_learning:
        # PEFT freezes the base model's children only: parameters the model holds itself
        # (BLIP-2's query_tokens) would stay trainable
        for param in wrapped.base_model.parameters():
            param.requires_grad_(False)
        kind = "prefix" if config.peft_type == peft.PeftType.PREFIX_TUNING else "prompt"
        attach_prompt_positions(wrapped, config.num_virtual_tokens, kind)
    return Built(wrapped, lambda: [peft_part(wrapped)], peft_model=wrapped)


def with_included(model: nn.Module, o: MethodOptions,
                  build: Callable[[], Built]) -> Built:
    """``build()`` with the included parts of a vision-language model trained in full beside
    it (for methods that do not adapt those parts themselves)."""
    scope = Scope.of(model, o)
    extra = scope.included(model)
    weights = weights_part(model, extra)
    built = build()
    train(model, extra)
    return Built(built.module, lambda: [*weights(), *built.parts()], peft_model=built.peft_model,
                 hooks=built.hooks)
