"""Capture on image+text probes: the model's processor prepares (image, text) batches, and every
layer output is cut into per-sample token matrices of one modality.

Language-model layers, output (B, T, d) over the processor's input ids
    Image tokens are the positions where the processor expanded the image placeholder
    (``input_ids == config.image_token_id``); text tokens are the other real (unpadded) tokens.
    ``modality="split"`` stores every language layer three times: ``NAME`` (all real tokens,
    modality ``all``), ``NAME@image`` and ``NAME@text``; ``"all"``, ``"image"`` or ``"text"``
    store that one selection under ``NAME``.
Vision-tower layers (modality ``image``)
    Batched towers (CLIP, SigLIP; output (images, L, d)) have ``L = P + 1`` tokens with a CLS
    token at position 0 (CLIP) or ``L = P`` without one (SigLIP), ``P`` being the number of
    patches. ``vision_tokens="patches"`` keeps the P patch tokens, ``"cls"`` the CLS token only
    (an error for towers without one). Packed towers (Qwen2-VL, Qwen2.5-VL; output (patches of
    all images, d)) are cut per image by ``image_grid_thw`` (``t * h * w`` patches each); they
    have no CLS token, and Qwen2.5-VL's window attention orders an image's patches by window
    (the same order in a base and its tuned model). Models that cut one image into several
    crops (LLaVA-NeXT) give every sample the tokens of all its crops; this needs images of one
    size.
Connector layers (modality ``image``)
    The projector output, i.e. the image tokens the language model receives: LLaVA
    (images, tokens, d), Qwen2-VL's merger (patches / merge_size**2 of all images, d). The blocks
    of a Q-Former (BLIP-2, InstructBLIP) keep their ``num_query_tokens`` query positions
    (InstructBLIP's Q-Former also carries the instruction's tokens after them).
Encoder-decoder language models (BLIP-2 with Flan-T5)
    The image tokens and the text enter the encoder, whose blocks are split by modality as
    above. The decoder reads the probe's text after the decoder start token (teacher forcing:
    ``[start] + text tokens``, as when the model is trained to produce the text); its blocks
    hold text tokens only (modality ``text``, all real decoder positions).

Pooling (``mean``, ``first``, ``last``) is over the selected tokens of each sample.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from repspace.capture.layers import split_layer
from repspace.capture.tokens import pool, real_positions, split_tokens
from repspace.errors import InputError
from repspace.models import LoadedModel
from repspace.models.processors import image_prompt
from repspace.models.structure import part_of, vlm_parts
from repspace.probes import open_image

MODALITIES = ("split", "all", "image", "text")
VISION_TOKENS = ("patches", "cls")
IMAGE_SUFFIX, TEXT_SUFFIX = "@image", "@text"

Features = tuple[dict[str, Any], dict[str, list[Any]]]


def image_token_id(model: torch.nn.Module, processor: Any) -> int:
    """The id of the image placeholder token that the processor expands."""
    config = model.config
    for key in ("image_token_id", "image_token_index"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    value = getattr(processor, "image_token_id", None)
    if not isinstance(value, int):
        raise InputError(f"{type(model).__name__} names no image token id in its config")
    return value


def _clip_texts(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[str]:
    """Each text cut after its first ``max_length`` tokens (the image tokens are not counted)."""
    offsets = tokenizer(list(texts), add_special_tokens=False,
                        return_offsets_mapping=True)["offset_mapping"]
    return [text if len(spans) <= max_length else text[:spans[max_length - 1][1]]
            for text, spans in zip(texts, offsets, strict=True)]


def encode_image_text(processor: Any, texts: Sequence[str], images: Sequence[Any],
                      max_length: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The processor's right-padded batch for (image, text) pairs, each text cut to
    ``max_length`` tokens and given the image placeholder in front (see
    :func:`~repspace.models.processors.image_prompt`)."""
    prompts = [image_prompt(processor, text)
               for text in _clip_texts(processor.tokenizer, texts, max_length)]
    # one list of images per text: Gemma 3's processor needs it, the others accept it
    batch = processor(images=[[image] for image in images], text=prompts, padding=True,
                      padding_side="right", return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}


