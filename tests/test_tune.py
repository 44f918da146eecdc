"""The trainer, judged by what it changes: the loss falls, frozen weights stay bit-identical,
the trainable parameter count is what the method promises, checkpoints reload to identical
outputs, runs are reproducible and resumable."""

from __future__ import annotations

import json

import peft
import pytest
import torch

import repspace
from repspace.errors import InputError
from repspace.tune import tune
from repspace.tune.data import collate, encode_classification, read_jsonl
from repspace.tune.tasks import classifier_from

D, LAYERS, FFN, HEAD = 384, 6, 1536, 384 * 2 + 2
ADAPTER = 2 * D * (D // 16) + D // 16 + D  # down + up weights and biases, r = 24
LORA = 2 * LAYERS * 8 * (D + D)  # query and value, r = 8
PREFIX = 10 * LAYERS * 2 * D  # 10 virtual keys and values per layer
#: What each method promises to train on MiniLM (head excluded), from the model's shapes.
PROMISED = {
    "lora": LORA,
    "dora": LORA + 2 * LAYERS * D,  # plus one magnitude per output feature
    "adapter": 2 * LAYERS * ADAPTER,  # after attention and after the feed-forward
    "parallel-adapter": LAYERS * ADAPTER,  # beside the feed-forward
    "prefix": PREFIX,
    "prompt": 10 * D,
    # IA3 scales the outputs of key and value, and the inputs of the feed-forward-like
    # projections PEFT targets for BERT (attention.output.dense and output.dense)
    "ia3": LAYERS * (D + D + D + FFN),
    "linear-probe": 0,
    "pt-peft": PREFIX + LORA,
}


def _tune(base, method, files, out, **kwargs):
    options = {"epochs": 3, "batch_size": 8, "max_length": 32, "progress": False,
               "stage1_epochs": 2, "device": "cpu", **kwargs}
    return tune(base, method, data=files[0], eval_data=files[1], out=out, **options)


def _canonical(name: str) -> str:
    name = name.removeprefix("model.")
    for prefix in ("base_model.model.", "base_model."):
        name = name.removeprefix(prefix)
    return name.replace(".base_layer.", ".")


def _eval_batch(base, files):
    records = read_jsonl(files[1], "classification")
    data = encode_classification(records, base.tokenizer, 32, ["neg", "pos"])
    return collate(data, list(range(len(data))), base.tokenizer.pad_token_id)


@pytest.fixture(scope="module")
def trained(base, task_files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tuned")
    return {m: _tune(base, m, task_files, folder / f"{m}.pt")
            for m in [*PROMISED, "full", "bitfit"]}


@pytest.mark.parametrize("method", [*PROMISED, "full", "bitfit"])
def test_method_trains_what_it_promises(method, base, trained, task_files):
    result = trained[method]
    base_params = dict(base.model.named_parameters())
    promised = {"full": sum(p.numel() for p in base_params.values()),
                "bitfit": sum(p.numel() for n, p in base_params.items() if n.endswith("bias"))}
    assert result.trainable_params == PROMISED.get(method, promised.get(method))
    assert result.head_params == HEAD
    # frozen parameters stay bit-identical; every base parameter is either frozen or trained
    seen = set()
    for name, param in result.model.named_parameters():
        canonical = _canonical(name)
        if canonical in base_params and not param.requires_grad:
            assert torch.equal(param.detach().cpu(), base_params[canonical]), name
            seen.add(canonical)
    trained_base = {_canonical(n) for n, p in result.model.named_parameters()
                    if p.requires_grad and _canonical(n) in base_params}
    assert seen | trained_base == set(base_params)
    # the loss falls
    steps = [r for r in map(json.loads, result.log.read_text().splitlines()) if "loss" in r]
    assert len(steps) >= 12
    first, last = steps[:3], steps[-3:]
    assert sum(r["loss"] for r in last) < sum(r["loss"] for r in first)
    assert result.final_metric is not None and result.final_metric >= 0.5


@pytest.mark.parametrize("method", ["lora", "prefix", "prompt", "adapter", "pt-peft", "full",
                                    "ia3", "dora", "bitfit"])
def test_checkpoint_reloads_to_identical_outputs(method, base, trained, task_files):
    result = trained[method]
    payload = torch.load(result.checkpoint, weights_only=True)
    assert payload["kind"] == "tuned" and payload["method"] == method
    stored = sum(t.numel() for t in payload["state_dict"].values())
    assert stored == result.trainable_params
    reloaded = classifier_from(repspace.load_model(result.checkpoint, base=base))
    batch = _eval_batch(base, task_files)
    with torch.inference_mode():
        expected = result.model(batch["input_ids"], batch["attention_mask"])
        got = reloaded(batch["input_ids"], batch["attention_mask"])
    assert torch.equal(got, expected)


def test_peft_methods_also_write_a_peft_folder(base, trained):
    result = trained["lora"]
    assert result.peft_dir is not None and (result.peft_dir / "adapter_config.json").is_file()
    loaded = peft.PeftModel.from_pretrained(repspace.load_model(base.source).model,
                                            str(result.peft_dir))
    expected = dict(result.model.model.named_parameters())
    for name, param in loaded.named_parameters():
        if "lora_" in name:
            assert torch.equal(param, expected[name])


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_prefix_and_prompt_reach_attention_with_a_correct_mask(method, base, trained):
    tuned = repspace.load_model(trained[method].checkpoint, base=base)
    texts = ["a short one", "a noticeably longer sentence with many more words in it"]
    batch = base.tokenizer(texts, padding=True, return_tensors="pt")
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.inference_mode():
        padded = tuned.model(**inputs).last_hidden_state[:, tuned.virtual_tokens:]
        alone = tuned.model(**base.tokenizer(texts[:1], return_tensors="pt",
                                             return_token_type_ids=False)).last_hidden_state
        plain = base.model(**inputs).last_hidden_state
    length = alone.shape[1] - tuned.virtual_tokens
    # the padded batch gives the short text exactly its unpadded features: the virtual tokens
    # are attended to, padding is not
    torch.testing.assert_close(padded[0, :length], alone[0, tuned.virtual_tokens:],
                               atol=1e-5, rtol=1e-5)
    assert (padded - plain).abs().max() > 1e-2


def test_pt_peft_stage2_starts_from_the_stage1_prefix(base, task_files, tmp_path):
    _tune(base, "pt-peft", task_files, tmp_path / "still.pt", lr=1e-12, head_lr=1e-12)
    stage1 = torch.load(tmp_path / "still.stage1.pt", weights_only=True)
    final = torch.load(tmp_path / "still.pt", weights_only=True)
    assert [p["kind"] for p in final["parts"]] == ["peft_injected", "peft"]
    prefix1 = stage1["state_dict"]["0/prompt_embeddings"]
    prefix2 = final["state_dict"]["1/prompt_embeddings"]
    torch.testing.assert_close(prefix2, prefix1, atol=1e-6, rtol=0)
    assert prefix1.abs().sum() > 0
    moving = torch.load(_tune(base, "pt-peft", task_files, tmp_path / "moving.pt").checkpoint,
                        weights_only=True)
    assert not torch.allclose(moving["state_dict"]["1/prompt_embeddings"],
                              torch.load(tmp_path / "moving.stage1.pt", weights_only=True)[
                                  "state_dict"]["0/prompt_embeddings"], atol=1e-4)


def test_snapshots_are_the_points_of_the_trajectory(base, task_files, tmp_path):
    """48 examples at batch 8: 6 steps per epoch; evaluations every 4 steps and after each
    epoch, counted across the two stages of PT-PEFT; the last snapshot is the final model."""
    run = _tune(base, "pt-peft", task_files, tmp_path / "pt.pt", eval_every=4, snapshots=True)
    steps = [h["step"] for h in run.history]
    assert steps == [4, 6, 10, 12, 16, 18, 22, 24, 28, 30]
    assert all("accuracy" in h for h in run.history)
    for step in steps:
        snap = torch.load(tmp_path / f"pt.step{step}.pt", weights_only=True)
        assert snap["method"] == ("prefix" if step <= 12 else "pt-peft")
        assert snap["training"]["step"] == step
    final = torch.load(run.checkpoint, weights_only=True)
    last = torch.load(tmp_path / "pt.step30.pt", weights_only=True)
    assert final["state_dict"].keys() == last["state_dict"].keys()
    for key, value in final["state_dict"].items():
        assert torch.equal(value, last["state_dict"][key]), key
    middle = torch.load(tmp_path / "pt.step22.pt", weights_only=True)
    assert not torch.equal(middle["state_dict"]["1/prompt_embeddings"],
                           final["state_dict"]["1/prompt_embeddings"])
    accuracy = repspace.load_model(tmp_path / "pt.step16.pt", base=base).info["training"]
    assert accuracy["history"][-1]["step"] == 16


def test_same_seed_same_bits_and_resume_after_a_kill(base, task_files, tmp_path, monkeypatch):
    kwargs = {"epochs": 2, "save_every": 2}
    first = _tune(base, "lora", task_files, tmp_path / "a.pt", **kwargs)
    second = _tune(base, "lora", task_files, tmp_path / "b.pt", **kwargs)
    other = _tune(base, "lora", task_files, tmp_path / "c.pt", seed=1, **kwargs)
    state = {k: torch.load(p.checkpoint, weights_only=True)["state_dict"]
             for k, p in (("a", first), ("b", second), ("c", other))}
    assert all(torch.equal(state["a"][k], state["b"][k]) for k in state["a"])
    assert not all(torch.equal(state["a"][k], state["c"][k]) for k in state["a"])

    from repspace.tune import trainer

    real_log = trainer._log

    def killed(setup, record):
        if record.get("step") == 4 and record.get("epoch") == 1:
            raise KeyboardInterrupt
        real_log(setup, record)

    monkeypatch.setattr(trainer, "_log", killed)
    with pytest.raises(KeyboardInterrupt):
        _tune(base, "lora", task_files, tmp_path / "d.pt", **kwargs)
    assert (tmp_path / "d.state.pt").is_file() and not (tmp_path / "d.pt").exists()
    monkeypatch.setattr(trainer, "_log", real_log)
    resumed = _tune(base, "lora", task_files, tmp_path / "d.pt", resume=True, **kwargs)
    got = torch.load(resumed.checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(got[k], state["a"][k]) for k in got)
    assert not (tmp_path / "d.state.pt").exists()


def test_bad_method_and_options(base, task_files, tmp_path):
    with pytest.raises(InputError, match="unknown method"):
        _tune(base, "lorax", task_files, tmp_path / "x.pt")
    with pytest.raises(InputError, match="projector"):
        _tune(base, "connector", task_files, tmp_path / "x.pt")
    with pytest.raises(InputError, match="unknown method option"):
        _tune(base, "lora", task_files, tmp_path / "x.pt", lora_rank=4)
    assert not (tmp_path / "x.pt").exists()
