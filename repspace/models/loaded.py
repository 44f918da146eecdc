"""The in-memory model handle every other layer works with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass
class LoadedModel:
    """A model ready to run, with what identifies it.

    Attributes
    ----------
    model : torch.nn.Module
        The module to call (a ``transformers`` model, or a PEFT model wrapping one), in eval mode.
    tokenizer : Any
        The tokenizer (or processor) that prepares its inputs.
    fingerprint : str
        SHA-256 identifying the weights actually run (see :mod:`repspace.models.fingerprint`).
    source : str
        Where it was loaded from (a path or hub id), for provenance.
    kind : {"base", "tuned"}
        ``"base"`` or ``"tuned"``.
    method : str or None
        The tuning method of a tuned model (``"lora"``, ``"prefix_tuning"``, ...), else ``None``.
    base_fingerprint : str or None
        The fingerprint of the base a tuned model was applied onto.
    virtual_tokens : int
        Number of virtual tokens the model prepends to every hidden sequence (prompt tuning);
        capture strips them so tuned positions align with the base's. Prefix tuning adds
        keys/values only and prepends nothing, so it has 0 here.
    info : dict
        Extra metadata carried by the checkpoint (method config, training summary).
    processor : Any
        For a vision-language model, the processor that turns (image, text) pairs into inputs
        (tokenizer + image processor + chat template), else ``None``. ``tokenizer`` is then the
        processor's tokenizer.
    """

    model: nn.Module
    tokenizer: Any
    fingerprint: str
    source: str
    kind: str = "base"
    method: str | None = None
    base_fingerprint: str | None = None
    virtual_tokens: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    processor: Any = None

    @property
    def modality(self) -> str:
        """``"image-text"`` for a model with an image processor, else ``"text"``."""
        has_images = getattr(self.processor, "image_processor", None) is not None
        return "image-text" if has_images else "text"

    @property
    def backbone(self) -> nn.Module:
        """The underlying ``transformers`` model (PEFT wrappers removed) whose module paths
        are the canonical layer names."""
        get_base = getattr(self.model, "get_base_model", None)
        return get_base() if callable(get_base) else self.model
