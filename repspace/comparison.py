"""Compare tuned models with their base: capture (cached) -> stores -> metrics -> result."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from repspace import metrics
from repspace.capture import capture, resolve_layers
from repspace.capture.run import capture_settings
from repspace.errors import FormatError, InputError
from repspace.models import LoadedModel, load_model
from repspace.probes import Probe, load_probe
from repspace.results import CompareResult, ModelInfo
from repspace.store import FeatureStore, check_aligned


def default_cache_dir() -> Path:
    """Where cached feature stores live: ``$REPSPACE_CACHE`` or ``~/.cache/repspace``."""
    return Path(os.environ.get("REPSPACE_CACHE", Path.home() / ".cache" / "repspace"))


def store_path(cache_dir: Path, model: LoadedModel, probe: Probe, settings: dict) -> Path:
    """The cache file of ``model`` on ``probe`` under ``settings``."""
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return cache_dir / "stores" / f"{model.fingerprint[:16]}-{probe.fingerprint[:12]}-{key}.h5"


def cached_capture(model: LoadedModel, probe: Probe, *, cache_dir: Path, layers: list[str],
                   pooling: str, tokens: bool, max_length: int, batch_size: int, device: str,
                   progress: bool) -> Path:
    """Capture ``model`` unless a complete store with the same key is cached (an interrupted
    one is resumed)."""
    path = store_path(cache_dir, model, probe,
                      capture_settings(layers, pooling, tokens, max_length))
    if path.exists():
        try:
            with FeatureStore(path):
                return path
        except FormatError:
            pass
    return capture(model, probe, out=path, layers=layers, pooling=pooling, tokens=tokens,
                   batch_size=batch_size, max_length=max_length, device=device,
                   resume=path.exists(), progress=progress)


def _names(sources: Sequence[str | Path | LoadedModel]) -> list[str]:
    names: list[str] = []
    for source in sources:
        text = source.source if isinstance(source, LoadedModel) else str(source)
        stem = Path(text.rstrip("/")).stem or text
        name, i = stem, 2
        while name in names or name == "base":
            name, i = f"{stem}-{i}", i + 1
        names.append(name)
    return names


def space_metrics(pooled: np.ndarray,
                  token_matrices: list[np.ndarray] | None) -> dict[str, float | None]:
    """Numbers of one space: effective rank of pooled features (N, d) and the PT-PEFT rank
    ratio of the token matrices (``None`` without tokens)."""
    return {"effective_rank": metrics.effective_rank(pooled),
            "rank_ratio": metrics.rank_ratio(token_matrices) if token_matrices else None}


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


def compare(base: LoadedModel | str | Path, tuned: Sequence[LoadedModel | str | Path], *,
            data: Probe | str | Path | None = None, layers: str | list[str] = "blocks",
            pooling: str = "mean", tokens: bool = True, k: int = 10, limit: int | None = None,
            batch_size: int = 32, max_length: int = 128, device: str = "auto",
            cache_dir: str | Path | None = None, out: str | Path | None = None,
            progress: bool = True) -> CompareResult:
    """Compare each tuned model with ``base``, layer by layer, on one probe set.

    Each model is captured once per (model, probe, settings) and the store is cached under
    ``cache_dir``. Per layer and tuned model the result holds linear CKA to the base (biased
    and debiased), effective rank (base and tuned), the PT-PEFT rank ratio (with ``tokens``),
    orthogonal Procrustes distance and mutual k-NN overlap; plus last-layer spectra and
    layer x layer CKA matrices. With ``out``, writes ``metrics.json``, ``metrics.csv`` and the
    figures (PNG + PDF) there.

    Examples
    --------
    >>> result = compare("base.pt", ["lora.pt", "prefix.pt"])      # doctest: +SKIP
    >>> print(result.table())                                      # doctest: +SKIP
    """
    if not tuned:
        raise InputError("give at least one model to compare with the base")
    base_model = base if isinstance(base, LoadedModel) else load_model(base)
    models = [t if isinstance(t, LoadedModel) else load_model(t, base=base_model) for t in tuned]
    probe = data if isinstance(data, Probe) else load_probe(data, limit=limit)
    if len(probe) < 4:
        raise InputError(f"comparisons need at least 4 samples; the probe has {len(probe)}")
    names = resolve_layers(base_model.backbone, layers)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    options = {"cache_dir": cache, "layers": names, "pooling": pooling, "tokens": tokens,
               "max_length": max_length, "batch_size": batch_size, "device": device,
               "progress": progress}
    base_store = FeatureStore(cached_capture(base_model, probe, **options))
    stores = [FeatureStore(cached_capture(m, probe, **options)) for m in models]
    labels = _names(tuned)
    result = CompareResult(
        base=ModelInfo("base", base_model.source, base_model.fingerprint),
        models=[ModelInfo(label, m.source, m.fingerprint, m.method)
                for label, m in zip(labels, models, strict=True)],
        layers=names, records=[],
        settings={"probe": probe.source, "probe_fingerprint": probe.fingerprint,
                  "n_samples": len(probe), "pooling": pooling, "k": k, "max_length": max_length,
                  "cka_estimators": ["biased (cka)", "debiased (cka_debiased)"]})
    result.stores = {name: str(s.path) for name, s in zip(["base", *labels],
                                                          [base_store, *stores], strict=True)}
    try:
        for store in stores:
            check_aligned(base_store, store)
        with_tokens = tokens and all(s.has_tokens for s in [base_store, *stores])

        def space(store: FeatureStore, layer: str, pooled: np.ndarray) -> dict:
            return space_metrics(pooled, store.tokens(layer) if with_tokens else None)

        base_pooled = {layer: base_store.pooled(layer) for layer in names}
        base_space = {layer: space(base_store, layer, base_pooled[layer]) for layer in names}
        result.spectra["base"] = metrics.singular_values(base_pooled[names[-1]]).tolist()
        with tqdm(total=len(stores) * len(names), desc="metrics", unit="layer",
                  disable=not progress) as bar:
            for label, store in zip(labels, stores, strict=True):
                tuned_pooled = [store.pooled(layer) for layer in names]
                for layer, pooled in zip(names, tuned_pooled, strict=True):
                    result.records.append({
                        "model": label, "layer": layer,
                        **pair_metrics(base_pooled[layer], pooled, k=k),
                        "effective_rank_base": base_space[layer]["effective_rank"],
                        "rank_ratio_base": base_space[layer]["rank_ratio"],
                        **space(store, layer, pooled)})
                    bar.update()
                result.spectra[label] = metrics.singular_values(tuned_pooled[-1]).tolist()
                result.cka_matrices[label] = metrics.cka_matrix(
                    [base_pooled[layer] for layer in names], tuned_pooled).tolist()
    finally:
        for store in [base_store, *stores]:
            store.close()
    if out is not None:
        write_outputs(result, Path(out))
    return result


def write_outputs(result: CompareResult, out: Path) -> list[Path]:
    """``metrics.json``, ``metrics.csv`` and every figure (PNG + PDF) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    result.to_json(out / "metrics.json")
    result.to_csv(out / "metrics.csv")
    return [out / "metrics.json", out / "metrics.csv", *result.save_figures(out)]
