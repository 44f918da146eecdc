"""``smollm2-lmm``: a LLaVA on SmolLM2's real weights with the shipped vision tower and
projector. Its build script gives the same bits twice and trains only the vision side, the
shipped artifact matches its fingerprint, the name loads offline and round-trips through a
checkpoint, its language model is SmolLM2's, and it reads the image: captions and answers on
held-out scenes beat a blank image."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import torch

import repspace
from repspace.errors import FormatError
from repspace.models import gguf, lmm
from repspace.models.fingerprint import hash_tensors
from repspace.probes import DATA_DIR, open_image

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _script(name: str):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _scenes(n: int) -> list:
    return [open_image(DATA_DIR / "images" / f"img-{i:04d}.png") for i in range(n)]


def _inputs(loaded: repspace.LoadedModel, images: list, prompt: str) -> dict:
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = loaded.processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    return loaded.processor(images=images, text=[text] * len(images), return_tensors="pt")


def test_build_is_deterministic_and_trains_the_vision_side_only(smollm2, one_thread):
    build = _script("build_lmm")
    settings = build.Settings(warmup_steps=2, warmup_batch=4, steps=2, batch=2)
    first, second = build.build(smollm2, settings), build.build(smollm2, settings)
    assert set(first.state) == set(second.state) and len(first.state) > 60
    assert all(torch.equal(first.state[k], second.state[k]) for k in first.state)
    assert hash_tensors(first.state) == hash_tensors(second.state)
    initial = lmm.trained_state(lmm.assemble_lmm(smollm2, seed=settings.seed).model)
    changed = [k for k in initial if not torch.equal(initial[k], first.state[k])]
    assert len(changed) > len(initial) // 2
    language = first.model.model.model.language_model.state_dict()
    for name, tensor in smollm2.model.state_dict().items():
        if name == "lm_head.weight":
            continue
        trained = language[name.removeprefix("model.")]
        assert torch.equal(trained[: tensor.shape[0]], tensor), name
    assert len(first.losses) == 2 and len(first.warmup_losses) == 2
    assert all(torch.isfinite(torch.tensor(first.losses + first.warmup_losses)))


def test_shipped_artifact_matches_its_settings(smollm2_lmm, tmp_path):
    settings = lmm.read_settings()
    state = lmm.read_vision_state()
    assert hash_tensors(state) == settings["fingerprint"]
    assert set(state) == set(lmm.trained_state(smollm2_lmm.model))
    assert sum(t.numel() for t in state.values()) == settings["parameters"] == 1_300_864
    assert lmm.VISION_FILE.stat().st_size < 8 * 2**20
    assert settings["steps"] == settings["settings"]["steps"]
    assert settings["losses"][-1] < settings["losses"][0] / 4
    from safetensors.torch import save_file

    state["model.multi_modal_projector.linear_2.bias"][0] += 1
    save_file(state, str(tmp_path / "v.safetensors"))
    shutil.copy(lmm.SETTINGS_FILE, tmp_path / "settings.json")
    with pytest.raises(FormatError, match="does not match the fingerprint"):
        lmm.read_vision_state(tmp_path / "v.safetensors", tmp_path / "settings.json")


def test_language_model_is_smollm2(smollm2, smollm2_lmm, one_thread):
    model = smollm2_lmm.model
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
    ids = smollm2.tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        expected = smollm2.model(input_ids=ids).logits
        logits = model(input_ids=ids).logits
    assert torch.allclose(logits[..., : expected.shape[-1]], expected, atol=1e-5, rtol=0)


def test_name_exports_and_reloads_identically(smollm2, monkeypatch, tmp_path, one_thread):
    monkeypatch.setattr(gguf, "load_gguf", lambda path: smollm2)
    out = repspace.export_checkpoint("smollm2-lmm", tmp_path / "lmm.pt")
    loaded = repspace.load_model(out)
    direct = repspace.load_model("smollm2-lmm")
    assert loaded.modality == direct.modality == "image-text"
    assert loaded.fingerprint == direct.fingerprint
    inputs = _inputs(direct, _scenes(2), "Describe the image.")
    assert (inputs["input_ids"] == direct.model.config.image_token_id).sum() == 2 * 16
    again = _inputs(loaded, _scenes(2), "Describe the image.")
    assert all(torch.equal(inputs[k], again[k]) for k in inputs)
    with torch.inference_mode():
        assert torch.equal(direct.model(**inputs).logits, loaded.model(**again).logits)


def test_reads_the_image(smollm2_lmm, one_thread):
    evaluate = _script("eval_lmm")
    captions = evaluate.caption_scores(smollm2_lmm, 16, ("image", "blank"))
    assert captions["image"] >= 0.5 and captions["blank"] <= 0.1, captions
    answers = evaluate.vqa_scores(smollm2_lmm, 16, ("image", "blank"))
    assert answers["image_lenient"] >= answers["blank_lenient"] + 0.25, answers
