"""LLaVA-OneVision, Idefics3 (SmolVLM) and Gemma 3 image-text: tiny random models built in
the tests (no downloads).

Processor token counts from the configs; capture of every part against the models' own hidden
states in float64; every method trains what it promises (loss falls, frozen weights
bit-identical, trainable counts from the configs) and reloads with identical logits; prefix
tuning keeps the image; ``compare`` runs end to end per modality.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import repspace
from repspace.capture import capture, resolve_layers
from repspace.models.processors import image_prompt
from repspace.probes import IMAGE_PROBE, Probe, load_probe
from repspace.store import FeatureStore
from repspace.tune import tune
from repspace.tune.data import collate, encode_image_generation, read_jsonl
from tests.tiny_vlm import write_colour_task

N = 6
P = 3  # prefix tokens

#: Per family: builder, vision tower, connector, language model (module paths), and per 64 x 64
#: probe image the vision tokens, connector tokens and image tokens in the language model.
SPECS = {
    # anyres: 5 crops of 16 patches; 16 + 8 x 8 tiles' tokens + 8 newlines in the LM
    "llava-onevision": ("build_tiny_llava_onevision", "model.vision_tower",
                        "model.multi_modal_projector", "model.language_model", 80, 80, 88),
    # 2 x 2 tiles + the whole, 16 patches each, shuffled 2 x 2 into 4 tokens each
    "idefics3": ("build_tiny_idefics3", "model.vision_model", "model.connector",
                 "model.text_model", 80, 20, 20),
    # one 32 x 32 image of 16 patches, pooled to 4 soft tokens
    "gemma3": ("build_tiny_gemma3", "model.vision_tower", "model.multi_modal_projector",
               "model.language_model", 16, 4, 4),
}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=list(SPECS))
def family(request, tmp_path_factory):
    import repspace.testing

    build = getattr(repspace.testing, SPECS[request.param][0])
    return request.param, repspace.load_model(build(tmp_path_factory.mktemp(request.param)
                                                    / "model"))


@pytest.fixture(scope="module")
def probe() -> Probe:
    return load_probe(IMAGE_PROBE, limit=N)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return write_colour_task(tmp_path_factory.mktemp("vlm_family_task"))


def processed(loaded, probe):
    return loaded.processor(images=[[image] for image in probe.open_images(0, len(probe))],
                            text=[image_prompt(loaded.processor, t) for t in probe.texts],
                            padding=True, padding_side="right", return_tensors="pt")


def captured(loaded, probe, tmp_path, **kwargs) -> dict:
    path = capture(loaded, probe, out=tmp_path / "s.h5", batch_size=4, progress=False,
                   device="cpu", **kwargs)
    with FeatureStore(path) as store:
        return {layer: (store.pooled(layer).astype(np.float64), store.token_counts(layer),
                        store.layer_attrs(layer)) for layer in store.layers}


def test_processor_token_counts_and_presets(family, probe):
    name, loaded = family
    _, vision, connector, language, _, _, image_tokens = SPECS[name]
    batch = processed(loaded, probe)
    counts = (batch["input_ids"] == loaded.backbone.config.image_token_id).sum(1)
    assert counts.tolist() == [image_tokens] * N
    model = loaded.backbone
    assert resolve_layers(model, "vision") == [f"{vision}.encoder.layers.{i}" for i in range(2)]
    assert resolve_layers(model, "connector") == [connector]
    assert resolve_layers(model, "language") == [f"{language}.layers.{i}" for i in range(2)]


def _vision(name, model, batch) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """The vision tower's hidden states on the batch's crops (crops of all samples, L, d) and
    what the connector reads: LLaVA-OneVision the last layer's output, Idefics3 and Gemma 3
    the tower's final (normed) output."""
    pixels = batch["pixel_values"]
    tower = model.get_submodule(SPECS[name][1])
    out = tower(pixels if name == "gemma3" else pixels.flatten(0, 1), output_hidden_states=True)
    fed = out.hidden_states[-1] if name == "llava-onevision" else out.last_hidden_state
    return out.hidden_states, fed


