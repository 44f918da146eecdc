"""Capture per-layer features of a model on a probe set into a feature store."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from repspace.capture.hooks import collect
from repspace.capture.layers import resolve_layers, split_layer
from repspace.capture.multimodal import ImageTextCapture
from repspace.capture.options import CaptureOptions
from repspace.capture.shard import (
    WINDOW_BATCHES,
    shard_path,
    shard_probe,
    shard_span,
    window_order,
)
from repspace.capture.tokens import (
    POOLINGS,
    pool,
    real_positions,
    split_tokens,
    without_first,
)
from repspace.errors import InputError
from repspace.models import LoadedModel, load_model
from repspace.probes import Probe, load_probe
from repspace.store import StoreWriter, merge_stores
from repspace.utils.device import resolve_device
from repspace.utils.distributed import World, init_world
from repspace.utils.files import check_output


def check_skip_first(probe: Probe, skip_first: bool) -> None:
    """Refuse ``skip_first`` for a probe with images, before any model is loaded."""
    if skip_first and probe.images is not None:
        raise InputError("skip_first applies to text probes; this probe has images")


def capture_settings(layers: list[str], pooling: str, tokens: bool, max_length: int,
                     image_text: dict | None = None, skip_first: bool = False) -> dict:
    """The settings that determine a store's contents (the cache key besides model and probe);
    ``image_text`` adds the modality options of an image+text probe, ``skip_first`` is recorded
    only when set (stores captured before it existed keep their keys)."""
    return {"layers": layers, "pooling": pooling, "tokens": tokens, "max_length": max_length,
            **(image_text or {}), **({"skip_first": True} if skip_first else {})}


def _encode(tokenizer: Any, texts: list[str], max_length: int,
            device: torch.device) -> dict[str, torch.Tensor]:
    # Right padding keeps every real token at the position it has without padding (0..L-1),
    # also in decoders, which are otherwise often padded on the left.
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt", padding_side="right")
    if "token_type_ids" in batch and not batch["token_type_ids"].any():
        del batch["token_type_ids"]
    return {k: v.to(device) for k, v in batch.items()}


_DEFAULTS = CaptureOptions()


def capture(model: LoadedModel | str | Path, probe: Probe | str | Path | None = None, *,
            out: str | Path, layers: str | list[str] = _DEFAULTS.layers,
            pooling: str = _DEFAULTS.pooling, tokens: bool = False,
            batch_size: int = _DEFAULTS.batch_size, max_length: int = _DEFAULTS.max_length,
            device: str | torch.device = _DEFAULTS.device, resume: bool = False,
            progress: bool = True, shard: tuple[int, int] | None = None,
            modality: str = _DEFAULTS.modality,
            vision_tokens: str = _DEFAULTS.vision_tokens,
            skip_first: bool = _DEFAULTS.skip_first) -> Path:
    """Run ``model`` over ``probe`` and write per-layer features to the HDF5 store ``out``.

    Features are taken under ``torch.inference_mode()``, moved to the CPU as float32 at once and
    written window by window (``batch_size * WINDOW_BATCHES`` samples, batched shortest text
    first and stored in probe order), so memory does not grow with the number of samples.
    Padding and prompt-tuning virtual tokens are never captured.

    Parameters
    ----------
    model : LoadedModel or str or Path
        A :class:`~repspace.models.LoadedModel` or anything :func:`~repspace.load_model` reads.
    probe : Probe or str or Path, optional
        A :class:`~repspace.probes.Probe`, a text/JSONL file, or ``None`` for the shipped probe.
    out : str or Path
        The feature store (``.h5``) to write.
    layers : str or list of str
        Preset (``blocks``, ``embeddings``), module paths, globs or ``re:`` patterns (see
        :mod:`repspace.capture.layers`).
    pooling : {"mean", "first", "last", "tokens"}
        ``mean`` over real tokens, ``first`` real token (CLS) or ``last`` real token;
        ``tokens`` is ``mean`` with ``tokens=True``.
    tokens : bool
        Also keep every sample's real-token matrix (for :func:`~repspace.metrics.rank_ratio`).
    batch_size : int
        Samples per forward pass.
    max_length : int
        Inputs are truncated to this many tokens.
    device : str or torch.device
        ``auto`` (CUDA when present), ``cpu``, ``cuda`` or a device.
    resume : bool
        Continue an interrupted capture into ``out`` instead of starting over (a complete
        store of the same capture is kept as it is).
    progress : bool
        Show a progress bar.
    shard : tuple of (int, int), optional
        ``(k, n)``: capture only shard ``k`` of ``n`` (contiguous windows of the probe, see
        :mod:`repspace.capture.shard`) into ``out``; merge the shards with
        :func:`repspace.store.merge_stores`. Under ``torchrun`` every rank captures its own
        shard into ``<out stem>.rank<k>.h5`` and rank 0 merges them into ``out``.
    modality : {"split", "all", "image", "text"}
        For image+text probes on vision-language models: which language-model tokens to keep
        (``split``: all, image and text tokens as three layers ``NAME``, ``NAME@image``,
        ``NAME@text``; or one of ``all``, ``image``, ``text``). See
        :mod:`repspace.capture.multimodal`.
    vision_tokens : {"patches", "cls"}
        Which vision-tower tokens of a vision-language model to keep.
    skip_first : bool
        Leave each sample's first real token out of the pooled features and token matrices
        (text probes). In decoder language models that token is the attention sink: in the
        middle layers its hidden state is often over 100x larger than the others' (190x in
        SmolLM2-135M; Sun et al. 2024, "Massive Activations in Large Language Models"), so it
        dominates a mean over tokens, and a prefix, which gives the model other keys to attend
        to, removes it.

    Returns
    -------
    Path
        The path of the completed store.
    """
    if pooling == "tokens":
        pooling, tokens = "mean", True
    if pooling not in POOLINGS:
        raise InputError(f"unknown pooling {pooling!r}; choose from "
                         f"{', '.join(POOLINGS)}, tokens")
    if batch_size < 1 or max_length < 1:
        raise InputError("batch_size and max_length must be positive")
    check_output(out)
    probe = probe if isinstance(probe, Probe) else load_probe(probe)
    check_skip_first(probe, skip_first)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    names = resolve_layers(loaded.backbone, layers)
    dev = resolve_device(device)
    world = init_world(dev.type) if shard is None else World()
    loaded.model.to(dev).eval()
    window = batch_size * WINDOW_BATCHES
    image_text = ({"modality": modality, "vision_tokens": vision_tokens}
                  if probe.images is not None else None)
    settings = capture_settings(names, pooling, tokens, max_length, image_text, skip_first)
    target, whole, shard_of = Path(out), probe, None
    if world.distributed:
        shard, target = (world.rank, world.size), shard_path(out, world.rank)
    if shard is not None:
        start, stop = shard_span(len(whole), window, *shard)
        if start == stop and not world.distributed:
            raise InputError(f"shard {shard[0]}/{shard[1]} is empty: {len(whole)} samples make "
                             f"only {-(-len(whole) // window)} windows of {window}")
        probe = shard_probe(whole, start, stop) if stop > start else None
        shard_of = {"probe_fingerprint": whole.fingerprint, "n": len(whole), "start": start,
                    "stop": stop}
    if probe is not None:
        meta = {"model_fingerprint": loaded.fingerprint, "model_source": loaded.source,
                "probe_fingerprint": probe.fingerprint, "pooling": pooling,
                "settings": settings, "n_expected": len(probe), "shard_of": shard_of}
        _capture_windows(loaded, probe, target, meta, names, tokens=tokens, pooling=pooling,
                         batch_size=batch_size, max_length=max_length, device=dev,
                         resume=resume, progress=progress and world.is_main,
                         image_text=image_text, skip_first=skip_first)
    if world.distributed:
        world.barrier()
        if world.is_main:
            spans = [shard_span(len(whole), window, k, world.size) for k in range(world.size)]
            parts = [shard_path(out, k) for k, (a, b) in enumerate(spans) if b > a]
            merge_stores(parts, out)
            for part in parts:
                part.unlink()
        world.barrier()
    return Path(out)


def _check_finite(pooled: dict[str, np.ndarray], token_mats: dict[str, list[np.ndarray]],
                  source: str) -> None:
    for name, rows in pooled.items():
        if not all(np.isfinite(a).all() for a in [rows, *token_mats.get(name, ())]):
            raise InputError(f"features of layer {name} of {source} contain NaN/inf "
                             "(model weights or inputs?)")


def _in_probe_order(parts: list[tuple[list[int], tuple[dict, dict]]], n: int,
                    names: list[str]) -> tuple[dict, dict]:
    """Pooled rows and token matrices of a window's batches, put back in probe order."""
    pooled, token_mats = {}, {}
    for name in names:
        rows = np.empty((n, parts[0][1][0][name].shape[1]), np.float32)
        mats: list[np.ndarray] = [np.empty(0)] * n
        for chosen, (batch_pooled, batch_tokens) in parts:
            rows[chosen] = batch_pooled[name]
            for i, mat in zip(chosen, batch_tokens.get(name, ()), strict=False):
                mats[i] = mat
        pooled[name] = rows
        if parts[0][1][1]:
            token_mats[name] = mats
    return pooled, token_mats


