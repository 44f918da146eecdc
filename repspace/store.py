"""The HDF5 feature store: one file per model x probe set. The only module that imports h5py.

Layout (format ``repspace-features``, version 1)::

    /                     attrs: format, format_version, model_fingerprint, model_source,
                                 probe_fingerprint, pooling, settings, layer_order, tokens,
                                 repspace_version, created, n_expected, n_written, complete
    /sample_ids           (N,) UTF-8 strings: the join key between stores
    /layers/<name>/pooled (N, d) float32
    /layers/<name>/tokens (total_tokens, d) float32   (optional, real tokens only)
    /layers/<name>/offsets (N + 1,) int64              (sample i is tokens[offsets[i]:offsets[i+1]])
                          attrs: module_path, dim, token_selection, modality

Datasets are chunked by rows, compressed, and grow batch by batch. ``n_written`` is updated
only after a batch is fully written and flushed, so an interrupted capture can resume from it;
``complete`` is set last, after the final flush.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from repspace.errors import FormatError, InputError, MismatchError
from repspace.version import __version__

FORMAT = "repspace-features"
FORMAT_VERSION = 1
_CHUNK_ROWS = 256
_COMPRESSION = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
_STR = h5py.string_dtype("utf-8")


def _open(path: Path, mode: str) -> h5py.File:
    try:
        return h5py.File(path, mode, locking=False)
    except FileNotFoundError as exc:
        raise FormatError(f"feature store not found: {path}") from exc
    except OSError as exc:
        raise FormatError(f"{path} is not a readable HDF5 feature store (corrupt or "
                          "truncated)") from exc


class StoreWriter:
    """Append pooled (and optionally token) features batch by batch.

    Parameters
    ----------
    path:
        The ``.h5`` file to create (or to continue, with ``resume=True``).
    meta:
        Root attributes: ``model_fingerprint``, ``model_source``, ``probe_fingerprint``,
        ``pooling``, ``settings`` (a dict, stored as JSON) and ``n_expected``.
    layers:
        Layer name -> attributes (``module_path``, ``dim``, ``token_selection``, ``modality``).
    tokens:
        Also keep the ragged per-sample token matrices.
    resume:
        Continue an incomplete store written with the same ``meta``; rows past its last
        completed batch are dropped.
    """

    def __init__(self, path: str | Path, *, meta: Mapping[str, Any],
                 layers: Mapping[str, Mapping[str, Any]], tokens: bool = False,
                 resume: bool = False) -> None:
        self.path = Path(path)
        self.tokens = tokens
        self.layers = dict(layers)
        if resume and self.path.exists():
            self._file = _open(self.path, "r+")
            self._check_resumable(meta)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = _open(self.path, "w")
            self._create(meta)
        self.n_written = int(self._file.attrs["n_written"])
        self._truncate(self.n_written)

    def _create(self, meta: Mapping[str, Any]) -> None:
        f = self._file
        f.attrs.update({
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "model_fingerprint": meta["model_fingerprint"], "model_source": meta["model_source"],
            "probe_fingerprint": meta["probe_fingerprint"], "pooling": meta["pooling"],
            "settings": json.dumps(meta.get("settings", {}), sort_keys=True),
            "n_expected": int(meta["n_expected"]), "n_written": 0, "complete": False,
            "repspace_version": __version__, "tokens": self.tokens,
            "layer_order": json.dumps(list(self.layers)),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        f.create_dataset("sample_ids", shape=(0,), maxshape=(None,), dtype=_STR,
                         chunks=(4096,))
        group = f.create_group("layers")
        for name, attrs in self.layers.items():
            layer = group.create_group(name)
            layer.attrs.update({k: v for k, v in attrs.items() if v is not None})
            dim = int(attrs["dim"])
            layer.create_dataset("pooled", shape=(0, dim), maxshape=(None, dim), dtype="f4",
                                 chunks=(_CHUNK_ROWS, dim), **_COMPRESSION)
            if self.tokens:
                layer.create_dataset("tokens", shape=(0, dim), maxshape=(None, dim),
                                     dtype="f4", chunks=(4 * _CHUNK_ROWS, dim), **_COMPRESSION)
                layer.create_dataset("offsets", data=np.zeros(1, np.int64), maxshape=(None,),
                                     chunks=(4096,))
        f.flush()

    def _check_resumable(self, meta: Mapping[str, Any]) -> None:
        attrs = self._file.attrs
        if attrs.get("format") != FORMAT:
            raise FormatError(f"{self.path} is not a repspace feature store: cannot resume it")
        for key in ("model_fingerprint", "probe_fingerprint", "pooling"):
            if attrs.get(key) != meta[key]:
                raise MismatchError(f"cannot resume {self.path}: its {key} differs from this "
                                    "capture's; remove the file or write another")
        if json.loads(attrs.get("settings", "{}")) != json.loads(
                json.dumps(meta.get("settings", {}), sort_keys=True)):
            raise MismatchError(f"cannot resume {self.path}: it was captured with other settings")
        if bool(attrs.get("tokens")) != self.tokens:
            raise MismatchError(f"cannot resume {self.path}: token capture setting differs")
        if json.loads(attrs.get("layer_order", "[]")) != list(self.layers):
            raise MismatchError(f"cannot resume {self.path}: it holds other layers")
        self._file.attrs["complete"] = False

    def _truncate(self, n: int) -> None:
        self._file["sample_ids"].resize((n,))
        for name in self.layers:
            layer = self._file["layers"][name]
            layer["pooled"].resize((n, layer["pooled"].shape[1]))
            if self.tokens:
                layer["offsets"].resize((n + 1,))
                total = int(layer["offsets"][n])
                layer["tokens"].resize((total, layer["tokens"].shape[1]))

    def append(self, ids: Sequence[str], pooled: Mapping[str, np.ndarray],
               tokens: Mapping[str, Sequence[np.ndarray]] | None = None) -> None:
        """Write one batch: ``pooled[layer]`` is (B, d); ``tokens[layer]`` is B arrays (L_i, d)."""
        n, b = self.n_written, len(ids)
        for name in self.layers:
            layer = self._file["layers"][name]
            rows = np.asarray(pooled[name], dtype=np.float32)
            if rows.shape != (b, layer["pooled"].shape[1]):
                raise InputError(f"layer {name}: batch of shape {rows.shape}, expected "
                                 f"({b}, {layer['pooled'].shape[1]})")
            layer["pooled"].resize((n + b, rows.shape[1]))
            layer["pooled"][n:] = rows
            if self.tokens:
                if tokens is None:
                    raise InputError("this store keeps tokens: pass tokens for every batch")
                mats = tokens[name]
                lengths = np.fromiter((len(m) for m in mats), np.int64, count=b)
                offsets = layer["offsets"]
                start = int(offsets[n])
                offsets.resize((n + b + 1,))
                offsets[n + 1:] = start + np.cumsum(lengths)
                data = layer["tokens"]
                data.resize((start + int(lengths.sum()), data.shape[1]))
                data[start:] = np.concatenate(mats).astype(np.float32, copy=False)
        self._file["sample_ids"].resize((n + b,))
        self._file["sample_ids"][n:] = list(ids)
        self._file.flush()
        self.n_written = n + b
        self._file.attrs["n_written"] = self.n_written
        self._file.flush()

    def finish(self) -> Path:
        """Mark the store complete (after checking every expected sample was written)."""
        expected = int(self._file.attrs["n_expected"])
        if self.n_written != expected:
            raise InputError(f"{self.path}: {self.n_written} of {expected} samples written")
        self._file.flush()
        self._file.attrs["complete"] = True
        self._file.close()
        return self.path

    def close(self) -> None:
        """Close without marking complete (the store stays resumable)."""
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FeatureStore:
    """Read a feature store. Open with ``FeatureStore(path)``; close with ``.close()`` or ``with``.

    Opening checks the format and version and, unless ``allow_incomplete``, that the store is
    complete. Arrays are read lazily, one layer at a time.
    """

    def __init__(self, path: str | Path, *, allow_incomplete: bool = False) -> None:
        self.path = Path(path)
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
        n = int(self._file.attrs["n_written"])
        return [s.decode() if isinstance(s, bytes) else s for s in self._file["sample_ids"][:n]]

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
