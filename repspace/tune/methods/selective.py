"""Methods that train a selection of the model's own parameters: full fine-tuning, BitFit, the
linear probe (the task head only) and connector tuning (a vision-language model's projector)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from repspace.errors import InputError
from repspace.models.structure import PART_NAMES, part_of
from repspace.tune.methods.base import (
    Built,
    Method,
    Scope,
    freeze,
    register,
    train,
    weights_part,
)
from repspace.tune.methods.options import MethodOptions, ScopeOptions

if TYPE_CHECKING:
    from torch import nn


def build_full(model: nn.Module, o: MethodOptions, task: str) -> Built:
    for param in model.parameters():
        param.requires_grad_(True)
    return Built(model, weights_part(model, [n for n, _ in model.named_parameters()]))


def build_bitfit(model: nn.Module, o: MethodOptions, task: str) -> Built:
    scope = Scope.of(model, o)
    freeze(model)
    names = [n for n, _ in model.named_parameters() if n.endswith("bias") and scope.covers(n)]
    if not names:
        where = " in the language model (see --include)" if scope.multimodal else ""
        raise InputError(f"bitfit: this model has no bias parameters{where}")
    train(model, names)
    return Built(model, weights_part(model, names))


def build_linear_probe(model: nn.Module, o: MethodOptions, task: str) -> Built:
    if task != "classification":
        raise InputError("linear-probe trains a classification head: use --task classification")
    freeze(model)
    return Built(model, lambda: [])


def build_connector(model: nn.Module, o: MethodOptions, task: str) -> Built:
    scope = Scope.of(model, o)
    if not scope.parts.get("connector"):
        raise InputError("connector tuning needs a multimodal model with a projector "
                         f"({', '.join(PART_NAMES['connector'])}); this model has none")
    freeze(model)
    chosen = {"connector", *o[ScopeOptions].include}
    trained = [n for n, _ in model.named_parameters() if part_of(n, scope.parts) in chosen]
    train(model, trained)
    return Built(model, weights_part(model, trained))


register(Method("full", "selective", "full fine-tuning: every parameter", 5e-5, build_full),
         "full-ft", "finetune", "fine-tuning")
register(Method("bitfit", "selective", "BitFit: bias terms only", 1e-3, build_bitfit))
register(Method("linear-probe", "selective", "the task head only; the model stays frozen",
                1e-2, build_linear_probe), "linear", "probe", "head")
register(Method("connector", "selective",
                "the multimodal projector only (plus the vision tower with --include vision)",
                1e-4, build_connector), "projector")
