"""BLIP-2 with a decoder (OPT) and an encoder-decoder (Flan-T5) language model, and
InstructBLIP: tiny random models built in the tests (no downloads).

The processor puts ``num_query_tokens`` image tokens in front of every text; capture of every
part (vision tower, Q-Former blocks, language projection, language blocks of both T5 stacks) is
checked against the models' own hidden states in float64; every method trains what it promises
(loss falls, frozen weights bit-identical, trainable counts from the configs) and reloads with
identical logits; ``compare`` runs end to end per modality.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import repspace
from repspace.capture import capture, resolve_layers
from repspace.capture.multimodal import decoder_inputs
from repspace.errors import InputError
from repspace.models.processors import image_prompt
from repspace.probes import IMAGE_PROBE, Probe, load_probe
from repspace.store import FeatureStore
from repspace.tune import tune
from repspace.tune.data import collate, encode_image_generation, read_jsonl
from repspace.tune.tasks import seq2seq_batch
from tests.tiny_vlm import write_colour_task

N = 6
Q = 4  # query tokens
P = 3  # prefix tokens
FAMILIES = ["blip2-opt", "blip2-t5", "instructblip"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
    from repspace.testing import build_tiny_blip2

    name = request.param
    folder = build_tiny_blip2(tmp_path_factory.mktemp(name) / "model",
                              llm="t5" if name == "blip2-t5" else "opt",
                              instruct=name == "instructblip", query_tokens=Q)
    return name, repspace.load_model(folder)


@pytest.fixture(scope="module")
def probe() -> Probe:
    return load_probe(IMAGE_PROBE, limit=N)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return write_colour_task(tmp_path_factory.mktemp("blip_task"))


def processed(loaded, probe):
    return loaded.processor(images=probe.open_images(0, len(probe)),
                            text=[image_prompt(loaded.processor, t) for t in probe.texts],
                            padding=True, padding_side="right", return_tensors="pt")


def captured(loaded, probe, tmp_path, **kwargs) -> dict:
    path = capture(loaded, probe, out=tmp_path / "s.h5", batch_size=4, progress=False,
                   device="cpu", **kwargs)
    with FeatureStore(path) as store:
        return {layer: (store.pooled(layer).astype(np.float64),
                        store.token_counts(layer) if store.has_tokens else None,
                        store.layer_attrs(layer)) for layer in store.layers}


def masked_mean(hidden: torch.Tensor, mask: np.ndarray) -> np.ndarray:
    hidden = hidden.double().numpy()
    return np.stack([h[m].mean(0) for h, m in zip(hidden, mask, strict=True)])


# ----------------------------------------------------------------------------- structure


def test_processor_puts_the_query_tokens_in_front(family, probe):
    name, loaded = family
    batch = processed(loaded, probe)
    image = batch["input_ids"] == loaded.backbone.config.image_token_id
    assert image.sum(1).tolist() == [Q] * N
    assert image[:, :Q].all()  # before the text, which the processor tokenises as it is
    text = loaded.tokenizer(probe.texts[0], add_special_tokens=False)["input_ids"]
    assert batch["input_ids"][0, Q:Q + len(text)].tolist() == text
    assert ("qformer_input_ids" in batch) == (name == "instructblip")
    assert type(loaded.model).__name__ == ("InstructBlipForConditionalGeneration"
                                           if name == "instructblip" else
                                           "Blip2ForConditionalGeneration")


def test_presets_name_the_parts(family):
    name, loaded = family
    model = loaded.backbone
    assert resolve_layers(model, "vision") == [f"vision_model.encoder.layers.{i}"
                                               for i in range(2)]
    assert resolve_layers(model, "connector") == [
        "qformer.encoder.layer.0", "qformer.encoder.layer.1", "language_projection"]
    if name == "blip2-t5":
        assert resolve_layers(model, "language") == [
            f"language_model.{side}.block.{i}" for side in ("encoder", "decoder")
            for i in range(2)]
    else:
        assert resolve_layers(model, "language") == [
            f"language_model.model.decoder.layers.{i}" for i in range(2)]


def test_capture_matches_the_models_hidden_states(family, probe, tmp_path):
    """Vision patches (CLS dropped), the Q-Former's query positions, the projected query
    outputs, and the language blocks by modality, against the models' own outputs."""
    name, loaded = family
    found = captured(loaded, probe, tmp_path, layers="vision,connector,language", tokens=True)
    batch = processed(loaded, probe)
    model = loaded.model
    extra = {}
    if name == "blip2-t5":
        start = model.config.text_config.decoder_start_token_id
        extra = decoder_inputs(loaded.tokenizer, probe.texts, start, torch.device("cpu"))
    with torch.inference_mode():
        out = model(**batch, **extra, output_hidden_states=True)
        vision = model.vision_model(batch["pixel_values"], output_hidden_states=True)
        qformer = {"query_embeds": model.query_tokens.expand(N, -1, -1),
                   "encoder_hidden_states": vision.last_hidden_state}
        if name == "instructblip":
            qformer.update(input_ids=batch["qformer_input_ids"], attention_mask=torch.cat(
                [torch.ones(N, Q, dtype=torch.long), batch["qformer_attention_mask"]], 1))
        queries = model.qformer(**qformer, output_hidden_states=True).hidden_states
        projected = model.language_projection(queries[-1][:, :Q])
    for i in range(2):
        pooled, counts, attrs = found[f"vision_model.encoder.layers.{i}"]
        np.testing.assert_allclose(pooled, vision.hidden_states[i + 1][:, 1:].double()
                                   .numpy().mean(1), atol=1e-5)
        assert counts.tolist() == [16] * N and attrs["token_selection"] == "patch tokens"
        pooled, counts, attrs = found[f"qformer.encoder.layer.{i}"]
        np.testing.assert_allclose(pooled, queries[i + 1][:, :Q].double().numpy().mean(1),
                                   atol=1e-5)
        assert counts.tolist() == [Q] * N and attrs["part"] == "connector"
    pooled, counts, _ = found["language_projection"]
    np.testing.assert_allclose(pooled, projected.double().numpy().mean(1), atol=1e-5)
    assert counts.tolist() == [Q] * N
    real = batch["attention_mask"].numpy().astype(bool)
    image = (batch["input_ids"] == model.config.image_token_id).numpy()
    lm = out.language_model_outputs
    if name == "blip2-t5":
        first, hidden = "language_model.encoder.block.0", lm.encoder_hidden_states[1]
        decoder_mask = extra["decoder_attention_mask"].numpy().astype(bool)
        pooled, counts, attrs = found["language_model.decoder.block.0"]  # [-1]: after the norm
        np.testing.assert_allclose(pooled, masked_mean(lm.decoder_hidden_states[1],
                                                       decoder_mask), atol=1e-5)
        assert counts.tolist() == decoder_mask.sum(1).tolist()
        assert (attrs["modality"], attrs["part"]) == ("text", "language")
        assert "language_model.decoder.block.0@image" not in found
    else:
        first, hidden = "language_model.model.decoder.layers.0", lm.hidden_states[1]
    for suffix, mask, modality in (("", real, "all"), ("@image", image & real, "image"),
                                   ("@text", real & ~image, "text")):
        pooled, counts, attrs = found[first + suffix]
        np.testing.assert_allclose(pooled, masked_mean(hidden, mask), atol=1e-5)
        assert counts.tolist() == mask.sum(1).tolist() and attrs["modality"] == modality
    assert found[first + "@image"][1].tolist() == [Q] * N