def test_capture_matches_the_models_hidden_states(family, probe, tmp_path):
    name, loaded = family
    _, vision, connector, language, vision_tokens, connector_tokens, image_tokens = SPECS[name]
    found = captured(loaded, probe, tmp_path, layers="vision,connector,language", tokens=True)
    batch = processed(loaded, probe)
    model = loaded.model
    with torch.inference_mode():
        states, fed = _vision(name, model, batch)
        projected = model.get_submodule(connector)(fed)  # no CLS to drop (SigLIP)
        text = model(**batch, output_hidden_states=True).hidden_states
    for i in range(2):
        hidden = states[i + 1].double().numpy().reshape(N, vision_tokens, -1)
        pooled, counts, attrs = found[f"{vision}.encoder.layers.{i}"]
        np.testing.assert_allclose(pooled, hidden.mean(1), atol=1e-5)
        assert counts.tolist() == [vision_tokens] * N and attrs["modality"] == "image"
    pooled, counts, _ = found[connector]
    expected = projected.double().numpy().reshape(N, connector_tokens, -1).mean(1)
    np.testing.assert_allclose(pooled, expected, atol=1e-5)
    assert counts.tolist() == [connector_tokens] * N
    real = batch["attention_mask"].numpy().astype(bool)
    image = (batch["input_ids"] == model.config.image_token_id).numpy()
    hidden = text[1].double().numpy()
    for suffix, mask, modality in (("", real, "all"), ("@image", image & real, "image"),
                                   ("@text", real & ~image, "text")):
        pooled, counts, attrs = found[f"{language}.layers.0{suffix}"]
        np.testing.assert_allclose(pooled, np.stack([h[m].mean(0) for h, m in
                                                     zip(hidden, mask, strict=True)]),
                                   atol=1e-5)
        assert counts.tolist() == mask.sum(1).tolist() and attrs["modality"] == modality
    assert found[f"{language}.layers.0@image"][1].tolist() == [image_tokens] * N


# ----------------------------------------------------------------------------- tuning


def expected_params(name, method, model, r=8, reduction=16) -> int:
    t = model.config.get_text_config()
    h, i, layers = t.hidden_size, t.intermediate_size, t.num_hidden_layers
    head = getattr(t, "head_dim", None) or h // t.num_attention_heads
    q, kv = t.num_attention_heads * head, t.num_key_value_heads * head
    linears = [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]
    lora = layers * sum(r * (a + b) for a, b in linears)
    b = h // reduction
    prefix = P * layers * 2 * kv
    connector = SPECS[name][2]
    return {"lora": lora, "prefix": prefix, "pt-peft": prefix + lora,
            "adapter": layers * 2 * (2 * h * b + b + h),
            "connector": sum(p.numel() for p in model.get_submodule(connector).parameters()),
            "full": sum(p.numel() for p in model.parameters())}[method]


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
                  peft_folder=False)
    steps = [r["loss"] for r in map(json.loads, result.log.read_text().splitlines())
             if "loss" in r]
    assert sum(steps[-2:]) < sum(steps[:2]) - 0.01, steps
    assert result.trainable_params == expected_params(name, method, base.model)
    params = dict(base.model.named_parameters())
    tuned = _tuned_params(result)
    language = SPECS[name][3]
    if method == "full":
        blocks = [n for n in params if n.startswith(f"{language}.layers.")]
        assert blocks and all(not torch.equal(tuned[n], params[n]) for n in blocks)
    else:
        connector = SPECS[name][2] + "."
        trained = {n for n in params if n.startswith(connector)} if method == "connector" \
            else set()
        for n, param in params.items():
            assert torch.equal(tuned[n], param) != (n in trained), n
    encoded = encode_image_generation(read_jsonl(task, "generation"), base.processor, 256)
    inputs = collate(encoded, range(len(encoded)), base.tokenizer.pad_token_id)
    inputs.pop("labels")
    again = repspace.load_model(result.checkpoint, base=base)
    with torch.inference_mode():
        expected = result.model.model.eval()(**inputs).logits
        assert torch.equal(again.model(**inputs).logits, expected)
        if method in ("prefix", "pt-peft"):  # the image still reaches the language model
            other = dict(inputs, pixel_values=-inputs["pixel_values"])
            assert not torch.allclose(again.model(**other).logits, expected)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def test_compare_per_modality_end_to_end(family, task, tmp_path):
    name, base = family
    connector, language = SPECS[name][2], SPECS[name][3]
    result = tune(base, "lora", data=task, out=tmp_path / "lora.pt", epochs=2, batch_size=4,
                  lr=5e-2, progress=False, device="cpu", task="generation", peft_folder=False)
    tuned = repspace.load_model(result.checkpoint, base=base)
    compared = repspace.compare(base, [tuned], data=load_probe(IMAGE_PROBE, limit=12),
                                layers="connector,language", k=3, cache_dir=tmp_path / "cache",
                                out=tmp_path / "out", progress=False, weights=False)
    records = {(r["layer"], r["modality"]): r["cka"] for r in compared.records}
    last = f"{language}.layers.1"
    assert {(last, "all"), (last + "@image", "image"), (last + "@text", "text"),
            (connector, "image")} <= set(records)
    assert records[(connector, "image")] == pytest.approx(1, abs=1e-6)  # LoRA: LM only
    assert records[(last, "all")] < 0.9999
    other = next(k for k in compared.stores if k != "base")
    with FeatureStore(compared.stores["base"]) as b, FeatureStore(compared.stores[other]) as t:
        for record in compared.records:
            layer = record["layer"]
            assert record["cka"] == pytest.approx(
                linear_cka(b.pooled(layer).astype(np.float64),
                           t.pooled(layer).astype(np.float64)), abs=1e-6)
    assert (tmp_path / "out" / "cka_by_modality.png").stat().st_size > 0
