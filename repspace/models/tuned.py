"""Tuned checkpoints: only the tuned tensors, applied onto their base at load time.

A tuned model is its base plus an ordered list of *parts*, each applied in turn:

``weights``
    Tensors that replace the base's tensors of the same name (full fine-tuning, BitFit).
``bottleneck``
    repspace's bottleneck adapters (:mod:`repspace.models.adapters`), injected in place (into
    the submodule named by the config's ``root``, if any: a vision-language model's language
    model).
``peft_injected``
    A PEFT tuner (LoRA, DoRA, IA3, ...) injected in place with PEFT's low-level
    ``inject_adapter_in_model`` (used under a prefix in PT-PEFT).
``peft``
    A PEFT model wrapping everything before it (any PEFT method; prompt learning needs the
    wrapper). At most one, and last.

In the checkpoint, ``parts`` lists ``{"kind", "config"}`` and ``state_dict`` holds the tensors of
part ``i`` under keys ``"{i}/{name}"``. A task head (``head``: tensors, ``task``: its description)
is kept apart: it does not change the captured features, so it is not part of the fingerprint.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import peft
import torch
from torch import nn

from repspace.errors import FormatError, MismatchError
from repspace.models.adapters import (
    BottleneckConfig,
    bottleneck_state_dict,
    inject_bottleneck,
    load_bottleneck_state,
)
from repspace.models.checkpoint import FORMAT, FORMAT_VERSION
from repspace.models.fingerprint import tuned_fingerprint
from repspace.models.loaded import LoadedModel
from repspace.models.prompt_positions import attach_prompt_positions
from repspace.version import __version__

PART_KINDS = ("weights", "bottleneck", "peft_injected", "peft")


@dataclass
class Part:
    """One step from the base to the tuned model: its kind, config and tensors."""

    kind: str
    config: dict[str, Any] = field(default_factory=dict)
    state: dict[str, torch.Tensor] = field(default_factory=dict)


def plain_peft_config(config: peft.PeftConfig) -> dict[str, Any]:
    """A PEFT config as a JSON-plain dict (enums and sets turned into values and lists)."""

    def default(value: Any) -> Any:
        if isinstance(value, set | frozenset):
            return sorted(value)
        return getattr(value, "value", str(value))

    plain = json.loads(json.dumps(config.to_dict(), default=default))
    plain["base_model_name_or_path"] = None
    return plain


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").clone() for k, v in state.items()}


def peft_part(model: peft.PeftModel) -> Part:
    """The ``peft`` part of a PEFT model (its config and adapter tensors)."""
    return Part("peft", plain_peft_config(model.peft_config["default"]),
                _cpu(peft.get_peft_model_state_dict(model)))


def peft_injected_part(model: nn.Module, config: peft.PeftConfig) -> Part:
    """The ``peft_injected`` part of a model into which ``config`` was injected."""
    return Part("peft_injected", plain_peft_config(config),
                _cpu(peft.get_peft_model_state_dict(model)))


def bottleneck_part(model: nn.Module, config: BottleneckConfig, root: str = "") -> Part:
    """The ``bottleneck`` part of a model whose submodule ``root`` (``""``: the model itself,
    e.g. ``model.language_model`` of a vision-language model) has injected bottleneck adapters;
    the tensors are keyed relative to ``root``."""
    spec = {**config.to_dict(), "root": root} if root else config.to_dict()
    return Part("bottleneck", spec, _cpu(bottleneck_state_dict(model.get_submodule(root))))


def method_name(config: peft.PeftConfig) -> str:
    """A short method name for a PEFT config (``lora``, ``dora``, ``prefix_tuning``, ...)."""
    name = str(getattr(config.peft_type, "value", config.peft_type)).lower()
    return "dora" if name == "lora" and getattr(config, "use_dora", False) else name


def _flatten(parts: list[Part]) -> dict[str, torch.Tensor]:
    return {f"{i}/{key}": tensor for i, part in enumerate(parts)
            for key, tensor in part.state.items()}


def _unflatten(payload: dict[str, Any], source: str) -> list[Part]:
    specs = payload["parts"]
    if not isinstance(specs, list):
        raise FormatError(f"{source}: 'parts' must be a list")
    parts = [Part(spec.get("kind"), spec.get("config", {})) for spec in specs]
    for key, tensor in payload["state_dict"].items():
        index, _, name = key.partition("/")
        if not index.isdigit() or int(index) >= len(parts):
            raise FormatError(f"{source}: tensor {key!r} belongs to no part")
        parts[int(index)].state[name] = tensor
    return parts


def _part_specs(parts: list[Part]) -> list[dict[str, Any]]:
    return [{"kind": p.kind, "config": p.config} for p in parts]


def tuned_payload(parts: list[Part], base: LoadedModel, *, method: str,
                  method_config: dict[str, Any] | None = None,
                  training: dict[str, Any] | None = None,
                  head: dict[str, torch.Tensor] | None = None,
                  task: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint dict of a model tuned from ``base`` by ``parts`` (see module doc)."""
    kinds = [p.kind for p in parts]
    if any(k not in PART_KINDS for k in kinds) or "peft" in kinds[:-1]:
        raise ValueError(f"invalid parts {kinds}: kinds are {PART_KINDS}, 'peft' only last")
    state = _flatten(parts)
    specs = _part_specs(parts)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "tuned",
        "parts": specs,
        "state_dict": state,
        "fingerprint": tuned_fingerprint(base.fingerprint, state, method, specs),
        "base_fingerprint": base.fingerprint,
        "base_source": base.source,
        "method": method,
        "method_config": method_config or {},
        "head": _cpu(head or {}),
        "task": task or {},
        "training": training or {},
        "repspace_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _check_loaded(result: Any, source: str, ignore: tuple[str, ...] = ()) -> None:
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if k not in ignore]
    if unexpected:
        raise FormatError(f"{source}: tuned tensors not found in the model: {unexpected[:3]}")


