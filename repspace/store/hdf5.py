"""The HDF5 feature store: one file per model x probe set. The only module that imports h5py.

Layout (format ``repspace-features``, version 1)::

    /                     attrs: format, format_version, model_fingerprint, model_source,
                                 probe_fingerprint, pooling, settings, layer_order, tokens,
                                 repspace_version, created, n_expected, n_written, complete
                                 (and shard_of, for one shard of a larger probe)
    /sample_ids           (N,) UTF-8 strings: the join key between stores
    /layers/<name>/pooled (N, d) float32
    /layers/<name>/tokens (total_tokens, d) float32   (optional, real tokens only)
    /layers/<name>/offsets (N + 1,) int64              (sample i is tokens[offsets[i]:offsets[i+1]])
                          attrs: module_path, dim, token_selection, modality

Datasets are chunked by whole rows (at most about 1 MiB a chunk, sized so that the chunks fill
evenly) and not compressed: gzip-1 saves only 9 to 13% of the size of float32 activations, at
50 times the write time (``benchmarks/bench_capture.py``).

Crash safety (a capture killed at any moment, SIGKILL included)
    An unfinished capture into ``x.h5`` lives in the folder ``x.h5.partial/``: a JSON header
    (the attributes above) and segment files ``seg-<start>-<stop>.h5`` of consecutive samples.
    Each segment is written to a temporary name, closed and then renamed: a rename is atomic, so
    a segment file that exists is whole, and a kill loses at most the segment being written.
    ``x.h5`` itself is written only at the end: the segments are copied into ``.x.h5.tmp``, the
    data are flushed, then ``complete`` is set, the file is fsynced and renamed to ``x.h5``.
    So ``x.h5`` never exists unfinished, readers never open a file that is being written, and
    HDF5's own state after a kill (not crash-consistent) never matters. Resuming keeps the
    segments that continue each other from sample 0, deletes the rest and captures from there;
    capture runs in fixed windows of samples, so a resumed capture computes exactly the batches,
    and therefore the bits, of an uninterrupted one.

Readers open stores read-only without HDF5 file locking, so any number of processes can read
one store at once. Opening a store whose capture is unfinished (running or killed) raises a
:class:`~repspace.errors.FormatError` saying it is incomplete, with the samples written so far.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from repspace.errors import FormatError, InputError, MismatchError
from repspace.utils.files import write_atomic
from repspace.version import __version__

FORMAT = "repspace-features"
FORMAT_VERSION = 1
PARTIAL_SUFFIX = ".partial"
_HEADER = "header.json"
_SEGMENT = re.compile(r"seg-(\d{12})-(\d{12})\.h5")
_CHUNK_BYTES = 1 << 20
_STR = h5py.string_dtype("utf-8")


def _open(path: Path, mode: str) -> h5py.File:
    try:
        return h5py.File(path, mode, locking=False)
    except FileNotFoundError as exc:
        raise FormatError(f"feature store not found: {path}") from exc
    except OSError as exc:
        raise FormatError(f"{path} is not a readable HDF5 feature store (corrupt or "
                          "truncated)") from exc


def partial_path(path: str | Path) -> Path:
    """The folder an unfinished capture into ``path`` keeps its segments in."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def _scan(folder: Path) -> tuple[list[tuple[int, int, Path]], list[Path]]:
    """The (start, stop, file) of the segments in ``folder`` that continue each other from 0,
    and the rest: leftovers of a killed write (``*.tmp``) and segments after a gap."""
    found, junk = [], []
    for item in folder.iterdir():
        match = _SEGMENT.fullmatch(item.name)
        if match:
            found.append((int(match[1]), int(match[2]), item))
        elif item.name != _HEADER:
            junk.append(item)
    kept: list[tuple[int, int, Path]] = []
    for start, stop, item in sorted(found):
        if start == (kept[-1][1] if kept else 0) and stop > start:
            kept.append((start, stop, item))
        else:
            junk.append(item)
    return kept, junk


def partial_progress(path: str | Path) -> tuple[int, int] | None:
    """(samples written, samples expected) of an unfinished capture into ``path``, or ``None``
    when there is none. Reads only file names and the small header, never a file being written.
    """
    folder = partial_path(path)
    try:
        header = json.loads((folder / _HEADER).read_text())
        kept, _ = _scan(folder)
    except (OSError, ValueError):
        return None
    return (kept[-1][1] if kept else 0), int(header["attrs"]["n_expected"])


