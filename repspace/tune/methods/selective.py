"""Methods that train a selection of the model's own parameters: full fine-tuning, BitFit, the
linear probe (the task head only), connector tuning (a vision-language model's projector),
layer-selective tuning (chosen blocks, or their attention or feed-forward only) and
importance-masked tuning (a fixed share of the entries of each weight matrix of the blocks).

Importance masks follow the selective family of Han et al. 2024 ("Parameter-Efficient
Fine-Tuning for Large Models: A Comprehensive Survey", sec. 3.3, unstructured masking; e.g.
Guo et al. 2021, "Parameter-Efficient Transfer Learning with Diff Pruning"; Sung et al. 2021,
"Training Neural Networks with Fixed Sparse Masks"): of each matrix W (n entries) the
k = ceil(fraction * n) entries of largest |W_pretrained| (``magnitude``) or of largest
sum_t |dL/dW|_t over the first steps (``gradient``, the Fisher-style score of Sung et al.) are
trained; gradient hooks zero the gradient of every other entry, and after each update those
entries are set back to their pretrained values, so they stay bit-for-bit unchanged whatever
the optimizer does (weight decay included)."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from repspace.errors import InputError
from repspace.models.structure import PART_NAMES, block_stack, part_of
from repspace.tune.methods.base import (
    Built,
    Method,
    Scope,
    StepHooks,
    freeze,
    register,
    train,
    weights_part,
)
from repspace.tune.methods.options import MaskOptions, MethodOptions, ScopeOptions, SelectOptions

if TYPE_CHECKING:
    import torch
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


#: First names inside a block of its self-attention and of its feed-forward sublayer (BERT:
#: ``attention`` / ``intermediate``, ``output``; Llama, GPT-2: ``self_attn``, ``attn`` / ``mlp``).
#: Norms outside both (Llama's ``input_layernorm``, GPT-2's ``ln_1``) train with ``all`` only.
BLOCK_PARTS = {
    "attention": ("attention", "attn", "self_attn", "self_attention", "crossattention"),
    "mlp": ("mlp", "intermediate", "output", "ffn", "feed_forward", "feedforward"),
}


def block_paths(model: nn.Module, scope: Scope) -> list[str]:
    """Module paths of the transformer blocks of the language model (the whole model for a
    text model), in order."""
    root = scope.parts["language"][0] if scope.multimodal else ""
    stack = block_stack(model.get_submodule(root))
    stack = f"{root}.{stack}" if root else stack
    return [f"{stack}.{i}" for i in range(len(model.get_submodule(stack)))]


def chosen_blocks(spec: str, count: int) -> list[int]:
    """The block indices of ``--select-blocks``: ``first:K``, ``last:K``, ``A-B`` (inclusive,
    from 0) or a comma list, for a model of ``count`` blocks."""
    text = spec.strip().lower()
    if match := re.fullmatch(r"(first|last):(\d+)", text):
        k = int(match[2])
        chosen = list(range(k)) if match[1] == "first" else list(range(count - k, count))
    elif match := re.fullmatch(r"(\d+)-(\d+)", text):
        chosen = list(range(int(match[1]), int(match[2]) + 1))
    elif re.fullmatch(r"\d+(,\d+)*", text):
        chosen = sorted({int(i) for i in text.split(",")})
    else:
        raise InputError(f"--select-blocks must be first:K, last:K, A-B or a comma list of "
                         f"block indices, got {spec!r}")
    if not chosen or chosen[0] < 0 or chosen[-1] >= count:
        raise InputError(f"--select-blocks {spec} does not fit this model's {count} blocks "
                         f"(0 to {count - 1})")
    return chosen


def _in_part(name: str, block: str, part: str) -> bool:
    first = name[len(block) + 1:].split(".", 1)[0]
    return part == "all" or first in BLOCK_PARTS[part]


def build_layer_selective(model: nn.Module, o: MethodOptions, task: str) -> Built:
    so = o[SelectOptions]
    blocks = block_paths(model, Scope.of(model, o))
    chosen = [blocks[i] for i in chosen_blocks(so.blocks, len(blocks))]
    freeze(model)
    names = [n for n, _ in model.named_parameters() for b in chosen
             if n.startswith(b + ".") and _in_part(n, b, so.part)]
    if not names:
        raise InputError(f"--select-part {so.part} names no parameter of blocks "
                         f"{so.blocks} ({', '.join(BLOCK_PARTS.get(so.part, ()))} expected)")
    train(model, names)
    return Built(model, weights_part(model, names))


class ImportanceMask:
    """The trainable entries of each matrix (see the module doc) and the step hooks that keep
    the others at their pretrained values. With ``by="gradient"`` the first ``batches``
    optimizer steps only score (no parameter of the masked matrices moves)."""

    def __init__(self, params: dict[str, torch.Tensor], fraction: float, by: str,
                 batches: int) -> None:
        self.params, self.by, self.batches = params, by, batches
        self.k = {n: math.ceil(fraction * p.numel()) for n, p in params.items()}
        self.pretrained = {n: p.detach().clone() for n, p in params.items()}
        self.scores = ({n: p.detach().abs() for n, p in params.items()}
                       if by == "magnitude" else {})
        self.masks: dict[str, torch.Tensor] = {}
        if by == "magnitude":
            self._choose()

    def _choose(self) -> None:
        """Keep the ``k`` entries of largest score of each matrix; mask the gradient of the
        rest."""
        import torch

        for name, param in self.params.items():
            mask = torch.zeros(param.numel(), dtype=torch.bool, device=param.device)
            score = self.scores.get(name, torch.zeros_like(param))
            mask[score.flatten().topk(self.k[name]).indices] = True
            self.masks[name] = mask.view_as(param)
            param.register_hook(lambda grad, m=self.masks[name]: grad * m)

    def before(self, step: int, total: int) -> None:
        if self.masks:
            return
        if step > self.batches:
            raise InputError("a --mask-by gradient run cannot resume after its scoring steps "
                             "(the mask is not saved): rerun without --resume")
        if self.batches >= total:
            raise InputError(f"--mask-batches {self.batches} leaves none of the run's {total} "
                             "optimizer steps to train: use fewer, or more epochs or data")
        for name, param in self.params.items():  # score, then skip the update
            if param.grad is not None:
                self.scores[name] = self.scores.get(name, 0) + param.grad.abs()
            param.grad = None
        if step == self.batches:
            self._choose()

    def after(self, step: int, total: int) -> None:
        import torch

        with torch.no_grad():
            for name, param in self.params.items():
                keep = self.masks.get(name)
                param.copy_(self.pretrained[name] if keep is None
                            else torch.where(keep, param, self.pretrained[name]))

    def trainable(self) -> int:
        return sum(self.k.values())


def build_masked(model: nn.Module, o: MethodOptions, task: str) -> Built:
    from torch import nn

    mo = o[MaskOptions]
    if not 0 < mo.fraction <= 1:
        raise InputError(f"--mask-fraction must be in (0, 1], got {mo.fraction}")
    blocks = block_paths(model, Scope.of(model, o))
    freeze(model)
    params = {f"{name}.weight": module.weight for name, module in model.named_modules()
              if isinstance(module, nn.Linear) and any(name.startswith(b + ".") for b in blocks)}
    train(model, list(params))
    mask = ImportanceMask(params, mo.fraction, mo.by, mo.batches)
    return Built(model, weights_part(model, list(params)),
                 hooks=StepHooks(before=mask.before, after=mask.after, trainable=mask.trainable))


register(Method("full", "selective", "full fine-tuning: every parameter", 5e-5, build_full),
         "full-ft", "finetune", "fine-tuning")
register(Method("bitfit", "selective", "BitFit: bias terms only", 1e-3, build_bitfit))
register(Method("linear-probe", "selective", "the task head only; the model stays frozen",
                1e-2, build_linear_probe), "linear", "probe", "head")
register(Method("connector", "selective",
                "the multimodal projector only (plus the vision tower with --include vision)",
                1e-4, build_connector), "projector")
register(Method("layer-selective", "selective",
                "only the chosen blocks (--select-blocks), or their attention or MLP", 5e-5,
                build_layer_selective), "layers", "layer-selection", "selective-layers")
register(Method("masked", "selective",
                "a fixed share of each block matrix, chosen by pretrained or gradient magnitude",
                1e-4, build_masked), "importance-masked", "sparse", "mask")
