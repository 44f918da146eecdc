"""Checkpoints: export, self-contained reload, fingerprints, tuned deltas and their base."""

from __future__ import annotations

import copy
import json

import peft
import pytest
import torch
from safetensors.torch import save_file

import repspace
from repspace.errors import MismatchError
from repspace.models.checkpoint import FORMAT, FORMAT_VERSION, write_checkpoint
from repspace.models.sources import base_payload
from tests.conftest import make_peft

TEXTS = ["The cat sat on the warm windowsill.",
         "Rain is expected tomorrow afternoon, so bring a coat."]


def _hidden(loaded: repspace.LoadedModel) -> torch.Tensor:
    batch = loaded.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return loaded.model(input_ids=batch["input_ids"],
                            attention_mask=batch["attention_mask"]).last_hidden_state


def test_export_is_plain_tensors_and_self_contained(base_pt, minilm_dir):
    payload = torch.load(base_pt, weights_only=True)
    assert payload["format"] == FORMAT and payload["format_version"] == FORMAT_VERSION
    assert payload["kind"] == "base" and payload["model_class"] == "BertModel"
    assert payload["config"]["model_type"] == "bert"
    assert "tokenizer.json" in payload["tokenizer_files"]
    assert len(payload["state_dict"]) > 50
    reloaded = repspace.load_model(base_pt)
    original = repspace.load_model(minilm_dir)
    assert reloaded.fingerprint == original.fingerprint == payload["fingerprint"]
    assert torch.equal(_hidden(reloaded), _hidden(original))
    assert reloaded.tokenizer(TEXTS)["input_ids"] == original.tokenizer(TEXTS)["input_ids"]


def test_fingerprint_changes_with_one_weight(base):
    payload = base_payload(base.model, base.tokenizer, "x")
    state = {k: v.clone() for k, v in payload["state_dict"].items()}
    name = next(iter(state))
    state[name].view(-1)[0] += 1e-3
    other = base_payload(base.model, base.tokenizer, "x")
    other["state_dict"] = state
    from repspace.models.fingerprint import hash_tensors

    assert hash_tensors(state) != payload["fingerprint"] == other["fingerprint"]


@pytest.mark.parametrize("name", ["lora", "prefix", "prompt"])
def test_tuned_checkpoint_holds_only_tuned_tensors_and_reloads(name, base, tuned_pts):
    payload = torch.load(tuned_pts[name], weights_only=True)
    assert payload["kind"] == "tuned" and payload["base_fingerprint"] == base.fingerprint
    tuned_numel = sum(t.numel() for t in payload["state_dict"].values())
    base_numel = sum(p.numel() for p in base.model.parameters())
    assert 0 < tuned_numel < 0.05 * base_numel
    tuned = repspace.load_model(tuned_pts[name], base=base)
    assert tuned.kind == "tuned" and tuned.base_fingerprint == base.fingerprint
    assert tuned.fingerprint != base.fingerprint
    assert tuned.virtual_tokens == (5 if name == "prompt" else 0)
    hidden = _hidden(tuned)
    reference = _hidden(base)
    assert hidden.shape[1] == reference.shape[1] + tuned.virtual_tokens
    assert not torch.allclose(hidden[:, tuned.virtual_tokens:], reference, atol=1e-4)


def test_lora_checkpoint_reproduces_the_peft_model(base, tmp_path):
    model = make_peft(base, peft.LoraConfig(r=2, target_modules=["key"]), seed=3)
    path = repspace.save_tuned_checkpoint(model, base, tmp_path / "k.pt")
    tuned = repspace.load_model(path, base=base)
    batch = base.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = model(input_ids=batch["input_ids"],
                         attention_mask=batch["attention_mask"]).last_hidden_state
    assert torch.equal(_hidden(tuned), expected)
    assert _hidden(base).shape == expected.shape  # the base itself stays untouched
    assert not any("lora" in n for n, _ in base.model.named_parameters())


def test_tuned_checkpoint_refuses_another_base(base, tuned_pts, tmp_path):
    payload = base_payload(base.model, base.tokenizer, "other")
    payload["state_dict"] = {k: v.clone() for k, v in payload["state_dict"].items()}
    payload["state_dict"]["pooler.dense.bias"] += 1.0
    from repspace.models.fingerprint import hash_tensors

    payload["fingerprint"] = hash_tensors(payload["state_dict"])
    other = repspace.load_model(write_checkpoint(payload, tmp_path / "other.pt"))
    with pytest.raises(MismatchError, match="tuned from base"):
        repspace.load_model(tuned_pts["lora"], base=other)


def test_full_finetune_weights_checkpoint(base, tmp_path):
    model = copy.deepcopy(base.model)
    with torch.no_grad():
        model.encoder.layer[2].output.dense.bias.add_(0.5)
    changed = {"encoder.layer.2.output.dense.bias": model.encoder.layer[2].output.dense.bias}
    path = repspace.save_tuned_checkpoint(model, base, tmp_path / "bitfit.pt", method="bitfit",
                                          weights=changed)
    tuned = repspace.load_model(path, base=base)
    assert tuned.method == "bitfit"
    assert torch.equal(_hidden(tuned), model.eval()(**{
        k: v for k, v in base.tokenizer(TEXTS, padding=True, return_tensors="pt").items()
        if k != "token_type_ids"}).last_hidden_state.detach())


def test_peft_adapter_folder_loads_onto_its_base(base, tmp_path):
    model = make_peft(base, peft.LoraConfig(r=4, target_modules=["query"]), seed=1)
    model.save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    tuned = repspace.load_model(tmp_path / "adapter", base=base)
    assert tuned.method == "lora" and tuned.base_fingerprint == base.fingerprint
    batch = base.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = model(input_ids=batch["input_ids"],
                         attention_mask=batch["attention_mask"]).last_hidden_state
    assert torch.allclose(_hidden(tuned), expected, atol=1e-6)


def test_safetensors_file_with_config_folder(base, minilm_dir, tmp_path):
    state = {k: v.clone().contiguous() for k, v in base.model.state_dict().items()}
    save_file(state, str(tmp_path / "weights.safetensors"))
    loaded = repspace.load_model(tmp_path / "weights.safetensors", config=minilm_dir)
    assert loaded.fingerprint == base.fingerprint
    with pytest.raises(repspace.InputError, match="--config"):
        repspace.load_model(tmp_path / "weights.safetensors")
