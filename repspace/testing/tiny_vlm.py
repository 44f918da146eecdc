"""Tiny random vision-language models with working processors, built offline.

:func:`build_tiny_llava`, :func:`build_tiny_llava_next`, :func:`build_tiny_qwen2vl` and
:func:`build_tiny_blip2` (BLIP-2 and InstructBLIP, with OPT or T5) write a
``transformers`` model folder
(weights, config, tokenizer, image processor, chat template) that ``repspace.load_model`` and
``transformers.AutoProcessor`` read like a real checkpoint. Nothing is downloaded: the tokenizer
is a byte-level BPE without merges (every UTF-8 byte is one token, so any text encodes) built with
the ``tokenizers`` library, and the image processors are constructed directly (their PIL
backends, so the output is the same with and without ``torchvision``). The models are
random and small enough that a forward on a few images takes milliseconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from repspace.models.processors import processor_class

#: Chat template of the tiny LLaVA (LLaVA-1.5 style: ``USER: <image>\n... ASSISTANT:``).
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %} {% else %}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

#: Chat template of the tiny Qwen2-VL (Qwen's ChatML with vision markers).
QWEN2VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer(special: list[str], **roles: str) -> transformers.PreTrainedTokenizerFast:
    """A byte-level tokenizer: the 256 byte tokens, then ``special`` (ids 256, 257, ...).

    ``roles`` maps tokenizer roles to special tokens (``bos_token="<s>"``, ``pad_token=...``).
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(sorted(alphabet))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    wrapped = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, **roles)
    wrapped.add_special_tokens({"additional_special_tokens": special})
    return wrapped


