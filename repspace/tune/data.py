"""Training data for the two tasks: JSONL reading, tokenisation once, padded batches.

``classification``
    JSONL lines ``{"text": ..., "label": ...}`` (``id`` optional). Labels are any JSON scalars;
    the label set is the sorted set of training labels.
``generation``
    JSONL lines ``{"prompt": ..., "answer": ...}``. The model sees ``prompt + " " + answer`` and
    the end-of-sequence token; the loss covers the answer tokens and the end token only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from repspace.errors import FormatError, InputError
from repspace.probes import iter_jsonl

TASKS = ("classification", "generation")
_FIELDS = {"classification": ("text", "label"), "generation": ("prompt", "answer")}
IGNORE = -100


def read_jsonl(path: str | Path, task: str) -> list[dict[str, Any]]:
    """Records of a task file, each checked for the task's fields."""
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    records = [record for _, record in iter_jsonl(path, _FIELDS[task])]
    if not records:
        raise FormatError(f"data file is empty: {path}")
    return records


@dataclass
class Encoded:
    """A tokenised data set: per-example token ids, and labels (class index per example for
    classification, per-token targets with ``IGNORE`` outside the answer for generation)."""

    input_ids: list[list[int]]
    labels: list[Any]

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_classification(records: Sequence[dict], tokenizer: Any, max_length: int,
                          label_names: list[str]) -> Encoded:
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted({str(r["label"]) for r in records} - set(index))
    if unknown:
        raise InputError(f"labels not seen in training: {', '.join(unknown[:5])}")
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


def collate(data: Encoded, indices: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """A right-padded batch of the examples ``indices``."""
    rows = [data.input_ids[i] for i in indices]
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask}
    labels = [data.labels[i] for i in indices]
    if isinstance(labels[0], list):
        targets = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for i, row in enumerate(labels):
            targets[i, : len(row)] = torch.tensor(row)
        batch["labels"] = targets
    else:
        batch["labels"] = torch.tensor(labels)
    return batch
