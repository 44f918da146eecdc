"""Tiny random LLaVA and Qwen2-VL builders for tests (they live in :mod:`repspace.testing` so that
notebooks can import them too)."""

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

__all__ = ["build_tiny_blip2", "build_tiny_gemma3", "build_tiny_idefics3", "build_tiny_llava",
           "build_tiny_llava_next", "build_tiny_llava_onevision", "build_tiny_qwen2vl",
           "tiny_tokenizer"]
