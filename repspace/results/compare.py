"""The result of a comparison of tuned models with their base: per-layer numbers, as tables,
JSON and CSV, and their figures."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from repspace.results.base import Result
from repspace.results.tables import fixed_width, fmt, fmt_bytes
from repspace.results.weights import ModelInfo, WeightReport
from repspace.utils.files import csv_text

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
class CompareResult(Result):
    """Per-layer metrics of tuned models against their base on one probe set.

    ``records`` has one dict per (model, layer) with the keys ``model``, ``layer``,
    ``modality`` (``text`` for a text probe; ``all``, ``image`` or ``text`` for the layers of an
    image+text probe, see :mod:`repspace.capture.multimodal`) and the :data:`COLUMNS`;
    ``spectra`` maps model name (and ``base``) to the singular values of its last-layer
    features; ``cka_matrices`` maps model name to the layer x layer linear CKA matrix
    (rows: base layers, columns: the model's layers); ``stores`` maps model name (and
    ``base``) to the feature store the numbers were computed from; ``weights`` is the
    weight-space analysis of the tuned checkpoints (:class:`~repspace.results.weights.WeightReport`)
    or ``None``; ``displacement`` maps model name to the per-sample displacement at one layer
    (:func:`repspace.metrics.displacement`): ``layer``, ``k``, per-sample ``distance`` and
    ``knn_change`` (in sample order), and the ``most`` and ``least`` moved samples (``index``,
    ``id``, ``text``, ``distance``, ``knn_change``), most moved first in ``most``, least first
    in ``least``. A comparison of stores larger than its memory budget is streamed:
    ``settings["streamed"]`` is true, ``settings["left_out"]`` names the metrics it leaves out
    (``None`` in the records, no displacement), and ``settings["memory_budget"]`` and
    ``settings["memory_in_memory"]`` give the budget and the in-memory estimate in bytes.
    """

    base: ModelInfo
    models: list[ModelInfo]
    layers: list[str]
    records: list[dict[str, Any]]
    spectra: dict[str, list[float]] = field(default_factory=dict)
    cka_matrices: dict[str, list[list[float]]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    stores: dict[str, str] = field(default_factory=dict)
    weights: WeightReport | None = None
    displacement: dict[str, dict[str, Any]] = field(default_factory=dict)

    kind: ClassVar[str] = "repspace-compare"
    what: ClassVar[str] = "comparison result"
    stem: ClassVar[str] = "metrics"
    columns: ClassVar[dict[str, str]] = COLUMNS

    def column(self, model: str, key: str) -> list[float]:
        """One metric across layers for one model, in layer order."""
        by_layer = {r["layer"]: r[key] for r in self.records if r["model"] == model}
        if not by_layer:
            raise KeyError(f"no model named {model!r}; models: {[m.name for m in self.models]}")
        return [by_layer[layer] for layer in self.layers]

    @property
    def modalities(self) -> list[str]:
        """The modalities of the records, in layer order (``["text"]`` for a text probe)."""
        return list(dict.fromkeys(r.get("modality", "text") for r in self.records))

    def for_modality(self, modality: str) -> CompareResult:
        """The part of this result on the layers of one ``modality`` (records, layers and
        layer x layer CKA matrices; spectra and settings as they are)."""
        if modality not in self.modalities:
            raise KeyError(f"no records of modality {modality!r}; modalities: "
                           f"{', '.join(self.modalities)}")
        records = [r for r in self.records if r.get("modality", "text") == modality]
        keep = {r["layer"] for r in records}
        index = [i for i, layer in enumerate(self.layers) if layer in keep]
        return CompareResult(
            base=self.base, models=self.models, layers=[self.layers[i] for i in index],
            records=records, spectra=self.spectra,
            cka_matrices={name: [[matrix[i][j] for j in index] for i in index]
                          for name, matrix in self.cka_matrices.items()},
            settings={**self.settings, "modality": modality}, stores=self.stores,
            displacement=self.displacement)

    def table(self, columns: list[str] | None = None) -> str:
        """A readable fixed-width table of the records (with a ``modality`` column when the
        records have more than one modality)."""
        columns = columns or [c for c in COLUMNS if any(r.get(c) is not None
                                                          for r in self.records)]
        text = ["model", "layer", *(["modality"] if len(self.modalities) > 1 else [])]
        rows = [[*(r.get(c, "text") for c in text), *(fmt(r.get(c)) for c in columns)]
                for r in self.records]
        table = fixed_width([*text, *columns], rows, text_columns=len(text))
        return (table + (f"\n\n{self.moved_table()}" if self.displacement else "")
                + (f"\n\n{self.streamed_note()}" if self.settings.get("streamed") else ""))

    def streamed_note(self) -> str:
        """Why a comparison was streamed and what it left out (empty if it was not)."""
        if not self.settings.get("streamed"):
            return ""
        return (f"streamed: in memory this comparison needs about "
                f"{fmt_bytes(self.settings['memory_in_memory'])}, more than the memory budget "
                f"of {fmt_bytes(self.settings['memory_budget'])}; left out (they need all rows "
                f"at once): {', '.join(self.settings.get('left_out', []))}")

    def moved_table(self, width: int = 60) -> str:
        """The most and least moved samples of each model (``displacement``), with their text
        cut to ``width`` characters; empty without a displacement section."""
        if not self.displacement:
            return ""
        rows, texts = [], ["text", "----"]
        for model, moved in self.displacement.items():
            for which in ("most", "least"):
                for rank, s in enumerate(moved[which], start=1):
                    text = " ".join(s["text"].split())
                    texts.append(text if len(text) <= width else text[:width - 3] + "...")
                    rows.append([model, f"{which} {rank}", fmt(s["distance"]),
                                 fmt(s["knn_change"])])
        numbers = fixed_width(["model", "moved", "distance", "knn_change"], rows,
                              text_columns=2, width=None).splitlines()
        layers = sorted({moved["layer"] for moved in self.displacement.values()})
        return "\n".join([
            f"most and least moved samples, layer {', '.join(layers)} (distance: from the base",
            "position after Procrustes alignment; knn_change: share of k nearest neighbours "
            "replaced)",
            *(f"{line}  {text}" for line, text in zip(numbers, texts, strict=True))])

    def _fields(self) -> dict[str, Any]:
        data = {**asdict(self), "columns": COLUMNS}
        data["weights"] = self.weights.to_dict() if self.weights is not None else None
        return data

    def to_csv(self, path: str | Path | None = None) -> str:
        """The per-layer records as CSV; also written to ``path`` if given."""
        return csv_text(self.records, ["model", "layer", "modality", *COLUMNS], path)

    @classmethod
    def _from_fields(cls, data: dict[str, Any], source: str) -> CompareResult:
        weights = data.get("weights")
        return cls(base=ModelInfo(**data["base"]),
                   models=[ModelInfo(**m) for m in data["models"]], layers=data["layers"],
                   records=data["records"], spectra=data["spectra"],
                   cka_matrices=data["cka_matrices"], settings=data["settings"],
                   stores=data.get("stores", {}),
                   weights=WeightReport.from_dict(weights, source) if weights else None,
                   displacement=data.get("displacement", {}))

    def save(self, out_dir: str | Path) -> list[Path]:
        """``metrics.json``, ``metrics.csv`` and every figure (PNG + PDF) in ``out_dir``; with
        a weight section also ``weights.json``, ``weights.csv`` and its figures."""
        paths = super().save(out_dir)
        return paths + (self.weights.save(out_dir) if self.weights is not None else [])

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

    def plot_displacement(self) -> Any:
        """Distribution over the samples of each model's displacement and k-NN change."""
        from repspace.plots.compare import plot_displacement

        return plot_displacement(self)

    def plot_cka_heatmap(self) -> Any:
        """Layer x layer linear CKA between the base and each tuned model."""
        from repspace.plots.compare import plot_cka_heatmaps

        return plot_cka_heatmaps(self)

    def save_figures(self, out_dir: str | Path) -> list[Path]:
        """Write every figure as PNG and PDF into ``out_dir``; returns the paths."""
        from repspace.plots.compare import save_compare_figures

        return save_compare_figures(self, Path(out_dir))
