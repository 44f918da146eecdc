"""The protocol every result follows (comparison, weight report, streamed metrics, demo).

A result is a dataclass of plain numbers with a ``kind`` and a format ``version``:

- :meth:`Result.to_dict` / :meth:`Result.from_dict`: plain values (lists, floats, strings),
  with ``kind`` and ``version`` in the dict;
- :meth:`Result.to_json` / :meth:`Result.from_json`: the same as a JSON file (NaN as null),
  checked on read (another kind or an unknown version is a :class:`~repspace.errors.FormatError`);
- :meth:`Result.table`: a readable fixed-width table;
- :meth:`Result.save`: ``STEM.json``, ``STEM.csv`` and the figures (PNG + PDF) in a folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypeVar

from repspace.errors import FormatError
from repspace.utils.files import check_output, json_text, read_json

R = TypeVar("R", bound="Result")


class Result:
    """Base class of the result objects (see the module docstring)."""

    #: The ``kind`` written into the JSON (``repspace-compare``, ...).
    kind: ClassVar[str] = ""
    #: The format version written into the JSON; a newer one is refused on read.
    version: ClassVar[int] = 1
    #: What a file of this kind holds, for error messages.
    what: ClassVar[str] = "result"
    #: Stem of the files :meth:`save` writes (``STEM.json``, ``STEM.csv``).
    stem: ClassVar[str] = "result"

    def _fields(self) -> dict[str, Any]:
        """The result's own plain values (without ``kind``/``version``)."""
        raise NotImplementedError

    @classmethod
    def _from_fields(cls: type[R], data: dict[str, Any], source: str) -> R:
        raise NotImplementedError

    def table(self) -> str:
        """A readable fixed-width table of the result."""
        raise NotImplementedError

    def to_csv(self, path: str | Path | None = None) -> str:
        """The result's rows as CSV; also written to ``path`` if given."""
        raise NotImplementedError

    def save_figures(self, out_dir: str | Path) -> list[Path]:
        """Write the result's figures (PNG + PDF) into ``out_dir``; returns the paths."""
        return []

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain values, with ``kind`` and ``version``."""
        return {"kind": self.kind, "version": self.version, **self._fields()}

    @classmethod
    def from_dict(cls: type[R], data: Any, source: str | Path = "<memory>") -> R:
        """The result that :meth:`to_dict` gave ``data``; ``source`` names it in errors."""
        if not isinstance(data, dict) or data.get("kind") != cls.kind:
            raise FormatError(f"{source} is not a repspace {cls.what}")
        if not isinstance(data.get("version"), int) or data["version"] > cls.version:
            raise FormatError(f"{source} is a {cls.what} of format version "
                              f"{data.get('version')}; this repspace reads up to "
                              f"version {cls.version}")
        try:
            return cls._from_fields(data, str(source))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{source} is not a complete {cls.what} ({exc})") from exc

    def to_json(self, path: str | Path | None = None) -> str:
        """:meth:`to_dict` as JSON (NaN written as null); also written to ``path`` if given
        (atomically)."""
        return json_text(self.to_dict(), path)

    @classmethod
    def from_json(cls: type[R], path: str | Path) -> R:
        """Read a result written by :meth:`to_json` (or :meth:`save`)."""
        return cls.from_dict(read_json(path, cls.what), path)

    def save(self, out_dir: str | Path) -> list[Path]:
        """``STEM.json``, ``STEM.csv`` and the figures in the folder ``out_dir``."""
        out = check_output(out_dir, folder=True)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / f"{self.stem}.json", out / f"{self.stem}.csv"]
        self.to_json(paths[0])
        self.to_csv(paths[1])
        return [*paths, *self.save_figures(out)]