def decoder_inputs(tokenizer: Any, texts: Sequence[str], start: int,
                   device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded ``decoder_input_ids`` (``[start] + text tokens``) and
    ``decoder_attention_mask`` of an encoder-decoder language model reading ``texts``."""
    rows = [[start, *ids] for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    return {"decoder_input_ids": ids.to(device), "decoder_attention_mask": mask.to(device)}


def _decoder_root(model: torch.nn.Module, parts: dict[str, list[str]]) -> str | None:
    """The module path of the decoder of an encoder-decoder language model, else ``None``."""
    language = model.get_submodule(parts["language"][0]) if parts.get("language") else None
    if not getattr(getattr(language, "config", None), "is_encoder_decoder", False):
        return None
    decoder = language.get_decoder()
    return next(n for n, m in model.named_modules() if m is decoder)


def _patch_count(model: torch.nn.Module, pixel_values: torch.Tensor) -> int:
    vision = getattr(model.config, "vision_config", None)
    size = getattr(vision, "patch_size", None)
    if not isinstance(size, int):
        return -1
    height, width = pixel_values.shape[-2:]
    return (height // size) * (width // size)


def _per_image(hidden: torch.Tensor, batch: dict[str, torch.Tensor], n_samples: int,
               model: torch.nn.Module, name: str) -> list[torch.Tensor]:
    """An image-side layer output cut into one (tokens, d) matrix per sample."""
    if hidden.dim() == 2:
        grid = batch.get("image_grid_thw")
        if grid is None:
            raise InputError(f"layer {name}: packed output without image_grid_thw")
        counts = grid.prod(-1).tolist()
        merge = getattr(getattr(model.config, "vision_config", None), "spatial_merge_size", 1)
        for per in (counts, [c // merge ** 2 for c in counts]):
            if sum(per) == hidden.shape[0]:
                return list(hidden.split(per))
        raise InputError(f"layer {name}: {hidden.shape[0]} packed rows fit neither the "
                         f"{sum(counts)} patches of the images nor their merged tokens")
    if hidden.dim() != 3 or hidden.shape[0] % n_samples:
        raise InputError(f"layer {name}: output of shape {tuple(hidden.shape)} does not split "
                         f"into {n_samples} images")
    sizes = batch.get("image_sizes")
    if hidden.shape[0] != n_samples and sizes is not None and len(torch.unique(sizes, dim=0)) > 1:
        raise InputError(f"layer {name}: the vision tower cut images of different sizes into "
                         "different numbers of crops; capture it on images of one size")
    return list(hidden.reshape(n_samples, -1, hidden.shape[-1]))


class ImageTextCapture:
    """Per-sample, per-modality features of the hooked ``layers`` on (image, text) batches.

    Attributes
    ----------
    attrs : dict[str, dict]
        Store layer name -> layer attributes (``module_path``, ``captures``, ``part``,
        ``modality``, ``token_selection``, ``dim``), in store order.
    """

    def __init__(self, loaded: LoadedModel, layers: Sequence[str], *, pooling: str,
                 tokens: bool, modality: str = "split", vision_tokens: str = "patches",
                 max_length: int = 128, device: torch.device | None = None) -> None:
        if loaded.processor is None or loaded.modality != "image-text":
            raise InputError(f"{loaded.source} has no image processor: an image probe needs a "
                             "vision-language model")
        if modality not in MODALITIES:
            raise InputError(f"unknown modality {modality!r}; choose from {', '.join(MODALITIES)}")
        if vision_tokens not in VISION_TOKENS:
            raise InputError(f"unknown vision token selection {vision_tokens!r}; choose from "
                             f"{', '.join(VISION_TOKENS)}")
        self.loaded, self.pooling, self.tokens = loaded, pooling, tokens
        self.modality, self.vision_tokens = modality, vision_tokens
        self.max_length, self.device = max_length, device or torch.device("cpu")
        self.image_token = image_token_id(loaded.backbone, loaded.processor)
        # The language-model head's logits are not captured: compute them for one position only.
        accepts = inspect.signature(loaded.backbone.forward).parameters
        self.forward_options = {"logits_to_keep": 1} if "logits_to_keep" in accepts else {}
        parts = vlm_parts(loaded.backbone)
        self.parts = {name: part_of(split_layer(name)[0], parts) or "language" for name in layers}
        self.decoder = _decoder_root(loaded.backbone, parts)
        if self.decoder is not None:
            self.parts.update({name: "decoder" for name in layers
                               if split_layer(name)[0].startswith(self.decoder + ".")})
            if modality == "image" and "decoder" in self.parts.values():
                raise InputError("decoder blocks of an encoder-decoder language model hold text "
                                 "tokens only: capture them with modality 'text' or 'split'")
        self.query_tokens = getattr(loaded.backbone.config, "num_query_tokens", None)
        self.attrs: dict[str, dict[str, Any]] = {}
        for name, part in self.parts.items():
            for key, modality_name, selection in self._entries(name, part):
                self.attrs[key] = {"module_path": split_layer(name)[0],
                                   "captures": "input" if split_layer(name)[1] else "output",
                                   "part": "language" if part == "decoder" else part,
                                   "modality": modality_name,
                                   "token_selection": selection, "dim": None}

    def _entries(self, name: str, part: str) -> list[tuple[str, str, str]]:
        if part == "vision":
            return [(name, "image", "cls token" if self.vision_tokens == "cls"
                     else "patch tokens")]
        if part == "connector":
            return [(name, "image", "projected image tokens")]
        if part == "decoder":
            return [(name, "text", "decoder tokens")]
        entries = {"all": (name, "all", "real tokens"),
                   "image": (name, "image", "image tokens"),
                   "text": (name, "text", "text tokens")}
        if self.modality != "split":
            return [entries[self.modality]]
        return [entries["all"], (name + IMAGE_SUFFIX, "image", "image tokens"),
                (name + TEXT_SUFFIX, "text", "text tokens")]

    @property
    def settings(self) -> dict[str, str]:
        """The options that change what an image+text capture stores."""
        return {"modality": self.modality, "vision_tokens": self.vision_tokens}

    def features(self, captured: dict[str, torch.Tensor], texts: Sequence[str],
                 images: Sequence[str | Path], forward: Callable[..., Any]) -> Features:
        """Run ``forward(**batch)`` on the (image, text) pairs and return (pooled, token
        matrices) keyed by store layer name, from the hooked outputs in ``captured``."""
        batch = encode_image_text(self.loaded.processor, texts, [open_image(p) for p in images],
                                  self.max_length, self.device)
        if self.decoder is not None:
            texts = _clip_texts(self.loaded.processor.tokenizer, texts, self.max_length)
            start = self.loaded.backbone.config.get_text_config().decoder_start_token_id
            batch.update(decoder_inputs(self.loaded.processor.tokenizer, texts, start,
                                        self.device))
        captured.clear()
        forward(**batch, **self.forward_options)
        cpu = {k: v.to("cpu") for k, v in batch.items()}
        mask = cpu["attention_mask"]
        is_image = (cpu["input_ids"] == self.image_token) & mask.bool()
        masks = {"all": mask, "image": is_image.long(), "text": (mask.bool() & ~is_image).long()}
        pooled: dict[str, Any] = {}
        token_mats: dict[str, list[Any]] = {}
        for name, part in self.parts.items():
            if name not in captured:
                raise InputError(f"layer {name} did not run in the forward pass")
            if part == "language":
                hidden = real_positions(captured[name], mask, self.loaded.virtual_tokens, name)
                for key, modality_name, _ in self._entries(name, part):
                    self._language(key, hidden, masks[modality_name], pooled, token_mats)
            elif part == "decoder":
                decoder_mask = cpu["decoder_attention_mask"]
                hidden = real_positions(captured[name], decoder_mask, 0, name)
                self._language(name, hidden, decoder_mask, pooled, token_mats)
            else:
                raw = captured[name]
                if part == "connector" and self.query_tokens and raw.dim() == 3:
                    raw = raw[:, :self.query_tokens]  # a Q-Former's query positions
                mats = _per_image(raw, cpu, len(texts), self.loaded.backbone, name)
                if part == "vision":
                    mats = self._vision_tokens(mats, captured[name], cpu["pixel_values"], name)
                self._keep(name, mats, pooled, token_mats)
        return pooled, token_mats

    def _language(self, key: str, hidden: torch.Tensor, mask: torch.Tensor,
                  pooled: dict[str, Any], token_mats: dict[str, list[Any]]) -> None:
        if not mask.sum(1).all():
            raise InputError(f"layer {key}: a sample has no tokens of this modality "
                             "(an empty caption, or a text cut to nothing by max_length)")
        pooled[key] = pool(hidden, mask, self.pooling).numpy()
        if self.tokens:
            token_mats[key] = [t.numpy() for t in split_tokens(hidden, mask)]

    def _vision_tokens(self, mats: list[torch.Tensor], raw: torch.Tensor,
                       pixel_values: torch.Tensor, name: str) -> list[torch.Tensor]:
        """Patch tokens or CLS tokens of a vision layer (``raw``: its output before the cut)."""
        patches = _patch_count(self.loaded.backbone, pixel_values)
        has_cls = raw.dim() == 3 and patches > 0 and raw.shape[1] == patches + 1
        if self.vision_tokens == "cls":
            if not has_cls:
                raise InputError(f"layer {name}: this vision tower has no CLS token; use "
                                 "vision_tokens='patches'")
            return [m[::patches + 1] for m in mats]
        if has_cls:
            keep = torch.ones(mats[0].shape[0], dtype=torch.bool)
            keep[::patches + 1] = False
            return [m[keep] for m in mats]
        return mats

    def _keep(self, key: str, mats: list[torch.Tensor], pooled: dict[str, Any],
              token_mats: dict[str, list[Any]]) -> None:
        pick = {"mean": lambda m: m.mean(0), "first": lambda m: m[0], "last": lambda m: m[-1]}
        pooled[key] = torch.stack([pick[self.pooling](m) for m in mats]).numpy()
        if self.tokens:
            token_mats[key] = [m.numpy() for m in mats]
