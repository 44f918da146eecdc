"""Bottleneck adapters injected in place into a ``transformers`` model.

AdapterHub's ``adapters`` package does not install beside transformers 5, so repspace has its own
bottleneck adapters:

serial (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP")
    After the attention output projection and after the feed-forward output projection of every
    block, before the residual add: ``y = W x + b;  y <- y + up(act(down(y)))``.
parallel (He et al. 2022, "Towards a Unified View of Parameter-Efficient Transfer Learning")
    Beside the feed-forward sublayer, fed with the sublayer's *input* ``x``:
    ``h <- FFN(x) + s * up(act(down(x)))``.

``up`` is zero-initialised (weight and bias), so a freshly injected adapter adds exactly zero and
the model's outputs are bit-identical to those without adapters. ``down`` keeps the default
``nn.Linear`` initialisation (uniform Kaiming, as LoRA's ``A``), so the gradient of ``up`` is
non-zero from the first step; the gradient of ``down`` is zero until ``up`` has moved.

Design: the original modules stay in place
------------------------------------------
Nothing is replaced. Each adapter is registered as a child module named ``adapter`` of the module
it adapts, and a forward hook on that module adds the adapter's output. Hence

* every state-dict key of the original weights is unchanged (``encoder.layer.0.output.dense.weight``
  stays as it is), so base checkpoints, fingerprints of the base weights, weight-space metrics and
  the canonical layer names used by capture work on an adapted model without any renaming;
* adapter tensors sit next to what they adapt (``encoder.layer.0.output.dense.adapter.down.weight``)
  and are easy to select (:func:`bottleneck_state_dict`);
* a PEFT wrapper (e.g. prefix tuning) can be put on top afterwards: it sees an ordinary model.

PEFT's alternative (replace the ``Linear`` by a wrapper holding it as ``base_layer``) renames every
adapted base weight (``...dense.base_layer.weight``), which the rest of repspace would have to undo.

The hooks are small module-level functions or picklable callables that find their adapter through
the module they are called with (or through an attribute that ``copy.deepcopy`` remaps), so a
deep copy of an adapted model is an independent adapted model. Injection does not change
``requires_grad`` of anything: freeze the base and train :func:`adapter_parameters` yourself (note
that PEFT's prompt-learning wrappers freeze every base parameter, adapters included, when they
wrap a model: re-enable :func:`adapter_parameters` after wrapping).

Parallel placement in BERT-like blocks, whose feed-forward sublayer is split into ``intermediate``
(input ``x``) and ``output`` (``dense``, then dropout, residual add and LayerNorm): a forward
pre-hook on ``intermediate`` stashes ``x`` on the adapter, and the forward hook on
``output.dense`` adds ``s * adapter(x)`` to the projection's output (so the branch joins before the
residual add) and clears the stash at once. Such a pair is written ``"intermediate->output.dense"``
in :attr:`BottleneckConfig.targets`. In architectures whose feed-forward sublayer is one module
(``mlp`` of GPT-2, Llama, ViT; ``ffn`` of DistilBERT) that module is adapted directly: its input
is read from the forward hook's arguments, so nothing is stored at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from repspace.errors import FormatError, InputError
from repspace.models.structure import block_stack

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_TARGETS",
    "PLACEMENTS",
    "Bottleneck",
    "BottleneckConfig",
    "adapter_parameters",
    "bottleneck_state_dict",
    "default_targets",
    "inject_bottleneck",
    "load_bottleneck_state",
]

ADAPTER = "adapter"
"""Name of the child module that holds a :class:`Bottleneck` inside the module it adapts."""

PAIR = "->"
"""Separator of a split parallel target: ``"INPUT_MODULE->OUTPUT_MODULE"``."""

PLACEMENTS = ("serial", "parallel")

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}

_BERT = ("bert", "roberta", "xlm-roberta", "electra", "camembert")
_DECODERS = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3")

# Per model_type and placement: candidate target sets, relative to each block; the first set
# whose modules all exist in the first block is used (layouts change between transformers
# versions: ViT's blocks were attention.output.dense/output.dense, now attention.o_proj/mlp.fc2).
DEFAULT_TARGETS: dict[str, dict[str, list[list[str]]]] = {
    **{t: {"serial": [["attention.output.dense", "output.dense"]],
           "parallel": [["intermediate->output.dense"]]} for t in _BERT},
    "distilbert": {"serial": [["attention.out_lin", "ffn.lin2"]], "parallel": [["ffn"]]},
    "gpt2": {"serial": [["attn.c_proj", "mlp.c_proj"]], "parallel": [["mlp"]]},
    **{t: {"serial": [["self_attn.o_proj", "mlp.down_proj"]], "parallel": [["mlp"]]}
       for t in _DECODERS},
    "opt": {"serial": [["self_attn.out_proj", "fc2"]], "parallel": [["fc1->fc2"]]},
    # T5's decoder blocks have cross-attention as layer.1 and the feed-forward as layer.2
    "t5": {"serial": [["layer.0.SelfAttention.o", "layer.2.DenseReluDense.wo"],
                      ["layer.0.SelfAttention.o", "layer.1.DenseReluDense.wo"]],
           "parallel": [["layer.2.DenseReluDense"], ["layer.1.DenseReluDense"]]},
    "vit": {"serial": [["attention.o_proj", "mlp.fc2"], ["attention.output.dense", "output.dense"]],
            "parallel": [["mlp"], ["intermediate->output.dense"]]},
}


@dataclass
class BottleneckConfig:
    """How to insert bottleneck adapters into a model.

    Parameters
    ----------
    reduction : int
        Reduction factor: the bottleneck size is ``r = max(1, d // reduction)`` where ``d`` is the
        output size of the adapted module (the hidden size).
    placement : {"serial", "parallel"}
        ``"serial"`` (Houlsby et al. 2019: after the attention and the feed-forward output
        projections) or ``"parallel"`` (He et al. 2022: beside the feed-forward sublayer).
    targets : list of str, optional
        Module paths relative to each block (the children of the model's largest ``ModuleList``
        of identical modules), e.g. ``["attention.output.dense", "output.dense"]``. A parallel
        target is either a module mapping the sublayer input to its output (``"mlp"``) or a pair
        ``"INPUT->OUTPUT"`` (``"intermediate->output.dense"``): the branch reads the input of
        ``INPUT`` and is added to the output of ``OUTPUT``. ``None`` uses the default of the
        model's ``config.model_type`` (see :data:`DEFAULT_TARGETS`).
    activation : {"relu", "gelu", "silu", "tanh"}
        Non-linearity between ``down`` and ``up``: ``relu``, ``gelu``, ``silu`` or ``tanh``.
    scaling : float
        Output scale ``s`` of parallel adapters (serial adapters are not scaled).
    layers : list of int, optional
        Indices of the blocks that get adapters (negative indices count from the end);
        ``None`` means every block.
    """

    reduction: int = 16
    placement: str = "serial"
    targets: list[str] | None = None
    activation: str = "relu"
    scaling: float = 1.0
    layers: list[int] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.reduction, bool) or not isinstance(self.reduction, int) \
                or self.reduction < 1:
            raise InputError(f"reduction must be an integer >= 1, got {self.reduction!r}")
        if self.placement not in PLACEMENTS:
            raise InputError(f"unknown adapter placement {self.placement!r}; "
                             f"choose one of: {', '.join(PLACEMENTS)}")
        if self.activation not in ACTIVATIONS:
            raise InputError(f"unknown adapter activation {self.activation!r}; "
                             f"choose one of: {', '.join(ACTIVATIONS)}")
        if isinstance(self.scaling, bool) or not isinstance(self.scaling, int | float) \
                or not math.isfinite(self.scaling):
            raise InputError(f"scaling must be a finite number, got {self.scaling!r}")
        self.scaling = float(self.scaling)
        if self.targets is not None:
            if isinstance(self.targets, str) or not all(
                    isinstance(t, str) and t.strip() for t in self.targets) or not self.targets:
                raise InputError(f"targets must be a non-empty list of module paths, "
                                 f"got {self.targets!r}")
            self.targets = [t.strip() for t in self.targets]
            for target in self.targets:
                _split_target(target, self.placement)
        if self.layers is not None:
            if isinstance(self.layers, str | bytes) or not self.layers or not all(
                    isinstance(i, int) and not isinstance(i, bool) for i in self.layers):
                raise InputError(f"layers must be a non-empty list of block indices, "
                                 f"got {self.layers!r}")
            self.layers = list(self.layers)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-plain dict (the inverse of :meth:`from_dict`)."""
        data = asdict(self)
        for key in ("targets", "layers"):
            if data[key] is not None:
                data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BottleneckConfig:
        """A configuration from :meth:`to_dict`'s output.

        Raises
        ------
        FormatError
            If ``d`` is not a dict, has keys that are not fields, or has invalid values.
        """
        if not isinstance(d, dict):
            raise FormatError(f"a bottleneck adapter config must be a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FormatError(f"unknown bottleneck adapter config key(s): {', '.join(unknown)}; "
                              f"known keys: {', '.join(sorted(known))}")
        try:
            return cls(**d)
        except InputError as exc:
            raise FormatError(f"invalid bottleneck adapter config: {exc}") from exc


class Bottleneck(nn.Module):
    """``x -> scaling * up(act(down(x)))``, with ``up`` zero-initialised (an exact no-op at first).

    Parameters
    ----------
    in_features : int
        Size of the adapter's input.
    bottleneck : int
        Size ``r`` of the bottleneck.
    out_features : int, optional
        Size of the adapter's output (defaults to ``in_features``).
    activation : str
        One of :data:`ACTIVATIONS`.
    scaling : float
        Factor applied to the output.
    device : torch.device or str, optional
        Where to create the parameters.
    dtype : torch.dtype, optional
        In which type to create the parameters.
    """

    def __init__(self, in_features: int, bottleneck: int, out_features: int | None = None,
                 activation: str = "relu", scaling: float = 1.0, *,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise InputError(f"unknown adapter activation {activation!r}; "
                             f"choose one of: {', '.join(ACTIVATIONS)}")
        out_features = in_features if out_features is None else out_features
        self.in_features, self.bottleneck, self.out_features = in_features, bottleneck, out_features
        self.activation_name, self.scaling = activation, float(scaling)
        self.down = nn.Linear(in_features, bottleneck, device=device, dtype=dtype)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, out_features, device=device, dtype=dtype)
        with torch.no_grad():
            self.up.weight.zero_()
            self.up.bias.zero_()
        # Input of a split parallel branch, set by a pre-hook and cleared when consumed.
        self._stash: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The adapter branch for input ``x`` (``..., in_features``)."""
        h = self.up(self.act(self.down(x)))
        return h if self.scaling == 1.0 else h * self.scaling

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, bottleneck={self.bottleneck}, "
                f"out_features={self.out_features}, activation={self.activation_name!r}, "
                f"scaling={self.scaling}")


# ----------------------------------------------------------------------------- hooks


def _add_to_output(output: Any, delta: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``output + delta(output)`` for a tensor, or for the first element of a tuple/list."""
    if isinstance(output, torch.Tensor):
        return output + delta(output)
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return type(output)([output[0] + delta(output[0]), *output[1:]])
    raise TypeError(f"a bottleneck adapter cannot add to a module output of type "
                    f"{type(output).__name__}")


def _first_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    for key in ("hidden_states", "x", "input", "input_tensor"):
        if isinstance(kwargs.get(key), torch.Tensor):
            return kwargs[key]
    for value in kwargs.values():
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError("a parallel bottleneck adapter found no tensor input to its module")


def _serial_hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    adapter = module._modules[ADAPTER]
    return _add_to_output(output, lambda y: adapter(y))


def _parallel_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                   output: Any) -> Any:
    adapter = module._modules[ADAPTER]
    x = _first_input(args, kwargs)
    return _add_to_output(output, lambda _: adapter(x))


