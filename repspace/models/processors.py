"""Loading and rebuilding the processors (tokenizer + image processor + chat template) of
vision-language models.

Processors such as ``Qwen2VLProcessor`` also take a video processor, and ``transformers`` builds
video processors only when ``torchvision`` is installed: without it, even a processor that is
only ever given images cannot be constructed. :func:`processor_class` then returns an image+text
subclass (same class name, no video processor), so the same folder loads with and without
``torchvision``.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import transformers
from transformers.utils import is_torchvision_available

from repspace.errors import FormatError

#: Files that mark a folder as holding a processor (not only a tokenizer).
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


@cache
def _without_video(cls: type) -> type:
    attributes = [a for a in cls.get_attributes() if a != "video_processor"]
    return type(cls.__name__, (cls,), {
        "__module__": cls.__module__,
        "__doc__": f"{cls.__name__} for images and text only (no video processor).",
        "video_processor": None,
        "get_attributes": classmethod(lambda _cls: list(attributes)),
    })


def processor_class(cls: type) -> type:
    """``cls``, or its image+text subclass when it needs a video processor and ``torchvision``
    (which ``transformers`` video processors require) is not installed."""
    if is_torchvision_available() or "video_processor" not in cls.get_attributes():
        return cls
    return _without_video(cls)


def _processor_file(source: str | Path, name: str) -> Path | None:
    """``name`` in the folder ``source``, or in the hub repository ``source`` (downloaded or
    cached), or ``None`` when it has no such file."""
    if Path(source).is_dir():
        file = Path(source) / name
        return file if file.is_file() else None
    from transformers.utils import cached_file

    found = cached_file(str(source), name, _raise_exceptions_for_missing_entries=False,
                        _raise_exceptions_for_connection_errors=False)
    return Path(found) if found else None


def has_processor(source: str | Path) -> bool:
    """True when the folder or hub id ``source`` holds processor files besides a tokenizer."""
    return any(_processor_file(source, name) is not None for name in PROCESSOR_FILES)


def _class_name(source: str | Path) -> str | None:
    for name in PROCESSOR_FILES:
        file = _processor_file(source, name)
        if file is not None:
            try:
                found = json.loads(file.read_text(encoding="utf-8")).get("processor_class")
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise FormatError(f"{file} is not valid JSON ({exc})") from exc
            if found:
                return found
    return None


def load_processor(source: str | Path) -> Any:
    """The processor saved in the folder or hub id ``source`` (see :func:`processor_class`), or
    ``None`` when it holds only a tokenizer."""
    if not has_processor(source):
        return None
    name = _class_name(source)
    cls = getattr(transformers, name, None) if name else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.ProcessorMixin)):
        return transformers.AutoProcessor.from_pretrained(str(source))
    return processor_class(cls).from_pretrained(str(source))


def image_prompt(processor: Any, text: str) -> str:
    """``text`` with the processor's image placeholder in front, as the model expects it.

    LLaVA-style processors: ``"<image>\\n" + text``. Processors whose tokenizer has the
    ``<|vision_start|>`` / ``<|vision_end|>`` markers (Qwen2-VL, Qwen2.5-VL):
    ``"<|vision_start|><|image_pad|><|vision_end|>" + text``. The processor later expands the
    placeholder into one token per image feature. Processors that put the image tokens in front
    of every text themselves (BLIP-2, InstructBLIP: ``num_query_tokens`` of them) get ``text``
    as it is.
    """
    token = getattr(processor, "image_token", None)
    if not token:
        raise FormatError(f"{type(processor).__name__} has no image token: not an image processor")
    if getattr(processor, "num_query_tokens", None):
        return text
    tokenizer = processor.tokenizer
    markers = tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>"])
    if all(i is not None and i != tokenizer.unk_token_id for i in markers):
        return f"<|vision_start|>{token}<|vision_end|>{text}"
    return f"{token}\n{text}"
