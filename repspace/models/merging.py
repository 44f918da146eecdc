"""Merging tuned models in weight space, written as ordinary tuned checkpoints (a ``weights``
part, see :mod:`repspace.models.tuned`).

With base weights W_0 and tuned models W_1 ... W_n (PEFT tuners merged in, as
``merge_and_unload`` does), each tensor of the result is

``linear``
    W = W_0 + sum_i alpha_i (W_i - W_0), computed as (1 - sum_i alpha_i) W_0 + sum_i alpha_i
    W_i in float64: for one model the WiSE-FT interpolation (Wortsman et al. 2022, "Robust
    fine-tuning of zero-shot models"), exactly W_0 at alpha = 0 and exactly W_1 at alpha = 1;
    for several, task arithmetic (Ilharco et al. 2023, "Editing Models with Task Arithmetic").
``ties``
    W_0 + TIES-merging of the deltas W_i - W_0 (Yadav et al. 2023, "TIES-Merging: Resolving
    Interference When Merging Models"): each delta keeps its ``density`` share of largest
    magnitude, a sign is elected per entry, and the agreeing entries are averaged.
``dare-linear``, ``dare-ties``
    W_0 + DARE (Yu et al. 2024, "Language Models are Super Mario"): each delta keeps a random
    ``density`` share of its entries, rescaled by 1 / density, then summed with the weights
    alpha_i (or TIES-merged).

TIES and DARE are PEFT's own functions (``peft.utils.merge_utils``), applied to full weight
deltas. Methods that add tensors the base lacks (bottleneck adapters, prefix, prompt and
P-tuning embeddings) have no weights to interpolate and are refused. The larger alpha, the
further the result from the base: ``repspace compare`` of a grid of alpha shows CKA to the
base falling as alpha grows.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import peft
import torch
from peft.tuners.tuners_utils import BaseTunerLayer

from repspace.errors import InputError, MismatchError
from repspace.models.api import load_base_model, load_model, save_tuned_checkpoint
from repspace.models.loaded import LoadedModel
from repspace.models.options import MERGE_METHODS, MergeOptions
from repspace.models.tuned import Part
from repspace.utils.files import check_output

#: Name under which the virtual-token embeddings of prefix / prompt tuning are reported.
PROMPT_EMBEDDINGS = "prompt_embeddings"


def merged_parameters(model: LoadedModel) -> tuple[dict[str, torch.Tensor],
                                                   dict[str, torch.Tensor]]:
    """The parameters ``model`` runs with, by canonical (base) name, PEFT tuners merged in.

    Works on a copy (``model`` is untouched); the tensors are returned on the CPU. Every PEFT
    tuner layer is merged with PEFT's ``merge(safe_merge=True)`` and replaced by its base
    layer, so its weight carries the merged update under the base's name (the same as
    ``merge_and_unload``, also for tuners injected under a prefix wrapper, which
    ``merge_and_unload`` cannot reach).

    Returns
    -------
    (dict, dict)
        The merged parameters of the backbone, and the prompt-learning embeddings of a PEFT
        prefix / prompt wrapper (``{"prompt_embeddings": (virtual tokens, width)}``, as PEFT
        saves them, i.e. after a prefix projection), empty otherwise.
    """
    module = copy.deepcopy(model.model)
    extra: dict[str, torch.Tensor] = {}
    if isinstance(module, peft.PeftModel):
        adapter = module.active_adapter
        config = module.peft_config[adapter]
        if config.is_prompt_learning:  # a loaded checkpoint holds the encoder's outputs
            embeddings = (module.prompt_encoder[adapter].embedding.weight
                          if config.inference_mode
                          else module.get_prompt_embedding_to_save(adapter))
            extra[PROMPT_EMBEDDINGS] = embeddings.detach().cpu()
        module = module.get_base_model()
    tuners = [(n, m) for n, m in module.named_modules() if isinstance(m, BaseTunerLayer)]
    with torch.no_grad():
        for name, layer in tuners:
            layer.merge(safe_merge=True)
            parent, _, child = name.rpartition(".")
            setattr(module.get_submodule(parent), child, layer.get_base_layer())
    return {n: p.detach().cpu() for n, p in module.named_parameters()}, extra


def _deltas_merged(how: str, deltas: list[torch.Tensor], alpha: torch.Tensor,
                   density: float) -> torch.Tensor:
    """PEFT's merge of ``deltas`` (each W_i - W_0) with weights ``alpha``."""
    from peft.utils import merge_utils

    if how == "ties":
        return merge_utils.ties(deltas, alpha, density)
    if how == "dare-ties":
        return merge_utils.dare_ties(deltas, alpha, density)
    return merge_utils.dare_linear(deltas, alpha, density)


