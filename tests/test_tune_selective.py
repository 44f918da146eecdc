"""Selective tuning on a tiny BERT built in the test: layer-selective runs change exactly the
chosen blocks (or their attention / feed-forward), importance-masked runs change only the
chosen entries of each matrix (the rest bit-identical, weight decay included), trainable
counts are their formulas, and checkpoints reload to identical outputs."""

from __future__ import annotations

import json
import math

import pytest
import torch

import repspace
from repspace.errors import InputError
from repspace.tune import tune
from repspace.tune.tasks import classifier_from
from tests.conftest import TINY_D as D
from tests.conftest import TINY_FFN as FFN
from tests.conftest import TINY_LAYERS as LAYERS

#: Parameters of one BERT block: self-attention (query, key, value, output dense, LayerNorm)
#: and feed-forward (intermediate dense, output dense, LayerNorm).
ATTENTION = 4 * (D * D + D) + 2 * D
MLP = (D * FFN + FFN) + (FFN * D + D) + 2 * D
#: The weight matrices of one block (the six linear layers).
MATRICES = [D * D] * 4 + [D * FFN, FFN * D]


def _run(tiny_bert, name, method, **options):
    base, data, folder = tiny_bert
    return tune(base, method, data=data, eval_data=data, out=folder / f"{name}.pt", epochs=4,
                batch_size=8, max_length=16, lr=1e-2, head_lr=1e-2, dropout=0.0,
                progress=False, device="cpu", **options)


def _changed(base, result) -> dict[str, torch.Tensor]:
    """Base parameter name -> the entries that moved."""
    tuned = dict(result.model.model.named_parameters())
    return {n: tuned[n].detach() != p for n, p in base.model.named_parameters()
            if not torch.equal(tuned[n].detach(), p)}


def _losses(result) -> list[float]:
    return [r["loss"] for r in map(json.loads, result.log.read_text().splitlines())
            if "loss" in r]


def _reloads(tiny_bert, result) -> None:
    base, _, _ = tiny_bert
    batch = base.tokenizer(["the film was great", "the plot was weak and dull"], padding=True,
                           return_tensors="pt", return_token_type_ids=False)
    reloaded = classifier_from(repspace.load_model(result.checkpoint, base=base))
    with torch.inference_mode():
        assert torch.equal(reloaded(batch["input_ids"], batch["attention_mask"]),
                           result.model(batch["input_ids"], batch["attention_mask"]))


@pytest.mark.parametrize(("blocks", "part", "chosen", "per_block"), [
    ("first:1", "all", [0], ATTENTION + MLP),
    ("last:1", "attention", [1], ATTENTION),
    ("0-1", "mlp", [0, 1], MLP),
    ("1", "all", [1], ATTENTION + MLP),
])
def test_layer_selective_changes_exactly_the_chosen_blocks(tiny_bert, blocks, part, chosen,
                                                           per_block):
    base, _, _ = tiny_bert
    result = _run(tiny_bert, f"layers-{blocks}-{part}", "layer-selective", select_blocks=blocks,
                  select_part=part)
    assert result.trainable_params == len(chosen) * per_block
    first = {"attention": ("attention",), "mlp": ("intermediate", "output"),
             "all": ("attention", "intermediate", "output")}[part]
    expected = {n for n, _ in base.model.named_parameters()
                for i in chosen if n.startswith(f"encoder.layer.{i}.")
                and n.split(".")[3] in first}
    assert set(_changed(base, result)) == expected
    losses = _losses(result)
    assert sum(losses[-3:]) < sum(losses[:3])
    _reloads(tiny_bert, result)


def test_layer_selective_rejects_blocks_the_model_lacks(tiny_bert):
    with pytest.raises(InputError, match="does not fit this model's 2 blocks"):
        _run(tiny_bert, "bad", "layer-selective", select_blocks="last:3")
    with pytest.raises(InputError, match="must be first:K, last:K, A-B"):
        _run(tiny_bert, "bad", "layer-selective", select_blocks="middle")


@pytest.mark.parametrize("by", ["magnitude", "gradient"])
def test_masked_tuning_moves_only_its_share_of_each_matrix(tiny_bert, by):
    base, _, _ = tiny_bert
    fraction = 0.1
    result = _run(tiny_bert, f"masked-{by}", "masked", mask_fraction=fraction, mask_by=by,
                  mask_batches=2, weight_decay=0.1)
    assert result.trainable_params == LAYERS * sum(math.ceil(fraction * n) for n in MATRICES)
    changed = _changed(base, result)
    matrices = {n for n, p in base.model.named_parameters()
                if n.startswith("encoder.layer.") and n.endswith(".weight") and p.dim() == 2}
    assert set(changed) == matrices  # nothing else moves: biases, norms, embeddings
    params = dict(base.model.named_parameters())
    for name, moved in changed.items():
        k = math.ceil(fraction * moved.numel())
        assert 0 < int(moved.sum()) <= k, name
        if by == "magnitude":  # the moved entries are among the k of largest |W| (by numpy)
            order = params[name].detach().abs().flatten().double().numpy().argsort()
            assert set(moved.flatten().nonzero().flatten().tolist()) <= set(order[-k:].tolist())
    losses = _losses(result)
    assert sum(losses[-3:]) < sum(losses[:3])
    _reloads(tiny_bert, result)


def test_masked_gradient_scoring_steps_update_nothing(tiny_bert):
    base, _, _ = tiny_bert
    # 16 steps: 15 that score with the full gradient (an update would move every entry),
    # then one masked update
    result = _run(tiny_bert, "scoring", "masked", mask_by="gradient", mask_batches=15)
    changed = _changed(base, result)
    assert changed and all(int(m.sum()) <= math.ceil(0.05 * m.numel())
                           for m in changed.values())
    with pytest.raises(InputError, match="leaves none of the run's 16 optimizer steps"):
        _run(tiny_bert, "scoring2", "masked", mask_by="gradient", mask_batches=16)
    with pytest.raises(InputError, match=r"--mask-fraction must be in \(0, 1\]"):
        _run(tiny_bert, "zero", "masked", mask_fraction=0.0)
