"""Generation on tiny decoders built in the test (GPT-2, Llama): the loss covers answer tokens
only, it falls, frozen weights stay put, and prefix/prompt/PT-PEFT run through the real
DynamicCache / virtual-token paths."""

from __future__ import annotations

import json

import peft
import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

import repspace
from repspace.models.checkpoint import write_checkpoint
from repspace.models.sources import base_payload
from repspace.tune import tasks, tune
from repspace.tune.data import IGNORE, collate, encode_generation

PAIRS = [("france", "paris"), ("italy", "rome"), ("spain", "madrid"), ("japan", "tokyo"),
         ("egypt", "cairo"), ("peru", "lima"), ("kenya", "nairobi"), ("chile", "santiago")]


def _tokenizer() -> transformers.PreTrainedTokenizerFast:
    words = ["[pad]", "[eos]", "[unk]", "capital", "of", "is", "?",
             *[w for pair in PAIRS for w in pair]]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[unk]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[pad]",
                                                eos_token="[eos]", unk_token="[unk]")


def _model(kind: str) -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    if kind == "gpt2":
        config = transformers.GPT2Config(vocab_size=32, n_embd=32, n_layer=2, n_head=2,
                                         n_positions=64, bos_token_id=1, eos_token_id=1,
                                         pad_token_id=0)
        return transformers.GPT2LMHeadModel(config)
    config = transformers.LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=2,
                                      num_key_value_heads=1, bos_token_id=1, eos_token_id=1,
                                      pad_token_id=0)
    return transformers.LlamaForCausalLM(config)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def decoder(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    path = write_checkpoint(base_payload(_model(request.param), _tokenizer(), request.param),
                            folder / "base.pt")
    data = folder / "qa.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"capital of {c} ?", "answer": a}) + "\n"
                            for c, a in PAIRS * 4))
    return repspace.load_model(path), data, folder


def test_loss_covers_answer_tokens_only():
    encoded = encode_generation([{"prompt": "capital of peru ?", "answer": "lima"}],
                                _tokenizer(), 32)
    tokenizer = _tokenizer()
    assert encoded.input_ids[0] == tokenizer("capital of peru ? lima")["input_ids"] + [1]
    assert encoded.labels[0] == [IGNORE] * 4 + [tokenizer.convert_tokens_to_ids("lima"), 1]


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("wrap", ["none", "lora", "prefix", "prompt"])
def test_answer_position_logits_equal_the_full_head(kind, wrap, monkeypatch):
    """The LM head at answer positions only (``logits_to_keep``) gives the loss and exact
    match of the head over every position, also when a prompt method prepends tokens."""
    model = _model(kind)
    task = peft.TaskType.CAUSAL_LM
    config = {"lora": peft.LoraConfig(task_type=task, r=4, init_lora_weights=False),
              "prefix": peft.PrefixTuningConfig(task_type=task, num_virtual_tokens=3),
              "prompt": peft.PromptTuningConfig(task_type=task, num_virtual_tokens=3)}.get(wrap)
    model = peft.get_peft_model(model, config) if config else model
    records = [{"prompt": "capital of " + " ".join([c] * (1 + i % 4)) + " ?", "answer": a}
               for i, (c, a) in enumerate(PAIRS)]
    data = encode_generation(records, _tokenizer(), 32)
    batch = collate(data, list(range(len(records))), 0)
    seen = []
    model.register_forward_pre_hook(lambda _, args, kw: seen.append(kw), with_kwargs=True)
    generator = tasks.Generator(model).eval()
    with torch.no_grad():
        loss, correct = generator.per_example(batch)
        monkeypatch.setattr(tasks, "_takes_logits_to_keep", lambda _: False)
        full_loss, full_correct = generator.per_example(batch)
    assert "logits_to_keep" in seen[0] and "logits_to_keep" not in seen[1]
    assert len(seen[0]["logits_to_keep"]) < batch["input_ids"].shape[1] - 1
    torch.testing.assert_close(loss, full_loss, rtol=0, atol=1e-6)
    assert torch.equal(correct, full_correct)
    assert loss.min() > 0


