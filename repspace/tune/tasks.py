"""Task models: what is optimised and what is measured.

``classification``: mean-pooled real-token features of the last hidden layer -> linear head;
cross-entropy loss; accuracy. ``generation``: the model's own language-model head; cross-entropy
on answer tokens (mean per example, then over examples); exact match = every answer token
(and the end token) is the argmax under teacher forcing, which is exactly when greedy decoding
reproduces the answer. With images the model also gets the batch's pixel inputs; image and
prompt tokens carry no loss.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from repspace.capture.tokens import pool
from repspace.errors import InputError
from repspace.models import LoadedModel
from repspace.tune.data import IGNORE


def _positions(hidden: torch.Tensor, length: int) -> torch.Tensor:
    """The last ``length`` positions: prompt tuning prepends virtual tokens."""
    return hidden[:, hidden.shape[1] - length:]


class Classifier(nn.Module):
    """``model`` (possibly PEFT-wrapped) + mean pooling over real tokens + a linear head."""

    def __init__(self, model: nn.Module, hidden_size: int, num_labels: int) -> None:
        super().__init__()
        self.model = model
        self.head = nn.Linear(hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        output = self.model(input_ids=input_ids, attention_mask=attention_mask)
        hidden = getattr(output, "last_hidden_state", None)
        if hidden is None:
            raise InputError("classification needs a model that returns last_hidden_state "
                             "(an encoder such as BERT); use --task generation for decoders")
        hidden = _positions(hidden, input_ids.shape[1])
        return self.head(pool(hidden.float(), attention_mask, "mean"))

    def per_example(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example cross-entropy and whether the argmax class is right."""
        logits = self(batch["input_ids"], batch["attention_mask"])
        labels = batch["labels"]
        return F.cross_entropy(logits, labels, reduction="none"), logits.argmax(-1) == labels


def seq2seq_batch(batch: dict[str, torch.Tensor], start: int,
                  pad: int) -> dict[str, torch.Tensor]:
    """A causal generation batch (prompt + answer in ``input_ids``, labels on the answer) as an
    encoder-decoder model takes it: the encoder attends to the prompt (and image) tokens only
    (``attention_mask`` without the answer), the decoder reads ``[start] + answer[:-1]``
    (``decoder_input_ids``, left-aligned, padded with ``pad``) and ``labels`` are the answer
    tokens at the decoder's positions."""
    labels = batch["labels"]
    answer = labels != IGNORE
    lengths = answer.sum(1)
    targets = torch.full((len(labels), int(lengths.max())), IGNORE, dtype=labels.dtype,
                         device=labels.device)
    keep = torch.arange(targets.shape[1], device=labels.device) < lengths[:, None]
    targets[keep] = labels[answer]
    decoder = torch.cat([torch.full_like(targets[:, :1], start), targets[:, :-1]], dim=1)
    decoder = decoder.masked_fill(decoder == IGNORE, pad)
    return {**batch, "attention_mask": batch["attention_mask"] * ~answer,
            "decoder_input_ids": decoder, "decoder_attention_mask": keep.long(),
            "labels": targets}


def _takes_logits_to_keep(model: nn.Module) -> bool:
    """Whether ``model`` (PEFT wrappers removed) computes logits only at the positions it is
    given (``logits_to_keep``, most ``transformers`` language models)."""
    get_base = getattr(model, "get_base_model", None)
    base = get_base() if callable(get_base) else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


class Generator(nn.Module):
    """A causal language model (possibly PEFT-wrapped) trained on answer tokens only; an
    encoder-decoder language model (BLIP-2 with Flan-T5) gets the prompt in its encoder and the
    answer in its decoder (:func:`seq2seq_batch`).

    A causal model that takes ``logits_to_keep`` gets its LM head only at the positions that
    predict an answer token of some example in the batch (a 49k-word head over every prompt
    position is ~40 % of a LoRA step of SmolLM2-135M); the positions are counted from the end
    of the sequence, so virtual tokens a prompt method prepends do not shift them.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def per_example(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example mean cross-entropy over answer tokens, and exact match. Every input of
        ``batch`` but the labels goes to the model (pixel values, image grids, ...)."""
        config = getattr(self.model, "config", None)
        seq2seq = getattr(config, "is_encoder_decoder", False)
        if seq2seq:
            text = config.get_text_config()
            batch = seq2seq_batch(batch, text.decoder_start_token_id, text.pad_token_id)
        input_ids, labels = batch["input_ids"], batch["labels"]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        targets = labels if seq2seq else labels[:, 1:]
        columns = (targets != IGNORE).any(0).nonzero().squeeze(1)
        kept = not seq2seq and columns.numel() > 0 and _takes_logits_to_keep(self.model)
        if kept:  # logits at position p predict token p + 1; index from the sequence's end
            inputs["logits_to_keep"] = columns - input_ids.shape[1]
        output = self.model(**inputs)
        logits = getattr(output, "logits", None)
        if logits is None:
            raise InputError("generation needs a model with a language-model head "
                             "(e.g. GPT2LMHeadModel, LlamaForCausalLM)")
        if seq2seq:  # the decoder's position i predicts answer token i
            logits = logits.float()
        elif kept:
            logits, targets = logits.float(), targets[:, columns]
        else:
            logits = _positions(logits, input_ids.shape[1])[:, :-1].float()
        answer = targets != IGNORE
        token_loss = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE,
                                     reduction="none")
        per_example = (token_loss * answer).sum(1) / answer.sum(1).clamp(min=1)
        correct = (logits.argmax(-1) == targets) | ~answer
        return per_example, correct.all(1)


def classifier_from(tuned: LoadedModel) -> Classifier:
    """The classifier of a tuned classification checkpoint: its model plus its saved head."""
    task, head = tuned.info.get("task", {}), tuned.info.get("head", {})
    if task.get("type") != "classification" or not head:
        raise InputError(f"{tuned.source} has no classification head")
    weight = head["weight"]
    classifier = Classifier(tuned.model, weight.shape[1], weight.shape[0])
    classifier.head.load_state_dict(head)
    return classifier.eval()
