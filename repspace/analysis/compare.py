"""Compare tuned models with their base: capture (cached) -> stores -> metrics -> result."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from repspace import metrics
from repspace.analysis.cache import cached_capture, default_cache_dir
from repspace.analysis.naming import model_names
from repspace.analysis.streaming import stream_memory, stream_metrics
from repspace.analysis.weights import weight_report
from repspace.capture import resolve_layers
from repspace.capture.options import CaptureOptions
from repspace.capture.run import check_skip_first
from repspace.errors import InputError
from repspace.models import LoadedModel, load_model
from repspace.models.api import load_base_model
from repspace.probes import Probe, load_probe
from repspace.results import CompareResult, ModelInfo
from repspace.results.tables import fmt_bytes
from repspace.store import FeatureStore, check_aligned
from repspace.utils.files import check_output
from repspace.utils.memory import memory_budget as resolve_budget

#: What a streamed comparison leaves out: they need all rows (or all tokens) at once.
STREAMED_LEFT_OUT = ("mutual_knn", "rank_ratio", "displacement")


def space_metrics(pooled: np.ndarray,
                  token_matrices: list[np.ndarray] | None) -> dict[str, float | None]:
    """Numbers of one space: effective rank of pooled features (N, d) and the PT-PEFT rank
    ratio of the token matrices (``None`` without tokens)."""
    return {"effective_rank": metrics.effective_rank(pooled),
            "rank_ratio": metrics.rank_ratio(token_matrices) if token_matrices else None}


@contextmanager
def _naming(what: str, layer: str) -> Iterator[None]:
    """Say which model and layer a metric's input error (NaN, constant features) is about."""
    try:
        yield
    except InputError as exc:
        raise InputError(f"{what}, layer {layer}: {exc}") from exc


def pair_metrics(base: np.ndarray, tuned: np.ndarray, *, k: int) -> dict[str, float | None]:
    """Numbers between two spaces of the same samples: CKA (biased, debiased), Procrustes
    distance and mutual k-NN overlap."""
    n = base.shape[0]
    return {
        "cka": metrics.linear_cka(base, tuned),
        "cka_debiased": metrics.linear_cka(base, tuned, debiased=True) if n >= 4 else None,
        "procrustes": metrics.procrustes_distance(base, tuned),
        "mutual_knn": metrics.mutual_knn(base, tuned, k=min(k, n - 1)),
    }


def moved_samples(base: np.ndarray, tuned: np.ndarray, ids: Sequence[str],
                  texts: Sequence[str], *, k: int, top: int = 5) -> dict[str, Any]:
    """Per-sample displacement of one layer (:func:`repspace.metrics.displacement`: distance
    after Procrustes alignment, k-NN change), with the ``top`` most and least moved samples
    (by distance) named by id and text."""
    moved = metrics.displacement(base, tuned, k=min(k, base.shape[0] - 1))
    order = np.argsort(-moved.distance, kind="stable")

    def sample(i: int) -> dict[str, Any]:
        return {"index": int(i), "id": ids[i], "text": texts[i],
                "distance": float(moved.distance[i]), "knn_change": float(moved.knn_change[i])}

    return {"k": moved.k, "distance": moved.distance.tolist(),
            "knn_change": moved.knn_change.tolist(),
            "most": [sample(i) for i in order[:top]],
            "least": [sample(i) for i in order[::-1][:top]]}


def in_memory_bytes(n: int, dims: Sequence[int], token_rows: int = 0) -> int:
    """Estimated peak memory (bytes) of comparing one tuned model with the base in memory:
    the float32 pooled rows of both (8 N D bytes, D the summed layer widths), the float64
    working copies of the layer x layer CKA matrix (32 N D), the N x N similarity and index
    matrices of mutual k-NN and the displacement (24 N^2) and, with tokens, the float32 token
    rows of one layer of both models (8 T d for T token rows)."""
    width = sum(dims)
    return 40 * n * width + 24 * n * n + 8 * token_rows * max(dims)


_CAPTURE = CaptureOptions()


