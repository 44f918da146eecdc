"""PEFT's other tuners (AdaLoRA, LoHa, LoKr, VeRA, OFT, BOFT, P-tuning) and QLoRA's requirements,
on a tiny BERT (classification) and a tiny Llama (generation) built in the test: the loss
falls, frozen weights stay bit-identical, the trainable count is the method's formula from the
model's shapes, a reload gives identical outputs, and `repspace weights` merges each tuner
into the base's weights (the merged plain model computes what the tuned one does)."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import repspace
from repspace.errors import InputError
from repspace.models.checkpoint import write_checkpoint
from repspace.models.merging import merged_parameters
from repspace.models.sources import base_payload
from repspace.tune import tune
from repspace.tune.methods.lora import qlora_requirements
from repspace.tune.tasks import classifier_from
from tests.conftest import TINY_D as D
from tests.conftest import TINY_FFN as FFN
from tests.conftest import TINY_LAYERS as LAYERS
from tests.conftest import tiny_tokenizer

TARGETS = 2  # PEFT's default targets for BERT: query and value
PER_LAYER = LAYERS * TARGETS  # adapted matrices, each D x D
#: Method options used here, and what each trains by its formula (see the method modules).
OPTIONS = {
    "adalora": {"adalora_init_r": 4, "adalora_target_r": 2},
    "loha": {"loha_r": 4},
    "lokr": {"lokr_r": 2},
    "vera": {"vera_r": 8},
    "oft": {"oft_block_size": 8},
    "boft": {"boft_block_size": 4},
    "p-tuning": {"ptuning_tokens": 4, "ptuning_hidden": 16},
}
H = 16
PROMISED = {
    "adalora": PER_LAYER * 4 * (D + D + 1),  # P (r x in), Q (out x r), singular values (r)
    "loha": PER_LAYER * 2 * 4 * (D + D),  # two rank-4 pairs
    # 32 = 4 * 8 both ways: W1 4 x 4 in full, W2 (8 x 8) as rank 2 (2 < 8 / 2)
    "lokr": PER_LAYER * (4 * 4 + 2 * (8 + 8)),
    "vera": PER_LAYER * (8 + D),  # d (r) and b (out); the random A, B are frozen buffers
    "oft": PER_LAYER * (D // 8) * (8 * 7 // 2),  # skew-symmetric 8 x 8 blocks
    "boft": PER_LAYER * ((D // 4) * 4 * 4 + D),  # one butterfly factor of 4 x 4 blocks, scale
    "p-tuning": 4 * D + (D * H + H) + (H * H + H) + (H * D + D),  # embeddings + MLP encoder
}


@pytest.fixture(scope="module")
def trained(tiny_bert):
    base, data, folder = tiny_bert
    return {method: tune(base, method, data=data, eval_data=data, out=folder / f"{method}.pt",
                         epochs=4, batch_size=8, max_length=16, lr=2e-2, head_lr=1e-2,
                         dropout=0.0, progress=False, device="cpu", **options)
            for method, options in OPTIONS.items()}


def _canonical(name: str) -> str:
    name = name.removeprefix("model.")
    for prefix in ("base_model.model.", "base_model."):
        name = name.removeprefix(prefix)
    return name.replace(".base_layer.", ".")


def _batch(base):
    texts = ["the film was great and the plot was fine", "the film was dull", "plot was weak"]
    return base.tokenizer(texts, padding=True, return_tensors="pt",
                          return_token_type_ids=False)


@pytest.mark.parametrize("method", list(OPTIONS))
def test_tuner_trains_what_its_formula_says(method, tiny_bert, trained):
    base, _, _ = tiny_bert
    result = trained[method]
    assert result.trainable_params == PROMISED[method]
    base_params = dict(base.model.named_parameters())
    frozen = {_canonical(n): p for n, p in result.model.named_parameters()
              if not p.requires_grad and _canonical(n) in base_params}
    assert set(frozen) == set(base_params)  # the base itself is frozen in every tuner
    for name, param in frozen.items():
        assert torch.equal(param.detach(), base_params[name]), name
    steps = [r["loss"] for r in map(json.loads, result.log.read_text().splitlines())
             if "loss" in r]
    assert len(steps) == 16 and sum(steps[-3:]) < sum(steps[:3])


@pytest.mark.parametrize("method", list(OPTIONS))
def test_tuner_reloads_to_identical_outputs_and_merges(method, tiny_bert, trained):
    base, _, _ = tiny_bert
    result = trained[method]
    payload = torch.load(result.checkpoint, weights_only=True)
    assert payload["method"] == method and [p["kind"] for p in payload["parts"]] == ["peft"]
    tuned = repspace.load_model(result.checkpoint, base=base)
    batch = _batch(base)
    with torch.inference_mode():
        expected = result.model(batch["input_ids"], batch["attention_mask"])
        got = classifier_from(tuned)(batch["input_ids"], batch["attention_mask"])
    if method == "adalora":  # saved at the pruned ranks: the same sums, in another order
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    else:
        assert torch.equal(got, expected)
    params, extra = merged_parameters(tuned)
    if method == "p-tuning":  # nothing to merge: the virtual tokens are reported as added
        assert set(params) == set(dict(base.model.named_parameters()))
        assert extra["prompt_embeddings"].shape == (4, D)
        return
    changed = {n for n, p in params.items()
               if not torch.equal(p, dict(base.model.named_parameters())[n])}
    assert changed and all(n.rsplit(".", 2)[-2] in ("query", "value") for n in changed)
    merged = repspace.load_model(base.source)
    merged.model.load_state_dict(params, strict=False)
    with torch.inference_mode():
        plain = merged.model(**batch).last_hidden_state
        wrapped = tuned.model(**batch).last_hidden_state
    torch.testing.assert_close(plain, wrapped, atol=1e-5, rtol=1e-4)


def test_adalora_prunes_to_its_budget(trained):
    payload = torch.load(trained["adalora"].checkpoint, weights_only=True)
    pattern = payload["parts"][0]["config"]["rank_pattern"]
    assert len(pattern) == PER_LAYER and all(len(kept) == 4 for kept in pattern.values())
    assert sum(map(sum, pattern.values())) == 2 * PER_LAYER  # target_r per matrix on average
    singular = [t for k, t in payload["state_dict"].items() if "lora_E" in k]
    assert sum(t.shape[0] for t in singular) == 2 * PER_LAYER  # saved at the pruned ranks


def test_decoder_tuners_train_and_reload(tmp_path, one_thread):
    words = ["[pad]", "[eos]", "[unk]", "capital", "of", "is", "?", "france", "paris", "italy",
             "rome", "spain", "madrid", "peru", "lima"]
    tokenizer = tiny_tokenizer(words, eos_token="[eos]")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(words), hidden_size=D,
                                      intermediate_size=FFN, num_hidden_layers=LAYERS,
                                      num_attention_heads=2, num_key_value_heads=1,
                                      bos_token_id=1, eos_token_id=1, pad_token_id=0)
    path = write_checkpoint(base_payload(transformers.LlamaForCausalLM(config), tokenizer,
                                         "llama"), tmp_path / "base.pt")
    base = repspace.load_model(path)
    data = tmp_path / "qa.jsonl"
    pairs = [("france", "paris"), ("italy", "rome"), ("spain", "madrid"), ("peru", "lima")]
    data.write_text("".join(json.dumps({"prompt": f"capital of {c} ?", "answer": a}) + "\n"
                            for c, a in pairs * 4))
    batch = tokenizer(["capital of peru ? lima"], return_tensors="pt")
    # q_proj is 32 x 32, v_proj 16 x 32 (one key-value head of 16)
    promised = {"loha": LAYERS * 2 * 4 * ((D + D) + (D + 16)),
                "vera": LAYERS * ((8 + D) + (8 + 16)),
                "p-tuning": PROMISED["p-tuning"]}
    for method, count in promised.items():
        result = tune(base, method, task="generation", data=data, out=tmp_path / f"{method}.pt",
                      epochs=4, batch_size=4, lr=2e-2, progress=False, device="cpu",
                      **OPTIONS[method])
        assert result.trainable_params == count, method
        steps = [r["loss"] for r in map(json.loads, result.log.read_text().splitlines())
                 if "loss" in r]
        assert sum(steps[-3:]) < sum(steps[:3]), method
        tuned = repspace.load_model(result.checkpoint, base=base)
        with torch.inference_mode():
            assert torch.equal(tuned.model(**batch).logits, result.model.model(**batch).logits)


def test_boft_butterflies_need_the_cuda_extension(tiny_bert):
    base, data, folder = tiny_bert
    if torch.cuda.is_available():
        pytest.skip("the extension may build where CUDA is present")
    with pytest.raises(InputError, match="boft-butterfly 2 needs PEFT's CUDA extension"):
        tune(base, "boft", data=data, out=folder / "x.pt", epochs=1, progress=False,
             device="cpu", boft_butterfly=2)


@pytest.mark.skipif(qlora_requirements() is None, reason="CUDA and bitsandbytes are present")
def test_qlora_without_cuda_is_a_one_line_error(tiny_bert):
    base, data, folder = tiny_bert
    with pytest.raises(InputError) as error:
        tune(base, "qlora", data=data, out=folder / "q.pt", epochs=1, progress=False,
             device="cpu")
    message = str(error.value)
    assert "\n" not in message and "needs CUDA and bitsandbytes" in message
    assert not (folder / "q.pt").exists()