def _store_attrs(meta: Mapping[str, Any], layers: Sequence[str], tokens: bool) -> dict[str, Any]:
    """The root attributes of a new store from a capture's ``meta``."""
    attrs = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model_fingerprint": meta["model_fingerprint"], "model_source": meta["model_source"],
        "probe_fingerprint": meta["probe_fingerprint"], "pooling": meta["pooling"],
        "settings": json.dumps(meta.get("settings", {}), sort_keys=True),
        "n_expected": int(meta["n_expected"]), "n_written": 0, "complete": False,
        "repspace_version": __version__, "tokens": tokens, "layer_order": json.dumps(list(layers)),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if meta.get("shard_of") is not None:
        attrs["shard_of"] = json.dumps(meta["shard_of"], sort_keys=True)
    return attrs


class StoreWriter:
    """Append pooled (and optionally token) features, one segment of samples at a time.

    While the capture runs, ``<path>.partial/`` holds a small JSON header and one HDF5 segment
    file per :meth:`append` call (named by its sample range, written under a temporary name and
    renamed into place once closed: a segment that exists is whole). :meth:`finish` concatenates
    the segments into ``.<path>.tmp``, sets ``complete`` after the data is flushed, fsyncs and
    renames it to ``path``, then removes the folder. ``path`` therefore never exists unfinished.

    Parameters
    ----------
    path : str or Path
        The ``.h5`` store to write (or to continue, with ``resume=True``).
    meta : Mapping[str, Any]
        Root attributes: ``model_fingerprint``, ``model_source``, ``probe_fingerprint``,
        ``pooling``, ``settings`` (a dict, stored as JSON), ``n_expected`` and, for one shard of
        a larger probe, ``shard_of`` (see :func:`merge_stores`).
    layers : Mapping[str, Mapping[str, Any]]
        Layer name -> attributes (``module_path``, ``dim``, ``token_selection``, ``modality``).
        A ``dim`` of ``None`` is taken from the first batch.
    tokens : bool
        Also keep the ragged per-sample token matrices.
    resume : bool
        Continue an unfinished capture into ``path`` made with the same ``meta``; samples after
        its last whole segment are captured again. A complete store at ``path`` made with the
        same ``meta`` is kept as it is (``n_written`` is then ``n_expected``). Otherwise start
        anew.
    """

    def __init__(self, path: str | Path, *, meta: Mapping[str, Any],
                 layers: Mapping[str, Mapping[str, Any]], tokens: bool = False,
                 resume: bool = False) -> None:
        self.path = Path(path)
        self.tokens = tokens
        self.layers = {name: dict(attrs) for name, attrs in layers.items()}
        self.folder = partial_path(self.path)
        self.attrs = _store_attrs(meta, self.layers, tokens)
        header = self.folder / _HEADER
        self.finished = False
        existing = self._complete_store() if resume and not header.is_file() else None
        if resume and header.is_file():
            self._check_resumable(json.loads(header.read_text()))
        elif existing is not None:
            self._check_resumable({"attrs": existing})
            self.finished = True
        else:
            if self.folder.exists():
                shutil.rmtree(self.folder)
            self.folder.mkdir(parents=True)
            write_atomic(header, lambda tmp: tmp.write_text(json.dumps(
                {"attrs": self.attrs, "layers": self.layers}, default=_plain)))
        self.segments: list[tuple[int, int, Path]] = []
        if not self.finished:
            self.segments, junk = _scan(self.folder)
            for item in junk:
                item.unlink()
        self.n_written = (int(self.attrs["n_expected"]) if self.finished else
                          self.segments[-1][1] if self.segments else 0)

    def _complete_store(self) -> dict[str, Any] | None:
        """The attributes of the complete store at ``path``, or ``None`` when there is none."""
        try:
            with FeatureStore(self.path) as store:
                return {k: (v.item() if isinstance(v, np.generic) else v)
                        for k, v in store._file.attrs.items()}
        except FormatError:
            return None

    def _check_resumable(self, header: Mapping[str, Any]) -> None:
        old = header["attrs"]
        if old.get("format") != FORMAT:
            raise FormatError(f"{self.folder} is not a repspace capture: cannot resume it")
        for key in ("model_fingerprint", "probe_fingerprint", "pooling"):
            if old.get(key) != self.attrs[key]:
                raise MismatchError(f"cannot resume {self.path}: its {key} differs from this "
                                    "capture's; remove it or write another")
        if old.get("settings") != self.attrs["settings"]:
            raise MismatchError(f"cannot resume {self.path}: it was captured with other settings")
        if bool(old.get("tokens")) != self.tokens:
            raise MismatchError(f"cannot resume {self.path}: token capture setting differs")
        if old.get("layer_order") != self.attrs["layer_order"] or old.get(
                "shard_of") != self.attrs.get("shard_of"):
            raise MismatchError(f"cannot resume {self.path}: it holds other layers or samples")
        self.attrs["created"] = old["created"]

    def append(self, ids: Sequence[str], pooled: Mapping[str, np.ndarray],
               tokens: Mapping[str, Sequence[np.ndarray]] | None = None) -> None:
        """Write one segment: ``pooled[layer]`` is (B, d); ``tokens[layer]`` is B arrays
        (L_i, d). ``n_written`` advances once the segment file is whole on disk."""
        start, b = self.n_written, len(ids)
        if self.tokens and tokens is None:
            raise InputError("this store keeps tokens: pass tokens for every batch")
        rows = {}
        for name, attrs in self.layers.items():
            rows[name] = np.asarray(pooled[name], dtype=np.float32)
            dim = attrs.get("dim") or rows[name].shape[-1]
            if rows[name].shape != (b, dim):
                raise InputError(f"layer {name}: batch of shape {rows[name].shape}, expected "
                                 f"({b}, {dim})")
            attrs["dim"] = int(dim)

        def write(tmp: Path) -> None:
            with _open(tmp, "w") as f:
                f.create_dataset("sample_ids", data=list(ids), dtype=_STR)
                for name, data in rows.items():
                    layer = f.create_group(f"layers/{name}")
                    layer["pooled"] = data
                    if tokens is not None and self.tokens:
                        mats = tokens[name]
                        lengths = np.fromiter((len(m) for m in mats), np.int64, count=b)
                        layer["offsets"] = np.concatenate([[0], np.cumsum(lengths)])
                        layer["tokens"] = (np.concatenate(mats).astype(np.float32, copy=False)
                                           if b else np.zeros((0, data.shape[1]), np.float32))

        segment = self.folder / f"seg-{start:012d}-{start + b:012d}.h5"
        write_atomic(segment, write)
        self.segments.append((start, start + b, segment))
        self.n_written = start + b

    def finish(self) -> Path:
        """Assemble the segments into the complete store at ``path`` (after checking every
        expected sample was written) and remove the unfinished capture."""
        if self.finished:
            return self.path
        expected = int(self.attrs["n_expected"])
        if self.n_written != expected:
            raise InputError(f"{self.path}: {self.n_written} of {expected} samples written")
        _concatenate(self.path, self.attrs, self.layers, [s[2] for s in self.segments],
                     self.tokens)
        shutil.rmtree(self.folder)
        return self.path

    def close(self) -> None:
        """Nothing to release: every segment is closed once written; the capture stays
        resumable until :meth:`finish`."""

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _plain(value: Any) -> Any:
    """JSON for numpy scalars in layer attributes."""
    return value.item() if isinstance(value, np.generic) else str(value)


