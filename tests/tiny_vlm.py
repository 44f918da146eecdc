"""Tiny random vision-language builders for tests (they live in :mod:`repspace.testing` so that
notebooks can import them too), and the colour-square task they are trained on."""

import json
from pathlib import Path

from PIL import Image

from repspace.testing.tiny_vlm import (
    build_tiny_blip2,
    build_tiny_gemma3,
    build_tiny_idefics3,
    build_tiny_llava,
    build_tiny_llava_next,
    build_tiny_llava_onevision,
    build_tiny_qwen2vl,
    tiny_tokenizer,
)

#: The task's colours: a square of each on grey, one "what colour?" question per image.
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220),
           "yellow": (230, 220, 20)}


def write_colour_task(folder: Path) -> Path:
    """Four 32 x 32 images (a coloured square on grey) and their questions as ``train.jsonl``
    in ``folder``; returns the JSONL path."""
    rows = []
    for name, rgb in COLOURS.items():
        image = Image.new("RGB", (32, 32), (128, 128, 128))
        image.paste(rgb, (8, 8, 24, 24))
        image.save(folder / f"{name}.png")
        rows.append({"image": f"{name}.png", "prompt": "What colour is the square?",
                     "answer": name})
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "train.jsonl"


__all__ = ["COLOURS", "build_tiny_blip2", "build_tiny_gemma3", "build_tiny_idefics3",
           "build_tiny_llava", "build_tiny_llava_next", "build_tiny_llava_onevision",
           "build_tiny_qwen2vl", "tiny_tokenizer", "write_colour_task"]
