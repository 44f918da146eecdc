"""2-D UMAP embeddings of base and tuned features (McInnes et al. 2018), for the figure that
shows where tuning moved the points."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


def umap_coordinates(base: np.ndarray, tuned: dict[str, np.ndarray], points: int,
                     seed: int = 0) -> dict[str, Any]:
    """For each tuned model, one joint UMAP of the first ``points`` base rows and the same rows
    of the tuned features (so both clouds live in one map): ``{name: {"base": [[x, y], ...],
    "tuned": [[x, y], ...]}}``."""
    from umap import UMAP

    n = min(points, base.shape[0])
    maps: dict[str, Any] = {}
    for name, features in tuned.items():
        joint = np.concatenate([base[:n], features[:n]]).astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xy = UMAP(n_neighbors=15, min_dist=0.1, metric="cosine",
                      random_state=seed).fit_transform(joint)
        maps[name] = {"base": xy[:n].tolist(), "tuned": xy[n:].tolist()}
    return maps
