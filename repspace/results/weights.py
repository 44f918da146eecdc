"""The result of a weight-space analysis: per tensor records, a per-model summary, JSON, CSV and
figures (see :func:`repspace.analysis.weights.weight_report`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from repspace.results.base import Result
from repspace.results.tables import fixed_width, fmt
from repspace.utils.files import csv_text

#: Per tensor columns of a weight report, with what each holds (dW = W_tuned - W_base).
WEIGHT_COLUMNS: dict[str, str] = {
    "kind": "matrix (2-D weight changed by tuning, LoRA/DoRA/IA3 merged in), vector (1-D: "
            "bias, LayerNorm), tensor (other shapes), or added (a tensor the base lacks: "
            "adapter weights, prefix/prompt embeddings)",
    "shape": "shape of the tensor",
    "params": "number of entries",
    "norm_base": "||W_base||_F (L2 norm for vectors)",
    "dw_frobenius": "||dW||_F",
    "rel_frobenius": "||dW||_F / ||W_base||_F (0 = unchanged)",
    "dw_spectral": "||dW||_2, the largest singular value of dW",
    "rel_spectral": "||dW||_2 / ||W_base||_2",
    "numerical_rank": "numerical rank of dW (of the tensor, for added ones): singular values "
                      "above max(eps ||W_tuned||_F, max(m, n) eps s_1), eps of the stored dtype",
    "effective_rank": "effective rank of the dW spectrum (Roy & Vetterli 2007; of the tensor "
                      "for added ones)",
    "energy_rank": "fewest singular directions of dW carrying the energy fraction of the "
                   "settings (default 90%) of sum s_i^2",
    "intruders": "intruder dimensions (Shuttleworth et al. 2024): top-k left singular vectors "
                 "of W_tuned whose max |cos| with every singular vector of W_base is < epsilon",
    "intruder_share": "share of the spectral energy (sum s_i^2) of W_tuned the intruders carry",
    "angle_max_deg": "largest principal angle (degrees) between the top singular subspaces "
                     "(left, dimension `top`) of W_base and W_tuned",
    "angle_mean_deg": "mean of those principal angles (degrees)",
    "norm": "Frobenius norm of an added tensor",
}

#: Per model summary columns (over that model's records).
SUMMARY_COLUMNS: dict[str, str] = {
    "matrices": "weight matrices changed",
    "vectors": "1-D (and other non-matrix) tensors changed",
    "changed_params": "entries of the changed base tensors",
    "added_tensors": "tensors added by tuning",
    "added_params": "entries of the added tensors",
    "rel_frobenius_mean": "mean relative ||dW||_F over the changed matrices",
    "rel_frobenius_max": "largest relative ||dW||_F of a changed matrix",
    "numerical_rank_median": "median numerical rank of dW over the changed matrices",
    "effective_rank_mean": "mean effective rank of dW over the changed matrices",
    "energy_rank_median": "median energy rank of dW over the changed matrices",
    "intruders": "intruder dimensions, summed over the changed matrices",
    "intruder_share_mean": "mean share of spectral energy carried by intruders",
    "angle_max_deg": "largest principal angle between top singular subspaces (degrees)",
}

#: Lists kept per record in the JSON (not in the CSV).
LIST_KEYS = ("spectrum", "intruder_max_cos", "angles_deg")


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _median(values: list[float]) -> float | int | None:
    """The median, as an int when it is one (the median of ranks is mostly a rank)."""
    if not values:
        return None
    median = float(np.median(values))
    return int(median) if median.is_integer() else median


@dataclass
class ModelInfo:
    """A compared model: display name, source and fingerprint."""

    name: str
    source: str
    fingerprint: str
    method: str | None = None


@dataclass
class WeightReport(Result):
    """Weight-space changes of tuned models against their base; no data involved.

    ``records`` has one dict per (model, tensor that tuning changed or added) with the keys
    ``model``, ``name`` (the base's parameter name), ``layer`` (the block it lies in, e.g.
    ``encoder.layer.3``, or ``None``), ``matrix`` (its path inside the block without
    ``.weight``, e.g. ``attention.self.query``), the :data:`WEIGHT_COLUMNS` that apply, and
    for matrices the lists ``spectrum`` (singular values of dW; of the tensor for added ones),
    ``intruder_max_cos`` and ``angles_deg``. ``layers`` lists the blocks in order.
    """

    base: ModelInfo
    models: list[ModelInfo]
    layers: list[str]
    records: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)

    kind: ClassVar[str] = "repspace-weights"
    what: ClassVar[str] = "weight report"
    stem: ClassVar[str] = "weights"

    def model_records(self, model: str, kind: str | None = None) -> list[dict[str, Any]]:
        """The records of one model (of one ``kind`` if given)."""
        if model not in [m.name for m in self.models]:
            raise KeyError(f"no model named {model!r}; models: {[m.name for m in self.models]}")
        return [r for r in self.records
                if r["model"] == model and (kind is None or r["kind"] == kind)]

    def summary(self) -> list[dict[str, Any]]:
        """One row per model with the :data:`SUMMARY_COLUMNS` (``None`` where undefined, e.g.
        means over no changed matrix)."""
        rows = []
        for model in self.models:
            mats = self.model_records(model.name, "matrix")
            others = [r for r in self.model_records(model.name) if r["kind"] in ("vector",
                                                                                   "tensor")]
            added = self.model_records(model.name, "added")

            def values(key: str, records: list[dict[str, Any]] = mats) -> list[float]:
                return [r[key] for r in records if r.get(key) is not None
                        and np.isfinite(r[key])]

            rows.append({
                "model": model.name, "method": model.method, "matrices": len(mats),
                "vectors": len(others),
                "changed_params": sum(r["params"] for r in mats + others),
                "added_tensors": len(added), "added_params": sum(r["params"] for r in added),
                "rel_frobenius_mean": _mean(values("rel_frobenius")),
                "rel_frobenius_max": max(values("rel_frobenius"), default=None),
                "numerical_rank_median": _median(values("numerical_rank")),
                "effective_rank_mean": _mean(values("effective_rank")),
                "energy_rank_median": _median(values("energy_rank")),
                "intruders": int(sum(values("intruders"))) if mats else None,
                "intruder_share_mean": _mean(values("intruder_share")),
                "angle_max_deg": max(values("angle_max_deg"), default=None)})
        return rows

    def table(self, *, detail: bool = False) -> str:
        """A readable table: the per-model summary, or with ``detail`` one row per tensor."""
        if not detail:
            rows = self.summary()
            header = ["model", *SUMMARY_COLUMNS]
            return fixed_width(header, [[r[c] if c == "model" else fmt(r[c]) for c in header]
                                        for r in rows])
        columns = ["kind", "shape", "rel_frobenius", "rel_spectral", "numerical_rank",
                   "effective_rank", "energy_rank", "intruders", "intruder_share",
                   "angle_max_deg", "norm"]
        header = ["model", "name", *columns]
        return fixed_width(header, [[r["model"], r["name"], *(fmt(r.get(c)) for c in columns)]
                                    for r in self.records], text_columns=4)

    def _fields(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary(), "columns": WEIGHT_COLUMNS,
                "summary_columns": SUMMARY_COLUMNS}

    def to_csv(self, path: str | Path | None = None) -> str:
        """One row per record with every scalar column (the lists are in the JSON); also
        written to ``path`` if given."""
        return csv_text(self.records, ["model", "name", "layer", "matrix", *WEIGHT_COLUMNS],
                        path)

    @classmethod
    def _from_fields(cls, data: dict[str, Any], source: str) -> WeightReport:
        return cls(base=ModelInfo(**data["base"]),
                   models=[ModelInfo(**m) for m in data["models"]], layers=data["layers"],
                   records=data["records"], settings=data["settings"])

    def plot_heatmap(self) -> Any:
        """Relative ||dW||_F per layer and matrix type, one panel per model."""
        from repspace.plots.weights import plot_dw_heatmap

        return plot_dw_heatmap(self)

    def plot_spectra(self) -> Any:
        """Singular value spectra of dW (and of added tensors), one panel per model."""
        from repspace.plots.weights import plot_dw_spectra

        return plot_dw_spectra(self)

    def plot_intruders(self) -> Any:
        """Intruder dimensions per layer, one line per model."""
        from repspace.plots.weights import plot_intruders

        return plot_intruders(self)

    def save_figures(self, out_dir: str | Path) -> list[Path]:
        """Write every figure as PNG and PDF into ``out_dir``; returns the paths."""
        from repspace.plots.weights import save_weight_figures

        return [p for paths in save_weight_figures(self, Path(out_dir)).values() for p in paths]
