"""Result objects of a comparison: the numbers, as tables, JSON and CSV, and their figures."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from repspace.errors import FormatError

#: Per-layer columns of a comparison, with what each holds.
COLUMNS: dict[str, str] = {
    "cka": "linear CKA to the base, biased HSIC estimator (1 = same space up to rotation/scale)",
    "cka_debiased": "linear CKA to the base, unbiased HSIC estimator (Song et al. 2012)",
    "effective_rank_base": "effective rank of the base features (Roy & Vetterli 2007)",
    "effective_rank": "effective rank of the tuned features",
    "rank_ratio_base": "PT-PEFT rank ratio of the base token matrices (90% energy)",
    "rank_ratio": "PT-PEFT rank ratio of the tuned token matrices (90% energy)",
    "procrustes": "orthogonal Procrustes distance to the base (0 = same up to rotation/scale)",
    "mutual_knn": "mutual k-NN overlap with the base (1 = same neighbours)",
}


@dataclass
class ModelInfo:
    """A compared model: display name, source and fingerprint."""

    name: str
    source: str
    fingerprint: str
    method: str | None = None


@dataclass
class CompareResult:
    """Per-layer metrics of tuned models against their base on one probe set.

    ``records`` has one dict per (model, layer) with the keys ``model``, ``layer`` and the
    :data:`COLUMNS`; ``spectra`` maps model name (and ``base``) to the singular values of its
    last-layer features; ``cka_matrices`` maps model name to the layer x layer linear CKA matrix
    (rows: base layers, columns: the model's layers); ``stores`` maps model name (and
    ``base``) to the feature store the numbers were computed from.
    """

    base: ModelInfo
    models: list[ModelInfo]
    layers: list[str]
    records: list[dict[str, Any]]
    spectra: dict[str, list[float]] = field(default_factory=dict)
    cka_matrices: dict[str, list[list[float]]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    stores: dict[str, str] = field(default_factory=dict)

    def column(self, model: str, key: str) -> list[float]:
        """One metric across layers for one model, in layer order."""
        by_layer = {r["layer"]: r[key] for r in self.records if r["model"] == model}
        if not by_layer:
            raise KeyError(f"no model named {model!r}; models: {[m.name for m in self.models]}")
        return [by_layer[layer] for layer in self.layers]

    def table(self, columns: list[str] | None = None) -> str:
        """A readable fixed-width table of the records."""
        columns = columns or [c for c in COLUMNS if any(r.get(c) is not None
                                                          for r in self.records)]
        header = ["model", "layer", *columns]
        rows = [[r["model"], r["layer"], *(_fmt(r.get(c)) for c in columns)]
                for r in self.records]
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
        lines = ["  ".join(str(x).rjust(w) if i > 1 else str(x).ljust(w)
                           for i, (x, w) in enumerate(zip(row, widths, strict=True)))
                 for row in [header, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "repspace-compare", "version": 1, **asdict(self),
                "columns": COLUMNS}

    def to_json(self, path: str | Path | None = None) -> str:
        """The whole result as JSON (NaN written as null); also written to ``path`` if given."""
        text = json.dumps(finite_json(self.to_dict()), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    def to_csv(self, path: str | Path | None = None) -> str:
        """The per-layer records as CSV; also written to ``path`` if given."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["model", "layer", *COLUMNS],
                                extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.records)
        if path is not None:
            Path(path).write_text(buffer.getvalue(), encoding="utf-8")
        return buffer.getvalue()

    @classmethod
    def from_json(cls, path: str | Path) -> CompareResult:
        """Read a result written by :meth:`to_json`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise FormatError(f"{path} is not a readable comparison result") from exc
        if data.get("kind") != "repspace-compare":
            raise FormatError(f"{path} is not a repspace comparison result")
        return cls(base=ModelInfo(**data["base"]),
                   models=[ModelInfo(**m) for m in data["models"]], layers=data["layers"],
                   records=data["records"], spectra=data["spectra"],
                   cka_matrices=data["cka_matrices"], settings=data["settings"],
                   stores=data.get("stores", {}))

    def plot_cka(self, ax: Any = None) -> Any:
        """Linear CKA to the base by layer, one line per tuned model."""
        from repspace.plots.compare import plot_metric_by_layer

        return plot_metric_by_layer(self, "cka", ax=ax)

    def plot_effective_rank(self, ax: Any = None) -> Any:
        """Effective rank by layer, for the base and every tuned model."""
        from repspace.plots.compare import plot_metric_by_layer

        return plot_metric_by_layer(self, "effective_rank", ax=ax, base_key="effective_rank_base")

    def plot_spectra(self, ax: Any = None) -> Any:
        """Singular value spectra of the last layer's features (log scale)."""
        from repspace.plots.compare import plot_spectra

        return plot_spectra(self, ax=ax)

    def plot_cka_heatmap(self) -> Any:
        """Layer x layer linear CKA between the base and each tuned model."""
        from repspace.plots.compare import plot_cka_heatmaps

        return plot_cka_heatmaps(self)

    def save_figures(self, out_dir: str | Path) -> list[Path]:
        """Write every figure as PNG and PDF into ``out_dir``; returns the paths."""
        from repspace.plots.compare import save_compare_figures

        return save_compare_figures(self, Path(out_dir))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def finite_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value
