"""Tuning vision-language models: tiny random LLaVA and Qwen2-VL built in the tests (no
downloads) on tiny generated images.

Every method trains (the loss falls), trains exactly the parameters it promises (counts against
formulas from the configs, everything else bit-identical), reloads from its checkpoint with
identical outputs; ``include`` makes the connector / vision tower trainable; the labels cover
answer tokens only; prefix and prompt tuning keep the image-token expansion and give the real
tokens the base positions shifted by the number of virtual tokens (Qwen2-VL: 3-D rope positions).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

import repspace
from repspace.cli import main
from repspace.errors import InputError
from repspace.models.processors import image_prompt
from repspace.tune import tune
from repspace.tune.data import IGNORE, collate, encode_image_generation, read_jsonl
from repspace.tune.methods import METHODS, parse_options
from tests.tiny_vlm import COLOURS, write_colour_task

P = 3  # prefix / prompt tokens
LR = {"prefix": 0.5, "prompt": 0.5, "ia3": 0.5, "pt-peft": 1e-2}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """Four 32 x 32 images (a coloured square on grey) and 'what colour?' questions."""
    return write_colour_task(tmp_path_factory.mktemp("vlm_task"))


@pytest.fixture(scope="module", params=["llava", "qwen2vl"])
def vlm(request):
    folder = request.getfixturevalue(f"tiny_{request.param}_dir")
    return request.param, repspace.load_model(folder)


def _batch(base, data):
    encoded = encode_image_generation(read_jsonl(data, "generation"), base.processor, 128)
    return encoded, collate(encoded, range(len(encoded)), base.tokenizer.pad_token_id)


# ------------------------------------------------------------------ formulas from the configs


def _lm_linears(config) -> dict[str, tuple[int, int]]:
    """(in, out) of the linear layers of one language-model block."""
    t = config.get_text_config()
    h, i = t.hidden_size, t.intermediate_size
    kv = t.num_key_value_heads * (getattr(t, "head_dim", None) or h // t.num_attention_heads)
    return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def _connector_linears(name, config) -> list[tuple[int, int]]:
    h = config.get_text_config().hidden_size
    if name == "llava":
        return [(config.vision_config.hidden_size, h), (h, h)]
    c = config.vision_config.embed_dim * config.vision_config.spatial_merge_size ** 2
    return [(c, c), (c, h)]


def _vision_linears(name, config) -> list[tuple[int, int]]:
    v = config.vision_config
    if name == "llava":
        d, i = v.hidden_size, v.intermediate_size
        block = [(d, d)] * 4 + [(d, i), (i, d)]
        return block * v.num_hidden_layers
    e, m = v.embed_dim, int(v.embed_dim * v.mlp_ratio)
    return [(e, 3 * e), (e, e), (e, m), (m, e)] * v.depth


def _connector_params(name, config) -> int:
    params = sum(i * o + o for i, o in _connector_linears(name, config))
    return params + (2 * config.vision_config.embed_dim if name == "qwen2vl" else 0)  # ln_q


def expected_params(name, method, config, include=(), r=8, reduction=16) -> int:
    t = config.get_text_config()
    layers, h = t.num_hidden_layers, t.hidden_size
    lm = _lm_linears(config)
    kv = lm["k_proj"][1]
    lora = layers * sum(r * (i + o) for i, o in lm.values())
    extra_linears = ((_connector_linears(name, config) if "connector" in include else [])
                     + (_vision_linears(name, config) if "vision" in include else []))
    b = h // reduction
    adapter = 2 * h * b + b + h
    return {
        "lora": lora + sum(r * (i + o) for i, o in extra_linears),
        "dora": lora + layers * sum(o for _, o in lm.values()),
        # PEFT's IA3 targets: llama k, v, down; qwen2 q, v, down (down scales its input)
        "ia3": layers * ((kv if name == "llava" else h) + kv + lm["down_proj"][0]),
        "prefix": P * layers * 2 * kv,
        "prompt": P * h,
        "pt-peft": P * layers * 2 * kv + lora,
        "adapter": layers * 2 * adapter,
        "parallel-adapter": layers * adapter,
        "bitfit": layers * (h + 2 * kv) if name == "qwen2vl" else 2 * h,  # qkv / projector
        "connector": _connector_params(name, config),
    }[method]


# ------------------------------------------------------------------ helpers


def _tuned_params(result) -> dict[str, torch.Tensor]:
    """The trained model's parameters under the base's names (PEFT wrappers removed)."""
    model = result.model.model
    backbone = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {n.replace(".base_layer.", "."): p for n, p in backbone.named_parameters()}


def _steps(result) -> list[float]:
    return [r["loss"] for r in map(json.loads, result.log.read_text().splitlines()) if "loss" in r]


def _tune(base, method, data, out, **kwargs):
    kwargs = {"epochs": 6, "batch_size": 4, "lr": LR.get(method, 1e-2), "progress": False,
              "device": "cpu", "prefix_tokens": P, "prompt_tokens": P, "stage1_epochs": 3,
              "dropout": 0.0, "task": "generation", "peft_folder": False, **kwargs}
    return tune(base, method, data=data, out=out, **kwargs)


def _check_frozen(base, result, changed: set[str]) -> None:
    """Base parameters in ``changed`` moved; every other one is bit-identical."""
    tuned = _tuned_params(result)
    for name, param in base.model.named_parameters():
        if name in changed:
            assert not torch.equal(tuned[name], param), f"{name} did not train"
        else:
            assert torch.equal(tuned[name], param), f"{name} changed"


def _check_reload(base, result, data) -> None:
    _, batch = _batch(base, data)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    tuned = repspace.load_model(result.checkpoint, base=base)
    with torch.inference_mode():
        expected = result.model.model.eval()(**inputs).logits
        assert torch.equal(tuned.model(**inputs).logits, expected)


# ------------------------------------------------------------------ tests


def test_labels_cover_answer_tokens_and_batches_carry_images(vlm, task):
    name, base = vlm
    encoded, batch = _batch(base, task)
    config, processor = base.model.config, base.processor
    records = read_jsonl(task, "generation")
    per_image = (16 if name == "llava" else 4)  # (32/8)^2 patches; (56/14)^2 / 2^2 merged
    for i, record in enumerate(records):
        ids, labels = encoded.input_ids[i], encoded.labels[i]
        assert ids.count(config.image_token_id) == per_image
        answer = base.tokenizer(" " + record["answer"], add_special_tokens=False)["input_ids"]
        answer = [*answer, base.tokenizer.eos_token_id]
        assert labels == [IGNORE] * (len(ids) - len(answer)) + answer
        assert ids[-len(answer):] == answer
    # a peer: the processor on the whole batch gives the same pixels (and image grids)
    images = [Image.open(r["image"]).convert("RGB") for r in records]
    peer = processor(images=images, text=[image_prompt(processor, r["prompt"]) for r in records],
                     return_tensors="pt")
    assert torch.equal(batch["pixel_values"], peer["pixel_values"])
    if name == "llava":
        assert batch["pixel_values"].shape == (4, 3, 32, 32)
    else:
        assert batch["pixel_values"].shape == (4 * 16, 3 * 2 * 14 * 14)
        assert torch.equal(batch["image_grid_thw"], peer["image_grid_thw"])
        is_image = (batch["input_ids"] == config.image_token_id).long()
        assert torch.equal(batch["mm_token_type_ids"], is_image)
    with pytest.raises(InputError, match="max-length"):
        encode_image_generation(records, processor, per_image)


METHOD_CASES = ["lora", "dora", "adapter", "parallel-adapter", "ia3", "prefix", "prompt",
                "pt-peft", "connector", "bitfit", "full"]


@pytest.mark.parametrize("method", METHOD_CASES)
def test_every_method_trains_what_it_promises(method, vlm, task, tmp_path):
    name, base = vlm
    include = ["connector"] if method == "bitfit" and name == "llava" else []
    result = _tune(base, method, task, tmp_path / f"{method}.pt", include=include)
    steps = _steps(result)
    assert sum(steps[-2:]) < sum(steps[:2]) - 0.01, steps
    config = base.model.config
    total = sum(p.numel() for p in base.model.parameters())
    if method == "full":
        assert result.trainable_params == total
    else:
        assert result.trainable_params == expected_params(name, method, config, include)
    params = dict(base.model.named_parameters())
    connector = {n for n in params if ".multi_modal_projector." in n or ".visual.merger." in n}
    changed = {
        "full": {n for n in params if ".language_model.layers." in n},
        "connector": connector,
        "bitfit": ({n for n in connector if n.endswith("bias")} if name == "llava" else
                   {n for n in params if ".language_model." in n and n.endswith("bias")}),
    }.get(method, set())
    if method == "full":  # some parameters get no gradient (e.g. CLIP's unused pooler norm)
        tuned = _tuned_params(result)
        assert all(not torch.equal(tuned[n], params[n]) for n in changed)
    else:
        _check_frozen(base, result, changed)
    _check_reload(base, result, task)


def test_full_finetuning_learns_answers_that_only_the_image_gives(tiny_llava_dir, task, tmp_path):
    """One prompt, four answers: exact match 1 is reachable only through the image tokens."""
    base = repspace.load_model(tiny_llava_dir)
    result = _tune(base, "full", task, tmp_path / "learn.pt", eval_data=task, epochs=60)
    assert result.final_metric == 1.0


def test_bitfit_on_a_language_model_without_biases_says_so(tiny_llava_dir, task, tmp_path):
    base = repspace.load_model(tiny_llava_dir)
    with pytest.raises(InputError, match="no bias parameters in the language model"):
        _tune(base, "bitfit", task, tmp_path / "b.pt")


@pytest.mark.parametrize("method,include", [("lora", ["connector", "vision"]),
                                            ("adapter", ["connector"]),
                                            ("prefix", ["vision"])])
def test_include_makes_connector_and_vision_trainable(method, include, vlm, task, tmp_path):
    name, base = vlm
    result = _tune(base, method, task, tmp_path / f"{method}.pt", include=include, epochs=4)
    config = base.model.config
    params = dict(base.model.named_parameters())
    connector = {n for n in params if ".multi_modal_projector." in n or ".visual.merger." in n}
    vision = {n for n in params if (".vision_tower." in n or ".visual." in n)} - connector
    if method == "lora":
        assert result.trainable_params == expected_params(name, "lora", config, include)
        trained = {n for n, p in result.model.model.named_parameters() if p.requires_grad}
        for part, marks in (("connector", ("multi_modal_projector", "visual.merger")),
                            ("vision", ("vision_tower", "visual.blocks"))):
            lora_b = [n for n in trained if "lora_B" in n and any(m in n for m in marks)]
            assert lora_b, part
            weights = dict(result.model.model.named_parameters())
            assert all(weights[n].abs().sum() > 0 for n in lora_b)  # B starts at zero
        _check_frozen(base, result, set())
    else:
        full = connector if "connector" in include else vision
        in_full = sum(params[n].numel() for n in full)
        assert result.trainable_params == expected_params(name, method, config) + in_full
        moved = {n for n in full if n.endswith("weight") and "norm" not in n}
        tuned = _tuned_params(result)
        assert all(not torch.equal(tuned[n], params[n]) for n in moved)
        assert all(torch.equal(tuned[n], params[n]) for n in params if n not in full)
    _check_reload(base, result, task)


def test_pt_peft_carries_included_weights_from_stage_1(tiny_llava_dir, task, tmp_path):
    base = repspace.load_model(tiny_llava_dir)
    result = _tune(base, "pt-peft", task, tmp_path / "p.pt", include=["connector"], epochs=1,
                   stage1_epochs=3, lr=1e-12)  # stage 2 barely moves: it must start at stage 1
    stage1 = torch.load(tmp_path / "p.stage1.pt", weights_only=True)
    name = "model.multi_modal_projector.linear_1.weight"
    after_stage1 = stage1["state_dict"][f"0/{name}"]
    assert not torch.equal(after_stage1, base.model.get_parameter(name))
    assert torch.allclose(_tuned_params(result)[name], after_stage1, atol=1e-9, rtol=0)


def test_include_is_checked(vlm, task, tmp_path):
    _, base = vlm
    with pytest.raises(InputError, match="connector, vision"):
        _tune(base, "lora", task, tmp_path / "x.pt", include=["audio"])
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("".join(json.dumps({"text": "a square", "label": c, "image": f"{c}.png"})
                                + "\n" for c in COLOURS))
    with pytest.raises(InputError, match="classification data with images"):
        _tune(base, "lora", labelled, tmp_path / "x.pt", task="classification")


def _positions(model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """The position ids the language model's rotary embedding gets, and the logits."""
    seen = []
    rotary = next(m for n, m in model.named_modules() if n.endswith("language_model.rotary_emb"))

    def hook(module, args, kwargs):
        seen.append((args[1] if len(args) > 1 else kwargs["position_ids"]).clone())

    handle = rotary.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.inference_mode():
            logits = model(**inputs).logits
    finally:
        handle.remove()
    return seen[0], logits


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_virtual_tokens_shift_positions_and_keep_images(method, vlm, task):
    name, base = vlm
    _, batch = _batch(base, task)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    base_positions, base_logits = _positions(base.model, inputs)
    built = METHODS[method].build(copy.deepcopy(base.model),
                                  parse_options({"prefix_tokens": P, "prompt_tokens": P}),
                                  "generation")
    positions, logits = _positions(built.module.eval(), inputs)
    length = inputs["input_ids"].shape[1]
    real = inputs["attention_mask"].bool()
    if name == "qwen2vl":  # 3-D rope: (3, batch, length) with the image grid layout
        assert base_positions.shape[0] == 3 and len(base_positions.unique()) < length
    # Llama: (1, length) for the whole batch; Qwen2-VL: (3, batch, length)
    shifted = positions[..., -length:].expand(*base_positions.shape[:-1], -1)
    expected = (base_positions + P).expand_as(shifted)
    if name == "qwen2vl":
        shifted, expected = shifted[..., real], expected[..., real]
    assert torch.equal(shifted, expected)
    if method == "prompt":  # the virtual tokens come first, at 0 .. P-1
        assert torch.equal(positions[..., :P].flatten(0, -2)[0], torch.arange(P))
    assert not torch.allclose(logits[:, -length:], base_logits)
    if name == "qwen2vl":  # rope deltas cached by an earlier call (e.g. generate) change nothing
        inner = built.module.get_base_model().model
        inner.rope_deltas = torch.full((len(positions[0]), 1), 7)
        assert torch.equal(_positions(built.module, inputs)[0], positions)
    # the image features still reach the language model: another image changes the output
    other = dict(inputs, pixel_values=inputs["pixel_values"].flip(0))
    with torch.inference_mode():
        assert not torch.allclose(built.module(**other).logits, logits)


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_capture_of_prompt_learning_sees_the_base_tokens(method, vlm, task, tmp_path):
    """Captured tokens of a prefix/prompt-tuned VLM are the base's real tokens (no virtual
    ones), split into the same image and text positions; the features themselves moved."""
    _, base = vlm
    probe = tmp_path / "probe.jsonl"
    probe.write_text("".join(json.dumps({"id": c, "image": str(task.parent / f"{c}.png"),
                                         "text": "a square"}) + "\n" for c in COLOURS))
    result = _tune(base, method, task, tmp_path / f"{method}.pt", epochs=2)
    tuned = repspace.load_model(result.checkpoint, base=base)
    stores = [repspace.capture(m, probe, out=tmp_path / f"{i}.h5", layers="language",
                               tokens=True, progress=False, device="cpu")
              for i, m in enumerate((base, tuned))]
    with repspace.FeatureStore(stores[0]) as a, repspace.FeatureStore(stores[1]) as b:
        assert a.layers == b.layers and any(layer.endswith("@image") for layer in a.layers)
        for layer in a.layers:
            mine, theirs = b.tokens(layer), a.tokens(layer)
            assert [t.shape for t in mine] == [t.shape for t in theirs], layer
        last = [layer for layer in a.layers if "@" not in layer][-1]
        assert not all(map(np.allclose, b.tokens(last), a.tokens(last)))


def test_cli_tunes_a_vlm_with_included_connector(tiny_qwen2vl_dir, task, tmp_path, capsys):
    out = tmp_path / "cli.pt"
    code = main(["tune", str(tiny_qwen2vl_dir), "--method", "lora", "--task", "generation",
                 "--data", str(task), "--include", "connector", "--epochs", "1",
                 "--device", "cpu", "--out", str(out), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    config = repspace.load_model(tiny_qwen2vl_dir).model.config
    assert summary["trainable_params"] == expected_params("qwen2vl", "lora", config,
                                                          ["connector"])
    assert out.is_file()
