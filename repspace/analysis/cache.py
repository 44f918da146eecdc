"""The cache of captured feature stores that ``repspace compare`` and the studies reuse: one
store per (model fingerprint, probe fingerprint, capture settings), under
``$REPSPACE_CACHE`` or ``~/.cache/repspace``, in ``stores/``.

Beside each store ``NAME.h5`` lies ``NAME.json`` (what it holds: model source, probe, settings;
written before the capture starts) and, while a capture runs or after it was interrupted,
``NAME.h5.partial/``. :func:`cached_stores` lists them (``repspace cache list``) and
:func:`clean_cache` removes them (``repspace cache clean``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from repspace.capture import capture
from repspace.capture.run import capture_settings
from repspace.errors import FormatError, InputError
from repspace.models import LoadedModel
from repspace.probes import Probe
from repspace.store import FeatureStore, partial_path
from repspace.utils.files import json_text, temporary_name


def default_cache_dir() -> Path:
    """Where cached feature stores live: ``$REPSPACE_CACHE`` or ``~/.cache/repspace``."""
    return Path(os.environ.get("REPSPACE_CACHE", Path.home() / ".cache" / "repspace"))


def store_path(cache_dir: Path, model: LoadedModel, probe: Probe, settings: dict) -> Path:
    """The cache file of ``model`` on ``probe`` under ``settings``."""
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return cache_dir / "stores" / f"{model.fingerprint[:16]}-{probe.fingerprint[:12]}-{key}.h5"


def cached_capture(model: LoadedModel, probe: Probe, *, cache_dir: Path, layers: list[str],
                   pooling: str, tokens: bool, max_length: int, batch_size: int, device: str,
                   progress: bool, modality: str = "split",
                   vision_tokens: str = "patches", skip_first: bool = False) -> Path:
    """Capture ``model`` unless a complete store with the same key is cached (an interrupted
    one is resumed). ``modality`` and ``vision_tokens`` apply to image+text probes;
    ``skip_first`` leaves each sample's first token out (:func:`repspace.capture.capture`)."""
    image_text = ({"modality": modality, "vision_tokens": vision_tokens}
                  if probe.images is not None else None)
    settings = capture_settings(layers, pooling, tokens, max_length, image_text, skip_first)
    path = store_path(cache_dir, model, probe, settings)
    if path.exists():
        try:
            with FeatureStore(path):
                return path
        except FormatError:
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    json_text({"model": model.source, "model_fingerprint": model.fingerprint,
               "probe": probe.source, "probe_fingerprint": probe.fingerprint,
               "samples": len(probe), "settings": settings}, path.with_suffix(".json"))
    return capture(model, probe, out=path, layers=layers, pooling=pooling, tokens=tokens,
                   batch_size=batch_size, max_length=max_length, device=device,
                   resume=True, progress=progress, modality=modality,
                   vision_tokens=vision_tokens, skip_first=skip_first)


@dataclass
class CachedStore:
    """One store of the cache, with the files that belong to it.

    ``size`` counts every file of the store (the store, its description and an unfinished
    capture's folder); ``complete`` is false for a capture that is running or was
    interrupted; ``modified`` is the newest modification time (seconds since the epoch).
    """

    path: Path
    model: str
    probe: str
    samples: int | None
    size: int
    modified: float
    complete: bool

    @property
    def files(self) -> list[Path]:
        """The paths that belong to this store (those that exist)."""
        paths = [self.path, self.path.with_suffix(".json"), partial_path(self.path),
                 temporary_name(self.path)]
        return [p for p in paths if p.exists()]

    @property
    def date(self) -> str:
        """``modified`` as a local date and time (``2025-01-31 14:05``)."""
        return datetime.fromtimestamp(self.modified).strftime("%Y-%m-%d %H:%M")


def _size_and_time(path: Path) -> tuple[int, float]:
    """Bytes of the files at or under ``path`` and their newest modification time (files
    that a running capture renames meanwhile are skipped)."""
    size, newest = 0, 0.0
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        try:
            stat = item.stat()
        except FileNotFoundError:
            continue
        size += 0 if item.is_dir() else stat.st_size
        newest = max(newest, stat.st_mtime)
    return size, newest


def _describe(path: Path) -> tuple[str, str, int | None]:
    """(model source, probe, samples) of a cached store, from its description or else from
    the store itself."""
    try:
        info = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        return str(info["model"]), str(info["probe"]), info.get("samples")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        with FeatureStore(path) as store:
            meta = store.meta
            return (str(meta.get("model_source", "?")),
                    f"probe {str(meta.get('probe_fingerprint', '?'))[:12]}",
                    len(store.sample_ids))
    except FormatError:
        return "?", "?", None


def cached_stores(cache_dir: str | Path | None = None) -> list[CachedStore]:
    """Every store in the cache (complete or not), oldest first."""
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "stores"
    if not folder.is_dir():
        return []
    names = {p.name.removesuffix(".partial") for p in folder.glob("*.h5.partial")}
    names |= {p.name for p in folder.glob("*.h5")}
    names |= {p.with_suffix(".h5").name for p in folder.glob("*.json")}
    stores = []
    for name in sorted(names):
        path = folder / name
        sizes = [_size_and_time(p) for p in (path, path.with_suffix(".json"), partial_path(path),
                                              temporary_name(path)) if p.exists()]
        model, probe, samples = _describe(path)
        stores.append(CachedStore(path, model, probe, samples, sum(s for s, _ in sizes),
                                  max(t for _, t in sizes), path.is_file()))
    return sorted(stores, key=lambda s: s.modified)


def clean_cache(cache_dir: str | Path | None = None, *, older_than_days: float | None = None,
                model: str | None = None, everything: bool = False) -> list[CachedStore]:
    """Remove cached stores and return those removed: ``everything``, or those not modified
    for ``older_than_days`` days, or those of a ``model`` (a substring of the model source or
    the start of its fingerprint, as in the store's name). Criteria given together must all
    hold."""
    if not everything and older_than_days is None and model is None:
        raise InputError("say what to clean: --all, --older-than DAYS or --model NAME")
    if older_than_days is not None and older_than_days < 0:
        raise InputError(f"--older-than must be a number of days >= 0, got {older_than_days}")
    now = time.time()
    removed = []
    for store in cached_stores(cache_dir):
        if older_than_days is not None and now - store.modified < older_than_days * 86400:
            continue
        if model is not None and model not in store.model and not store.path.name.startswith(
                model):
            continue
        for path in store.files:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        removed.append(store)
    return removed