def _chunk_rows(dim: int, rows: int) -> int:
    """Rows per chunk of a (rows, dim) float32 dataset: whole rows, at most about 1 MiB, and
    as many rows in every chunk as the data fill (space is allocated in whole chunks)."""
    chunks = -(-rows // max(1, _CHUNK_BYTES // (4 * max(dim, 1))))
    return max(1, -(-rows // max(chunks, 1)))


def _concatenate(out: Path, attrs: Mapping[str, Any], layers: Mapping[str, Mapping[str, Any]],
                 sources: Sequence[Path], tokens: bool) -> None:
    """Write the store ``out`` from ``sources`` (segments or stores with the same layers, in
    sample order), through ``.<out>.tmp``: ``complete`` is set only after the data is flushed,
    and the file is fsynced before it is renamed to ``out``."""
    sizes: list[tuple[int, dict[str, int]]] = []
    dims: dict[str, int] = {}
    for source in sources:
        with _open(source, "r") as src:
            group = src["layers"]
            n = src["sample_ids"].shape[0]
            totals = {}
            for name in layers:
                if name not in group:
                    raise FormatError(f"{source} has no layer {name!r}")
                dim = group[name]["pooled"].shape[1]
                if dims.setdefault(name, dim) != dim:
                    raise MismatchError(f"layer {name}: dimension {dim} in {source}, "
                                        f"{dims[name]} before it")
                totals[name] = int(group[name]["offsets"][n]) if tokens else 0
            sizes.append((n, totals))
    n_total = sum(n for n, _ in sizes)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w", locking=False, rdcc_nbytes=_CHUNK_BYTES * 8) as f:
            f.attrs.update({**attrs, "n_written": n_total, "complete": False})
            ids = f.create_dataset("sample_ids", shape=(n_total,), dtype=_STR,
                                   chunks=(min(4096, max(n_total, 1)),), maxshape=(None,))
            outs = {}
            for name, layer_attrs in layers.items():
                layer = f.create_group(f"layers/{name}")
                layer.attrs.update({k: v for k, v in layer_attrs.items() if v is not None})
                layer.attrs["dim"] = dim = dims.get(name, int(layer_attrs.get("dim") or 0))
                shapes = {"pooled": n_total}
                if tokens:
                    shapes["tokens"] = sum(t[name] for _, t in sizes)
                    outs[name, "offsets"] = layer.create_dataset(
                        "offsets", shape=(n_total + 1,), dtype=np.int64, maxshape=(None,),
                        chunks=(min(4096, n_total + 1),))
                for key, rows in shapes.items():
                    outs[name, key] = layer.create_dataset(
                        key, shape=(rows, dim), dtype="f4", maxshape=(None, dim),
                        chunks=(_chunk_rows(dim, rows), dim))
            row, done = 0, dict.fromkeys(layers, 0)
            for source, (n, totals) in zip(sources, sizes, strict=True):
                with _open(source, "r") as src:
                    ids[row:row + n] = src["sample_ids"][:]
                    for name in layers:
                        group = src["layers"][name]
                        outs[name, "pooled"][row:row + n] = group["pooled"][:]
                        if tokens:
                            t = totals[name]
                            outs[name, "tokens"][done[name]:done[name] + t] = group["tokens"][:t]
                            outs[name, "offsets"][row:row + n + 1] = (
                                group["offsets"][:n + 1] + done[name])
                            done[name] += t
                row += n
            f.flush()
            f.attrs["complete"] = True

    write_atomic(out, write, sync=True)


def merge_stores(shards: Sequence[str | Path], out: str | Path) -> Path:
    """Merge the stores of the shards of one capture into one complete store ``out``.

    Each shard is a complete store of a contiguous run of samples of the same probe, written by
    ``capture(..., shard=(k, n))`` or by one rank of ``torchrun ... repspace capture``; its
    ``shard_of`` attribute names the whole probe (fingerprint, size) and its sample range. The
    shards may be given in any order; together they must cover the probe exactly once, with the
    same model, settings, layers and token flag. The merged store holds the samples in probe
    order and is indistinguishable from a capture in one process.
    """
    if not shards:
        raise InputError("no shard stores to merge")
    infos = []
    for path in shards:
        with FeatureStore(path) as store:
            attrs = dict(store._file.attrs)
            if "shard_of" not in attrs:
                raise InputError(f"{path} is not a shard of a capture (no shard_of attribute)")
            infos.append((json.loads(attrs["shard_of"]), Path(path), attrs,
                          {name: store.layer_attrs(name) for name in store.layers}))
    infos.sort(key=lambda info: info[0]["start"])
    whole, first_attrs, layer_attrs = infos[0][0], infos[0][2], infos[0][3]
    position = 0
    for shard, path, attrs, _ in infos:
        if shard["probe_fingerprint"] != whole["probe_fingerprint"]:
            raise MismatchError(f"{path} is a shard of another probe set than {infos[0][1]}")
        for key in ("model_fingerprint", "pooling", "settings", "tokens", "layer_order"):
            if attrs.get(key) != first_attrs.get(key):
                raise MismatchError(f"{path} and {infos[0][1]} differ in {key}: not shards of "
                                    "one capture")
        if shard["start"] != position:
            raise InputError(f"the shards do not cover the probe exactly once: samples from "
                             f"{position} on are missing or given twice (at {path})")
        position = shard["stop"]
    if position != whole["n"]:
        raise InputError(f"the shards cover {position} of the probe's {whole['n']} samples")
    attrs = {k: v for k, v in first_attrs.items() if k != "shard_of"}
    attrs.update({"probe_fingerprint": whole["probe_fingerprint"], "n_expected": whole["n"],
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _concatenate(out, attrs, layer_attrs, [info[1] for info in infos], bool(attrs["tokens"]))
    return out


class FeatureStore:
    """Read a feature store. Open with ``FeatureStore(path)``; close with ``.close()`` or ``with``.

    Opening checks the format and version and, unless ``allow_incomplete``, that the store is
    complete. Arrays are read lazily, one layer at a time.
    """

    def __init__(self, path: str | Path, *, allow_incomplete: bool = False) -> None:
        self.path = Path(path)
        unfinished = None if self.path.exists() else partial_progress(self.path)
        if unfinished is not None:
            raise FormatError(f"{self.path} is incomplete ({unfinished[0]} of {unfinished[1]} "
                              "samples; its capture is running or was interrupted): complete "
                              "it with --resume")
        self._file = _open(self.path, "r")
        attrs = self._file.attrs
        if attrs.get("format") != FORMAT:
            self.close()
            raise FormatError(f"{self.path} is not a repspace feature store")
        if attrs.get("format_version") != FORMAT_VERSION:
            version = attrs.get("format_version")
            self.close()
            raise FormatError(f"{self.path} has feature store format version {version}; "
                              f"this repspace reads version {FORMAT_VERSION}")
        if not allow_incomplete and not bool(attrs.get("complete")):
            n, expected = int(attrs.get("n_written", 0)), int(attrs.get("n_expected", 0))
            self.close()
            raise FormatError(f"{self.path} is incomplete ({n} of {expected} samples): "
                              "resume the capture with --resume")

    @property
    def meta(self) -> dict[str, Any]:
        """Root attributes, with ``settings`` decoded."""
        meta = {k: (v.item() if isinstance(v, np.generic) else v)
                for k, v in self._file.attrs.items()}
        meta["settings"] = json.loads(meta.get("settings", "{}"))
        return meta

    @property
    def complete(self) -> bool:
        return bool(self._file.attrs.get("complete"))

    @property
    def sample_ids(self) -> list[str]:
        return self.sample_ids_block(slice(None))

    @property
    def layers(self) -> list[str]:
        """Layer names in capture order."""
        return json.loads(self._file.attrs["layer_order"])

    def layer_attrs(self, layer: str) -> dict[str, Any]:
        return dict(self._layer(layer).attrs)

    def _layer(self, layer: str) -> h5py.Group:
        if layer not in self._file["layers"]:
            raise InputError(f"{self.path} has no layer {layer!r}; it has: "
                             f"{', '.join(self.layers)}")
        return self._file["layers"][layer]

    def pooled(self, layer: str) -> np.ndarray:
        """(N, d) pooled features of ``layer``."""
        n = int(self._file.attrs["n_written"])
        return self._layer(layer)["pooled"][:n]

    def pooled_block(self, layer: str, rows: slice, columns: slice | None = None) -> np.ndarray:
        """Rows ``rows`` (and optionally columns ``columns``) of ``layer``'s pooled features,
        read without the rest: streaming metrics read stores larger than memory this way."""
        n = int(self._file.attrs["n_written"])
        start, stop, _ = rows.indices(n)
        data = self._layer(layer)["pooled"]
        return data[start:stop] if columns is None else data[start:stop, columns]

    def sample_ids_block(self, rows: slice) -> list[str]:
        """The sample ids of rows ``rows``, read without the rest."""
        start, stop, _ = rows.indices(int(self._file.attrs["n_written"]))
        return [s.decode() if isinstance(s, bytes) else s
                for s in self._file["sample_ids"][start:stop]]

    @property
    def has_tokens(self) -> bool:
        return bool(self._file.attrs.get("tokens"))

    def tokens(self, layer: str) -> list[np.ndarray]:
        """The per-sample (L_i, d) token matrices of ``layer`` (real tokens only)."""
        group = self._layer(layer)
        if "tokens" not in group:
            raise InputError(f"{self.path} keeps no token features: capture with tokens=True")
        n = int(self._file.attrs["n_written"])
        offsets = group["offsets"][: n + 1]
        data = group["tokens"][: offsets[-1]]
        return [data[a:b] for a, b in itertools.pairwise(offsets)]

    def token_counts(self, layer: str) -> np.ndarray:
        """(N,) number of real tokens kept per sample."""
        n = int(self._file.attrs["n_written"])
        return np.diff(self._layer(layer)["offsets"][: n + 1])

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_aligned(a: FeatureStore, b: FeatureStore) -> list[str]:
    """The common sample ids of two stores; an error unless both hold the same ids in order."""
    ids_a, ids_b = a.sample_ids, b.sample_ids
    if ids_a == ids_b:
        return ids_a
    if set(ids_a) == set(ids_b):
        raise MismatchError(f"{a.path} and {b.path} hold the same samples in a different order")
    only = sorted(set(ids_a) ^ set(ids_b))
    raise MismatchError(f"{a.path} and {b.path} hold different samples ({len(only)} ids differ, "
                        f"e.g. {only[0]!r}): capture both on the same probe set")