def _needs_pixels(model: torch.nn.Module) -> bool:
    """Whether ``model.forward`` requires ``pixel_values`` (BLIP-2, InstructBLIP)."""
    parameter = inspect.signature(model.forward).parameters.get("pixel_values")
    return parameter is not None and parameter.default is inspect.Parameter.empty


def _capture_windows(loaded: LoadedModel, probe: Probe, out: Path, meta: dict,
                     names: list[str], *, tokens: bool, pooling: str, batch_size: int,
                     max_length: int, device: torch.device, resume: bool,
                     progress: bool, image_text: dict | None = None,
                     skip_first: bool = False) -> Path:
    """Capture ``probe`` into the store ``out`` window by window (one store segment each);
    ``image_text`` (the modality options) for a probe with images; ``skip_first`` leaves each
    sample's first token out."""
    selection = "real tokens after the first" if skip_first else "real tokens"
    layer_attrs = {name: {"module_path": split_layer(name)[0],
                          "captures": "input" if split_layer(name)[1] else "output",
                          "token_selection": selection, "modality": "text", "dim": None}
                   for name in names}
    plan = None if image_text is None else ImageTextCapture(
        loaded, names, pooling=pooling, tokens=tokens, modality=image_text["modality"],
        vision_tokens=image_text["vision_tokens"], max_length=max_length, device=device)
    if plan is not None:
        layer_attrs = plan.attrs
    elif _needs_pixels(loaded.backbone):
        raise InputError(f"{type(loaded.backbone).__name__} needs an image in every forward "
                         "pass: capture it on a probe with images")
    with collect(loaded.backbone, names) as captured, torch.inference_mode():

        def features(texts: list[str], images: list[Path] | None) -> tuple[dict, dict]:
            if plan is not None:
                return plan.features(captured, texts, images, loaded.model)
            batch = _encode(loaded.tokenizer, texts, max_length, device)
            captured.clear()
            loaded.model(**batch)
            mask = batch["attention_mask"].to("cpu")
            kept = without_first(mask) if skip_first else mask
            pooled, token_mats = {}, {}
            for name in names:
                if name not in captured:
                    raise InputError(f"layer {name} did not run in the forward pass")
                hidden = real_positions(captured[name], mask, loaded.virtual_tokens, name)
                pooled[name] = pool(hidden, kept, pooling).numpy()
                if tokens:
                    token_mats[name] = [t.numpy() for t in split_tokens(hidden, kept)]
            return pooled, token_mats

        with StoreWriter(out, meta=meta, layers=layer_attrs, tokens=tokens,
                         resume=resume) as writer:
            with tqdm(total=len(probe), initial=writer.n_written, unit="sample",
                      desc=f"capture {out.name}", disable=not progress) as bar:
                offset = writer.n_written
                for ids, texts in probe.batches(batch_size * WINDOW_BATCHES, start=offset):
                    order = window_order(texts)
                    parts = []
                    for k in range(0, len(order), batch_size):
                        chosen = order[k:k + batch_size]
                        images = (None if probe.images is None
                                  else [probe.images[offset + i] for i in chosen])
                        batch = features([texts[i] for i in chosen], images)
                        _check_finite(*batch, loaded.source)
                        parts.append((chosen, batch))
                        bar.update(len(chosen))
                    writer.append(ids, *_in_probe_order(parts, len(ids), list(layer_attrs)))
                    offset += len(ids)
            return writer.finish()