def compare(base: LoadedModel | str | Path, tuned: Sequence[LoadedModel | str | Path], *,
            data: Probe | str | Path | None = None, layers: str | list[str] = _CAPTURE.layers,
            pooling: str = _CAPTURE.pooling, tokens: bool = True, k: int = 10,
            limit: int | None = None, batch_size: int = _CAPTURE.batch_size,
            max_length: int = _CAPTURE.max_length, device: str = _CAPTURE.device,
            cache_dir: str | Path | None = None, out: str | Path | None = None,
            weights: bool = True, progress: bool = True, modality: str = _CAPTURE.modality,
            vision_tokens: str = _CAPTURE.vision_tokens, skip_first: bool = _CAPTURE.skip_first,
            memory_budget: int | float | str | None = None) -> CompareResult:
    """Compare each tuned model with ``base``, layer by layer, on one probe set.

    Each model is captured once per (model, probe, settings) and the store is cached under
    ``cache_dir``. Per layer and tuned model the result holds linear CKA to the base (biased
    and debiased), effective rank (base and tuned), the PT-PEFT rank ratio (with ``tokens``),
    orthogonal Procrustes distance and mutual k-NN overlap; plus last-layer spectra, layer x
    layer CKA matrices and the per-sample displacement at the last layer (``displacement``:
    which samples tuning moved most and least, by text). With ``weights``, the tuned
    checkpoints (models applied onto ``base``: tuned ``.pt`` files, PEFT folders) also get the
    weight-space analysis of :func:`repspace.analysis.weights.weight_report` in
    ``result.weights``. With ``out``, writes ``metrics.json``, ``metrics.csv`` and the figures
    (PNG + PDF) there, plus ``weights.json``, ``weights.csv`` and the weight figures when there
    is a weight section.

    With an image+text probe (vision-language models; see :mod:`repspace.capture.multimodal`),
    ``modality="split"`` gives every language-model layer three rows: all tokens (modality
    ``all``), image tokens (``LAYER@image``) and text tokens (``LAYER@text``); vision-tower and
    connector layers have modality ``image``. Every record carries its ``modality``
    (``text`` for text probes), and tables and figures are also drawn per modality.

    ``skip_first`` leaves each sample's first token out of every feature: for decoder language
    models, whose first token is the attention sink (see :func:`repspace.capture.capture`).

    ``memory_budget`` (bytes, or a size such as ``"2GB"``; default: half the physical memory)
    bounds what the metrics hold. When the in-memory comparison would need more
    (:func:`in_memory_bytes`), the stores are streamed instead, as ``repspace metrics`` does
    (:func:`repspace.analysis.streaming.stream_metrics`, in float64, so the numbers are the
    in-memory ones to rounding): CKA (both estimators, and the layer x layer matrices),
    Procrustes distances, effective ranks and spectra, in memory independent of N. Mutual k-NN,
    the rank ratio and the per-sample displacement need all rows at once and are left out
    (``None``; ``settings["streamed"]`` is true and the table says so).

    Examples
    --------
    >>> result = compare("base.pt", ["lora.pt", "prefix.pt"])      # doctest: +SKIP
    >>> print(result.table())                                      # doctest: +SKIP
    """
    if not tuned:
        raise InputError("give at least one model to compare with the base")
    if out is not None:
        check_output(out, folder=True)
    probe = data if isinstance(data, Probe) else load_probe(data, limit=limit)
    check_skip_first(probe, skip_first)
    if len(probe) < 4:
        raise InputError(f"comparisons need at least 4 samples; the probe has {len(probe)}")
    if k < 1:
        raise InputError(f"k (neighbours for mutual k-NN) must be at least 1, got {k}")
    if k >= len(probe):
        raise InputError(f"mutual k-NN with k = {k} needs at least {k + 1} samples; the probe "
                         f"has {len(probe)}: lower --k or use more samples")
    budget = resolve_budget(memory_budget)
    base_model = load_base_model(base)
    models = [t if isinstance(t, LoadedModel) else load_model(t, base=base_model) for t in tuned]
    names = resolve_layers(base_model.backbone, layers)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    options = {"cache_dir": cache, "layers": names, "pooling": pooling, "tokens": tokens,
               "max_length": max_length, "batch_size": batch_size, "device": device,
               "progress": progress, "modality": modality, "vision_tokens": vision_tokens,
               "skip_first": skip_first}
    base_store = FeatureStore(cached_capture(base_model, probe, **options))
    stores = [FeatureStore(cached_capture(m, probe, **options)) for m in models]
    labels = model_names(tuned)
    names = base_store.layers
    modalities = {layer: str(base_store.layer_attrs(layer).get("modality", "text"))
                  for layer in names}
    result = CompareResult(
        base=ModelInfo("base", base_model.source, base_model.fingerprint),
        models=[ModelInfo(label, m.source, m.fingerprint, m.method)
                for label, m in zip(labels, models, strict=True)],
        layers=names, records=[],
        settings={"probe": probe.source, "probe_fingerprint": probe.fingerprint,
                  "n_samples": len(probe), "pooling": pooling, "skip_first": skip_first, "k": k,
                  "max_length": max_length,
                  "cka_estimators": ["biased (cka)", "debiased (cka_debiased)"]})
    result.stores = {name: str(s.path) for name, s in zip(["base", *labels],
                                                          [base_store, *stores], strict=True)}
    try:
        for store in stores:
            check_aligned(base_store, store)
        with_tokens = tokens and all(s.has_tokens for s in [base_store, *stores])
        n = len(probe)
        dims = [int(base_store.layer_attrs(layer)["dim"]) for layer in names]
        token_rows = max((int(s.token_counts(layer).sum()) for s in [base_store, *stores]
                          for layer in names), default=0) if with_tokens else 0
        needed = in_memory_bytes(n, dims, token_rows)
        streamed = needed > budget
        result.settings.update({"memory_budget": budget, "memory_in_memory": needed,
                                "streamed": streamed})
        if streamed:
            _streamed(result, base_store, stores, labels, names, modalities, budget, progress)
        else:
            _in_memory(result, base_store, stores, labels, names, modalities, with_tokens,
                       dict(zip(probe.ids, probe.texts, strict=True)), k, progress)
    finally:
        for store in [base_store, *stores]:
            store.close()
    checkpoints = [(label, m) for label, m in zip(labels, models, strict=True)
                   if m.kind == "tuned" and m.base_fingerprint == base_model.fingerprint]
    if weights and checkpoints:
        result.weights = weight_report(base_model, [m for _, m in checkpoints],
                                       names=[label for label, _ in checkpoints],
                                       progress=progress)
    if out is not None:
        result.save(out)
    return result


