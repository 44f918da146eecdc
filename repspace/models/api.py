"""The three entry points of the models layer: load, export, save tuned."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import peft
import torch
from torch import nn

from repspace.errors import InputError
from repspace.models.checkpoint import read_checkpoint, write_checkpoint
from repspace.models.loaded import LoadedModel
from repspace.models.sources import base_payload, load_base
from repspace.models.tuned import (
    Part,
    apply_tuned,
    method_name,
    peft_folder_payload,
    peft_part,
    tuned_payload,
)


def _is_peft_folder(path: Path) -> bool:
    return path.is_dir() and (path / "adapter_config.json").is_file()


def load_model(source: str | Path, *, base: LoadedModel | str | Path | None = None,
               config: str | Path | None = None) -> LoadedModel:
    """Load a model to run.

    Parameters
    ----------
    source : str or Path
        A repspace checkpoint (``.pt``, base or tuned), an HF model folder, a PEFT adapter folder,
        a ``.safetensors`` file (its ``config.json`` beside it or in ``config``), or a hub id.
    base : LoadedModel or str or Path, optional
        For a tuned checkpoint or a PEFT adapter folder: the base to apply it onto (a loaded
        model or anything ``load_model`` accepts). A PEFT folder without it uses the base named in
        its ``adapter_config.json``. Applying onto a base other than the one tuned is an error.
        Ignored for models that are complete by themselves.
    config : str or Path, optional
        For a bare safetensors file: the folder with its ``config.json`` and tokenizer.

    Returns
    -------
    LoadedModel
        The model in eval mode, with its tokenizer (and processor) and fingerprint.

    Examples
    --------
    >>> base = load_model("base.pt")                      # doctest: +SKIP
    >>> tuned = load_model("lora.pt", base=base)          # doctest: +SKIP
    """
    path = Path(source)
    if _is_peft_folder(path):
        if base is None:
            named = json.loads((path / "adapter_config.json").read_text()).get(
                "base_model_name_or_path")
            if not named:
                raise InputError(f"{path} is a PEFT adapter folder that names no base: pass base")
            base = named
        base_model = base if isinstance(base, LoadedModel) else load_model(base)
        return apply_tuned(base_model, peft_folder_payload(str(path), base_model), str(path))
    if path.suffix == ".pt" and path.is_file():
        payload = read_checkpoint(path)
        if payload["kind"] == "tuned":
            if base is None:
                base = payload.get("base_source")
                if not base or not Path(base).exists():
                    raise InputError(f"{path} is a tuned checkpoint: pass the base it was tuned "
                                     "from (base=... or the first model on the command line)")
            base_model = base if isinstance(base, LoadedModel) else load_model(base)
            return apply_tuned(base_model, payload, str(path))
    return load_base(source, config=config)


def export_checkpoint(source: str | Path, out: str | Path, *,
                      config: str | Path | None = None) -> Path:
    """Write the self-contained base checkpoint of ``source`` (see :func:`load_model`) to ``out``.

    The file holds the model class, HF config, tokenizer files (and a vision-language model's
    processor files: image processor, chat template), weights and fingerprint, and is
    readable with ``torch.load(out, weights_only=True)``.
    """
    out = Path(out)
    if out.suffix != ".pt":
        raise InputError(f"checkpoint file name must end in .pt: {out}")
    loaded = load_base(source, config=config)
    return write_checkpoint(base_payload(loaded.model, loaded.tokenizer, str(source),
                                         loaded.processor), out)


def save_tuned_checkpoint(tuned: nn.Module | list[Part], base: LoadedModel, out: str | Path, *,
                          method: str | None = None, weights: dict[str, torch.Tensor] | None = None,
                          **extra: Any) -> Path:
    """Write a tuned checkpoint holding only the tuned tensors, tied to ``base``'s fingerprint.

    ``tuned`` is a PEFT model (its adapter is saved), a plain model whose changed tensors are
    given in ``weights`` (full fine-tuning, BitFit), or an explicit list of
    :class:`~repspace.models.tuned.Part` (compositions such as PT-PEFT). ``extra`` goes to
    :func:`~repspace.models.tuned.tuned_payload` (``method_config``, ``training``, ``head``,
    ``task``).
    """
    out = Path(out)
    if out.suffix != ".pt":
        raise InputError(f"checkpoint file name must end in .pt: {out}")
    if isinstance(tuned, list):
        parts = tuned
    elif isinstance(tuned, peft.PeftModel):
        parts = [peft_part(tuned)]
        method = method or method_name(tuned.peft_config["default"])
    elif weights is not None:
        parts = [Part("weights", {}, {k: v.detach().to("cpu").clone()
                                      for k, v in weights.items()})]
    else:
        raise InputError("tuned must be a PeftModel, a list of parts, or pass weights=")
    return write_checkpoint(tuned_payload(parts, base, method=method or "full", **extra), out)
