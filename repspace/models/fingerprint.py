"""Fingerprints: content hashes that identify the weights a model actually runs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch


def _update_with_tensor(digest: Any, name: str, tensor: torch.Tensor) -> None:
    t = tensor.detach().to("cpu").contiguous()
    digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def hash_tensors(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and raw bytes of ``tensors``, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        _update_with_tensor(digest, name, tensors[name])
    return digest.hexdigest()


def tuned_fingerprint(base_fingerprint: str, tuned_tensors: Mapping[str, torch.Tensor],
                      method: str, method_config: Any) -> str:
    """Fingerprint of a tuned model: base weights + tuned tensors + how they are applied.

    A tuned model that changes nothing (a linear probe: only a task head) runs the base's
    weights, so it has the base's fingerprint and shares its feature stores."""
    if not tuned_tensors and not method_config:
        return base_fingerprint
    digest = hashlib.sha256()
    digest.update(base_fingerprint.encode())
    digest.update(hash_tensors(tuned_tensors).encode())
    digest.update(method.encode())
    digest.update(json.dumps(method_config, sort_keys=True, default=str).encode())
    return digest.hexdigest()
