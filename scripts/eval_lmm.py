"""How much ``smollm2-lmm`` (or any LLaVA checkpoint of it) uses the image: captions and visual
questions on held-out scenes, each asked with the image, with a blank image and with no image.

Held-out scenes: the shipped probe images (``data/image_probe.jsonl``, 240 scenes) and the
questions of the shipped VQA task's eval split (``data/image_task_eval.jsonl``, 119 questions on
40 scenes), none of which stage 1 of ``scripts/build_lmm.py`` saw. Every prompt goes through
the model's chat template as one user turn (``[image, text]``, or ``[text]`` with no image);
greedy decoding of at most 16 new tokens, left-padded batches, decoded without special tokens.

* **Caption exact match**: the prompt is the stage-1 prompt ``Describe the image.``; a reply
  matches when, lowercased and stripped of spaces and a final period, it equals the caption.
* **VQA lenient**: the decoder study's rule (``is_correct`` of
  ``data/make_general_knowledge.py``): the normalised answer occurs as whole words in the
  normalised reply (number words count as digits). **VQA exact**: the normalised reply is the
  normalised answer.
* Conditions: ``image`` (the scene), ``blank`` (a uniform light-grey 64 x 64 image, the
  background colour of the scenes) and ``none`` (the text prompt alone, no image tokens).

Run from the repository root (about 5 minutes on one CPU thread)::

    python scripts/eval_lmm.py                     # smollm2-lmm, assembled offline
    python scripts/eval_lmm.py --model lmm.pt --captions 40 --json scores.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from repspace.probes import DATA_DIR, iter_jsonl, open_image

CAPTION_PROMPT = "Describe the image."
CONDITIONS = ("image", "blank", "none")
BLANK_COLOUR = (245, 245, 245)
MAX_NEW_TOKENS = 16


def _scoring() -> Any:
    spec = importlib.util.spec_from_file_location("make_general_knowledge",
                                                  DATA_DIR / "make_general_knowledge.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def blank_image() -> Any:
    """The blank image of the ``blank`` condition."""
    from PIL import Image

    return Image.new("RGB", (64, 64), BLANK_COLOUR)


def generate(loaded: Any, images: Sequence[Any], prompts: Sequence[str], *,
             batch_size: int = 16, max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
    """Greedy replies of the LLaVA ``loaded`` to ``prompts``, each with its image (an image of
    ``images``, or ``None`` for a text-only prompt), in left-padded batches."""
    processor, model = loaded.processor, loaded.model
    tokenizer = processor.tokenizer
    replies: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = range(start, min(start + batch_size, len(prompts)))
        pictures = [images[i] for i in chunk]
        texts = [processor.apply_chat_template(
            [{"role": "user", "content": ([{"type": "image"}] if pictures[j] is not None else [])
              + [{"type": "text", "text": prompts[i]}]}],
            add_generation_prompt=True, tokenize=False) for j, i in enumerate(chunk)]
        given = [p for p in pictures if p is not None]
        if given and len(given) != len(pictures):
            raise ValueError("a batch mixes prompts with and without images")
        inputs = processor(images=given or None, text=texts, padding=True,
                           padding_side="left", return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)
        replies += tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:],
                                          skip_special_tokens=True)
    return replies


def _condition_images(images: Sequence[Any], condition: str) -> list[Any]:
    if condition == "image":
        return list(images)
    return [blank_image() if condition == "blank" else None for _ in images]


def caption_match(reply: str, caption: str) -> bool:
    """Caption exact match: lowercased, stripped of spaces and a final period."""
    return reply.strip().lower().rstrip(".").strip() == caption.strip().lower()


def caption_scores(loaded: Any, limit: int | None = None,
                   conditions: Sequence[str] = CONDITIONS) -> dict[str, Any]:
    """Caption exact match on the first ``limit`` shipped probe scenes, per condition."""
    rows = [r for _, r in iter_jsonl(DATA_DIR / "image_probe.jsonl", ("image", "text"))][:limit]
    images = [open_image(DATA_DIR / r["image"]) for r in rows]
    scores: dict[str, Any] = {"n": len(rows)}
    for condition in conditions:
        replies = generate(loaded, _condition_images(images, condition),
                           [CAPTION_PROMPT] * len(rows))
        scores[condition] = sum(caption_match(a, r["text"])
                                for a, r in zip(replies, rows, strict=True)) / len(rows)
        scores[f"{condition}_examples"] = replies[:3]
    return scores


def vqa_scores(loaded: Any, limit: int | None = None,
               conditions: Sequence[str] = CONDITIONS) -> dict[str, Any]:
    """Lenient and exact VQA accuracy on the shipped task's eval questions, per condition."""
    rule = _scoring()
    rows = [r for _, r in iter_jsonl(DATA_DIR / "image_task_eval.jsonl",
                                     ("image", "prompt", "answer"))][:limit]
    images = [open_image(DATA_DIR / r["image"]) for r in rows]
    scores: dict[str, Any] = {"n": len(rows)}
    for condition in conditions:
        replies = generate(loaded, _condition_images(images, condition),
                           [r["prompt"] for r in rows])
        pairs = list(zip(replies, rows, strict=True))
        scores[f"{condition}_lenient"] = sum(rule.is_correct(a, r["answer"])
                                             for a, r in pairs) / len(rows)
        scores[f"{condition}_exact"] = sum(rule.normalize(a) == rule.normalize(r["answer"])
                                           for a, r in pairs) / len(rows)
        by_question: dict[str, list[bool]] = {}
        for a, r in pairs:
            by_question.setdefault(r["prompt"], []).append(rule.is_correct(a, r["answer"]))
        scores[f"{condition}_lenient_by_question"] = {
            q: round(sum(v) / len(v), 3) for q, v in by_question.items()}
        scores[f"{condition}_examples"] = replies[:3]
    return scores


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-lmm",
                        help="model source (default: %(default)s)")
    parser.add_argument("--captions", type=_positive, default=None,
                        help="number of probe scenes to caption (default: all 240)")
    parser.add_argument("--questions", type=_positive, default=None,
                        help="number of eval questions (default: all 119)")
    parser.add_argument("--json", type=Path, default=None, help="write the scores here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import repspace
    from repspace.utils.files import json_text, write_text_atomic

    start = time.time()
    loaded = repspace.load_model(args.model)
    result = {"model": args.model, "captions": caption_scores(loaded, args.captions),
              "vqa": vqa_scores(loaded, args.questions)}
    result["seconds"] = round(time.time() - start, 1)
    caption, vqa = result["captions"], result["vqa"]
    print(f"{'condition':>9}  caption EM (n={caption['n']})  VQA lenient (n={vqa['n']})  "
          "VQA exact")
    for condition in CONDITIONS:
        print(f"{condition:>9}  {caption[condition]:>20.3f}  {vqa[f'{condition}_lenient']:>19.3f}"
              f"  {vqa[f'{condition}_exact']:>9.3f}")
    for condition in CONDITIONS:
        print(f"VQA lenient by question, {condition}: "
              f"{json.dumps(vqa[f'{condition}_lenient_by_question'])}")
    print(json.dumps({c: caption[f"{c}_examples"] for c in CONDITIONS}))
    if args.json:
        write_text_atomic(args.json, json_text(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
