"""Trainer throughput, judged by what it changes: length batching cuts the padding (counted on the
padded batches themselves) and keeps every example once per epoch, runs stay bit-identical with
a seed, the loss still falls; the fused AdamW takes the textbook AdamW step; SDPA attention
gives eager attention's outputs."""

from __future__ import annotations

import copy
import json
import math
import random

import pytest
import torch

from repspace.errors import InputError
from repspace.tune import tune
from repspace.tune.data import collate, padding_share, step_batches
from repspace.tune.trainer import _adamw, _use_sdpa

WORDS = ["great", "awful", "lovely", "poor", "superb", "dull", "fine", "weak"]


@pytest.fixture(scope="module")
def mixed_files(tmp_path_factory):
    """A two-class task whose texts run from 3 to about 40 words (64 train lines)."""
    rng = random.Random(1)
    rows = []
    for i in range(64):
        good = i % 2
        word = WORDS[2 * rng.randrange(4) + (0 if good else 1)]
        filler = " ".join(rng.choice(["and", "the", "plot", "film", "was", "so"])
                          for _ in range(rng.choice([0, 1, 2, 30, 36])))
        rows.append({"text": f"{word} {filler}".strip(), "label": "pos" if good else "neg"})
    folder = tmp_path_factory.mktemp("mixed")
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _padded_positions(batches, lengths):
    """Padding counted on the padded batches :func:`collate` builds (zeros of the mask)."""
    from repspace.tune.data import Encoded

    data = Encoded([[1] * n for n in lengths], [0] * len(lengths))
    zeros = total = 0
    for batch in batches:
        mask = collate(data, batch, 0)["attention_mask"]
        zeros += int((mask == 0).sum())
        total += mask.numel()
    return zeros, total


def test_length_batches_cover_the_epoch_and_cut_padding():
    rng = random.Random(0)
    lengths = [rng.choice([3, 5, 8, 40, 64, 90]) for _ in range(203)]
    per_step = 8
    for batching in ("length", "random"):
        steps = step_batches(lengths, per_step, torch.Generator().manual_seed(5), batching)
        assert len(steps) == math.ceil(len(lengths) / per_step)
        assert sorted(i for s in steps for i in s) == list(range(len(lengths)))
        assert sum(len(s) < per_step for s in steps) == 1  # 203 = 25 * 8 + 3
        again = step_batches(lengths, per_step, torch.Generator().manual_seed(5), batching)
        assert again == steps
    length = step_batches(lengths, per_step, torch.Generator().manual_seed(5), "length")
    plain = step_batches(lengths, per_step, torch.Generator().manual_seed(5), "random")
    assert step_batches(lengths, per_step, torch.Generator().manual_seed(6), "length") != length
    zeros, total = _padded_positions(length, lengths)
    zeros_plain, total_plain = _padded_positions(plain, lengths)
    assert padding_share(lengths, length) == pytest.approx(zeros / total, abs=1e-12)
    assert padding_share(lengths, plain) == pytest.approx(zeros_plain / total_plain, abs=1e-12)
    assert zeros / total < 0.5 * zeros_plain / total_plain
    # the steps are not in length order: a window's steps are shuffled
    longest = [max(lengths[i] for i in s) for s in length[:8]]
    assert longest != sorted(longest)


def _count_positions(model):
    counter = [0]

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and torch.is_grad_enabled():
            counter[0] += ids.numel()

    return counter, model.embeddings.register_forward_pre_hook(hook, with_kwargs=True)


def _run(base, data, out, **kwargs):
    options = {"epochs": 3, "batch_size": 8, "max_length": 48, "progress": False,
               "device": "cpu", "lr": 2e-3, "dropout": 0.0, **kwargs}
    return tune(base, "lora", data=data, out=out, **options)


def test_length_batching_trains_on_less_padding_reproducibly(base, mixed_files, tmp_path):
    counter, handle = _count_positions(base.model)  # deepcopy carries the hook into each run
    try:
        runs, positions = {}, {}
        for name, batching in (("a", "length"), ("b", "length"), ("r", "random")):
            counter[0] = 0
            runs[name] = _run(base, mixed_files, tmp_path / f"{name}.pt", batching=batching)
            positions[name] = counter[0]
    finally:
        handle.remove()
    real = sum(min(len(ids), 48) for ids in base.tokenizer(
        [json.loads(line)["text"] for line in mixed_files.read_text().splitlines()],
        truncation=True, max_length=48)["input_ids"]) * 3
    assert positions["a"] == positions["b"] < 0.8 * positions["r"]
    assert real <= positions["a"]
    a, b, r = (torch.load(runs[k].checkpoint, weights_only=True) for k in "abr")
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert all(torch.equal(a["head"][k], b["head"][k]) for k in a["head"])
    assert a["training"]["batching"] == "length" and r["training"]["batching"] == "random"
    for name in "ar":
        steps = [rec["loss"] for rec in map(json.loads, runs[name].log.read_text().splitlines())
                 if "loss" in rec]
        assert len(steps) == 24
        assert sum(steps[-4:]) < 0.7 * sum(steps[:4]), name


def test_fused_adamw_takes_the_textbook_step():
    torch.manual_seed(0)
    weights = [torch.randn(5, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    params = [torch.nn.Parameter(w.clone().float()) for w in weights]
    optimizer = _adamw([{"params": params, "lr": 1e-2}], weight_decay=0.1)
    assert optimizer.defaults["fused"] is True
    m = [torch.zeros_like(w) for w in weights]
    v = [torch.zeros_like(w) for w in weights]
    for t in range(1, 4):
        grads = [torch.randn_like(w) for w in weights]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.float()
        optimizer.step()
        for i, g in enumerate(grads):  # Loshchilov & Hutter's decoupled decay, float64
            weights[i] = weights[i] * (1 - 1e-2 * 0.1)
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            step = 1e-2 * (m[i] / (1 - 0.9 ** t)) / ((v[i] / (1 - 0.999 ** t)).sqrt() + 1e-8)
            weights[i] = weights[i] - step
    for p, w in zip(params, weights, strict=True):
        torch.testing.assert_close(p.detach().double(), w, atol=1e-6, rtol=0)


def test_eager_attention_switches_to_sdpa_with_the_same_outputs(base):
    eager = copy.deepcopy(base.model).eval()
    eager.set_attn_implementation("eager")
    fast = copy.deepcopy(eager)
    _use_sdpa(fast)
    assert eager.config._attn_implementation == "eager"
    assert fast.config._attn_implementation == "sdpa"
    batch = base.tokenizer(["a short one", "a noticeably longer sentence with more words"],
                           padding=True, return_tensors="pt")
    with torch.inference_mode():
        want = eager(**batch).last_hidden_state
        got = fast(**batch).last_hidden_state
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(got[mask], want[mask], atol=1e-5, rtol=1e-5)


def test_fsdp_refuses_what_it_cannot_shard(base, mixed_files, tmp_path):
    with pytest.raises(InputError, match="--sharding fsdp trains full and the selective"):
        _run(base, mixed_files, tmp_path / "x.pt", sharding="fsdp")
    with pytest.raises(InputError, match="--snapshots"):
        tune(base, "full", data=mixed_files, out=tmp_path / "x.pt", sharding="fsdp",
             snapshots=True, device="cpu", progress=False)
    with pytest.raises(InputError, match="--sharding must be one of"):
        _run(base, mixed_files, tmp_path / "x.pt", sharding="zero3")
    assert not (tmp_path / "x.pt").exists()
