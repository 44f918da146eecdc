"""Training data for the two tasks: JSONL reading, tokenisation once, padded batches.

``classification``
    JSONL lines ``{"text": ..., "label": ...}`` (``id`` optional). Labels are any JSON scalars;
    the label set is the sorted set of training labels.
``generation``
    JSONL lines ``{"prompt": ..., "answer": ...}``. The model sees ``prompt + " " + answer`` and
    the end-of-sequence token; the loss covers the answer tokens and the end token only.
``generation`` with images (vision-language models)
    The same lines plus ``"image"`` (a path, relative to the JSONL file). The processor puts the
    image placeholder in front of the prompt and expands it into one token per image feature;
    the loss still covers the answer tokens only (never image or prompt tokens). Images are read
    and preprocessed batch by batch (:func:`collate`), so a data set never sits in memory as
    pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from repspace.errors import FormatError, InputError
from repspace.models.processors import image_prompt
from repspace.probes import iter_jsonl, open_image
from repspace.tune.options import BATCHING

TASKS = ("classification", "generation")
#: Length batching sorts the shuffled epoch in windows of this many optimizer steps (as capture
#: sorts its windows of batches): wide enough to group lengths, narrow enough to stay random.
LENGTH_WINDOW = 8
_FIELDS = {"classification": ("text", "label"), "generation": ("prompt", "answer")}
IGNORE = -100


class Record(dict):
    """A line of a task file, which knows where it was read (``where``: ``FILE:LINE``) so that
    errors about it can say so."""

    where: str = ""


def _record(values: dict[str, Any], where: str) -> Record:
    record = Record(values)
    record.where = where
    return record


def read_jsonl(path: str | Path, task: str) -> list[dict[str, Any]]:
    """Records of a task file, each checked for the task's fields (each a :class:`Record`)."""
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    records = [_record(record, f"{path}:{number}")
               for number, record in iter_jsonl(path, _FIELDS[task])]
    if not records:
        raise FormatError(f"data file is empty: {path}")
    for record in records:
        if record.get("image") is not None:
            record["image"] = Path(path).parent / str(record["image"])
    return records


def has_images(records: Sequence[dict]) -> bool:
    """True when any record names an image."""
    return any(r.get("image") is not None for r in records)


#: Per-token model inputs that a processor returns beside ``input_ids`` (padded with 0): Qwen2-VL's
#: ``mm_token_type_ids``, Gemma 3's ``token_type_ids`` (1 on image tokens, which attend to each
#: other both ways).
TOKEN_INPUTS = ("mm_token_type_ids", "token_type_ids")
#: Token sequences of their own length that a processor returns beside ``input_ids``
#: (InstructBLIP's instruction for the Q-Former), right-padded with 0 (masked out).
SIDE_INPUTS = ("qformer_input_ids", "qformer_attention_mask")


