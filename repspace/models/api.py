"""The three entry points of the models layer: load, export, save tuned."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import peft
import torch
from torch import nn

from repspace.errors import InputError, RepspaceError
from repspace.models.checkpoint import read_checkpoint, write_checkpoint
from repspace.models.loaded import LoadedModel
from repspace.models.paths import looks_like_path
from repspace.models.sources import base_payload, load_base, tuned_as_base
from repspace.models.tuned import (
    Part,
    apply_tuned,
    method_name,
    peft_folder_payload,
    peft_part,
    tuned_payload,
)
from repspace.utils.files import check_output


def _is_peft_folder(path: Path) -> bool:
    return path.is_dir() and (path / "adapter_config.json").is_file()


def _base_fingerprint_of(path: Path) -> str | None:
    """The fingerprint a base checkpoint records (``None`` for anything else)."""
    try:
        payload = read_checkpoint(path)
    except RepspaceError:
        return None
    return payload["fingerprint"] if payload["kind"] == "base" else None


def recorded_base(path: Path, payload: dict[str, Any]) -> str | LoadedModel:
    """The base of the tuned checkpoint ``path`` when none is given: the base it records
    (``base_source``, a path as given when it was tuned), looked for relative to the
    checkpoint's own folder, then as given, then as any base checkpoint beside it, and taken
    only with the recorded fingerprint; a packaged or hub id as it is.

    Raises
    ------
    InputError
        When no base with that fingerprint is found, naming ``--base`` (and ``base=``).
    """
    named = str(payload.get("base_source") or "")
    wanted = payload["base_fingerprint"]
    candidates = []
    if named:
        recorded = Path(named)
        candidates += [recorded] if recorded.is_absolute() else [path.parent / recorded,
                                                                  recorded]
    candidates += sorted(path.parent.glob("*.pt"))
    seen: set[Path] = set()
    for candidate in candidates:
        key = candidate.resolve()
        if key in seen or key == path.resolve() or not candidate.is_file():
            continue
        seen.add(key)
        if _base_fingerprint_of(candidate) == wanted:
            return str(candidate)
    if named and not looks_like_path(named):  # tuned from a hub or packaged id
        loaded = load_base(named)
        if loaded.fingerprint == wanted:
            return loaded
    recorded_as = f" (it was tuned from {named}, fingerprint {wanted[:12]})" if named else ""
    raise InputError(f"{path} is a tuned checkpoint and its base was not found{recorded_as}: "
                     "pass the base it was tuned from with --base (base= in Python)")


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
                base = recorded_base(path, payload)
            base_model = base if isinstance(base, LoadedModel) else load_model(base)
            return apply_tuned(base_model, payload, str(path))
    return load_base(source, config=config)


def load_base_model(source: LoadedModel | str | Path) -> LoadedModel:
    """The base model of an analysis (a loaded model, or anything :func:`load_base` reads); a
    tuned checkpoint or tuned model here is an :class:`InputError` that says so."""
    if isinstance(source, LoadedModel):
        if source.kind == "tuned":
            raise tuned_as_base(source.source, source.method, None)
        return source
    return load_base(source)


def export_checkpoint(source: str | Path, out: str | Path, *,
                      config: str | Path | None = None) -> Path:
    """Write the self-contained base checkpoint of ``source`` (see :func:`load_model`) to ``out``.

    The file holds the model class, HF config, tokenizer files (and a vision-language model's
    processor files: image processor, chat template), weights and fingerprint, and is
    readable with ``torch.load(out, weights_only=True)``.
    """
    out = check_output(out, flag="OUT")
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
