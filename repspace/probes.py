"""Probe sets: the inputs features are captured on, with stable sample ids.

Two formats are read:

* a text file, one sample per line (blank lines skipped); a sample's id is a hash of its text;
* JSONL, one object per line with ``"text"`` and optionally ``"id"`` (else the hash of the text).

Ids are the join key between feature stores, so they must be unique within a probe set.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from repspace.errors import FormatError, InputError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_PROBE = DATA_DIR / "probe_general.txt"


def text_id(text: str) -> str:
    """The id of a sample given without one: the first 16 hex digits of SHA-256 of its text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Probe:
    """An ordered set of text samples with unique ids."""

    ids: tuple[str, ...]
    texts: tuple[str, ...]
    source: str = "<memory>"

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.texts):
            raise InputError(f"{len(self.ids)} ids for {len(self.texts)} texts")
        if not self.ids:
            raise InputError(f"probe set {self.source} has no samples")
        seen: dict[str, int] = {}
        for i, sample_id in enumerate(self.ids):
            if sample_id in seen:
                raise InputError(f"{self.source}: duplicate sample id {sample_id!r} "
                                 f"(samples {seen[sample_id] + 1} and {i + 1})")
            seen[sample_id] = i

    @classmethod
    def from_texts(cls, texts: Sequence[str], ids: Sequence[str] | None = None,
                   source: str = "<memory>") -> Probe:
        """A probe from a list of texts; ids default to hashes of the texts."""
        texts = tuple(texts)
        return cls(tuple(ids) if ids is not None else tuple(map(text_id, texts)), texts, source)

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 over every (id, text) in order: equal fingerprints mean equal probe sets."""
        digest = hashlib.sha256()
        for sample_id, text in zip(self.ids, self.texts, strict=True):
            digest.update(json.dumps([sample_id, text]).encode())
        return digest.hexdigest()

    def subset(self, n: int) -> Probe:
        """The first ``n`` samples."""
        return Probe(self.ids[:n], self.texts[:n], f"{self.source}[:{n}]")

    def batches(self, batch_size: int, start: int = 0) -> Iterator[tuple[list[str], list[str]]]:
        """(ids, texts) batches in order, from sample ``start`` on."""
        for i in range(start, len(self), batch_size):
            yield list(self.ids[i:i + batch_size]), list(self.texts[i:i + batch_size])


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FormatError(f"file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise FormatError(f"{path}:{line}: not valid UTF-8 text") from exc
    return text.splitlines()


def iter_jsonl(path: str | Path, required: Sequence[str] = ()) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of a JSONL file; a line that is not a
    JSON object with the ``required`` fields (not null) is an error naming the file and line."""
    path = Path(path)
    fields = " and ".join(f'"{name}"' for name in required)
    for number, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FormatError(f"{path}:{number}: invalid JSON ({exc.msg})") from exc
        if not isinstance(record, dict) or any(record.get(f) is None for f in required):
            raise FormatError(f"{path}:{number}: expected a JSON object with {fields}"
                              if required else f"{path}:{number}: expected a JSON object")
        yield number, record


def _parse_jsonl(path: Path) -> Probe:
    ids, texts = [], []
    for number, record in iter_jsonl(path, ("text",)):
        if not isinstance(record["text"], str):
            raise FormatError(f'{path}:{number}: expected an object with a "text" string')
        texts.append(record["text"])
        ids.append(str(record["id"]) if record.get("id") is not None else text_id(record["text"]))
    return Probe(tuple(ids), tuple(texts), str(path))


def load_probe(path: str | Path | None = None, *, limit: int | None = None) -> Probe:
    """Read a probe set from a text or JSONL file (``None``: the shipped general English probe).

    ``limit`` keeps the first ``limit`` samples.
    """
    path = Path(path) if path is not None else DEFAULT_PROBE
    if path.suffix in (".jsonl", ".json"):
        probe = _parse_jsonl(path)
    else:
        texts = [line.strip() for line in _read_lines(path) if line.strip()]
        probe = Probe.from_texts(texts, source=str(path)) if texts else None
        if probe is None:
            raise FormatError(f"probe file is empty: {path}")
    if limit is not None:
        if limit < 1:
            raise InputError(f"limit must be a positive number of samples, got {limit}")
        probe = probe.subset(limit)
    return probe
