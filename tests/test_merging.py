"""Weight merging (WiSE-FT interpolation, task arithmetic, TIES, DARE) written as tuned
checkpoints: alpha = 0 is the base and alpha = 1 the tuned model bit for bit, other values and
combinations match the formulas in float64 (TIES against a direct implementation), refused
inputs are one-line errors, and on the shipped MiniLM CKA to the base falls as alpha grows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import repspace
from repspace.cli.main import main
from repspace.errors import InputError
from repspace.models.merging import merge_weights, merged_parameters
from repspace.tune import tune
from repspace.tune.tasks import classifier_from

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["the film was great", "the plot was weak and dull"]


def _tuned(tiny_bert, method, name, seed=0, **options):
    base, data, folder = tiny_bert
    return tune(base, method, data=data, out=folder / f"merge-{name}.pt", epochs=2,
                batch_size=8, max_length=16, lr=1e-2, dropout=0.0, seed=seed, progress=False,
                device="cpu", **options)


@pytest.fixture(scope="module")
def full(tiny_bert):
    return _tuned(tiny_bert, "full", "full")


def _params(model) -> dict[str, torch.Tensor]:
    return dict(model.backbone.named_parameters())


def _logits(tiny_bert, path):
    base, _, _ = tiny_bert
    batch = base.tokenizer(TEXTS, padding=True, return_tensors="pt",
                           return_token_type_ids=False)
    loaded = repspace.load_model(path, base=base)
    with torch.inference_mode():
        hidden = loaded.model(**batch).last_hidden_state
        logits = classifier_from(loaded)(batch["input_ids"], batch["attention_mask"])
    return hidden, logits


def test_interpolation_ends_are_the_base_and_the_tuned_model_exactly(tiny_bert, full):
    base, _, folder = tiny_bert
    zero = merge_weights(base, [full.checkpoint], alpha=0.0, out=folder / "a0.pt")
    one = merge_weights(base, [full.checkpoint], alpha=1.0, out=folder / "a1.pt")
    payload = torch.load(zero, weights_only=True)
    assert payload["kind"] == "tuned" and payload["method"] == "interpolate"
    assert payload["parts"] == []  # nothing differs from the base
    batch = base.tokenizer(TEXTS, padding=True, return_tensors="pt",
                           return_token_type_ids=False)
    with torch.inference_mode():
        expected = base.model(**batch).last_hidden_state
    assert torch.equal(_logits(tiny_bert, zero)[0], expected)
    hidden, logits = _logits(tiny_bert, one)
    tuned_hidden, tuned_logits = _logits(tiny_bert, full.checkpoint)
    assert torch.equal(hidden, tuned_hidden) and torch.equal(logits, tuned_logits)


def test_interpolation_and_task_arithmetic_follow_the_formula(tiny_bert, full):
    base, _, folder = tiny_bert
    other = _tuned(tiny_bert, "full", "other", seed=1)
    theta0 = {n: p.double() for n, p in _params(base).items()}
    theta1 = {n: p.double() for n, p in _params(repspace.load_model(full.checkpoint,
                                                                    base=base)).items()}
    theta2 = {n: p.double() for n, p in _params(repspace.load_model(other.checkpoint,
                                                                    base=base)).items()}
    half = _params(repspace.load_model(merge_weights(base, [full.checkpoint], alpha=0.25,
                                                     out=folder / "a25.pt"), base=base))
    pair = merge_weights(base, [full.checkpoint, other.checkpoint], alpha=[0.7, -0.4],
                         out=folder / "pair.pt")
    assert torch.load(pair, weights_only=True)["method"] == "task-arithmetic"
    summed = _params(repspace.load_model(pair, base=base))
    for name, w0 in theta0.items():
        expected = 0.75 * w0 + 0.25 * theta1[name]
        torch.testing.assert_close(half[name].double(), expected, atol=1e-7, rtol=0)
        expected = w0 + 0.7 * (theta1[name] - w0) - 0.4 * (theta2[name] - w0)
        torch.testing.assert_close(summed[name].double(), expected, atol=1e-6, rtol=0)


@pytest.mark.filterwarnings("ignore:The density 1.0 is greater")  # PEFT: nothing pruned
def test_ties_matches_a_direct_implementation_and_dare_keeps_its_share(tiny_bert, full):
    base, _, folder = tiny_bert
    other = _tuned(tiny_bert, "full", "other2", seed=2)
    ties = _params(repspace.load_model(merge_weights(
        base, [full.checkpoint, other.checkpoint], how="ties", density=1.0,
        out=folder / "ties.pt"), base=base))
    w0 = {n: p.detach().double().numpy() for n, p in _params(base).items()}
    ws = [{n: p.detach().double().numpy() for n, p in _params(
        repspace.load_model(m.checkpoint, base=base)).items()} for m in (full, other)]
    name = "encoder.layer.1.attention.self.query.weight"
    deltas = np.stack([w[name] - w0[name] for w in ws])
    sign = np.sign(deltas.sum(0))  # elected sign (total mass), then the mean of agreeing
    agree = np.sign(deltas) == sign
    expected = w0[name] + (deltas * agree).sum(0) / np.maximum(agree.sum(0), 1)
    np.testing.assert_allclose(ties[name].detach().double().numpy(), expected, atol=1e-6)
    dare = _params(repspace.load_model(merge_weights(
        base, [full.checkpoint], how="dare-linear", density=0.3, out=folder / "dare.pt"),
        base=base))
    moved = (dare[name] != _params(base)[name]).double().mean().item()
    assert 0.2 < moved < 0.4  # a random 30% of the delta kept


def test_peft_tuners_are_merged_in_and_added_tensors_refused(tiny_bert):
    base, _, folder = tiny_bert
    lora = _tuned(tiny_bert, "lora", "lora", lora_r=4)
    one = repspace.load_model(merge_weights(base, [lora.checkpoint], alpha=1.0,
                                            out=folder / "lora1.pt"), base=base)
    merged, _ = merged_parameters(repspace.load_model(lora.checkpoint, base=base))
    assert all(torch.equal(p, merged[n]) for n, p in _params(one).items())
    prefix = _tuned(tiny_bert, "prefix", "prefix", prefix_tokens=2)
    with pytest.raises(InputError, match="adds tensors the base lacks"):
        merge_weights(base, [prefix.checkpoint], alpha=0.5, out=folder / "x.pt")
    with pytest.raises(InputError, match="3 alpha values for 1 tuned models"):
        merge_weights(base, [lora.checkpoint], alpha=[0.1, 0.2, 0.3], out=folder / "x.pt")
    assert not (folder / "x.pt").exists()


def test_cka_to_the_base_falls_with_alpha_on_minilm(base, base_pt, tmp_path, capsys):
    records = [json.loads(line) for line in
               (ROOT / "data" / "task_train.jsonl").read_text().splitlines()[:16]]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    tuned = tune(base, "full", data=data, out=tmp_path / "full.pt", epochs=1, batch_size=8,
                 max_length=32, lr=1e-3, progress=False, device="cpu").checkpoint
    paths = []
    for alpha in (0.25, 0.5, 1.0):
        out = tmp_path / f"wise-{alpha}.pt"
        code = main(["merge-weights", str(base_pt), str(tuned), "--alpha", str(alpha),
                     "--out", str(out)])
        assert code == 0 and f"wrote {out}" in capsys.readouterr().out
        paths.append(out)
    result = repspace.compare(base, paths, limit=48, tokens=False, weights=False,
                              layers="blocks", cache_dir=tmp_path / "cache", progress=False)
    names = [m.name for m in result.models]
    cka = np.array([result.column(name, "cka") for name in names])  # alpha x layer
    assert (np.diff(cka, axis=0) < 0).all(), cka
    assert cka[-1].min() < 0.99  # the tuned model itself moved the space
