"""Files written atomically, and the JSON / CSV text of results.

Every file repspace writes (checkpoints, feature stores, results, figures, reports) goes through
:func:`atomic_path`: it is written under a temporary name beside its final name
(``.NAME.tmp``), flushed, and renamed into place, so a killed or failed write never leaves a
partial file under the final name, and a failure removes the temporary file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from repspace.errors import FormatError, InputError


def temporary_name(path: str | Path) -> Path:
    """The temporary name a write of ``path`` goes through: ``.NAME.tmp`` in its folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


def fsync(path: str | Path) -> None:
    """Flush the file ``path`` to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_output(path: str | Path, *, folder: bool = False, flag: str = "--out") -> Path:
    """Check, before any work, that the output ``path`` (a file, or with ``folder`` a folder of
    results) can be written: it is not a folder where a file goes or a file where a folder
    goes, and its nearest existing parent is a folder that can be written into. A failure is
    an :class:`~repspace.errors.InputError` naming ``flag``; nothing is created.
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path} is a file; give a folder for the results")
    if not folder and path.is_dir():
        raise InputError(f"{flag} {path} is a folder; give a file name")
    parent = path if folder else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"{flag} {path}: {parent} is a file, not a folder")
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {path}: cannot write into {parent} (permission denied)")
    return path


@contextmanager
def atomic_path(path: str | Path, *, sync: bool = False) -> Iterator[Path]:
    """A temporary path to write ``path`` through; renamed to ``path`` when the block ends
    without an error (after an fsync with ``sync``), removed when it raises.

    A write that fails for lack of space or any other :class:`OSError` is re-raised as an
    :class:`OSError` with its errno and ``filename`` set to ``path``, so error messages name the
    file the user asked for rather than the temporary one. Parent folders are created.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        if sync:
            fsync(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, write: Callable[[Path], None], *, sync: bool = False) -> Path:
    """Call ``write(tmp)`` to write the file, then rename it to ``path`` (see
    :func:`atomic_path`)."""
    with atomic_path(path, sync=sync) as tmp:
        write(tmp)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def finite_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


def json_text(data: Any, path: str | Path | None = None) -> str:
    """``data`` as indented JSON, NaN/inf written as null; also written to ``path`` if given
    (atomically)."""
    text = json.dumps(finite_json(data), indent=2)
    if path is not None:
        write_text_atomic(path, text + "\n")
    return text


def read_json(path: str | Path, what: str) -> Any:
    """The JSON in ``path``; a missing or malformed file is a :class:`FormatError` naming
    ``what`` it should have held."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path} is not a readable {what}") from exc


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
             path: str | Path | None = None) -> str:
    """``rows`` as CSV with the given ``columns`` (other keys ignored); also written to
    ``path`` if given (atomically)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    if path is not None:
        write_text_atomic(path, buffer.getvalue())
    return buffer.getvalue()