def _tuned_weights(model: LoadedModel, base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights ``model`` runs with (tuners merged), checked to be the base's tensors."""
    params, extra = merged_parameters(model)
    added = sorted(set(params) - set(base)) + sorted(extra)
    if added:
        raise InputError(f"{model.source}: {model.method or 'this model'} adds tensors the base "
                         f"lacks ({', '.join(added[:2])}): merging needs a method that changes "
                         "the base's own weights (full, LoRA, DoRA, IA3, BitFit, LoHa, ...)")
    wrong = [n for n in base if n not in params or params[n].shape != base[n].shape]
    if wrong:
        raise MismatchError(f"{model.source} is not a version of the base ({len(wrong)} base "
                            f"parameters missing or of another shape, e.g. {wrong[0]})")
    return params


_DEFAULTS = MergeOptions()


def merge_weights(base: LoadedModel | str | Path, tuned: Sequence[LoadedModel | str | Path], *,
                  out: str | Path, alpha: float | Sequence[float] = tuple(_DEFAULTS.alpha),
                  how: str = _DEFAULTS.how, density: float = _DEFAULTS.density,
                  seed: int = _DEFAULTS.seed) -> Path:
    """Interpolate one tuned model with its base, or combine several, and write the result as
    a tuned checkpoint of ``base`` (see the module doc for the formulas).

    Parameters
    ----------
    base : LoadedModel or str or Path
        The base model the tuned models were tuned from.
    tuned : sequence of LoadedModel or str or Path
        Tuned checkpoints of ``base`` (or PEFT adapter folders, or complete models with the
        base's parameter names).
    out : str or Path
        The tuned checkpoint (``.pt``) to write.
    alpha : float or sequence of float
        The weight alpha_i of each model's change W_i - W_0: one for all, or one per model. For one
        model, W = (1 - alpha) W_0 + alpha W_1: 0 gives the base, 1 the tuned model, both exactly.
    how : {"linear", "ties", "dare-linear", "dare-ties"}
        How the changes are combined.
    density : float
        Share of each change that TIES / DARE keep, in (0, 1].
    seed : int
        Seed of DARE's random drop.

    Returns
    -------
    Path
        ``out``. The checkpoint's ``method`` is ``interpolate`` (one model, linear),
        ``task-arithmetic`` (several, linear) or ``how``; its ``method_config`` holds the
        settings and the fingerprints of the merged models. One interpolated classification
        model keeps its task head.
    """
    if not tuned:
        raise InputError("give at least one tuned model to merge with the base")
    if how not in MERGE_METHODS:
        raise InputError(f"how must be one of {', '.join(MERGE_METHODS)}, got {how!r}")
    weights = [float(alpha)] * len(tuned) if isinstance(alpha, int | float) else list(alpha)
    if len(weights) == 1:
        weights *= len(tuned)
    if len(weights) != len(tuned):
        raise InputError(f"{len(weights)} alpha values for {len(tuned)} tuned models: give one "
                         "for all or one per model")
    if how != "linear" and not 0 < density <= 1:
        raise InputError(f"density must be in (0, 1], got {density}")
    out = check_output(out, flag="--out")
    base_model = load_base_model(base)
    models = [m if isinstance(m, LoadedModel) else load_model(m, base=base_model) for m in tuned]
    reference = {n: p.detach().cpu() for n, p in base_model.backbone.named_parameters()}
    params = [_tuned_weights(m, reference) for m in models]
    changed = [n for n in reference if any(not torch.equal(p[n], reference[n]) for p in params)]
    share = torch.tensor(weights, dtype=torch.float64)
    merged: dict[str, torch.Tensor] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in changed:
            theta0 = reference[name].double()
            thetas = [p[name].double() for p in params]
            if how == "linear":
                value = (1 - share.sum()) * theta0 + sum(
                    a * t for a, t in zip(share, thetas, strict=True))
            else:
                deltas = [t - theta0 for t in thetas]
                value = theta0 + _deltas_merged(how, deltas, share, density)
            value = value.to(reference[name].dtype)
            if not torch.equal(value, reference[name]):
                merged[name] = value
    single = len(models) == 1 and how == "linear"
    method = ("interpolate" if single else "task-arithmetic") if how == "linear" else how
    config = {"how": how, "alpha": weights, "density": density, "seed": seed,
              "models": [m.fingerprint for m in models], "sources": [m.source for m in models]}
    keep = models[0].info if single else {}
    return save_tuned_checkpoint([Part("weights", {}, merged)] if merged else [], base_model,
                                 out, method=method, method_config=config,
                                 head=keep.get("head") or None, task=keep.get("task") or None)
