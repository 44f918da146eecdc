"""Options of the weight-space analysis (:func:`repspace.analysis.weights.weight_report`); the
library's signature and the CLI flags take their defaults from here."""

from __future__ import annotations

from dataclasses import dataclass

from repspace.utils.options import Options, option


@dataclass
class WeightOptions(Options):
    """Weight space: intruder dimensions, subspace angles, ranks."""

    k: int = option(10, "top tuned singular vectors tested for intruders", minimum=1)
    epsilon: float = option(0.5, "intruder threshold on the largest |cosine|")
    top: int = option(10, "dimension of the singular subspaces whose angles are reported",
                      minimum=1)
    energy: float = option(0.9, "energy fraction of the energy rank")
    max_dim: int | None = option(None, "only norms (no SVD) for matrices with a side longer than "
                                 "N, e.g. vocabulary embeddings (default: analyse all)")
