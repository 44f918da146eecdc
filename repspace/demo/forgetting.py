"""Stability (forgetting) measures of the studies: what a tuned model still does that its base
did, as "Keeping Yourself is Important" measures upstream retention.

- decoder: accuracy on general-knowledge questions the base answers (``data/general_knowledge
  .jsonl``, scored by :func:`is_correct`), and language-model loss on held-out general text;
- encoder: top-1 paraphrase retrieval with the last-layer features.

The question-answering rule is the one ``data/make_general_knowledge.py`` used to keep the
questions (see ``data/GENERAL_KNOWLEDGE.md``): chat template with :data:`SYSTEM_PROMPT`, greedy
decoding of at most :data:`MAX_NEW_TOKENS` tokens, normalised whole-word match.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

from repspace import metrics

SYSTEM_PROMPT = "You are a helpful assistant. Answer briefly in a few words."
MAX_NEW_TOKENS = 24
ARTICLES = frozenset({"a", "an", "the"})
NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
     "fifteen sixteen seventeen eighteen nineteen twenty").split())}
_WORD_RE = re.compile(r"\d+(?:\.\d+)?|[a-z0-9]+")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}\b)")


def normalize(text: str) -> list[str]:
    """Words of ``text`` for scoring: accents stripped, lowercase, number words as digits.

    Thousands separators are removed (``300,000`` -> ``300000``), decimals stay one word
    (``10.0`` never matches ``0``), every other non-alphanumeric character separates words, and
    the articles ``a``/``an``/``the`` are dropped.
    """
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = _THOUSANDS_RE.sub("", text)
    words = [NUMBER_WORDS.get(w, w) for w in _WORD_RE.findall(text)]
    return [w for w in words if w not in ARTICLES]


def is_correct(generation: str, answer: str) -> bool:
    """True when the normalised ``answer`` is a contiguous run of words of the generation."""
    gen, ans = normalize(generation), normalize(answer)
    if not ans:
        raise ValueError(f"answer {answer!r} is empty after normalisation")
    n = len(ans)
    return any(gen[i:i + n] == ans for i in range(len(gen) - n + 1))


def messages(question: str, system: str | None = SYSTEM_PROMPT) -> list[dict[str, str]]:
    """The chat a question is asked in (``system=None``: the template's default system)."""
    chat = [{"role": "user", "content": question}]
    return chat if system is None else [{"role": "system", "content": system}, *chat]


def generate_answers(model: Any, tokenizer: Any, questions: Sequence[str], *,
                     batch_size: int = 16, system: str | None = SYSTEM_PROMPT,
                     max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
    """Greedy replies of a causal LM (or a PEFT model wrapping one) to ``questions`` through
    the tokenizer's chat template, in left-padded batches."""
    import torch

    device = next(model.parameters()).device
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    replies: list[str] = []
    try:
        for i in range(0, len(questions), batch_size):
            texts = [tokenizer.apply_chat_template(messages(q, system), tokenize=False,
                                                   add_generation_prompt=True)
                     for q in questions[i:i + batch_size]]
            batch = tokenizer(texts, return_tensors="pt", padding=True,
                              add_special_tokens=False).to(device)
            with torch.inference_mode():
                ids = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            replies += tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1]:],
                                              skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return replies


def knowledge_accuracy(model: Any, tokenizer: Any, records: Sequence[dict], *,
                       batch_size: int = 16) -> tuple[float, list[bool]]:
    """Share of ``records`` (``prompt``, ``answer``) answered correctly (:func:`is_correct`),
    and the per-question hits. 1.0 for the base on the shipped set; lower means forgetting."""
    replies = generate_answers(model, tokenizer, [r["prompt"] for r in records],
                               batch_size=batch_size)
    hits = [is_correct(g, r["answer"]) for g, r in zip(replies, records, strict=True)]
    return float(np.mean(hits)), hits


def lm_loss(model: Any, tokenizer: Any, texts: Sequence[str], *, max_length: int,
            batch_size: int = 8) -> float:
    """Mean next-token cross-entropy (nats per token) of a causal LM on ``texts``, each cut to
    ``max_length`` tokens: sum of token losses over all texts / number of predicted tokens.
    Lower is better; a rise over the base's means the model forgot general language."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    side, tokenizer.padding_side = tokenizer.padding_side, "right"
    total, count = 0.0, 0
    try:
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[i:i + batch_size]), return_tensors="pt", padding=True,
                              truncation=True, max_length=max_length).to(device)
            with torch.inference_mode():
                logits = model(**batch).logits
            logits = logits[:, logits.shape[1] - batch["input_ids"].shape[1]:][:, :-1].float()
            targets = batch["input_ids"][:, 1:]
            mask = batch["attention_mask"][:, 1:].bool()
            loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
            total += float(loss[mask].sum())
            count += int(mask.sum())
    finally:
        tokenizer.padding_side = side
    return total / count


def paraphrase_retrieval(features: np.ndarray) -> float:
    """Mean of a->b and b->a top-1 retrieval accuracy of paraphrase pairs (rows: all first
    sentences, then all second sentences); higher means the space still pairs paraphrases."""
    half = features.shape[0] // 2
    a, b = features[:half], features[half:]
    return (metrics.retrieval_accuracy(a, b) + metrics.retrieval_accuracy(b, a)) / 2