@pytest.mark.parametrize("method", ["full", "lora", "prefix", "prompt", "adapter", "pt-peft"])
def test_decoder_methods_train(method, decoder):
    base, data, folder = decoder
    result = tune(base, method, task="generation", data=data, eval_data=data,
                  out=folder / f"{method}.pt", epochs=4, batch_size=8, lr=3e-2 if method in (
                      "prefix", "prompt", "pt-peft") else 5e-3, head_lr=5e-3,
                  stage1_epochs=2, progress=False, prefix_tokens=4, prompt_tokens=4,
                  device="cpu")
    steps = [r["loss"] for r in map(json.loads, result.log.read_text().splitlines())
             if "loss" in r]
    assert sum(steps[-3:]) < sum(steps[:3])
    assert result.metric == "exact_match" and result.head_params == 0
    base_params = dict(base.model.named_parameters())
    for name, param in result.model.named_parameters():
        canonical = name.removeprefix("model.").removeprefix("base_model.model.")
        canonical = canonical.removeprefix("base_model.").replace(".base_layer.", ".")
        if not param.requires_grad and canonical in base_params:
            assert torch.equal(param, base_params[canonical]), name
    tuned = repspace.load_model(result.checkpoint, base=base)
    batch = base.tokenizer(["capital of peru ? lima"], return_tensors="pt")
    with torch.inference_mode():
        expected = result.model.model(**batch).logits
        assert torch.equal(tuned.model(**batch).logits, expected)


def test_full_finetuning_learns_the_answers(decoder):
    base, data, folder = decoder
    result = tune(base, "full", task="generation", data=data, eval_data=data,
                  out=folder / "learn.pt", epochs=20, batch_size=8, lr=3e-3, dropout=0.0,
                  progress=False, device="cpu")
    assert result.final_metric == 1.0


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_prefix_from_activations_is_the_base_reading_those_tokens(kind):
    # Li & Liang's initialisation: the prefixed model on x equals the base on (tokens, x).
    import copy

    from repspace.tune.methods.base import wrap_peft
    from repspace.tune.methods.options import parse_options
    from repspace.tune.methods.prompt import init_prefix_from_activations, prefix_config

    model = _model(kind).eval()
    reference = copy.deepcopy(model)
    config = lambda: prefix_config(parse_options({"prefix_tokens": 3}), "generation")  # noqa: E731
    built = wrap_peft(model, config())
    tokens, x = torch.tensor([5, 9, 12]), torch.tensor([[3, 4, 7, 6]])
    with torch.no_grad():
        random_start = built.peft_model(input_ids=x, attention_mask=torch.ones_like(x)).logits
        init_prefix_from_activations(built.peft_model, tokens)
        prefixed = built.peft_model(input_ids=x, attention_mask=torch.ones_like(x)).logits
        plain = reference(input_ids=torch.cat([tokens[None], x], 1)).logits[:, 3:]
    torch.testing.assert_close(prefixed, plain, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(random_start, plain, atol=1e-3)


def test_prefix_init_activations_trains_and_refuses_a_projection(decoder):
    base, data, folder = decoder
    result = tune(base, "prefix", task="generation", data=data, eval_data=data,
                  out=folder / "prefix-activations.pt", epochs=4, batch_size=8, lr=3e-2,
                  progress=False, prefix_tokens=4, prefix_init="activations", device="cpu")
    steps = [r["loss"] for r in map(json.loads, result.log.read_text().splitlines())
             if "loss" in r]
    assert sum(steps[-3:]) < sum(steps[:3])
    payload = torch.load(result.checkpoint, weights_only=True)
    assert payload["method_config"]["prefix"]["init"] == "activations"
    with pytest.raises(repspace.InputError, match="prefix-projection"):
        tune(base, "prefix", task="generation", data=data, out=folder / "no.pt", epochs=1,
             batch_size=8, progress=False, prefix_init="activations", prefix_projection=True,
             device="cpu")