def _split_output_hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    adapter = module._modules[ADAPTER]
    x, adapter._stash = adapter._stash, None
    if x is None:
        raise RuntimeError("parallel bottleneck adapter: the output module ran without its "
                           "input module (no stashed sublayer input)")
    return _add_to_output(output, lambda _: adapter(x))


class _StashInput:
    """Forward pre-hook that stashes a module's input on a split parallel adapter.

    A callable object rather than a closure so that ``copy.deepcopy`` of the model remaps
    :attr:`adapter` to the copy's adapter.
    """

    def __init__(self, adapter: Bottleneck) -> None:
        self.adapter = adapter

    def __call__(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.adapter._stash = _first_input(args, kwargs)


# ----------------------------------------------------------------------------- injection


def _split_target(target: str, placement: str) -> tuple[str, str | None]:
    """(module that gets the adapter, module whose input feeds it or ``None``)."""
    if PAIR not in target:
        return target, None
    if placement != "parallel":
        raise InputError(f"target {target!r} names an input->output pair, which only parallel "
                         f"adapters take; serial targets are single module paths")
    source, _, sink = (part.strip() for part in target.partition(PAIR))
    if not source or not sink or PAIR in sink:
        raise InputError(f"target {target!r} must be 'INPUT_MODULE->OUTPUT_MODULE'")
    return sink, source


def _model_types(model: nn.Module) -> list[str]:
    config = getattr(model, "config", None)
    found = [getattr(config, "model_type", None)]
    get_text = getattr(config, "get_text_config", None)
    if callable(get_text):
        try:
            found.append(getattr(get_text(), "model_type", None))
        except Exception:  # some configs cannot give a text config
            pass
    return [t for t in found if isinstance(t, str) and t]


def default_targets(model: nn.Module, placement: str = "serial") -> list[str]:
    """The default :attr:`BottleneckConfig.targets` of ``model`` for ``placement``: those of its
    ``config.model_type`` (:data:`DEFAULT_TARGETS`), or for a type without defaults (e.g. the
    language model of a vision-language model, ``qwen2_vl_text``) the first known target set
    whose modules all exist in the model's blocks.

    Raises
    ------
    InputError
        If no known target set fits the model's blocks.
    """
    if placement not in PLACEMENTS:
        raise InputError(f"unknown adapter placement {placement!r}; "
                         f"choose one of: {', '.join(PLACEMENTS)}")
    types = _model_types(model)
    known = next((t for t in types if t in DEFAULT_TARGETS), None)
    candidates = (DEFAULT_TARGETS[known][placement] if known is not None else
                  list({tuple(c): c for d in DEFAULT_TARGETS.values()
                        for c in d[placement]}.values()))
    block = model.get_submodule(block_stack(model))[0]
    names = {n for n, _ in block.named_modules()}
    for targets in candidates:
        wanted = [part for t in targets for part in _split_target(t, placement) if part]
        if all(w in names for w in wanted):
            return list(targets)
    shown = known or (types[0] if types else "unknown")
    raise InputError(f"no default bottleneck adapter targets fit the blocks of this {shown!r} "
                     f"model: pass targets (module paths relative to each block, e.g. "
                     f"['self_attn.o_proj', 'mlp.down_proj']); known model types: "
                     f"{', '.join(sorted(DEFAULT_TARGETS))}")


def _linear_dims(module: nn.Module) -> tuple[int, int] | None:
    """(in, out) of an ``nn.Linear`` or a transformers ``Conv1D`` (weight stored as in x out)."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    nf = getattr(module, "nf", None)
    weight = getattr(module, "weight", None)
    if isinstance(nf, int) and isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return int(weight.shape[0]), nf
    return None


def _dims(module: nn.Module, path: str) -> tuple[int, int]:
    """(input size, output size) of a module: its own if it is a projection, else the input size
    of its first projection and the output size of its last one."""
    own = _linear_dims(module)
    if own is not None:
        return own
    inner = [d for m in module.modules() if (d := _linear_dims(m)) is not None]
    if not inner:
        raise InputError(f"cannot tell the feature size of {path!r} "
                         f"({type(module).__name__}): it contains no Linear/Conv1D layer")
    return inner[0][0], inner[-1][1]


def _reference_param(module: nn.Module) -> torch.Tensor | None:
    return next(iter(module.parameters()), None)


def _selected_blocks(count: int, layers: list[int] | None, stack: str) -> list[int]:
    if layers is None:
        return list(range(count))
    chosen: list[int] = []
    for index in layers:
        if not -count <= index < count:
            raise InputError(f"adapter layer {index} is out of range: {stack!r} has {count} "
                             f"blocks (0..{count - 1})")
        index %= count
        if index not in chosen:
            chosen.append(index)
    return sorted(chosen)


def inject_bottleneck(model: nn.Module, config: BottleneckConfig) -> list[str]:
    """Insert bottleneck adapters into ``model`` in place.

    The blocks are the children of the model's largest ``ModuleList`` of identical modules;
    :attr:`BottleneckConfig.targets` are resolved relative to each selected block. Every adapted
    module keeps its parameters and state-dict keys; it gets a child ``adapter``
    (:class:`Bottleneck`, on the device and in the dtype of the module's parameters) and a
    forward hook. Nothing is frozen or unfrozen.

    Parameters
    ----------
    model : torch.nn.Module
        A ``transformers`` model (or any module with a block stack); best injected before any
        PEFT wrapper so that the module paths are the canonical ones.
    config : BottleneckConfig
        Where and how large the adapters are.

    Returns
    -------
    list[str]
        The module paths in ``model`` that received an adapter, in block order.

    Raises
    ------
    InputError
        If the model already has bottleneck adapters, if ``targets`` is ``None`` for a model type
        without defaults, if a target matches no module in the selected blocks, or if a layer
        index is out of range.
    """
    if not isinstance(config, BottleneckConfig):
        raise InputError(f"config must be a BottleneckConfig, got {type(config).__name__}")
    if any(isinstance(m, Bottleneck) for m in model.modules()):
        raise InputError("this model already has bottleneck adapters: inject_bottleneck may be "
                         "called once per model (inject into a fresh copy instead)")
    stack = block_stack(model)
    blocks = model.get_submodule(stack)
    targets = config.targets if config.targets is not None else default_targets(
        model, config.placement)
    selected = _selected_blocks(len(blocks), config.layers, stack)

    # Resolve everything first, so that a bad target leaves the model untouched.
    plan: list[tuple[str, nn.Module, nn.Module | None, int, int]] = []
    found = dict.fromkeys(targets, 0)
    for index in selected:
        for target in targets:
            sink, source = _split_target(target, config.placement)
            try:
                out_module = blocks[index].get_submodule(sink)
                in_module = blocks[index].get_submodule(source) if source is not None else None
            except AttributeError:
                continue
            if ADAPTER in out_module._modules:
                raise InputError(f"{stack}.{index}.{sink} already has a child named "
                                 f"{ADAPTER!r}")
            path = f"{stack}.{index}.{sink}"
            if config.placement == "serial":
                d_in = d_out = _dims(out_module, path)[1]
            elif in_module is None:
                d_in, d_out = _dims(out_module, path)
            else:
                d_in, d_out = _dims(in_module, path)[0], _dims(out_module, path)[1]
            plan.append((path, out_module, in_module, d_in, d_out))
            found[target] += 1
    for target, count in found.items():
        if not count:
            children = [n for n, _ in blocks[selected[0]].named_modules() if n]
            raise InputError(f"adapter target {target!r} matches no module in the blocks "
                             f"{stack}.N; modules of a block: {', '.join(children[:24])}")
    if len({id(item[1]) for item in plan}) != len(plan):
        raise InputError(f"adapter targets {targets} name the same module twice")

    wrapped: list[str] = []
    for path, out_module, in_module, d_in, d_out in plan:
        param = _reference_param(out_module)
        device = param.device if param is not None else None
        dtype = param.dtype if param is not None and param.is_floating_point() else None
        adapter = Bottleneck(d_in, max(1, d_out // config.reduction), d_out,
                             activation=config.activation,
                             scaling=1.0 if config.placement == "serial" else config.scaling,
                             device=device, dtype=dtype)
        out_module.add_module(ADAPTER, adapter)
        if config.placement == "serial":
            out_module.register_forward_hook(_serial_hook)
        elif in_module is None:
            out_module.register_forward_hook(_parallel_hook, with_kwargs=True)
        else:
            in_module.register_forward_pre_hook(_StashInput(adapter), with_kwargs=True)
            out_module.register_forward_hook(_split_output_hook)
        wrapped.append(path)
    return wrapped


# ----------------------------------------------------------------------------- state


def _adapters(model: nn.Module) -> list[tuple[str, Bottleneck]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, Bottleneck)]


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of every bottleneck adapter in ``model`` (in module order)."""
    return [p for _, adapter in _adapters(model) for p in adapter.parameters()]


def bottleneck_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors of ``model``, keyed by their path in ``model``.

    Returns
    -------
    dict[str, torch.Tensor]
        ``{"encoder.layer.0.output.dense.adapter.down.weight": tensor, ...}``, detached copies
        on the CPU.
    """
    state: dict[str, torch.Tensor] = {}
    for name, adapter in _adapters(model):
        prefix = f"{name}." if name else ""
        for key, tensor in adapter.state_dict().items():
            state[prefix + key] = tensor.detach().to("cpu", copy=True)
    return state


def load_bottleneck_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load adapter tensors saved by :func:`bottleneck_state_dict` into an injected ``model``.

    Raises
    ------
    FormatError
        If the keys are not exactly those of the model's adapters (naming a missing or an
        unexpected key), or a tensor has the wrong shape.
    """
    if not isinstance(state, dict):
        raise FormatError(f"adapter state must be a dict of tensors, got {type(state).__name__}")
    expected: dict[str, torch.Tensor] = {}
    for name, adapter in _adapters(model):
        prefix = f"{name}." if name else ""
        for key, tensor in adapter.state_dict(keep_vars=True).items():
            expected[prefix + key] = tensor
    if not expected:
        raise FormatError("the model has no bottleneck adapters to load into: "
                          "call inject_bottleneck first")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing key {missing[0]!r}" + (
                f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
        if unexpected:
            parts.append(f"unexpected key {unexpected[0]!r}" + (
                f" (+{len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
        raise FormatError(f"adapter state does not match the model's adapters: "
                          f"{'; '.join(parts)}")
    for key, target in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise FormatError(f"adapter state {key!r} is not a tensor "
                              f"({type(value).__name__})")
        if value.shape != target.shape:
            raise FormatError(f"adapter state {key!r} has shape {tuple(value.shape)}, the "
                              f"model's adapter expects {tuple(target.shape)}")
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(state[key])
