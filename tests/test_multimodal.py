"""Vision-language models: image+text probes, processors in checkpoints, capture per part and
per modality (checked against the models' own hidden states), and per-modality comparisons."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import peft
import pytest
import torch
import transformers

import repspace
from repspace.capture import capture, resolve_layers
from repspace.cli import main
from repspace.errors import FormatError, InputError
from repspace.models.processors import image_prompt, load_processor
from repspace.probes import IMAGE_PROBE, Probe, load_probe, open_image
from repspace.store import FeatureStore

N = 8


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def image_probe() -> Probe:
    return load_probe(IMAGE_PROBE, limit=N)


@pytest.fixture(scope="module")
def llava(tiny_llava_dir: Path) -> repspace.LoadedModel:
    return repspace.load_model(tiny_llava_dir)


@pytest.fixture(scope="module")
def qwen(tiny_qwen2vl_dir: Path) -> repspace.LoadedModel:
    return repspace.load_model(tiny_qwen2vl_dir)


def processed(loaded: repspace.LoadedModel, probe: Probe) -> dict[str, torch.Tensor]:
    """The processor's batch for the whole probe, built here without repspace's capture code."""
    return loaded.processor(images=probe.open_images(0, len(probe)),
                            text=[image_prompt(loaded.processor, t) for t in probe.texts],
                            padding=True, padding_side="right", return_tensors="pt")


def captured(loaded: repspace.LoadedModel, probe: Probe, tmp_path: Path, **kwargs) -> dict:
    path = capture(loaded, probe, out=tmp_path / "s.h5", batch_size=3, progress=False,
                   device="cpu", **kwargs)
    with FeatureStore(path) as store:
        return {layer: (store.pooled(layer).astype(np.float64),
                        store.token_counts(layer) if store.has_tokens else None,
                        store.layer_attrs(layer)) for layer in store.layers}


# ----------------------------------------------------------------------------- tiny models


def test_processors_insert_the_image_tokens_the_configs_imply(llava, qwen, image_probe):
    """LLaVA: (32 / 8)**2 = 16 patch tokens per image (the CLS is dropped); Qwen2-VL: 56 / 14 = 4
    patches a side, merged 2 x 2, so 4 tokens per image."""
    for loaded, expected in ((llava, 16), (qwen, 4)):
        batch = processed(loaded, image_probe)
        counts = (batch["input_ids"] == loaded.backbone.config.image_token_id).sum(1)
        assert counts.tolist() == [expected] * N
        assert loaded.modality == "image-text"
        assert type(loaded.model).__name__.endswith("ForConditionalGeneration")


def test_presets_name_the_parts(llava, qwen):
    assert resolve_layers(llava.backbone, "vision") == [
        f"model.vision_tower.encoder.layers.{i}" for i in range(2)]
    assert resolve_layers(llava.backbone, "connector") == ["model.multi_modal_projector"]
    assert resolve_layers(qwen.backbone, "vision") == [f"model.visual.blocks.{i}" for i in range(2)]
    assert resolve_layers(qwen.backbone, "connector") == ["model.visual.merger"]
    for loaded in (llava, qwen):
        assert resolve_layers(loaded.backbone, "language") == [
            f"model.language_model.layers.{i}" for i in range(2)]


def test_vision_presets_need_a_vision_language_model():
    text_only = transformers.GPT2Model(transformers.GPT2Config(n_layer=2, n_embd=8, n_head=2))
    with pytest.raises(InputError, match="needs a vision-language model"):
        resolve_layers(text_only, "vision")


# ----------------------------------------------------------------------------- capture


def test_llava_capture_matches_the_models_hidden_states(llava, image_probe, tmp_path):
    """Every part and modality against a direct float64 computation from the HF outputs."""
    layers = "vision,connector,language"
    found = captured(llava, image_probe, tmp_path, layers=layers, tokens=True)
    batch = processed(llava, image_probe)
    inner = llava.model.model
    with torch.inference_mode():
        vision = inner.vision_tower(batch["pixel_values"], output_hidden_states=True)
        projected = inner.multi_modal_projector(vision.hidden_states[-1][:, 1:])
        text = llava.model(**batch, output_hidden_states=True).hidden_states
    image_mask = (batch["input_ids"] == llava.backbone.config.image_token_id).numpy()
    real = batch["attention_mask"].numpy().astype(bool)
    for i in range(2):
        hidden = vision.hidden_states[i + 1].double().numpy()  # (N, 17, 32): CLS + 16 patches
        pooled, counts, attrs = found[f"model.vision_tower.encoder.layers.{i}"]
        np.testing.assert_allclose(pooled, hidden[:, 1:].mean(1), atol=1e-5)
        assert counts.tolist() == [16] * N
        assert (attrs["modality"], attrs["token_selection"]) == ("image", "patch tokens")
    pooled, counts, attrs = found["model.multi_modal_projector"]
    np.testing.assert_allclose(pooled, projected.double().numpy().mean(1), atol=1e-5)
    assert counts.tolist() == [16] * N and attrs["modality"] == "image"
    hidden = text[1].double().numpy()  # output of language layer 0
    for suffix, mask, modality in (("", real, "all"), ("@image", image_mask & real, "image"),
                                   ("@text", real & ~image_mask, "text")):
        pooled, counts, attrs = found[f"model.language_model.layers.0{suffix}"]
        expected = np.stack([h[m].mean(0) for h, m in zip(hidden, mask, strict=True)])
        np.testing.assert_allclose(pooled, expected, atol=1e-5)
        assert counts.tolist() == mask.sum(1).tolist()
        assert attrs["modality"] == modality
    assert found["model.language_model.layers.0@image"][1].tolist() == [16] * N


def test_qwen2vl_capture_splits_packed_patches_per_image(qwen, image_probe, tmp_path):
    found = captured(qwen, image_probe, tmp_path, layers="vision,connector,language",
                     tokens=True)
    batch = processed(qwen, image_probe)
    inner = qwen.model.model
    with torch.inference_mode():
        vision = inner.visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"])
        text = qwen.model(**batch, output_hidden_states=True).hidden_states
    last = vision.last_hidden_state.double().numpy().reshape(N, 16, -1)  # 16 patches / image
    merged = vision.pooler_output.double().numpy().reshape(N, 4, -1)     # 4 tokens / image
    pooled, counts, _ = found["model.visual.blocks.1"]
    np.testing.assert_allclose(pooled, last.mean(1), atol=1e-5)
    assert counts.tolist() == [16] * N
    pooled, counts, _ = found["model.visual.merger"]
    np.testing.assert_allclose(pooled, merged.mean(1), atol=1e-5)
    assert counts.tolist() == [4] * N
    image_mask = (batch["input_ids"] == qwen.backbone.config.image_token_id).numpy()
    hidden = text[1].double().numpy()
    pooled, counts, _ = found["model.language_model.layers.0@image"]
    np.testing.assert_allclose(pooled, np.stack([h[m].mean(0) for h, m in
                                                 zip(hidden, image_mask, strict=True)]),
                               atol=1e-5)
    assert counts.tolist() == image_mask.sum(1).tolist() == [4] * N


def test_llava_next_gives_every_sample_the_tokens_of_all_its_crops(image_probe, tmp_path):
    """LLaVA-NeXT cuts a 64 x 64 image into 5 crops of 32 x 32 (the resized whole and 2 x 2
    tiles); each crop has 16 patch tokens after its CLS."""
    from repspace.testing import build_tiny_llava_next

    loaded = repspace.load_model(build_tiny_llava_next(tmp_path / "next"))
    found = captured(loaded, image_probe, tmp_path, layers="vision,connector,language",
                     tokens=True)
    batch = processed(loaded, image_probe)
    crops = batch["pixel_values"].shape[1]
    assert crops == 5
    with torch.inference_mode():
        hidden = loaded.model.model.vision_tower(batch["pixel_values"].flatten(0, 1),
                                                 output_hidden_states=True).hidden_states
    patches = hidden[1][:, 1:].double().numpy().reshape(N, crops * 16, -1)
    pooled, counts, _ = found["model.vision_tower.encoder.layers.0"]
    np.testing.assert_allclose(pooled, patches.mean(1), atol=1e-5)
    assert counts.tolist() == [crops * 16] * N
    assert found["model.multi_modal_projector"][1].tolist() == [crops * 16] * N
    image_tokens = (batch["input_ids"] == loaded.backbone.config.image_token_id).sum(1)
    assert found["model.language_model.layers.0@image"][1].tolist() == image_tokens.tolist()


def test_qwen25vl_window_order_stays_within_each_image(image_probe, tmp_path):
    """Qwen2.5-VL's vision blocks run an image's patches in window order and its merger output
    is put back in patch order only after the hooked module: per-image token sets, and so their
    means, must still match the model's own (reordered) merger output."""
    from repspace.testing import build_tiny_qwen2vl

    loaded = repspace.load_model(build_tiny_qwen2vl(tmp_path / "q25", image_size=112,
                                                    version="2.5"))
    assert type(loaded.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    found = captured(loaded, image_probe, tmp_path, layers="vision,connector,language",
                     tokens=True)
    batch = processed(loaded, image_probe)
    with torch.inference_mode():
        merged = loaded.model.model.visual(batch["pixel_values"],
                                           grid_thw=batch["image_grid_thw"]).pooler_output
    pooled, counts, _ = found["model.visual.merger"]
    np.testing.assert_allclose(pooled, merged.double().numpy().reshape(N, 16, -1).mean(1),
                               atol=1e-5)
    assert counts.tolist() == [16] * N
    assert found["model.visual.blocks.0"][1].tolist() == [64] * N
    image_tokens = (batch["input_ids"] == loaded.backbone.config.image_token_id).sum(1)
    assert found["model.language_model.layers.1@image"][1].tolist() == image_tokens.tolist()


def test_vision_cls_token(llava, qwen, image_probe, tmp_path):
    """CLIP has a CLS token at position 0; Qwen2-VL's packed tower has none."""
    found = captured(llava, image_probe, tmp_path, layers="vision", vision_tokens="cls",
                     tokens=True)
    batch = processed(llava, image_probe)
    with torch.inference_mode():
        hidden = llava.model.model.vision_tower(batch["pixel_values"],
                                                output_hidden_states=True).hidden_states
    pooled, counts, attrs = found["model.vision_tower.encoder.layers.0"]
    np.testing.assert_allclose(pooled, hidden[1][:, 0].double().numpy(), atol=1e-6)
    assert counts.tolist() == [1] * N and attrs["token_selection"] == "cls token"
    with pytest.raises(InputError, match="no CLS token"):
        captured(qwen, image_probe, tmp_path / "q", layers="vision", vision_tokens="cls")


def test_one_modality_and_max_length(llava, qwen, image_probe, tmp_path):
    """``modality="text"`` keeps one layer of text tokens; ``max_length`` cuts the caption only:
    LLaVA's text tokens are the newline after ``<image>`` plus 5, Qwen's the two vision
    markers plus 5 (one byte per token)."""
    for loaded, extra in ((llava, 1), (qwen, 2)):
        found = captured(loaded, image_probe, tmp_path / loaded.source[-6:], layers="language",
                         modality="text", tokens=True, max_length=5)
        assert list(found) == [f"model.language_model.layers.{i}" for i in range(2)]
        assert found["model.language_model.layers.0"][1].tolist() == [5 + extra] * N
        assert found["model.language_model.layers.0"][2]["modality"] == "text"


def test_text_probe_on_a_vision_language_model(llava, tmp_path):
    probe = Probe.from_texts(["a red circle", "two blue squares", "the digit 7 in green"])
    found = captured(llava, probe, tmp_path, layers="language")
    assert found["model.language_model.layers.0"][2]["modality"] == "text"
    with pytest.raises(InputError, match="did not run"):
        captured(llava, probe, tmp_path / "v", layers="vision")


def test_skip_first_is_for_text_probes(llava, image_probe, tmp_path):
    with pytest.raises(InputError, match="skip_first applies to text probes"):
        captured(llava, image_probe, tmp_path, layers="language", skip_first=True)
    # refused before any model loads: a missing checkpoint is never reached
    missing = str(tmp_path / "missing.pt")
    with pytest.raises(InputError, match="skip_first applies to text probes"):
        capture(missing, image_probe, out=tmp_path / "m.h5", skip_first=True)
    with pytest.raises(InputError, match="skip_first applies to text probes"):
        repspace.compare(missing, [missing], data=image_probe, skip_first=True)


def test_image_probe_needs_a_vision_language_model(base, image_probe, tmp_path):
    with pytest.raises(InputError, match="no image processor"):
        captured(base, image_probe, tmp_path, layers="blocks")


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("which", ["llava", "qwen"])
def test_checkpoint_round_trip_carries_the_processor(which, request, image_probe, tmp_path):
    folder = request.getfixturevalue(f"tiny_{'llava' if which == 'llava' else 'qwen2vl'}_dir")
    loaded = request.getfixturevalue(which)
    path = repspace.export_checkpoint(folder, tmp_path / "base.pt")
    payload = torch.load(path, weights_only=True)
    files = payload["processor_files"]
    assert {"processor_config.json", "chat_template.jinja", "tokenizer.json"} <= set(files)
    assert json.loads(files["processor_config.json"])["image_processor"]
    again = repspace.load_model(path)
    assert again.fingerprint == loaded.fingerprint
    assert type(again.processor).__name__ == type(loaded.processor).__name__
    assert again.processor.chat_template == loaded.processor.chat_template
    first, second = processed(loaded, image_probe), processed(again, image_probe)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    with torch.inference_mode():
        assert torch.equal(loaded.model(**first).logits, again.model(**second).logits)


def lora_tuned(loaded: repspace.LoadedModel, folder: Path) -> Path:
    torch.manual_seed(0)
    model = peft.get_peft_model(copy.deepcopy(loaded.model),
                                peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)
    return repspace.save_tuned_checkpoint(model.eval(), loaded, folder / "lora.pt")


# ----------------------------------------------------------------------------- compare


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(0), y - y.mean(0)
    cross = np.linalg.norm(y.T @ x) ** 2
    return cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def test_compare_per_modality_end_to_end(llava, tmp_path):
    probe = load_probe(IMAGE_PROBE, limit=16)
    tuned = repspace.load_model(lora_tuned(llava, tmp_path), base=llava)
    assert tuned.processor is llava.processor
    result = repspace.compare(llava, [tuned, llava], data=probe, layers="vision,connector,language",
                              k=3, cache_dir=tmp_path / "cache", out=tmp_path / "out",
                              progress=False, weights=False)
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    modalities = {(r["layer"], r["modality"]) for r in data["records"] if r["model"] == "lora"}
    assert ("model.language_model.layers.1@image", "image") in modalities
    assert ("model.language_model.layers.1@text", "text") in modalities
    assert ("model.language_model.layers.1", "all") in modalities
    assert ("model.visual.merger", "image") not in modalities
    assert ("model.multi_modal_projector", "image") in modalities
    assert result.modalities == ["image", "all", "text"]
    assert "modality" in (tmp_path / "out" / "metrics.csv").read_text().splitlines()[0]
    assert (tmp_path / "out" / "cka_by_modality.png").stat().st_size > 0
    # The base against itself: CKA 1 in every modality (invariance).
    same = [r for r in result.records if r["model"] == "model"]
    assert len(same) == 9 and all(abs(r["cka"] - 1) < 1e-6 for r in same)
    # Every CKA against a direct float64 computation on the stored features.
    with FeatureStore(result.stores["base"]) as b, FeatureStore(result.stores["lora"]) as t:
        for record in (r for r in result.records if r["model"] == "lora"):
            layer = record["layer"]
            expected = linear_cka(b.pooled(layer).astype(np.float64),
                                  t.pooled(layer).astype(np.float64))
            assert record["cka"] == pytest.approx(expected, abs=1e-6)
    # LoRA on q/v of both towers changes the features, and the text-only view differs from the
    # image-only view of the same layer.
    lora = {r["layer"]: r["cka"] for r in result.records if r["model"] == "lora"}
    assert lora["model.language_model.layers.1"] < 0.999
    assert lora["model.language_model.layers.1@image"] != lora["model.language_model.layers.1@text"]
    image_part = result.for_modality("image")
    assert {r["modality"] for r in image_part.records} == {"image"}
    assert len(image_part.cka_matrices["lora"]) == len(image_part.layers) == 5
    assert "modality" in result.table().splitlines()[0]


# ----------------------------------------------------------------------------- probes


def test_image_probe_formats(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    shipped = load_probe(IMAGE_PROBE, limit=3)
    for path in shipped.images:
        shutil.copy(path, folder / path.name)
    lines = [f"{p.name}\t{t}" for p, t in zip(shipped.images, shipped.texts, strict=True)]
    (folder / "captions.tsv").write_text("\n".join(lines) + "\n")
    from_tsv = load_probe(folder)
    assert from_tsv.ids == shipped.ids and from_tsv.texts == shipped.texts
    # The fingerprint covers the image bytes, not where the files are.
    assert from_tsv.fingerprint == shipped.fingerprint
    assert from_tsv.modality == "image-text"
    (folder / "captions.tsv").unlink()
    (folder / "captions.jsonl").write_text("".join(
        json.dumps({"id": f"s{i}", "image": p.name, "text": t}) + "\n"
        for i, (p, t) in enumerate(zip(shipped.images, shipped.texts, strict=True))))
    from_jsonl = load_probe(folder)
    assert from_jsonl.ids == ("s0", "s1", "s2") and from_jsonl.images[0] == folder / "img-0000.png"
    np.testing.assert_array_equal(np.asarray(from_jsonl.open_images(0, 1)[0]),
                                  np.asarray(open_image(shipped.images[0])))
    before = from_jsonl.fingerprint
    (folder / "img-0001.png").write_bytes(shipped.images[2].read_bytes())
    assert load_probe(folder).fingerprint != before
    assert load_probe(folder, limit=2).images == from_jsonl.images[:2]


def test_image_probe_errors(tmp_path):
    (tmp_path / "a.png").write_bytes(IMAGE_PROBE.parent.joinpath("images/img-0000.png")
                                     .read_bytes())
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"image": "a.png", "text": "x"}\n{"text": "y"}\n')
    with pytest.raises(FormatError, match=r"mixed.jsonl:2: either every line"):
        load_probe(mixed)
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"image": "a.png", "text": "x"}\n{"image": "b.png", "text": "y"}\n')
    with pytest.raises(FormatError, match=r"missing.jsonl:2: image file not found"):
        load_probe(missing)
    with pytest.raises(FormatError, match="captions"):
        load_probe(tmp_path)


