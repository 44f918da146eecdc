"""Options of a capture (and of the captures of ``repspace compare``): layers, pooling, tokens of
image+text probes, batches and device. The library's signatures and the CLI flags take their
defaults from here."""

from __future__ import annotations

from dataclasses import dataclass

from repspace.utils.options import Options, option


@dataclass
class CaptureOptions(Options):
    """Capture: layers, pooling, batches and device."""

    layers: str = option("blocks", "preset (blocks, embeddings; for vision-language models "
                         "vision, connector, language), module paths, globs or re:PATTERN, "
                         "comma-separated")
    pooling: str = option("mean", "pool real tokens by mean, first (CLS) or last token; "
                          "'tokens' is mean and also keeps every token",
                          choices=("mean", "first", "last", "tokens"))
    skip_first: bool = option(False, "leave each sample's first token out of pooling and token "
                              "matrices: in decoder LMs it is the attention sink, whose hidden "
                              "state can be over 100x larger than the others' (Sun et al. "
                              "2024)")
    modality: str = option("split", "image+text probes: language-model tokens to keep; split "
                           "stores all, image and text tokens as LAYER, LAYER@image, LAYER@text",
                           choices=("split", "all", "image", "text"))
    vision_tokens: str = option("patches", "image+text probes: vision-tower tokens, patch tokens "
                                "or the CLS token", choices=("patches", "cls"))
    batch_size: int = option(32, "samples per forward pass", minimum=1)
    max_length: int = option(128, "truncate inputs to N tokens", minimum=1)
    device: str = option("auto", "auto (CUDA if present), cpu, cuda, cuda:1")