def build_tiny_llava(out: str | Path, *, seed: int = 0, image_size: int = 32,
                     patch_size: int = 8) -> Path:
    """Write a tiny random ``LlavaForConditionalGeneration`` with its processor to ``out``.

    The vision tower is a 2-layer CLIP ViT (hidden 32) on ``image_size`` square images cut into
    ``patch_size`` patches, so it sees ``(image_size / patch_size)**2`` patches plus a CLS token at
    position 0; the projector maps them to a 2-layer Llama (hidden 32). The processor expands
    every ``<image>`` into one placeholder per patch (the CLS is dropped,
    ``vision_feature_select_strategy="default"``). Returns ``out``.
    """
    out = Path(out)
    tokenizer = tiny_tokenizer(["<image>"], bos_token="<s>", eos_token="</s>",
                               pad_token="<pad>", unk_token="<unk>")
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vision = transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=image_size, patch_size=patch_size, projection_dim=32)
    text = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    config = transformers.LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=image_token_id,
        vision_feature_layer=-1, vision_feature_select_strategy="default",
        projector_hidden_act="gelu", image_seq_length=(image_size // patch_size) ** 2)
    torch.manual_seed(seed)
    model = transformers.LlavaForConditionalGeneration(config).eval()
    image_processor = transformers.CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    processor = transformers.LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE, image_token="<image>")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_llava_next(out: str | Path, *, seed: int = 0, image_size: int = 32,
                          patch_size: int = 8) -> Path:
    """Write a tiny random ``LlavaNextForConditionalGeneration`` with its processor to ``out``.

    Like :func:`build_tiny_llava`, but "anyres": an image is cut into a resized whole plus tiles
    of ``image_size`` (grid pinpoints up to 2 x 2 tiles), each tile runs through the vision
    tower, and the language model gets the tiles' tokens plus one ``image_newline`` per row.
    A 64 x 64 image gives 5 crops of ``(image_size / patch_size)**2`` patches. Returns ``out``.
    """
    out = Path(out)
    tokenizer = tiny_tokenizer(["<image>"], bos_token="<s>", eos_token="</s>",
                               pad_token="<pad>", unk_token="<unk>")
    pinpoints = [[image_size * h, image_size * w] for h in (1, 2) for w in (1, 2)]
    vision = transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=image_size, patch_size=patch_size, projection_dim=32)
    text = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    config = transformers.LlavaNextConfig(
        vision_config=vision, text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints, vision_feature_layer=-1,
        vision_feature_select_strategy="default", image_seq_length=(image_size // patch_size) ** 2)
    torch.manual_seed(seed)
    model = transformers.LlavaNextForConditionalGeneration(config).eval()
    image_processor = transformers.LlavaNextImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_grid_pinpoints=pinpoints)
    processor = transformers.LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE, image_token="<image>")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_qwen2vl(out: str | Path, *, seed: int = 0, image_size: int = 56,
                       version: str = "2") -> Path:
    """Write a tiny random Qwen2-VL (``version="2"``, ``Qwen2VLForConditionalGeneration``) or
    Qwen2.5-VL (``version="2.5"``, ``Qwen2_5_VLForConditionalGeneration``) with its processor
    to ``out``.

    Images are resized to ``image_size`` x ``image_size`` (``min_pixels = max_pixels``), cut into
    14-pixel patches (``(image_size / 14)**2`` patches, no CLS; the vision tower packs the patches
    of all images of a batch into one sequence) and merged 2 x 2 by ``visual.merger``, so every
    image becomes ``(image_size / 28)**2`` ``<|image_pad|>`` tokens in the language model.
    Qwen2.5-VL's first vision block attends within 56-pixel windows (it reorders an image's
    patches by window), its second block over the whole image. Returns ``out``.
    """
    if version not in ("2", "2.5"):
        raise ValueError(f"version must be '2' or '2.5', got {version!r}")
    out = Path(out)
    special = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
               "<|image_pad|>", "<|video_pad|>"]
    tokenizer = tiny_tokenizer(special, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in special}
    common = {"patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
              "num_heads": 2, "depth": 2}
    text_options = {
        "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
        "max_position_embeddings": 512, "bos_token_id": None,
        "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                            "mrope_section": [2, 3, 3]}}
    if version == "2":
        vision = transformers.Qwen2VLVisionConfig(embed_dim=32, hidden_size=32, mlp_ratio=2,
                                                  **common)
        text = transformers.Qwen2VLTextConfig(**text_options)
        config_class, model_class = transformers.Qwen2VLConfig, \
            transformers.Qwen2VLForConditionalGeneration
        processor_base = transformers.Qwen2VLProcessor
    else:
        vision = transformers.Qwen2_5_VLVisionConfig(
            hidden_size=32, out_hidden_size=32, intermediate_size=64, window_size=56,
            fullatt_block_indexes=[1], **common)
        text = transformers.Qwen2_5_VLTextConfig(**text_options)
        config_class, model_class = transformers.Qwen2_5_VLConfig, \
            transformers.Qwen2_5_VLForConditionalGeneration
        processor_base = transformers.Qwen2_5_VLProcessor
    config = config_class(
        vision_config=vision, text_config=text, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = model_class(config).eval()
    pixels = image_size * image_size
    image_processor = transformers.Qwen2VLImageProcessorPil(min_pixels=pixels, max_pixels=pixels)
    processor = processor_class(processor_base)(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN2VL_CHAT_TEMPLATE)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _blip_parts(tokenizer: transformers.PreTrainedTokenizerFast, llm: str, image_size: int,
                patch_size: int) -> tuple[dict[str, Any], Any]:
    """Vision, Q-Former and language-model configs of a tiny BLIP-2 / InstructBLIP, and its
    image processor."""
    if llm not in ("opt", "t5"):
        raise ValueError(f"llm must be 'opt' or 't5', got {llm!r}")
    roles = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
             "pad_token_id": tokenizer.pad_token_id, "vocab_size": len(tokenizer)}
    if llm == "opt":
        text = transformers.OPTConfig(
            hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2,
            word_embed_proj_dim=32, max_position_embeddings=512, **roles)
    else:  # Flan-T5's layout: gated-GELU feed-forward, untied head
        text = transformers.T5Config(
            d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2,
            feed_forward_proj="gated-gelu", tie_word_embeddings=False,
            decoder_start_token_id=tokenizer.pad_token_id, **roles)
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 2, "image_size": image_size, "patch_size": patch_size}
    qformer = {"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 2,
               "num_attention_heads": 2, "intermediate_size": 64, "cross_attention_frequency": 1,
               "pad_token_id": tokenizer.pad_token_id}
    image_processor = transformers.BlipImageProcessorPil(
        size={"height": image_size, "width": image_size})
    return {"vision_config": vision, "qformer_config": qformer,
            "text_config": text.to_dict()}, image_processor


