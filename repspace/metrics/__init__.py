"""Metrics: pure functions of arrays that compare representations or describe one.

Inputs are (n samples x d features) array-likes (numpy arrays, lists, CPU torch tensors);
everything is computed in float64. Bad inputs raise :class:`repspace.errors.InputError`.
Each function documents its formula, reference, direction and invariances.
"""

from repspace.metrics.alignment import principal_angles, procrustes_distance
from repspace.metrics.cca import pwcca, svcca
from repspace.metrics.cka import cka_matrix, linear_cka, rbf_cka
from repspace.metrics.neighbors import mutual_knn
from repspace.metrics.spectrum import (
    effective_rank,
    mean_normalized_spectrum,
    participation_ratio,
    rank_ratio,
    singular_values,
    stable_rank,
)

__all__ = [
    "cka_matrix",
    "effective_rank",
    "linear_cka",
    "mean_normalized_spectrum",
    "mutual_knn",
    "participation_ratio",
    "principal_angles",
    "procrustes_distance",
    "pwcca",
    "rank_ratio",
    "rbf_cka",
    "singular_values",
    "stable_rank",
    "svcca",
]