def test_instructblip_queries_read_the_instruction(tmp_path, probe):
    """The same images with other texts give other query outputs (not so in BLIP-2)."""
    from repspace.testing import build_tiny_blip2

    for instruct in (True, False):
        loaded = repspace.load_model(build_tiny_blip2(tmp_path / str(instruct),
                                                      instruct=instruct))
        other = Probe(ids=probe.ids, texts=tuple(t[::-1] for t in probe.texts),
                      images=probe.images)
        a, b = (captured(loaded, p, tmp_path / f"{instruct}{i}", layers="connector")
                for i, p in enumerate((probe, other)))
        same = np.allclose(a["language_projection"][0], b["language_projection"][0])
        assert same != instruct


def test_text_probe_is_one_error_line(family, tmp_path):
    _, loaded = family
    with pytest.raises(InputError, match="needs an image in every forward pass"):
        capture(loaded, Probe.from_texts(["a red circle", "two squares"]),
                out=tmp_path / "t.h5", layers="language", progress=False, device="cpu")


# ----------------------------------------------------------------------------- tuning


def _lm_linears(name, config) -> list[tuple[int, int]]:
    """(in, out) of every linear layer of the language model (not its head)."""
    t = config.text_config
    if name == "blip2-t5":
        d, inner, f = t.d_model, t.num_heads * t.d_kv, t.d_ff
        attention = [(d, inner)] * 3 + [(inner, d)]
        ff = [(d, f), (d, f), (f, d)]
        return (attention + ff) * t.num_layers + (2 * attention + ff) * t.num_decoder_layers
    h, f = t.hidden_size, t.ffn_dim
    return ([(h, h)] * 4 + [(h, f), (f, h)]) * t.num_hidden_layers


def _blocks(name, config) -> int:
    t = config.text_config
    return t.num_layers + t.num_decoder_layers if name == "blip2-t5" else t.num_hidden_layers


def expected_params(name, method, model, r=8, reduction=16) -> int:
    config = model.config
    t = config.text_config
    h = t.d_model if name == "blip2-t5" else t.hidden_size
    layers = t.num_layers if name == "blip2-t5" else t.num_hidden_layers
    lora = sum(r * (i + o) for i, o in _lm_linears(name, config))
    b = h // reduction
    prefix = P * layers * 2 * h  # T5: one prefix, used by the decoder's self- and cross-attention
    connector = sum(p.numel() for n, p in model.named_parameters()
                    if n.split(".")[0] in ("qformer", "query_tokens", "language_projection"))
    return {"lora": lora, "prefix": prefix, "pt-peft": prefix + lora,
            "adapter": _blocks(name, config) * 2 * (2 * h * b + b + h),
            "connector": connector,
            "full": sum(p.numel() for p in model.parameters())}[method]


