"""Tuned checkpoints: only the tuned tensors, applied onto their base at load time.

Two ways of applying are known: ``"peft"`` (any PEFT method; the tensors are a PEFT adapter state
dict and ``method_config`` is its PEFT config) and ``"weights"`` (full fine-tuning, BitFit: the
tensors replace the base's tensors of the same name).
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import peft
import torch
from torch import nn

from repspace.errors import FormatError, MismatchError
from repspace.models.checkpoint import FORMAT, FORMAT_VERSION
from repspace.models.fingerprint import tuned_fingerprint
from repspace.models.loaded import LoadedModel
from repspace.version import __version__


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    """A PEFT config dict with enums and sets turned into JSON values."""

    def default(value: Any) -> Any:
        if isinstance(value, set | frozenset):
            return sorted(value)
        return getattr(value, "value", str(value))

    return json.loads(json.dumps(config, default=default))


def _virtual_tokens(config: peft.PeftConfig) -> int:
    prepends = config.is_prompt_learning and config.peft_type != peft.PeftType.PREFIX_TUNING
    return int(config.num_virtual_tokens) if prepends else 0


def _method_name(config: peft.PeftConfig) -> str:
    name = str(getattr(config.peft_type, "value", config.peft_type)).lower()
    return "dora" if name == "lora" and getattr(config, "use_dora", False) else name


def tuned_payload(tuned: nn.Module, base: LoadedModel, *, method: str | None = None,
                  training: dict[str, Any] | None = None,
                  weights: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """The checkpoint dict of a model tuned from ``base``.

    ``tuned`` is either a PEFT model (its adapter tensors and config are saved), or a plain model
    whose changed tensors are given in ``weights`` (full fine-tuning, BitFit).
    """
    if isinstance(tuned, peft.PeftModel):
        config = tuned.peft_config["default"]
        state = {k: v.detach().to("cpu") for k, v in
                 peft.get_peft_model_state_dict(tuned).items()}
        adapter, method = "peft", method or _method_name(config)
        method_config = _plain(config.to_dict())
        method_config["base_model_name_or_path"] = None
    elif weights is not None:
        state = {k: v.detach().to("cpu") for k, v in weights.items()}
        adapter, method, method_config = "weights", method or "full", {}
    else:
        raise TypeError("tuned must be a PeftModel, or pass the changed tensors as weights=")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "tuned",
        "state_dict": state,
        "fingerprint": tuned_fingerprint(base.fingerprint, state, method, method_config),
        "base_fingerprint": base.fingerprint,
        "base_source": base.source,
        "method": method,
        "adapter": adapter,
        "method_config": method_config,
        "training": training or {},
        "repspace_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _load_peft_state(model: peft.PeftModel, state: dict[str, torch.Tensor], source: str) -> None:
    try:
        result = peft.set_peft_model_state_dict(model, state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise FormatError(f"{source}: tuned tensors do not fit the model ({first})") from exc
    # PEFT loads prompt-learning embeddings into the prompt encoder itself and still lists them.
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if k != "prompt_embeddings"]
    if unexpected:
        raise FormatError(f"{source}: tuned tensors not found in the model: {unexpected[:3]}")


def apply_tuned(base: LoadedModel, payload: dict[str, Any], source: str) -> LoadedModel:
    """A copy of ``base`` with the tuned checkpoint ``payload`` applied (``base`` is untouched)."""
    if payload["base_fingerprint"] != base.fingerprint:
        raise MismatchError(
            f"{source} was tuned from base {payload['base_fingerprint'][:12]} but the base given "
            f"is {base.fingerprint[:12]} ({base.source}): pass the base it was tuned from"
        )
    state = payload["state_dict"]
    method, adapter, config = payload["method"], payload["adapter"], payload["method_config"]
    fingerprint = tuned_fingerprint(base.fingerprint, state, method, config)
    if fingerprint != payload["fingerprint"]:
        raise FormatError(f"{source}: tuned tensors do not match the stored fingerprint")
    model = copy.deepcopy(base.model)
    virtual = 0
    if adapter == "peft":
        try:
            peft_config = peft.get_peft_config(config)
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{source}: invalid PEFT config ({exc})") from exc
        model = peft.get_peft_model(model, peft_config)
        _load_peft_state(model, state, source)
        virtual = _virtual_tokens(peft_config)
    elif adapter == "weights":
        missing_names = sorted(set(state) - set(model.state_dict()))
        if missing_names:
            raise FormatError(f"{source}: tensors not in the base model: {missing_names[:3]}")
        model.load_state_dict(state, strict=False)
    else:
        raise FormatError(f"{source}: unknown way of applying tuned tensors {adapter!r}")
    return LoadedModel(
        model=model.eval(), tokenizer=base.tokenizer, fingerprint=fingerprint, source=source,
        kind="tuned", method=method, base_fingerprint=base.fingerprint, virtual_tokens=virtual,
        info={"method_config": config, "training": payload.get("training", {})},
    )


def peft_folder_payload(folder: Path, base: LoadedModel) -> dict[str, Any]:
    """Read a PEFT adapter folder (``adapter_config.json`` + weights) as a tuned checkpoint."""
    model = peft.PeftModel.from_pretrained(copy.deepcopy(base.model), str(folder))
    return tuned_payload(model, base, training={"source": str(folder)})
