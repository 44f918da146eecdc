"""Capture per-layer features of a model on a probe set into a feature store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from repspace.capture.hooks import collect
from repspace.capture.layers import resolve_layers, split_layer
from repspace.capture.tokens import POOLINGS, pool, real_positions, split_tokens
from repspace.errors import InputError
from repspace.models import LoadedModel, load_model
from repspace.probes import Probe, load_probe
from repspace.store import StoreWriter


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"unknown device {device!r}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda was asked for but no CUDA GPU is available")
    return resolved


def capture_settings(layers: list[str], pooling: str, tokens: bool, max_length: int) -> dict:
    """The settings that determine a store's contents (the cache key besides model and probe)."""
    return {"layers": layers, "pooling": pooling, "tokens": tokens, "max_length": max_length}


def _encode(tokenizer: Any, texts: list[str], max_length: int,
            device: torch.device) -> dict[str, torch.Tensor]:
    # Right padding keeps every real token at the position it has without padding (0..L-1),
    # also in decoders, which are otherwise often padded on the left.
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt", padding_side="right")
    if "token_type_ids" in batch and not batch["token_type_ids"].any():
        del batch["token_type_ids"]
    return {k: v.to(device) for k, v in batch.items()}


def capture(model: LoadedModel | str | Path, probe: Probe | str | Path | None = None, *,
            out: str | Path, layers: str | list[str] = "blocks", pooling: str = "mean",
            tokens: bool = False, batch_size: int = 32, max_length: int = 128,
            device: str | torch.device = "auto", resume: bool = False,
            progress: bool = True) -> Path:
    """Run ``model`` over ``probe`` and write per-layer features to the HDF5 store ``out``.

    Parameters
    ----------
    model:
        A :class:`~repspace.models.LoadedModel` or anything :func:`~repspace.load_model` reads.
    probe:
        A :class:`~repspace.probes.Probe`, a text/JSONL file, or ``None`` for the shipped probe.
    layers:
        Preset (``blocks``, ``embeddings``), module paths, globs or ``re:`` patterns (see
        :mod:`repspace.capture.layers`).
    pooling:
        ``mean`` over real tokens, ``first`` real token (CLS) or ``last`` real token;
        ``tokens`` is ``mean`` with ``tokens=True``.
    tokens:
        Also keep every sample's real-token matrix (for :func:`~repspace.metrics.rank_ratio`).
    resume:
        Continue an interrupted capture into ``out`` instead of starting over.

    Features are taken under ``torch.inference_mode()``, moved to the CPU as float32 at once and
    written batch by batch, so memory does not grow with the number of samples. Padding and
    prompt-tuning virtual tokens are never captured.

    Returns the path of the completed store.
    """
    if pooling == "tokens":
        pooling, tokens = "mean", True
    if pooling not in POOLINGS:
        raise InputError(f"unknown pooling {pooling!r}; choose from "
                         f"{', '.join(POOLINGS)}, tokens")
    if batch_size < 1 or max_length < 1:
        raise InputError("batch_size and max_length must be positive")
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    probe = probe if isinstance(probe, Probe) else load_probe(probe)
    names = resolve_layers(loaded.backbone, layers)
    dev = resolve_device(device)
    loaded.model.to(dev).eval()
    settings = capture_settings(names, pooling, tokens, max_length)
    meta = {"model_fingerprint": loaded.fingerprint, "model_source": loaded.source,
            "probe_fingerprint": probe.fingerprint, "pooling": pooling, "settings": settings,
            "n_expected": len(probe)}
    layer_attrs = {name: {"module_path": split_layer(name)[0],
                          "captures": "input" if split_layer(name)[1] else "output",
                          "token_selection": "real tokens", "modality": "text", "dim": None}
                   for name in names}
    with collect(loaded.backbone, names) as captured, torch.inference_mode():

        def features(texts: list[str]) -> tuple[dict, dict]:
            batch = _encode(loaded.tokenizer, texts, max_length, dev)
            captured.clear()
            loaded.model(**batch)
            mask = batch["attention_mask"].to("cpu")
            pooled, token_mats = {}, {}
            for name in names:
                if name not in captured:
                    raise InputError(f"layer {name} did not run in the forward pass")
                hidden = real_positions(captured[name], mask, loaded.virtual_tokens, name)
                pooled[name] = pool(hidden, mask, pooling).numpy()
                if tokens:
                    token_mats[name] = [t.numpy() for t in split_tokens(hidden, mask)]
            return pooled, token_mats

        first_ids, first_texts = next(probe.batches(batch_size))
        first = features(first_texts)
        for name in names:
            layer_attrs[name]["dim"] = first[0][name].shape[1]
        with StoreWriter(out, meta=meta, layers=layer_attrs, tokens=tokens,
                         resume=resume) as writer:
            if writer.n_written == 0:
                writer.append(first_ids, *first)
            with tqdm(total=len(probe), initial=writer.n_written, unit="sample",
                      desc=f"capture {Path(out).name}", disable=not progress) as bar:
                for ids, texts in probe.batches(batch_size, start=writer.n_written):
                    writer.append(ids, *features(texts))
                    bar.update(len(ids))
            return writer.finish()
