"""Bottleneck adapters, repspace's own (:mod:`repspace.models.adapters`): serial (Houlsby et al.
2019) and parallel (He et al. 2022)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from repspace.tune.methods.base import Built, Method, Scope, freeze, register, with_included
from repspace.tune.methods.options import AdapterOptions, MethodOptions

if TYPE_CHECKING:
    from torch import nn

    from repspace.models.tuned import Part


def inject_adapters(model: nn.Module, scope: Scope, reduction: int,
                    placement: str) -> Callable[[], list[Part]]:
    """Bottleneck adapters in the blocks of the language model (the whole model for a text
    model; of an encoder-decoder, e.g. T5, in its encoder's and its decoder's blocks),
    trainable; returns the function that saves them."""
    from repspace.models.adapters import (
        BottleneckConfig,
        adapter_parameters,
        default_targets,
        inject_bottleneck,
    )
    from repspace.models.structure import block_stacks
    from repspace.models.tuned import bottleneck_part

    language = scope.parts["language"][0] if scope.multimodal else ""
    stacks = block_stacks(model.get_submodule(language))
    sides = [s.rpartition(".")[0] for s in stacks] if len(stacks) > 1 else [""]
    roots = [".".join(p for p in (language, side) if p) for side in sides]
    configs = []
    for root in roots:
        target = model.get_submodule(root)
        config = BottleneckConfig(reduction=reduction, placement=placement,
                                  targets=default_targets(target, placement))
        inject_bottleneck(target, config)
        for param in adapter_parameters(target):
            param.requires_grad_(True)
        configs.append((config, root))
    return lambda: [bottleneck_part(model, config, root) for config, root in configs]


def _builder(placement: str) -> Callable[[nn.Module, MethodOptions, str], Built]:
    def build(model: nn.Module, o: MethodOptions, task: str) -> Built:
        freeze(model)

        def adapters() -> Built:
            save = inject_adapters(model, Scope.of(model, o), o[AdapterOptions].reduction,
                                   placement)
            return Built(model, save)

        return with_included(model, o, adapters)

    return build


register(Method("adapter", "additive",
                "serial bottleneck adapters (Houlsby): after attention and feed-forward outputs",
                1e-3, _builder("serial"), (AdapterOptions,)),
         "adapters", "houlsby", "bottleneck")
register(Method("parallel-adapter", "additive",
                "parallel bottleneck adapter beside the feed-forward sublayer (He et al. 2022)",
                1e-3, _builder("parallel"), (AdapterOptions,)),
         "parallel")
