"""Weight-space analysis of tuned models against their base: no data, no forward pass.

Each tuned model is loaded onto its base, PEFT tuners (LoRA, DoRA, IA3, ...) are merged into the
weights by PEFT's own ``merge`` of every tuner layer, and every parameter is compared with the
base's parameter of the same canonical name: matrices get the full analysis of
:func:`repspace.metrics.weight_change`, other tensors (biases, LayerNorm) their norms, and
tensors the base lacks (bottleneck adapters, prefix/prompt embeddings) their size and spectrum.
The classification head of a tuned checkpoint is not part of the model and is not reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from repspace import metrics
from repspace.analysis.naming import model_names
from repspace.analysis.options import WeightOptions
from repspace.errors import InputError, MismatchError
from repspace.models import LoadedModel, load_model
from repspace.models.api import load_base_model
from repspace.models.merging import merged_parameters
from repspace.models.structure import block_stack
from repspace.results import ModelInfo, WeightReport
from repspace.utils.files import check_output


def _blocks(model: LoadedModel) -> tuple[str | None, list[str]]:
    """The block stack's path and its blocks' paths (none if the model has no stack)."""
    try:
        stack = block_stack(model.backbone)
    except InputError:
        return None, []
    return stack, [f"{stack}.{i}" for i in range(len(model.backbone.get_submodule(stack)))]


def _locate(name: str, stack: str | None) -> tuple[str | None, str]:
    """(block path or None, path inside the block without ``.weight``) of a parameter name."""
    if stack is not None and name.startswith(stack + "."):
        index, _, rest = name[len(stack) + 1:].partition(".")
        if index.isdigit():
            return f"{stack}.{index}", rest.removesuffix(".weight")
    return None, name.removesuffix(".weight")


def _eps(tensor: torch.Tensor) -> float | None:
    return torch.finfo(tensor.dtype).eps if tensor.is_floating_point() else None


def _record(model: str, name: str, kind: str, tensor: torch.Tensor, base: torch.Tensor | None,
            stack: str | None, options: dict[str, Any], max_dim: int | None) -> dict[str, Any]:
    """The record of one changed or added tensor (``options``: k, epsilon, top, energy)."""
    layer, matrix = _locate(name, stack)
    record: dict[str, Any] = {"model": model, "name": name, "layer": layer, "matrix": matrix,
                              "kind": kind, "shape": "x".join(map(str, tensor.shape)),
                              "params": tensor.numel()}
    tuned = tensor.detach().to("cpu", torch.float64).numpy()
    if kind == "added":
        record.update(metrics.tensor_spectrum(tuned, energy=options["energy"],
                                              eps=_eps(tensor)))
        return record
    reference = base.detach().to("cpu", torch.float64).numpy()
    if kind == "matrix" and (max_dim is None or max(tensor.shape) <= max_dim):
        record.update(metrics.weight_change(reference, tuned, eps=_eps(tensor), **options))
    else:
        record.update(metrics.delta_norms(reference.ravel(), tuned.ravel()))
    return record


def _kind(tensor: torch.Tensor) -> str:
    return {2: "matrix", 1: "vector"}.get(tensor.dim(), "tensor")


def _changes(label: str, model: LoadedModel, base: dict[str, torch.Tensor], stack: str | None,
             options: dict[str, Any], max_dim: int | None,
             progress: bool) -> list[dict[str, Any]]:
    """Records of every tensor of ``model`` that differs from ``base`` or that ``base`` lacks."""
    params, extra = merged_parameters(model)
    missing = [n for n in base if n not in params]
    wrong = [n for n in base if n in params and params[n].shape != base[n].shape]
    if missing or wrong:
        example = (missing or wrong)[0]
        raise MismatchError(f"{model.source} is not a version of the base "
                            f"({len(missing)} base parameters missing, {len(wrong)} of another "
                            f"shape, e.g. {example}): pass the base it was tuned from")
    added = {**{n: p for n, p in params.items() if n not in base}, **extra}
    jobs = [(n, _kind(p), p, base[n]) for n, p in params.items()
            if n in base and not torch.equal(p, base[n].to(p.dtype))]
    jobs += [(n, "added", p, None) for n, p in added.items()]
    return [_record(label, name, kind, tensor, reference, stack, options, max_dim)
            for name, kind, tensor, reference in tqdm(jobs, desc=f"weights {label}",
                                                      unit="tensor", disable=not progress)]


_DEFAULTS = WeightOptions()


def weight_report(base: LoadedModel | str | Path,
                  tuned: Sequence[LoadedModel | str | Path], *,
                  names: Sequence[str] | None = None, k: int = _DEFAULTS.k,
                  epsilon: float = _DEFAULTS.epsilon, top: int = _DEFAULTS.top,
                  energy: float = _DEFAULTS.energy, max_dim: int | None = _DEFAULTS.max_dim,
                  out: str | Path | None = None, progress: bool = True) -> WeightReport:
    """Weight-space changes of each tuned model against ``base``; needs no data.

    For every tensor that tuning changed (LoRA/DoRA/IA3 merged into W, full fine-tuning,
    BitFit biases) dW = W_tuned - W_base gets: relative Frobenius and spectral norms; for
    matrices also the singular value spectrum, numerical rank, effective rank and the rank
    holding ``energy`` of the spectral energy, intruder dimensions (top-``k`` singular vectors
    of W_tuned with max |cos| < ``epsilon`` against all of W_base's; Shuttleworth et al. 2024)
    and principal angles between the top-``top`` singular subspaces. Tensors the base lacks
    (adapters, prefix / prompt embeddings) are reported by size, norm and spectrum.

    Parameters
    ----------
    base : LoadedModel or str or Path
        The base model (a loaded model or anything :func:`repspace.load_model` accepts).
    tuned : sequence of LoadedModel or str or Path
        Tuned checkpoints / PEFT folders applied onto ``base``, or complete models with the
        base's parameter names and shapes.
    names : sequence of str, optional
        Display names of the tuned models (default: their file stems).
    k : int
        Top singular vectors of W_tuned tested for intruder dimensions (default 10); see
        :func:`repspace.metrics.weight_change`.
    epsilon : float
        Intruder threshold on the largest |cosine| with W_base's singular vectors (default 0.5).
    top : int
        Dimension of the top singular subspaces whose principal angles are reported (default 10).
    energy : float
        Share of the spectral energy the energy rank holds (default 0.9).
    max_dim : int, optional
        Matrices with a side longer than this (e.g. a 30k x 384 vocabulary embedding) get only
        their Frobenius norms, no SVD; ``None`` (default) analyses every matrix.
    out : str or Path, optional
        If given, write ``weights.json``, ``weights.csv`` and the figures (PNG + PDF) there.
    progress : bool
        Show a progress bar per model.

    Returns
    -------
    WeightReport
        Per tensor records and a per-model summary; see
        :class:`~repspace.results.weights.WeightReport`.

    Examples
    --------
    >>> report = weight_report("base.pt", ["lora.pt", "full.pt"])     # doctest: +SKIP
    >>> print(report.table())                                         # doctest: +SKIP
    """

    if not tuned:
        raise InputError("give at least one tuned model to compare with the base")
    if out is not None:
        check_output(out, folder=True)
    metrics.check_weight_options(k, epsilon, top, energy)
    if max_dim is not None and (isinstance(max_dim, bool) or not isinstance(max_dim, int)
                                or max_dim < 1):
        raise InputError(f"max_dim must be a positive integer or None, got {max_dim!r}")
    base_model = load_base_model(base)
    labels = list(names) if names is not None else model_names(tuned)
    if len(labels) != len(tuned):
        raise InputError(f"{len(labels)} names given for {len(tuned)} tuned models")
    options = {"k": k, "epsilon": epsilon, "top": top, "energy": energy}
    stack, blocks = _blocks(base_model)
    base_params = {n: p.detach().cpu() for n, p in base_model.backbone.named_parameters()}
    records: list[dict[str, Any]] = []
    infos = []
    for label, source in zip(labels, tuned, strict=True):
        model = source if isinstance(source, LoadedModel) else load_model(source, base=base_model)
        infos.append(ModelInfo(label, model.source, model.fingerprint, model.method))
        records += _changes(label, model, base_params, stack, options, max_dim, progress)
    report = WeightReport(
        base=ModelInfo("base", base_model.source, base_model.fingerprint), models=infos,
        layers=blocks, records=records,
        settings={**options, "max_dim": max_dim,
                  "side": "left (column space of each stored matrix)",
                  "rank_tolerance": "max(eps * ||W_tuned||_F, max(m, n) * eps * s_1(dW)), eps "
                                    "of the stored dtype (numpy's matrix_rank convention)",
                  "intruders": "Shuttleworth et al. 2024, arXiv:2410.21228"})
    if out is not None:
        report.save(out)
    return report