def _batch(base, data):
    encoded = encode_image_generation(read_jsonl(data, "generation"), base.processor, 128)
    batch = collate(encoded, range(len(encoded)), base.tokenizer.pad_token_id)
    if base.model.config.is_encoder_decoder:
        text = base.model.config.text_config
        batch = seq2seq_batch(batch, text.decoder_start_token_id, text.pad_token_id)
    return {k: v for k, v in batch.items() if k != "labels"}


def _tuned_params(result) -> dict[str, torch.Tensor]:
    model = result.model.model
    backbone = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {n.replace(".base_layer.", "."): p for n, p in backbone.named_parameters()}


LR = {"prefix": 0.5, "pt-peft": 1e-2, "connector": 3e-2}
METHODS = ["full", "lora", "adapter", "prefix", "pt-peft", "connector"]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_what_it_promises(method, family, task, tmp_path):
    name, base = family
    result = tune(base, method, data=task, out=tmp_path / f"{method}.pt", epochs=6,
                  batch_size=4, lr=LR.get(method, 1e-2), progress=False, device="cpu",
                  prefix_tokens=P, stage1_epochs=3, dropout=0.0, task="generation",
                  peft_folder=False, batching="random")
    steps = [r["loss"] for r in map(json.loads, result.log.read_text().splitlines())
             if "loss" in r]
    assert sum(steps[-2:]) < sum(steps[:2]) - 0.01, steps
    assert result.trainable_params == expected_params(name, method, base.model)
    params = dict(base.model.named_parameters())
    tuned = _tuned_params(result)
    if method == "full":  # every language block moved
        blocks = [n for n in params if ".layers." in n or ".block." in n]
        assert blocks and all(not torch.equal(tuned[n], params[n]) for n in blocks
                              if n.startswith("language_model."))
    else:
        connector = {n for n in params
                     if n.split(".")[0] in ("qformer", "query_tokens", "language_projection")}
        trained = connector if method == "connector" else set()
        for n, param in params.items():
            if n not in trained:
                assert torch.equal(tuned[n], param), f"{n} changed"
        # the query path moved (the Q-Former's text-only modules get no gradient in BLIP-2)
        for n in ("query_tokens", "language_projection.weight",
                  "qformer.encoder.layer.0.crossattention.attention.query.weight"):
            assert (n in trained) != torch.equal(tuned[n], params[n]), n
    inputs = _batch(base, task)
    again = repspace.load_model(result.checkpoint, base=base)
    with torch.inference_mode():
        expected = result.model.model.eval()(**inputs).logits
        assert torch.equal(again.model(**inputs).logits, expected)
        if method in ("prefix", "pt-peft"):  # the image still reaches the language model
            other = dict(inputs, pixel_values=-inputs["pixel_values"])
            assert not torch.allclose(again.model(**other).logits, expected)


# ----------------------------------------------------------------------------- compare


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def test_compare_per_modality_end_to_end(family, task, tmp_path):
    name, base = family
    result = tune(base, "lora", data=task, out=tmp_path / "lora.pt", epochs=2, batch_size=4,
                  lr=5e-2, progress=False, device="cpu", task="generation", peft_folder=False)
    tuned = repspace.load_model(result.checkpoint, base=base)
    probe = load_probe(IMAGE_PROBE, limit=12)
    compared = repspace.compare(base, [tuned], data=probe, layers="connector,language",
                                k=3, cache_dir=tmp_path / "cache", out=tmp_path / "out",
                                progress=False, weights=False)
    records = {(r["layer"], r["modality"]): r["cka"] for r in compared.records}
    last = ("language_model.decoder.block.1" if name == "blip2-t5"
            else "language_model.model.decoder.layers.1")
    first = ("language_model.encoder.block.1" if name == "blip2-t5"
             else "language_model.model.decoder.layers.1")
    assert {(first + "@image", "image"), (first + "@text", "text"), (first, "all"),
            ("language_projection", "image"), (last, "text" if name == "blip2-t5" else "all")
            } <= set(records)
    # LoRA leaves the connector alone: CKA 1 there; the language model moved
    assert records[("language_projection", "image")] == pytest.approx(1, abs=1e-6)
    assert records[(last, "text" if name == "blip2-t5" else "all")] < 0.9999
    with FeatureStore(compared.stores["base"]) as b, \
            FeatureStore(compared.stores[tuned_name(compared)]) as t:
        for record in compared.records:
            layer = record["layer"]
            assert record["cka"] == pytest.approx(
                linear_cka(b.pooled(layer).astype(np.float64),
                           t.pooled(layer).astype(np.float64)), abs=1e-6)
    assert (tmp_path / "out" / "cka_by_modality.png").stat().st_size > 0


def tuned_name(compared) -> str:
    return next(k for k in compared.stores if k != "base")