def test_corrupt_image_is_one_cli_error_line(tiny_llava_dir, tmp_path, capsys):
    shutil.copy(IMAGE_PROBE.parent / "images/img-0000.png", tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    data = tmp_path / "probe.jsonl"
    data.write_text("".join(json.dumps({"id": f"s{i}", "image": name, "text": "a shape"}) + "\n"
                            for i, name in enumerate(["good.png"] * 3 + ["bad.png"])))
    capsys.readouterr()
    code = main(["capture", str(tiny_llava_dir), "--data", str(data), "--layers", "language",
                 "--out", str(tmp_path / "s.h5"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if not line.startswith("capture ")]  # progress
    assert [line for line in lines if line.strip()] == [
        f"repspace: error: cannot decode image {tmp_path / 'bad.png'}: cannot identify image file"]
    assert "Traceback" not in err
    assert not (tmp_path / "s.h5").exists()


def test_loader_without_torchvision_keeps_the_class_name(tiny_qwen2vl_dir):
    processor = load_processor(tiny_qwen2vl_dir)
    assert type(processor).__name__ == "Qwen2VLProcessor"
    assert isinstance(processor, transformers.Qwen2VLProcessor)


def test_modality_options_are_part_of_the_cache_key(llava, image_probe, tmp_path):
    from repspace.analysis.cache import store_path
    from repspace.capture.run import capture_settings

    keys = {store_path(tmp_path, llava, image_probe, capture_settings(
        ["model.language_model.layers.0"], "mean", False, 128,
        {"modality": modality, "vision_tokens": "patches"})) for modality in ("split", "image")}
    assert len(keys) == 2


def test_tick_labels_name_the_part_and_modality():
    from repspace.plots.style import short_layer

    labels = [short_layer(name) for name in (
        "model.vision_tower.encoder.layers.1", "model.visual.blocks.0", "model.visual.merger",
        "model.multi_modal_projector", "model.language_model.layers.3@image",
        "model.language_model.layers.3@text", "model.language_model.layers.3",
        "encoder.layer.2")]
    assert labels == ["V1", "V0", "proj", "proj", "L3 img", "L3 txt", "L3", "2"]
