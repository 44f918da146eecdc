"""Metrics: pure functions of arrays that compare representations or describe one.

Inputs are (n samples x d features) array-likes (numpy arrays, lists, CPU torch tensors);
everything is computed in float64. Bad inputs raise :class:`repspace.errors.InputError`.
Each function documents its formula, reference, direction and invariances.
"""

from repspace.metrics.accumulators import (
    CovarianceMoments,
    GramMoments,
    minibatch_cka,
    minibatch_cka_matrix,
)
from repspace.metrics.alignment import principal_angles, procrustes_distance
from repspace.metrics.cca import pwcca, svcca
from repspace.metrics.cka import cka_matrix, linear_cka, rbf_cka
from repspace.metrics.dissimilarity import rdm, rsa
from repspace.metrics.isotropy import anisotropy
from repspace.metrics.neighbors import mutual_knn
from repspace.metrics.per_sample import Displacement, displacement
from repspace.metrics.retrieval import retrieval_accuracy
from repspace.metrics.spectrum import (
    effective_rank,
    mean_normalized_spectrum,
    participation_ratio,
    rank_ratio,
    singular_values,
    stable_rank,
)
from repspace.metrics.stats import (
    bootstrap_ci,
    mean_std,
    paired_permutation_test,
    permutation_test,
)
from repspace.metrics.weights import (
    Intruders,
    check_weight_options,
    delta_norms,
    energy_rank,
    intruder_dimensions,
    numerical_rank,
    singular_subspace_angles,
    tensor_spectrum,
    weight_change,
)

__all__ = [
    "CovarianceMoments",
    "Displacement",
    "GramMoments",
    "Intruders",
    "anisotropy",
    "bootstrap_ci",
    "check_weight_options",
    "cka_matrix",
    "delta_norms",
    "displacement",
    "effective_rank",
    "energy_rank",
    "intruder_dimensions",
    "linear_cka",
    "mean_normalized_spectrum",
    "mean_std",
    "minibatch_cka",
    "minibatch_cka_matrix",
    "mutual_knn",
    "numerical_rank",
    "paired_permutation_test",
    "participation_ratio",
    "permutation_test",
    "principal_angles",
    "procrustes_distance",
    "pwcca",
    "rank_ratio",
    "rbf_cka",
    "rdm",
    "retrieval_accuracy",
    "rsa",
    "singular_subspace_angles",
    "singular_values",
    "stable_rank",
    "svcca",
    "tensor_spectrum",
    "weight_change",
]
