"""Declared options: dataclasses whose fields carry their help text (and argparse extras) in
their metadata, so that a library function, its documentation and its CLI flags share one
declaration of each default (in the spirit of scikit-learn's declared parameter constraints).

A group's fields are flat keywords of the functions that take them and flags of the CLI:
``prefix`` + ``_`` + field name (``LoraOptions.r`` is ``lora_r=`` and ``--lora-r``); a group
without a prefix uses the field name alone (``--batch-size``). Modules of option groups import
nothing heavy, so the CLI builds its parser without loading torch.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar

from repspace.errors import InputError


def option(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field with its CLI help text (and argparse extras such as ``choices``)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **extra})
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class Options:
    """Base of the option groups. Declared constraints are checked on construction: a field
    with ``choices`` in its metadata takes one of them, one with ``minimum`` no smaller value
    (an :class:`~repspace.errors.InputError` naming the flag otherwise)."""

    prefix: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            value, flag = getattr(self, f.name), self.flag(f.name)
            choices, minimum = f.metadata.get("choices"), f.metadata.get("minimum")
            if choices is not None and value is not None and value not in choices:
                raise InputError(f"{flag} must be one of {', '.join(map(str, choices))}, "
                                 f"got {value!r}")
            if minimum is not None and value is not None and value < minimum:
                raise InputError(f"{flag} must be at least {minimum}, got {value!r}")

    @classmethod
    def flag(cls, name: str) -> str:
        """The CLI flag of field ``name`` (``--lora-r``)."""
        return "--" + cls.keyword(name).replace("_", "-")

    @classmethod
    def keyword(cls, name: str) -> str:
        """The flat keyword (and CLI ``dest``) of field ``name``."""
        return f"{cls.prefix}_{name}" if cls.prefix else name

    @classmethod
    def from_keywords(cls, values: dict[str, Any]) -> Options:
        """The group built from the flat keywords in ``values`` that are its own (``None``
        keeps a field's default); the keywords used are removed from ``values``."""
        chosen = {}
        for f in fields(cls):
            key = cls.keyword(f.name)
            if key in values:
                value = values.pop(key)
                if value is not None:
                    chosen[f.name] = value
        return cls(**chosen)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Field name -> default."""
        return {f.name: f.default if f.default is not MISSING else f.default_factory()
                for f in fields(cls)}