@dataclass
class Encoded:
    """A tokenised data set: per-example token ids, and labels (class index per example for
    classification, per-token targets with ``IGNORE`` outside the answer for generation).

    With images: ``images`` holds each example's image path (or ``None``), ``image_processor``
    turns a batch of images into the model's pixel inputs, and ``token_inputs`` the processor's
    other per-token inputs (Qwen2-VL's ``mm_token_type_ids``), ``side_inputs`` its sequences of
    their own length (InstructBLIP's ``qformer_input_ids``, see :data:`SIDE_INPUTS`)."""

    input_ids: list[list[int]]
    labels: list[Any]
    images: list[Path | None] | None = None
    image_processor: Any = None
    token_inputs: dict[str, list[list[int]]] = field(default_factory=dict)
    side_inputs: dict[str, list[list[int]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_classification(records: Sequence[dict], tokenizer: Any, max_length: int,
                          label_names: list[str]) -> Encoded:
    index = {name: i for i, name in enumerate(label_names)}
    unseen = [r for r in records if str(r["label"]) not in index]
    if unseen:
        where = getattr(unseen[0], "where", "")
        others = sorted({str(r["label"]) for r in unseen})
        raise InputError(f"{where + ': ' if where else ''}label {str(unseen[0]['label'])!r} was "
                         f"not seen in training (training labels: {', '.join(label_names[:8])}"
                         f"{', ...' if len(label_names) > 8 else ''}; {len(unseen)} lines have "
                         f"unseen labels: {', '.join(others[:5])})")
    ids = tokenizer([str(r["text"]) for r in records], truncation=True,
                    max_length=max_length)["input_ids"]
    return Encoded(list(ids), [index[str(r["label"])] for r in records])


def encode_generation(records: Sequence[dict], tokenizer: Any, max_length: int) -> Encoded:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise InputError("generation needs a tokenizer with an end-of-sequence token")
    inputs, labels = [], []
    for r in records:
        prompt = tokenizer(str(r["prompt"]), add_special_tokens=False)["input_ids"]
        answer = tokenizer(" " + str(r["answer"]), add_special_tokens=False)["input_ids"] + [eos]
        ids = (prompt + answer)[:max_length]
        target = ([IGNORE] * len(prompt) + answer)[:max_length]
        if all(t == IGNORE for t in target):
            raise InputError(f"max_length {max_length} leaves no answer token for prompt "
                             f"{str(r['prompt'])[:40]!r}")
        inputs.append(ids)
        labels.append(target)
    return Encoded(inputs, labels)


def encode_image_generation(records: Sequence[dict], processor: Any,
                            max_length: int) -> Encoded:
    """Generation examples with images for a vision-language model's ``processor``.

    The prompt is ``image_prompt(processor, prompt)`` (the image placeholder in front), run
    through the processor with its image so that the placeholder is expanded to one token per
    image feature; the answer (``" " + answer``, then the end token) is tokenised apart and
    appended. Labels are ``IGNORE`` on the prompt and image tokens.
    """
    tokenizer = processor.tokenizer
    eos = tokenizer.eos_token_id
    if eos is None:
        raise InputError("generation needs a tokenizer with an end-of-sequence token")
    names = getattr(processor, "model_input_names", ())
    keys = [k for k in TOKEN_INPUTS if k in names]
    inputs, labels, images = [], [], []
    extra: dict[str, list[list[int]]] = {key: [] for key in keys}
    side: dict[str, list[list[int]]] = {key: [] for key in SIDE_INPUTS if key in names}
    for r in records:
        path = r.get("image")
        if path is None:
            encoded = {"input_ids": [tokenizer(str(r["prompt"]),
                                               add_special_tokens=False)["input_ids"]]}
        else:
            encoded = processor(images=[[open_image(path)]],  # one list per text (Gemma 3)
                                text=[image_prompt(processor, str(r["prompt"]))])
        prompt = list(encoded["input_ids"][0])
        if len(prompt) >= max_length:
            raise InputError(f"max_length {max_length} leaves no answer token after the "
                             f"{len(prompt)} prompt and image tokens of {str(r['prompt'])[:40]!r}:"
                             f" raise --max-length")
        answer = tokenizer(" " + str(r["answer"]), add_special_tokens=False)["input_ids"] + [eos]
        inputs.append((prompt + answer)[:max_length])
        labels.append(([IGNORE] * len(prompt) + answer)[:max_length])
        images.append(path)
        for key in keys:
            values = list(encoded[key][0]) if key in encoded else [0] * len(prompt)
            extra[key].append((values + [0] * len(answer))[:max_length])
        for key, rows in side.items():
            rows.append(list(encoded[key][0]) if key in encoded else [])
    return Encoded(inputs, labels, images, processor.image_processor, extra, side)


def step_batches(lengths: Sequence[int], per_step: int, generator: torch.Generator,
                 batching: str = "length", window: int = LENGTH_WINDOW) -> list[list[int]]:
    """The examples of each optimizer step of one epoch, from a seeded shuffle.

    ``random``: the permutation ``torch.randperm(n, generator)`` cut into steps of ``per_step``.
    ``length``: the same permutation cut into windows of ``window * per_step`` examples; each
    window is sorted by length (stable, so ties keep the shuffle's order), cut into steps, and
    its steps are put in an order drawn from ``generator``. Every example is in one step, there
    are ``ceil(n / per_step)`` steps either way (only the last window's longest step may be
    short), and the same generator state gives the same steps, so runs and resumes repeat bit
    for bit. A step's micro-batches (and, under ``torchrun``, each process's share) then hold
    examples of similar lengths, so right-padding to the longest row of a batch adds little
    (the scheme of Hugging Face's ``group_by_length``, with windows of whole steps).
    """
    if batching not in BATCHING:
        raise InputError(f"unknown batching {batching!r}; choices: {', '.join(BATCHING)}")
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if batching == "random":
        return [order[i:i + per_step] for i in range(0, len(order), per_step)]
    steps: list[list[int]] = []
    span = window * per_step
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: lengths[i])
        cut = [chunk[i:i + per_step] for i in range(0, len(chunk), per_step)]
        steps.extend(cut[j] for j in torch.randperm(len(cut), generator=generator).tolist())
    return steps


def padding_share(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of the positions of right-padded ``batches`` (each as long as its longest row)
    that are padding: ``1 - sum(lengths) / sum(len(b) * max length in b)``."""
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    return 1.0 - real / padded if padded else 0.0


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    padded = torch.full((len(rows), max(map(len, rows))), value, dtype=torch.long)
    for i, row in enumerate(rows):
        padded[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return padded


def collate(data: Encoded, indices: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """A right-padded batch of the examples ``indices`` (with their images' pixel inputs, in
    example order: LLaVA's ``pixel_values`` (B, 3, H, W); Qwen2-VL's packed patches
    ``pixel_values`` (sum of patches, C) with ``image_grid_thw`` (B, 3))."""
    rows = [data.input_ids[i] for i in indices]
    input_ids = _pad(rows, pad_id)
    mask = _pad([[1] * len(row) for row in rows], 0)
    batch = {"input_ids": input_ids, "attention_mask": mask}
    for key, values in data.token_inputs.items():
        batch[key] = _pad([values[i] for i in indices], 0)
    for key, values in data.side_inputs.items():
        batch[key] = _pad([values[i] for i in indices], 0)
    paths = [data.images[i] for i in indices if data.images[i] is not None] if data.images else []
    if paths:
        pixels = data.image_processor(images=[[open_image(p)] for p in paths],  # one per example
                                      return_tensors="pt")
        batch.update({k: v for k, v in pixels.items() if isinstance(v, torch.Tensor)})
    labels = [data.labels[i] for i in indices]
    if isinstance(labels[0], list):
        batch["labels"] = _pad(labels, IGNORE)
    else:
        batch["labels"] = torch.tensor(labels)
    return batch