def _peft_config(config: dict[str, Any], source: str) -> peft.PeftConfig:
    try:
        return peft.get_peft_config(dict(config))
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{source}: invalid PEFT config ({exc})") from exc


def apply_parts(model: nn.Module, parts: list[Part], source: str) -> tuple[nn.Module, int]:
    """Apply ``parts`` to ``model`` in place (a ``peft`` part wraps it); returns the model to
    run and the number of virtual tokens it prepends to hidden sequences."""
    virtual = 0
    for part in parts:
        try:
            if part.kind == "weights":
                unknown = sorted(set(part.state) - set(model.state_dict()))
                if unknown:
                    raise FormatError(f"{source}: tensors not in the base model: {unknown[:3]}")
                model.load_state_dict(part.state, strict=False)
            elif part.kind == "bottleneck":
                spec = dict(part.config)
                target = model.get_submodule(spec.pop("root", ""))
                inject_bottleneck(target, BottleneckConfig.from_dict(spec))
                load_bottleneck_state(target, part.state)
            elif part.kind == "peft_injected":
                model = peft.inject_adapter_in_model(_peft_config(part.config, source), model)
                _check_loaded(peft.set_peft_model_state_dict(model, part.state), source)
            elif part.kind == "peft":
                config = _peft_config(part.config, source)
                # saved prompts are the prompt encoder's outputs (P-tuning, a prefix MLP): run
                # them as they are, as PEFT does for a saved adapter
                config.inference_mode = config.inference_mode or config.is_prompt_learning
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*modify a model with PEFT.*")
                    # AdaLoRA's rank pattern (kept ranks) read as LoRA's ranks by name: unused
                    warnings.filterwarnings("ignore", message=".*rank_pattern keys did not match")
                    model = peft.get_peft_model(model, config)
                # PEFT loads prompt-learning embeddings itself and still lists them.
                _check_loaded(peft.set_peft_model_state_dict(model, part.state), source,
                              ignore=("prompt_embeddings",))
                is_prefix = config.peft_type == peft.PeftType.PREFIX_TUNING
                if config.is_prompt_learning:
                    attach_prompt_positions(model, config.num_virtual_tokens,
                                            "prefix" if is_prefix else "prompt")
                prepends = config.is_prompt_learning and not is_prefix
                virtual = int(config.num_virtual_tokens) if prepends else 0
            else:
                raise FormatError(f"{source}: unknown kind of tuned part {part.kind!r}")
        except (RuntimeError, AttributeError) as exc:  # AttributeError: no such root module
            first = str(exc).strip().splitlines()[0]
            raise FormatError(f"{source}: tuned tensors do not fit the model ({first})") from exc
    return model, virtual


def apply_tuned(base: LoadedModel, payload: dict[str, Any], source: str) -> LoadedModel:
    """A copy of ``base`` with the tuned checkpoint ``payload`` applied (``base`` is untouched)."""
    if payload["base_fingerprint"] != base.fingerprint:
        raise MismatchError(
            f"{source} was tuned from base {payload['base_fingerprint'][:12]} but the base given "
            f"is {base.fingerprint[:12]} ({base.source}): pass the base it was tuned from"
        )
    fingerprint = tuned_fingerprint(base.fingerprint, payload["state_dict"], payload["method"],
                                    payload["parts"])
    if fingerprint != payload["fingerprint"]:
        raise FormatError(f"{source}: tuned tensors do not match the stored fingerprint")
    model, virtual = apply_parts(copy.deepcopy(base.model), _unflatten(payload, source), source)
    return LoadedModel(
        model=model.eval(), tokenizer=base.tokenizer, processor=base.processor,
        fingerprint=fingerprint, source=source, kind="tuned", method=payload["method"],
        base_fingerprint=base.fingerprint, virtual_tokens=virtual,
        info={key: payload.get(key, {}) for key in ("method_config", "training", "task",
                                                     "head", "parts")},
    )


def peft_folder_payload(folder: str, base: LoadedModel) -> dict[str, Any]:
    """Read a PEFT adapter folder (``adapter_config.json`` + weights) as a tuned checkpoint."""
    model = peft.PeftModel.from_pretrained(copy.deepcopy(base.model), folder)
    config = model.peft_config["default"]
    return tuned_payload([peft_part(model)], base, method=method_name(config),
                         training={"source": folder})