def build_tiny_blip2(out: str | Path, *, llm: str = "opt", seed: int = 0, image_size: int = 32,
                     patch_size: int = 8, query_tokens: int = 4,
                     instruct: bool = False) -> Path:
    """Write a tiny random BLIP-2 (``Blip2ForConditionalGeneration``) or, with ``instruct``,
    InstructBLIP (``InstructBlipForConditionalGeneration``) with its processor to ``out``.

    The vision tower is a 2-layer BLIP ViT (hidden 32; ``(image_size / patch_size)**2`` patches
    plus a CLS token at position 0); the Q-Former (2 layers, hidden 32, cross-attention in every
    layer) turns them into ``query_tokens`` query outputs, which ``language_projection`` maps
    into the language model: a 2-layer OPT (``llm="opt"``, a decoder) or a 2 + 2-layer T5 in
    Flan-T5's layout (``llm="t5"``, an encoder-decoder; the image tokens enter its encoder).
    The processor puts ``query_tokens`` ``<image>`` tokens in front of every text (the model
    replaces them by the projected query outputs); InstructBLIP's processor also tokenises the
    text for the Q-Former (``qformer_input_ids``), whose queries then attend to it. Returns
    ``out``.
    """
    out = Path(out)
    tokenizer = tiny_tokenizer(["<image>"], bos_token="<s>", eos_token="</s>",
                               pad_token="<pad>", unk_token="<unk>")
    configs, image_processor = _blip_parts(tokenizer, llm, image_size, patch_size)
    common = {"num_query_tokens": query_tokens,
              "image_token_index": tokenizer.convert_tokens_to_ids("<image>")}
    torch.manual_seed(seed)
    if instruct:
        config = transformers.InstructBlipConfig(**configs, **common)
        model = transformers.InstructBlipForConditionalGeneration(config).eval()
        processor = transformers.InstructBlipProcessor(
            image_processor=image_processor, tokenizer=tokenizer, qformer_tokenizer=tokenizer,
            num_query_tokens=query_tokens)
    else:
        config = transformers.Blip2Config(**configs, **common)
        model = transformers.Blip2ForConditionalGeneration(config).eval()
        processor = transformers.Blip2Processor(image_processor=image_processor,
                                                tokenizer=tokenizer, num_query_tokens=query_tokens)
    with torch.no_grad():  # BLIP-2 starts its query tokens at zero: give them distinct values
        model.query_tokens.normal_(0, 0.5)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_llava_onevision(out: str | Path, *, seed: int = 0, image_size: int = 32,
                               patch_size: int = 8) -> Path:
    """Write a tiny random ``LlavaOnevisionForConditionalGeneration`` with its processor to
    ``out``.

    A 2-layer SigLIP tower (hidden 32, no CLS token; ``vision_feature_select_strategy="full"``
    keeps every patch) and a 2-layer Qwen2 (hidden 32). Images are processed "anyres" as in
    LLaVA-NeXT (grid pinpoints up to 2 x 2 tiles of ``image_size``): a 64 x 64 image becomes 5
    crops of ``(image_size / patch_size)**2`` patches, and the language model gets the resized
    whole's 16 tokens plus the 2 x 2 tiles' 64 tokens with one ``image_newline`` per row of
    patches (8): 88 image tokens. Returns ``out``.
    """
    out = Path(out)
    tokenizer = tiny_tokenizer(["<image>", "<video>"], eos_token="<|endoftext|>",
                               pad_token="<|endoftext|>")
    ids = dict(zip(("<image>", "<video>"),
                   tokenizer.convert_tokens_to_ids(["<image>", "<video>"]), strict=True))
    pinpoints = [[image_size * h, image_size * w] for h in (1, 2) for w in (1, 2)]
    vision = transformers.SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=image_size, patch_size=patch_size)
    text = transformers.Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = transformers.LlavaOnevisionConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(),
        image_token_index=ids["<image>"], video_token_index=ids["<video>"],
        image_grid_pinpoints=pinpoints, vision_feature_layer=-1,
        vision_feature_select_strategy="full")
    torch.manual_seed(seed)
    model = transformers.LlavaOnevisionForConditionalGeneration(config).eval()
    image_processor = transformers.LlavaOnevisionImageProcessorPil(
        size={"height": image_size, "width": image_size}, image_grid_pinpoints=pinpoints)
    processor = processor_class(transformers.LlavaOnevisionProcessor)(
        image_processor=image_processor, tokenizer=tokenizer,
        num_image_tokens=(image_size // patch_size) ** 2, vision_feature_select_strategy="full",
        chat_template=QWEN2VL_CHAT_TEMPLATE, image_token="<image>", video_token="<video>")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_idefics3(out: str | Path, *, seed: int = 0, image_size: int = 32,
                        patch_size: int = 8) -> Path:
    """Write a tiny random ``Idefics3ForConditionalGeneration`` (the architecture of SmolVLM)
    with its processor to ``out``.

    A 2-layer SigLIP-style tower (hidden 32, no CLS token) on ``image_size`` crops, a connector
    that shuffles 2 x 2 patches into one token (``scale_factor=2``) and projects them, and a
    2-layer Llama (hidden 32). The processor resizes an image to a longest edge of
    ``2 * image_size``, cuts it into tiles of ``image_size`` and adds the resized whole: a
    64 x 64 image is 5 crops of ``(image_size / patch_size)**2`` patches and
    ``5 * (image_size / patch_size / 2)**2`` ``<image>`` tokens (20), each crop's framed by
    ``<fake_token_around_image>`` and a ``<row_i_col_j>`` or ``<global-img>`` marker. Returns
    ``out``.
    """
    out = Path(out)
    special = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>",
               *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7))]
    tokenizer = tiny_tokenizer(special, bos_token="<|im_start|>", eos_token="<end_of_utterance>",
                               pad_token="<|endoftext|>", unk_token="<unk>")
    vision = transformers.Idefics3VisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=image_size, patch_size=patch_size)
    text = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    config = transformers.Idefics3Config(
        vision_config=vision.to_dict(), text_config=text.to_dict(), scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = transformers.Idefics3ForConditionalGeneration(config).eval()
    image_processor = transformers.Idefics3ImageProcessorPil(
        size={"longest_edge": 2 * image_size}, max_image_size={"longest_edge": image_size},
        do_image_splitting=True)
    processor = transformers.Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer,
        image_seq_len=(image_size // patch_size // 2) ** 2)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_gemma3(out: str | Path, *, seed: int = 0, image_size: int = 32,
                      patch_size: int = 8, image_tokens: int = 4) -> Path:
    """Write a tiny random ``Gemma3ForConditionalGeneration`` (Gemma 3 image-text) with its
    processor to ``out``.

    A 2-layer SigLIP tower (hidden 32, no CLS token) on ``image_size`` images; the projector
    average-pools the ``(image_size / patch_size)**2`` patches to ``image_tokens`` tokens and
    projects them into a 2-layer Gemma 3 text model (hidden 32; a sliding-window layer of 16
    tokens, then a global one). The placeholder ``<start_of_image>`` becomes
    ``\\n\\n<start_of_image>`` + ``image_tokens`` ``<image_soft_token>`` + ``<end_of_image>\\n\\n``;
    the processor's ``token_type_ids`` mark the soft tokens, which attend to each other both
    ways. Returns ``out``.
    """
    out = Path(out)
    special = ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    tokenizer = tiny_tokenizer(special, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                               unk_token="<unk>", extra_special_tokens={
                                   "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                   "image_token": "<image_soft_token>"})
    ids = dict(zip(special, tokenizer.convert_tokens_to_ids(special), strict=True))
    vision = transformers.SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=image_size, patch_size=patch_size)
    text = transformers.Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
        sliding_window=16, layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = transformers.Gemma3Config(
        vision_config=vision.to_dict(), text_config=text.to_dict(),
        mm_tokens_per_image=image_tokens, boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"], image_token_index=ids["<image_soft_token>"])
    torch.manual_seed(seed)
    model = transformers.Gemma3ForConditionalGeneration(config).eval()
    with torch.no_grad():  # Gemma 3 starts its image projection at zero: no image would show
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.2)
    image_processor = transformers.Gemma3ImageProcessorPil(
        size={"height": image_size, "width": image_size})
    processor = transformers.Gemma3Processor(image_processor=image_processor,
                                             tokenizer=tokenizer, image_seq_length=image_tokens)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
