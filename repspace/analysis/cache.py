"""The cache of captured feature stores that ``repspace compare`` and the studies reuse: one
store per (model fingerprint, probe fingerprint, capture settings), under
``$REPSPACE_CACHE`` or ``~/.cache/repspace``."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from repspace.capture import capture
from repspace.capture.run import capture_settings
from repspace.errors import FormatError
from repspace.models import LoadedModel
from repspace.probes import Probe
from repspace.store import FeatureStore


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
                   vision_tokens: str = "patches") -> Path:
    """Capture ``model`` unless a complete store with the same key is cached (an interrupted
    one is resumed). ``modality`` and ``vision_tokens`` apply to image+text probes."""
    image_text = ({"modality": modality, "vision_tokens": vision_tokens}
                  if probe.images is not None else None)
    path = store_path(cache_dir, model, probe,
                      capture_settings(layers, pooling, tokens, max_length, image_text))
    if path.exists():
        try:
            with FeatureStore(path):
                return path
        except FormatError:
            pass
    return capture(model, probe, out=path, layers=layers, pooling=pooling, tokens=tokens,
                   batch_size=batch_size, max_length=max_length, device=device,
                   resume=True, progress=progress, modality=modality,
                   vision_tokens=vision_tokens)
