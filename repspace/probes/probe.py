"""Probe sets: the inputs features are captured on, with stable sample ids.

Formats read:

* a text file, one sample per line (blank lines skipped); a sample's id is a hash of its text;
* JSONL, one object per line with ``"text"`` and optionally ``"id"`` (else the hash of the text)
  and ``"image"`` (a path relative to the JSONL file): with images in every line it is an
  image+text probe set;
* a folder of images with a captions file: ``captions.jsonl`` (the JSONL format above) or
  ``captions.tsv`` (``file<TAB>caption`` per line; the id is the file name without extension).

Ids are the join key between feature stores, so they must be unique within a probe set. Images
are opened lazily, batch by batch (:meth:`Probe.open_images`); one that does not decode is an
:class:`~repspace.errors.InputError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from repspace.errors import FormatError, InputError

DATA_DIR = Path(__file__).resolve().parent.parent.parent / "data"
DEFAULT_PROBE = DATA_DIR / "probe_general.txt"
#: The shipped image probe set (240 rendered scenes of shapes and digits with captions).
IMAGE_PROBE = DATA_DIR / "image_probe.jsonl"
#: Caption files looked for in an image folder, in this order.
CAPTION_FILES = ("captions.jsonl", "captions.tsv")


def display_path(path: str | Path) -> str:
    """How results and metadata name a data file: a shipped file as ``data/NAME`` (the same on
    every machine), any other file as given, never made absolute."""
    path = Path(path)
    try:
        return (Path("data") / path.resolve().relative_to(DATA_DIR)).as_posix()
    except ValueError:
        return str(path)


def data_reference(path: str | Path) -> dict[str, str]:
    """A data file as outputs record it: ``{"file": display_path(path), "sha256": ...}``, so a
    results file means the same on another machine."""
    try:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return {"file": display_path(path), "sha256": digest}


def text_id(text: str) -> str:
    """The id of a sample given without one: the first 16 hex digits of SHA-256 of its text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def open_image(path: str | Path) -> Any:
    """The image at ``path`` as an RGB ``PIL.Image``; one that does not decode is an
    :class:`~repspace.errors.InputError` naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        lines = str(exc).replace(repr(str(path)), "").strip().splitlines()
        reason = lines[0].strip() if lines else type(exc).__name__
        raise InputError(f"cannot decode image {path}: {reason}") from exc


@dataclass(frozen=True)
class Probe:
    """An ordered set of text samples with unique ids, each optionally with an image.

    ``images`` holds one image path per sample (image+text probes) or is ``None`` (text only).
    """

    ids: tuple[str, ...]
    texts: tuple[str, ...]
    source: str = "<memory>"
    images: tuple[Path, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.texts):
            raise InputError(f"{len(self.ids)} ids for {len(self.texts)} texts")
        if self.images is not None and len(self.images) != len(self.ids):
            raise InputError(f"{len(self.images)} images for {len(self.ids)} samples")
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

    @property
    def modality(self) -> str:
        """``"image-text"`` for a probe set with images, else ``"text"``."""
        return "text" if self.images is None else "image-text"

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 over every (id, text) in order, and over the bytes of every image of an
        image+text probe: equal fingerprints mean equal probe sets."""
        digest = hashlib.sha256()
        for sample_id, text in zip(self.ids, self.texts, strict=True):
            digest.update(json.dumps([sample_id, text]).encode())
        for path in self.images or ():
            try:
                digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
            except OSError as exc:
                raise InputError(f"cannot read image {path}: {exc.strerror or exc}") from exc
        return digest.hexdigest()

    def subset(self, n: int) -> Probe:
        """The first ``n`` samples."""
        images = None if self.images is None else self.images[:n]
        return Probe(self.ids[:n], self.texts[:n], f"{self.source}[:{n}]", images)

    def open_images(self, start: int, stop: int) -> list[Any]:
        """The images of samples ``start`` to ``stop - 1``, decoded (see :func:`open_image`)."""
        if self.images is None:
            raise InputError(f"probe set {self.source} has no images")
        return [open_image(path) for path in self.images[start:stop]]

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
        if not isinstance(record, dict):
            raise FormatError(f"{path}:{number}: expected a JSON object"
                              + (f" with {fields}" if required else "")
                              + f", got {type(record).__name__}")
        missing = next((name for name in required if record.get(name) is None), None)
        if missing is not None:
            has = ", ".join(map(str, record)) or "nothing"
            problem = (f'field "{missing}" is null' if missing in record
                       else f'no "{missing}" field')
            raise FormatError(f"{path}:{number}: {problem} (the line has: {has})")
        yield number, record


def _image_path(folder: Path, name: Any, where: str) -> Path:
    if not isinstance(name, str) or not name:
        raise FormatError(f"{where}: \"image\" must be a file path")
    path = folder / name
    if not path.is_file():
        raise FormatError(f"{where}: image file not found: {path}")
    return path


def _parse_jsonl(path: Path) -> Probe:
    ids, texts, images = [], [], []
    for number, record in iter_jsonl(path, ("text",)):
        if not isinstance(record["text"], str):
            raise FormatError(f'{path}:{number}: expected an object with a "text" string')
        if texts and (record.get("image") is not None) != bool(images):
            raise FormatError(f'{path}:{number}: either every line has an "image" or none')
        if record.get("image") is not None:
            images.append(_image_path(path.parent, record["image"], f"{path}:{number}"))
        texts.append(record["text"])
        ids.append(str(record["id"]) if record.get("id") is not None else text_id(record["text"]))
    return Probe(tuple(ids), tuple(texts), display_path(path), tuple(images) if images else None)


def _parse_tsv(path: Path) -> Probe:
    ids, texts, images = [], [], []
    for number, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        name, tab, caption = line.partition("\t")
        if not tab:
            raise FormatError(f"{path}:{number}: expected file<TAB>caption")
        images.append(_image_path(path.parent, name.strip(), f"{path}:{number}"))
        ids.append(Path(name.strip()).stem)
        texts.append(caption.strip())
    return Probe(tuple(ids), tuple(texts), display_path(path), tuple(images))


def _parse_folder(folder: Path) -> Probe:
    for name in CAPTION_FILES:
        captions = folder / name
        if captions.is_file():
            probe = _parse_jsonl(captions) if name.endswith(".jsonl") else _parse_tsv(captions)
            if probe.images is None:
                raise FormatError(f'{captions}: an image folder\'s captions need "image" fields')
            return probe
    raise FormatError(f"{folder} is a folder without {' or '.join(CAPTION_FILES)}: "
                      "an image probe folder needs a captions file")


def load_probe(path: str | Path | None = None, *, limit: int | None = None) -> Probe:
    """Read a probe set from a text or JSONL file or an image folder with captions (``None``: the
    shipped general English probe; :data:`IMAGE_PROBE` is the shipped image+text probe).

    ``limit`` keeps the first ``limit`` samples.
    """
    path = Path(path) if path is not None else DEFAULT_PROBE
    if path.is_dir():
        probe = _parse_folder(path)
    elif path.suffix in (".jsonl", ".json"):
        probe = _parse_jsonl(path)
    elif path.suffix == ".tsv":
        probe = _parse_tsv(path)
    else:
        texts = [line.strip() for line in _read_lines(path) if line.strip()]
        probe = Probe.from_texts(texts, source=display_path(path)) if texts else None
        if probe is None:
            raise FormatError(f"probe file is empty: {path}")
    if limit is not None:
        if limit < 1:
            raise InputError(f"limit must be a positive number of samples, got {limit}")
        probe = probe.subset(limit)
    return probe