def _in_memory(result: CompareResult, base_store: FeatureStore, stores: list[FeatureStore],
               labels: list[str], names: list[str], modalities: dict[str, str],
               with_tokens: bool, text_of: dict[str, str], k: int, progress: bool) -> None:
    """Every metric, from the pooled rows held in memory (the base's, and one tuned model's
    at a time)."""

    def space(store: FeatureStore, layer: str, pooled: np.ndarray) -> dict:
        return space_metrics(pooled, store.tokens(layer) if with_tokens else None)

    base_pooled = {layer: base_store.pooled(layer) for layer in names}
    base_space = {}
    for layer in names:
        with _naming("the base", layer):
            base_space[layer] = space(base_store, layer, base_pooled[layer])
    result.spectra["base"] = metrics.singular_values(base_pooled[names[-1]]).tolist()
    with tqdm(total=len(stores) * len(names), desc="metrics", unit="layer",
              disable=not progress) as bar:
        for label, store in zip(labels, stores, strict=True):
            tuned_pooled = [store.pooled(layer) for layer in names]
            for layer, pooled in zip(names, tuned_pooled, strict=True):
                with _naming(f"{label} (Y) against the base (X)", layer):
                    result.records.append({
                        "model": label, "layer": layer, "modality": modalities[layer],
                        **pair_metrics(base_pooled[layer], pooled, k=k),
                        "effective_rank_base": base_space[layer]["effective_rank"],
                        "rank_ratio_base": base_space[layer]["rank_ratio"],
                        **space(store, layer, pooled)})
                bar.update()
            result.spectra[label] = metrics.singular_values(tuned_pooled[-1]).tolist()
            with _naming(f"{label} against the base", names[-1]):
                result.displacement[label] = {"layer": names[-1], **moved_samples(
                    base_pooled[names[-1]], tuned_pooled[-1], base_store.sample_ids,
                    [text_of[i] for i in base_store.sample_ids], k=k)}
            result.cka_matrices[label] = metrics.cka_matrix(
                [base_pooled[layer] for layer in names], tuned_pooled).tolist()


def _streamed(result: CompareResult, base_store: FeatureStore, stores: list[FeatureStore],
              labels: list[str], names: list[str], modalities: dict[str, str], budget: int,
              progress: bool) -> None:
    """The metrics that moments give exactly, streamed from the stores in float64 (one pass
    per tuned model), with chunks as large as the budget allows; the others are ``None``."""
    n = int(base_store.meta["n_written"])
    dims = [int(base_store.layer_attrs(layer)["dim"]) for layer in names]
    chunk_rows = max(1, min(65536, (budget - stream_memory(n, dims, 0)) // (48 * sum(dims))))
    if stream_memory(n, dims, chunk_rows) > budget:
        raise InputError(
            f"even streamed, comparing {len(names)} layers of {n:,} samples needs about "
            f"{fmt_bytes(stream_memory(n, dims, 1))} (the layer x layer moments), more than "
            f"the memory budget of {fmt_bytes(budget)}: compare fewer layers (--layers) or "
            "raise --memory-budget")
    result.settings["left_out"] = list(STREAMED_LEFT_OUT)
    for label, store in zip(labels, stores, strict=True):
        streamed = stream_metrics(base_store, store, layers=names, chunk_rows=chunk_rows,
                                  progress=progress, precision="float64")
        for k, layer in enumerate(names):
            result.records.append({
                "model": label, "layer": layer, "modality": modalities[layer],
                "cka": float(streamed.cka[k, k]),
                "cka_debiased": float(streamed.cka_debiased[k, k]),
                "procrustes": streamed.procrustes[layer], "mutual_knn": None,
                "effective_rank_base": streamed.effective_rank_a[layer],
                "rank_ratio_base": None,
                "effective_rank": streamed.effective_rank_b[layer], "rank_ratio": None})
        result.spectra.setdefault("base", streamed.singular_values_a[names[-1]].tolist())
        result.spectra[label] = streamed.singular_values_b[names[-1]].tolist()
        result.cka_matrices[label] = streamed.cka.tolist()
