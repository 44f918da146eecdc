"""Capture: layer resolution, token rules, pooling, streaming into the store, hook hygiene."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

import repspace
from repspace.capture.hooks import collect
from repspace.capture.tokens import pool
from repspace.errors import InputError
from repspace.probes import Probe
from repspace.store import FeatureStore

BLOCKS = [f"encoder.layer.{i}" for i in range(6)]


def test_presets_and_patterns(base):
    backbone = base.backbone
    assert repspace.resolve_layers(backbone, "blocks") == BLOCKS
    assert repspace.resolve_layers(backbone, "embeddings") == ["encoder.layer.0:input"]
    assert repspace.resolve_layers(backbone, "encoder.layer.*.output") == [
        f"encoder.layer.{i}.output" for i in range(6)]
    assert repspace.resolve_layers(backbone, r"re:encoder\.layer\.[0-1]") == BLOCKS[:2]
    assert repspace.resolve_layers(backbone, "embeddings, blocks, encoder.layer.3") == [
        "encoder.layer.0:input", *BLOCKS]
    with pytest.raises(InputError, match=r"matches no module; closest: .*encoder\.layer"):
        repspace.resolve_layers(backbone, "encoder.layers.*")


def _reference(base, texts, layer_index):
    """Hidden states from transformers' own output_hidden_states, one sample at a time
    (no padding at all)."""
    out = []
    for text in texts:
        batch = base.tokenizer([text], return_tensors="pt")
        with torch.inference_mode():
            hidden = base.model(input_ids=batch["input_ids"],
                                attention_mask=batch["attention_mask"],
                                output_hidden_states=True).hidden_states[layer_index]
        out.append(hidden[0].double().numpy())
    return out


def test_pooled_and_token_features_match_unpadded_forward(base, probe, tmp_path):
    texts = probe.texts[:12]
    small = Probe.from_texts(texts)
    path = repspace.capture(base, small, out=tmp_path / "s.h5", layers="embeddings,blocks",
                            tokens=True, batch_size=5, progress=False)
    with FeatureStore(path) as store:
        assert store.layers == ["encoder.layer.0:input", *BLOCKS]
        assert store.sample_ids == list(small.ids)
        for index, layer in [(0, "encoder.layer.0:input"), (3, "encoder.layer.2"),
                             (6, "encoder.layer.5")]:
            reference = _reference(base, texts, index)
            tokens = store.tokens(layer)
            assert [len(t) for t in tokens] == [len(r) for r in reference]
            for got, want in zip(tokens, reference, strict=True):
                np.testing.assert_allclose(got, want, atol=2e-5)
            np.testing.assert_allclose(store.pooled(layer),
                                       np.stack([r.mean(0) for r in reference]), atol=2e-5)


@pytest.mark.parametrize("pooling", ["first", "last"])
def test_first_and_last_pick_real_tokens(base, probe, tmp_path, pooling):
    texts = probe.texts[:6]
    path = repspace.capture(base, Probe.from_texts(texts), out=tmp_path / "p.h5",
                            layers="encoder.layer.5", pooling=pooling, batch_size=6,
                            progress=False)
    reference = _reference(base, texts, 6)
    row = 0 if pooling == "first" else -1
    with FeatureStore(path) as store:
        np.testing.assert_allclose(store.pooled("encoder.layer.5"),
                                   np.stack([r[row] for r in reference]), atol=2e-5)


def test_pool_formulas_on_left_padding():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert torch.equal(pool(hidden, mask, "first")[0], hidden[0, 2])
    assert torch.equal(pool(hidden, mask, "last")[0], hidden[0, 3])
    assert torch.allclose(pool(hidden, mask, "mean")[0], hidden[0, 2:].mean(0))
    assert torch.allclose(pool(hidden, mask, "mean")[1], hidden[1].mean(0))


def test_prefix_and_prompt_stores_align_with_base(base, probe, tuned_pts, tmp_path):
    counts = {}
    for name in ("base", "prefix", "prompt"):
        model = base if name == "base" else repspace.load_model(tuned_pts[name], base=base)
        path = repspace.capture(model, probe, out=tmp_path / f"{name}.h5", tokens=True,
                                batch_size=16, progress=False)
        with FeatureStore(path) as store:
            counts[name] = (store.sample_ids, store.token_counts("encoder.layer.5").tolist(),
                            store.pooled("encoder.layer.5"))
    for name in ("prefix", "prompt"):
        assert counts[name][0] == counts["base"][0]
        assert counts[name][1] == counts["base"][1]
        assert not np.allclose(counts[name][2], counts["base"][2], atol=1e-3)


def test_capture_is_independent_of_batch_size(base, probe, tmp_path):
    stores = [repspace.capture(base, probe, out=tmp_path / f"{b}.h5", layers="encoder.layer.4",
                               batch_size=b, progress=False) for b in (1, 48)]
    with FeatureStore(stores[0]) as a, FeatureStore(stores[1]) as b:
        np.testing.assert_allclose(a.pooled("encoder.layer.4"), b.pooled("encoder.layer.4"),
                                   atol=1e-5)


def test_hooks_are_removed_when_the_forward_raises(base):
    module = base.model.get_submodule("encoder.layer.1")
    before = (len(module._forward_hooks), len(module._forward_pre_hooks))
    with pytest.raises(RuntimeError, match="boom"), collect(
            base.model, ["encoder.layer.1", "encoder.layer.1:input"]) as captured:
        assert (len(module._forward_hooks), len(module._forward_pre_hooks)) == (
            before[0] + 1, before[1] + 1)
        raise RuntimeError("boom")
    assert (len(module._forward_hooks), len(module._forward_pre_hooks)) == before
    assert captured == {}


def _tiny_decoder(kind: str):
    common = {"vocab_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2,
              "bos_token_id": 1, "eos_token_id": 1}
    if kind == "gpt2":
        config = transformers.GPT2Config(n_embd=16, n_positions=64, n_layer=3, n_head=2,
                                         vocab_size=64, bos_token_id=1, eos_token_id=1)
        return transformers.GPT2Model(config), "h"
    config = transformers.LlamaConfig(hidden_size=16, intermediate_size=32,
                                      num_key_value_heads=1, **common)
    return transformers.LlamaModel(config), "layers"


class _ToyTokenizer:
    """Whitespace tokenizer for tiny decoders that pads on the left unless told otherwise."""

    def __call__(self, texts, padding=True, truncation=True, max_length=128, return_tensors="pt",
                 padding_side="left"):
        ids = [[sum(map(ord, w)) % 60 + 2 for w in t.split()][:max_length] for t in texts]
        width = max(map(len, ids))

        def pad(row, fill):
            extra = [fill] * (width - len(row))
            return extra + row if padding_side == "left" else row + extra

        return {"input_ids": torch.tensor([pad(i, 0) for i in ids]),
                "attention_mask": torch.tensor([pad([1] * len(i), 0) for i in ids])}


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_tiny_decoders_blocks_and_padding(kind, tmp_path):
    """Decoders: the block preset finds their stack, and batching (with a tokenizer that pads
    on the left by default) gives each sample the features of its unpadded forward."""
    torch.manual_seed(0)
    model, stack = _tiny_decoder(kind)
    loaded = repspace.LoadedModel(model=model.eval(), tokenizer=_ToyTokenizer(),
                                  fingerprint=kind, source=kind)
    assert repspace.resolve_layers(model, "blocks") == [f"{stack}.{i}" for i in range(3)]
    texts = ["one two three four five six", "seven eight", "nine ten eleven"]
    path = repspace.capture(loaded, Probe.from_texts(texts), out=tmp_path / "d.h5",
                            pooling="last", tokens=True, batch_size=3, progress=False)
    with FeatureStore(path) as store:
        assert store.token_counts(f"{stack}.2").tolist() == [6, 2, 3]
        for i, text in enumerate(texts):
            with collect(model, [f"{stack}.2"]) as got, torch.inference_mode():
                model(**_ToyTokenizer()([text]))
            last = got[f"{stack}.2"][0, -1]
            np.testing.assert_allclose(store.pooled(f"{stack}.2")[i], last.numpy(), atol=1e-5)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_skip_first_leaves_out_the_first_token(kind, tmp_path):
    """``skip_first``: the pooled mean and the token matrices of every sample are those of its
    unpadded forward without position 0 (computed here from the full-token capture), the store
    says so, and the cache key differs from a capture with every token."""
    from repspace.capture.run import capture_settings

    torch.manual_seed(0)
    model, stack = _tiny_decoder(kind)
    loaded = repspace.LoadedModel(model=model.eval(), tokenizer=_ToyTokenizer(),
                                  fingerprint=kind, source=kind)
    probe = Probe.from_texts(["one two three four five six", "seven eight", "nine ten eleven"])
    layer = f"{stack}.1"
    paths = {skip: repspace.capture(loaded, probe, out=tmp_path / f"{skip}.h5", layers=layer,
                                    tokens=True, batch_size=3, skip_first=skip, progress=False)
             for skip in (False, True)}
    with FeatureStore(paths[False]) as every, FeatureStore(paths[True]) as skipped:
        full = every.tokens(layer)
        assert skipped.token_counts(layer).tolist() == [5, 1, 2]
        for got, want in zip(skipped.tokens(layer), full, strict=True):
            np.testing.assert_allclose(got, want[1:], atol=1e-6)
        np.testing.assert_allclose(skipped.pooled(layer), np.stack([t[1:].mean(0) for t in full]),
                                   atol=1e-6)
        assert skipped.layer_attrs(layer)["token_selection"] == "real tokens after the first"
    assert capture_settings([layer], "mean", True, 128) != capture_settings(
        [layer], "mean", True, 128, skip_first=True)
    with pytest.raises(InputError, match="skip_first needs at least 2 tokens"):
        repspace.capture(loaded, Probe.from_texts(["one two", "three"]), out=tmp_path / "x.h5",
                         layers=layer, skip_first=True, progress=False)
    assert not (tmp_path / "x.h5").exists()


def test_pooling_tokens_keeps_mean_and_every_token(base, probe, tmp_path):
    path = repspace.capture(base, probe.subset(5), out=tmp_path / "t.h5", pooling="tokens",
                            layers="encoder.layer.1", progress=False)
    with FeatureStore(path) as store:
        assert store.has_tokens and store.meta["pooling"] == "mean"
        tokens = store.tokens("encoder.layer.1")
        np.testing.assert_allclose(store.pooled("encoder.layer.1"),
                                   np.stack([t.mean(0) for t in tokens]), atol=1e-5)
    with pytest.raises(InputError, match="unknown pooling"):
        repspace.capture(base, probe, out=tmp_path / "x.h5", pooling="max", progress=False)


def test_windows_batch_shortest_first_and_store_probe_order(base, probe, tmp_path, monkeypatch):
    """Within each window of 8 batches, samples run shortest text first; rows come back in
    probe order, equal (to float tolerance) to running each sample alone."""
    from repspace.capture import run

    batches = []
    real_encode = run._encode

    def recording(tokenizer, texts, max_length, device):
        batches.append(list(texts))
        return real_encode(tokenizer, texts, max_length, device)

    monkeypatch.setattr(run, "_encode", recording)
    path = repspace.capture(base, probe, out=tmp_path / "w.h5", layers="encoder.layer.5",
                            batch_size=3, progress=False)
    window = 3 * run.WINDOW_BATCHES
    texts = list(probe.texts)
    for w in range(0, len(texts), window):
        ran = [t for batch in batches[w // 3:(w + window) // 3] for t in batch]
        assert ran == sorted(texts[w:w + window], key=len)
    monkeypatch.undo()
    reference = _reference(base, texts, 6)
    with FeatureStore(path) as store:
        assert store.sample_ids == list(probe.ids)
        np.testing.assert_allclose(store.pooled("encoder.layer.5"),
                                   np.stack([r.mean(0) for r in reference]), atol=2e-5)
