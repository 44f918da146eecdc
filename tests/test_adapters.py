"""Bottleneck adapters (serial Houlsby, parallel He et al.) injected into real and tiny models."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import transformers
from torch import nn

import repspace
from repspace.errors import FormatError, InputError
from repspace.models.adapters import (
    Bottleneck,
    BottleneckConfig,
    adapter_parameters,
    bottleneck_state_dict,
    inject_bottleneck,
    load_bottleneck_state,
)

SENTENCES = ["The cat sat on the mat.", "A quick brown fox jumps over the lazy dog today.",
             "Tuning moves representations."]


def _per_adapter(d_in: int, d_out: int, reduction: int) -> int:
    r = max(1, d_out // reduction)
    return d_in * r + r + r * d_out + d_out


def _tiny(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "gpt2":
        config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64,
                                         n_positions=64, bos_token_id=1, eos_token_id=1)
    else:
        config = transformers.LlamaConfig(hidden_size=32, intermediate_size=48,
                                          num_hidden_layers=2, num_attention_heads=2,
                                          num_key_value_heads=2, vocab_size=64,
                                          max_position_embeddings=64, bos_token_id=1,
                                          eos_token_id=1, pad_token_id=0)
    return transformers.AutoModel.from_config(config).eval()


@pytest.fixture(scope="module")
def bert_inputs(base: repspace.LoadedModel) -> dict[str, torch.Tensor]:
    return dict(base.tokenizer(SENTENCES, padding=True, return_tensors="pt"))


def _inputs_for(kind: str, bert_inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if kind == "bert":
        return bert_inputs
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 64, (2, 7), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _model_for(kind: str, base: repspace.LoadedModel) -> nn.Module:
    return copy.deepcopy(base.model).eval() if kind == "bert" else _tiny(kind)


def _hidden(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        return model(**inputs).last_hidden_state


def _all_hidden(model: nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    with torch.inference_mode():
        return model(**inputs, output_hidden_states=True).hidden_states


def _perturb(model: nn.Module, seed: int = 0, std: float = 0.2) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in adapter_parameters(model):
            param.add_(torch.randn_like(param) * std)


EXPECTED_PATHS = {
    ("bert", "serial"): [f"encoder.layer.{i}.{t}" for i in range(6)
                         for t in ("attention.output.dense", "output.dense")],
    ("bert", "parallel"): [f"encoder.layer.{i}.output.dense" for i in range(6)],
    ("gpt2", "serial"): [f"h.{i}.{t}" for i in range(2) for t in ("attn.c_proj", "mlp.c_proj")],
    ("gpt2", "parallel"): ["h.0.mlp", "h.1.mlp"],
    ("llama", "serial"): [f"layers.{i}.{t}" for i in range(2)
                          for t in ("self_attn.o_proj", "mlp.down_proj")],
    ("llama", "parallel"): ["layers.0.mlp", "layers.1.mlp"],
}


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("placement", ["serial", "parallel"])
def test_injected_adapters_start_as_identity(kind, placement, base, bert_inputs):
    model = _model_for(kind, base)
    inputs = _inputs_for(kind, bert_inputs)
    before = _hidden(model, inputs)
    paths = inject_bottleneck(model, BottleneckConfig(placement=placement, scaling=2.0))
    assert paths == EXPECTED_PATHS[kind, placement]
    assert torch.equal(_hidden(model, inputs), before)
    # up starts at zero, down does not
    for _, adapter in [(n, m) for n, m in model.named_modules() if isinstance(m, Bottleneck)]:
        assert not adapter.up.weight.any() and not adapter.up.bias.any()
        assert adapter.down.weight.abs().sum() > 0
    # once the adapters are non-zero, the output moves
    _perturb(model)
    assert not torch.allclose(_hidden(model, inputs), before, atol=1e-4)


def test_bert_ffn_target_is_only_the_block_output(base):
    model = copy.deepcopy(base.model)
    paths = inject_bottleneck(model, BottleneckConfig(targets=["output.dense"]))
    assert paths == [f"encoder.layer.{i}.output.dense" for i in range(6)]
    assert not any(isinstance(m, Bottleneck) for n, m in model.named_modules()
                   if ".attention." in n)


@pytest.mark.parametrize(("kind", "placement", "d", "per_block"), [
    ("bert", "serial", 384, 2), ("bert", "parallel", 384, 1),
    ("gpt2", "serial", 32, 2), ("gpt2", "parallel", 32, 1),
    ("llama", "serial", 32, 2), ("llama", "parallel", 32, 1),
])
def test_parameter_count_and_base_keys(kind, placement, d, per_block, base):
    model = _model_for(kind, base)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    blocks = 6 if kind == "bert" else 2
    inject_bottleneck(model, BottleneckConfig(reduction=16, placement=placement))
    expected = _per_adapter(d, d, 16) * per_block * blocks
    assert sum(p.numel() for p in adapter_parameters(model)) == expected
    if kind == "bert":
        # MiniLM: d = 384, r = 24, 2*384*24 + 24 + 384 = 18840 per adapter
        assert expected == {"serial": 226_080, "parallel": 113_040}[placement]
    state = model.state_dict()
    added = set(state) - set(original)
    assert set(original) <= set(state)
    assert added == set(bottleneck_state_dict(model))
    assert all(".adapter." in k for k in added)
    assert all(torch.equal(state[k], v) for k, v in original.items())


def test_layers_restrict_blocks_and_changes_start_at_the_first_adapted_block(base, bert_inputs):
    for placement in ("serial", "parallel"):
        model = copy.deepcopy(base.model).eval()
        before = _all_hidden(model, bert_inputs)
        config = BottleneckConfig(placement=placement, layers=[2, -2])
        paths = inject_bottleneck(model, config)
        assert {p.split(".")[2] for p in paths} == {"2", "4"}
        per_block = 2 if placement == "serial" else 1
        assert sum(p.numel() for p in adapter_parameters(model)) == (
            _per_adapter(384, 384, 16) * per_block * 2)
        _perturb(model)
        after = _all_hidden(model, bert_inputs)
        # hidden_states[0] is the embedding output, hidden_states[i + 1] the output of block i
        for i in range(3):
            assert torch.equal(after[i], before[i]), (placement, i)
        for i in range(3, 7):
            assert not torch.allclose(after[i], before[i], atol=1e-4), (placement, i)


def test_layers_out_of_range(base):
    with pytest.raises(InputError, match="out of range"):
        inject_bottleneck(copy.deepcopy(base.model), BottleneckConfig(layers=[6]))


def test_gradients_reach_adapters_and_base_freezes_independently():
    model = _tiny("llama").train()
    inject_bottleneck(model, BottleneckConfig(reduction=8))
    adapters = adapter_parameters(model)
    ids = {id(p) for p in adapters}
    base_params = [p for p in model.parameters() if id(p) not in ids]
    for p in base_params:
        p.requires_grad_(False)
    inputs = _inputs_for("llama", {})

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(**inputs).last_hidden_state.pow(2).mean().backward()

    step()
    ups = [m.up for m in model.modules() if isinstance(m, Bottleneck)]
    downs = [m.down for m in model.modules() if isinstance(m, Bottleneck)]
    assert all(u.weight.grad is not None and u.weight.grad.abs().sum() > 0 for u in ups)
    assert all(u.bias.grad.abs().sum() > 0 for u in ups)
    # with up = 0 nothing flows back into down yet (standard for zero-init adapters)
    assert all(not dn.weight.grad.any() for dn in downs)
    assert all(p.grad is None for p in base_params)

    with torch.no_grad():
        for u in ups:
            u.weight.normal_(0, 0.1)
    step()
    assert all(dn.weight.grad.abs().sum() > 0 and dn.bias.grad.abs().sum() > 0 for dn in downs)
    assert all(p.grad is None for p in base_params)

    for p in base_params:
        p.requires_grad_(True)
    for p in adapters:
        p.requires_grad_(False)
    step()
    assert all(p.grad is None for p in adapters)
    assert model.get_submodule("layers.0.mlp.down_proj").weight.grad.abs().sum() > 0


def test_state_dict_roundtrip_and_key_errors(base, bert_inputs):
    model = copy.deepcopy(base.model).eval()
    inject_bottleneck(model, BottleneckConfig(placement="parallel", scaling=0.5))
    _perturb(model, seed=3)
    state = bottleneck_state_dict(model)
    assert len(state) == 6 * 4
    assert "encoder.layer.0.output.dense.adapter.down.weight" in state
    assert all(t.device.type == "cpu" and not t.requires_grad for t in state.values())

    fresh = copy.deepcopy(base.model).eval()
    inject_bottleneck(fresh, BottleneckConfig(placement="parallel", scaling=0.5))
    assert not torch.equal(_hidden(fresh, bert_inputs), _hidden(model, bert_inputs))
    load_bottleneck_state(fresh, state)
    assert torch.equal(_hidden(fresh, bert_inputs), _hidden(model, bert_inputs))
    # the saved tensors are copies, not views of the model's parameters
    with torch.no_grad():
        adapter_parameters(model)[0].add_(1.0)
    assert not torch.equal(state["encoder.layer.0.output.dense.adapter.down.weight"],
                           model.get_submodule("encoder.layer.0.output.dense.adapter.down").weight)

    missing = dict(state)
    del missing["encoder.layer.3.output.dense.adapter.up.bias"]
    with pytest.raises(FormatError, match=r"encoder\.layer\.3\.output\.dense\.adapter\.up\.bias"):
        load_bottleneck_state(fresh, missing)
    extra = {**state, "encoder.layer.9.output.dense.adapter.up.bias": torch.zeros(384)}
    with pytest.raises(FormatError, match=r"unexpected key 'encoder\.layer\.9"):
        load_bottleneck_state(fresh, extra)
    shape = {**state, "encoder.layer.0.output.dense.adapter.up.bias": torch.zeros(3)}
    with pytest.raises(FormatError, match="shape"):
        load_bottleneck_state(fresh, shape)
    with pytest.raises(FormatError, match="no bottleneck adapters"):
        load_bottleneck_state(copy.deepcopy(base.model), state)


def test_parallel_bert_branch_matches_manual_computation(base, bert_inputs):
    model = copy.deepcopy(base.model).eval()
    inject_bottleneck(model, BottleneckConfig(placement="parallel", activation="gelu",
                                              scaling=0.5))
    _perturb(model, seed=5)
    block = model.get_submodule("encoder.layer.1")
    adapter = block.output.dense.adapter
    seen: dict[str, torch.Tensor] = {}
    # registered after the adapter's hooks, so they see the intermediate input and the adapted
    # output of output.dense
    handles = [
        block.intermediate.register_forward_pre_hook(
            lambda m, args: seen.__setitem__("x", args[0])),
        block.output.dense.register_forward_hook(
            lambda m, args, out: seen.update(h=args[0], y=out)),
    ]
    try:
        _hidden(model, bert_inputs)
    finally:
        for handle in handles:
            handle.remove()
    dense = block.output.dense
    with torch.inference_mode():
        plain = torch.nn.functional.linear(seen["h"], dense.weight, dense.bias)
        x = seen["x"]
        hidden = torch.nn.functional.gelu(x @ adapter.down.weight.T + adapter.down.bias)
        manual = 0.5 * (hidden @ adapter.up.weight.T + adapter.up.bias)
    assert manual.abs().max() > 1e-2
    torch.testing.assert_close(seen["y"] - plain, manual, atol=1e-5, rtol=1e-4)
    # the stash is cleared after use, also under autograd
    assert all(m._stash is None for m in model.modules() if isinstance(m, Bottleneck))
    model(**bert_inputs).last_hidden_state.sum().backward()
    assert all(m._stash is None for m in model.modules() if isinstance(m, Bottleneck))
    assert adapter.down.weight.grad.abs().sum() > 0


def test_deepcopy_of_injected_model_is_independent(base, bert_inputs):
    model = copy.deepcopy(base.model).eval()
    inject_bottleneck(model, BottleneckConfig(placement="parallel"))
    _perturb(model, seed=2)
    before = _hidden(model, bert_inputs)
    twin = copy.deepcopy(model)
    assert torch.equal(_hidden(twin, bert_inputs), before)
    with torch.no_grad():
        for param in adapter_parameters(twin):
            param.zero_()
    assert torch.equal(_hidden(model, bert_inputs), before)
    assert not torch.equal(_hidden(twin, bert_inputs), before)


class _Toy(nn.Module):
    """A model of an architecture without default targets."""

    def __init__(self) -> None:
        super().__init__()
        self.config = transformers.PretrainedConfig()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8)) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return x


def test_unknown_architecture_needs_targets():
    toy = _Toy()
    with pytest.raises(InputError, match="pass targets"):
        inject_bottleneck(toy, BottleneckConfig())
    x = torch.randn(4, 8)
    before = toy(x)
    assert inject_bottleneck(toy, BottleneckConfig(targets=["2"], reduction=4)) == [
        "blocks.0.2", "blocks.1.2", "blocks.2.2"]
    assert torch.equal(toy(x), before)
    assert sum(p.numel() for p in adapter_parameters(toy)) == 3 * _per_adapter(8, 8, 4)


def test_errors(base):
    model = copy.deepcopy(base.model)
    inject_bottleneck(model, BottleneckConfig())
    with pytest.raises(InputError, match="already has bottleneck adapters"):
        inject_bottleneck(model, BottleneckConfig(placement="parallel"))

    with pytest.raises(InputError, match=r"placement 'sideways'.*serial, parallel"):
        BottleneckConfig(placement="sideways")
    with pytest.raises(InputError, match=r"activation 'swish'.*relu, gelu, silu, tanh"):
        BottleneckConfig(activation="swish")
    with pytest.raises(InputError, match="reduction"):
        BottleneckConfig(reduction=0)
    with pytest.raises(InputError, match="only parallel"):
        BottleneckConfig(targets=["intermediate->output.dense"])
    with pytest.raises(InputError, match="targets"):
        BottleneckConfig(targets="output.dense")  # type: ignore[arg-type]

    fresh = copy.deepcopy(base.model)
    with pytest.raises(InputError, match=r"'output\.dnse' matches no module"):
        inject_bottleneck(fresh, BottleneckConfig(targets=["output.dense", "output.dnse"]))
    assert not any(isinstance(m, Bottleneck) for m in fresh.modules())  # left untouched


def test_config_dict_roundtrip():
    config = BottleneckConfig(reduction=8, placement="parallel", targets=["mlp"],
                              activation="silu", scaling=4, layers=[0, -1])
    data = config.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["scaling"] == 4.0
    assert BottleneckConfig.from_dict(data) == config
    assert BottleneckConfig.from_dict(BottleneckConfig().to_dict()) == BottleneckConfig()
    with pytest.raises(FormatError, match=r"unknown bottleneck adapter config key.*bottleneck"):
        BottleneckConfig.from_dict({**data, "bottleneck": 4})
    with pytest.raises(FormatError, match="placement"):
        BottleneckConfig.from_dict({**data, "placement": "diagonal"})


def test_combines_with_a_peft_prefix_wrapper(base, bert_inputs):
    import peft

    model = copy.deepcopy(base.model).eval()
    inject_bottleneck(model, BottleneckConfig(placement="parallel"))
    keys = set(bottleneck_state_dict(model))
    wrapped = peft.get_peft_model(model, peft.PrefixTuningConfig(
        task_type="FEATURE_EXTRACTION", num_virtual_tokens=4))
    # PEFT's prompt learning freezes the whole base, adapters included: re-enable them
    assert not any(p.requires_grad for p in adapter_parameters(wrapped))
    for param in adapter_parameters(wrapped):
        param.requires_grad_(True)
    _perturb(wrapped)
    wrapped(**bert_inputs).last_hidden_state.pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter_parameters(wrapped))
    assert wrapped.prompt_encoder.default.embedding.weight.grad.abs().sum() > 0
    assert set(bottleneck_state_dict(wrapped.get_base_model())) == keys
