"""Figures of a :class:`~repspace.results.compare.CompareResult` (no metric is computed here)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np

from repspace.plots.style import (
    BASE_COLOR,
    color,
    draw_spectra,
    layer_axis,
    layer_title,
    marker,
    paper_style,
    save,
    short_layer,
)

if TYPE_CHECKING:
    from repspace.results import CompareResult

_LABELS = {
    "cka": "Linear CKA to base",
    "cka_debiased": "Linear CKA to base (debiased)",
    "effective_rank": "Effective rank",
    "rank_ratio": "Rank ratio (90% energy)",
    "procrustes": "Procrustes distance to base",
    "mutual_knn": "Mutual k-NN overlap",
}


def _axes(ax: Any) -> tuple[Any, Any]:
    if ax is None:
        fig, ax = plt.subplots()
        return fig, ax
    return ax.figure, ax


def plot_metric_by_layer(result: CompareResult, key: str, *, ax: Any = None,
                         base_key: str | None = None) -> Any:
    """One line per tuned model of metric ``key`` across layers (plus the base, if
    ``base_key`` names its column). Returns the figure."""
    if key not in result.columns:
        raise KeyError(f"unknown metric {key!r}; metrics: {', '.join(result.columns)}")
    with paper_style():
        fig, ax = _axes(ax)
        x = np.arange(len(result.layers))
        if base_key is not None:
            ax.plot(x, result.column(result.models[0].name, base_key), color=BASE_COLOR,
                    linestyle="--", marker="o", fillstyle="none", linewidth=1.0, zorder=3,
                    label="base")  # on top: a model that kept the base's values hides it
        for i, model in enumerate(result.models):
            ax.plot(x, result.column(model.name, key), color=color(i), marker=marker(i),
                    label=model.name)
        layer_axis(ax, result.layers)
        ax.set_ylabel(_LABELS.get(key, key))
        if key in ("cka", "cka_debiased", "mutual_knn"):
            low = min(0.0, *[v for m in result.models for v in result.column(m.name, key)
                             if v is not None and np.isfinite(v)])
            ax.set_ylim(low, 1.02)
        ax.legend(frameon=False)
    return fig


def plot_spectra(result: CompareResult, *, ax: Any = None) -> Any:
    """Singular values of the last layer's features (normalised by the largest), log scale."""
    with paper_style():
        fig, ax = _axes(ax)
        draw_spectra(ax, result.spectra, ["base", *(m.name for m in result.models)])
        ax.set_title(f"Last layer ({layer_title(result.layers[-1])})")
    return fig


def plot_cka_heatmaps(result: CompareResult) -> Any:
    """Layer x layer linear CKA (base layers x tuned layers), one panel per tuned model."""
    with paper_style():
        n = len(result.models)
        fig, axes = plt.subplots(1, n, figsize=(2.4 * n + 0.6, 2.4), squeeze=False)
        ticks = [short_layer(layer) for layer in result.layers]
        image = None
        for i, (ax, model) in enumerate(zip(axes[0], result.models, strict=True)):
            matrix = np.asarray(result.cka_matrices[model.name], dtype=float)
            image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis", origin="lower")
            ax.set_xticks(range(len(ticks)), ticks)
            ax.set_yticks(range(len(ticks)), ticks)
            ax.set_title(model.name)
            ax.set_xlabel("Tuned layer")
            if i == 0:
                ax.set_ylabel("Base layer")
            ax.grid(False)
        fig.colorbar(image, ax=axes[0].tolist(), label="Linear CKA", shrink=0.9)
    return fig


def plot_displacement(result: CompareResult) -> Any:
    """Per-sample displacement at the last layer (``result.displacement``), one box per model:
    the distance to the base position after Procrustes alignment (left) and the share of k
    nearest neighbours replaced (right). Returns the figure."""
    models = [m.name for m in result.models if m.name in result.displacement]
    panels = (("distance", "Distance to base position\n(after Procrustes alignment)"),
              ("knn_change", "Share of k-NN replaced"))
    with paper_style():
        fig, axes = plt.subplots(1, 2, figsize=(max(5.0, 1.6 * len(models) + 2.4), 2.6))
        for ax, (key, label) in zip(axes, panels, strict=True):
            boxes = ax.boxplot([result.displacement[m][key] for m in models], patch_artist=True,
                               widths=0.6, flierprops={"markersize": 2},
                               medianprops={"color": BASE_COLOR})
            for i, box in enumerate(boxes["boxes"]):
                box.set_facecolor(color(i))
                box.set_alpha(0.6)
            ax.set_xticks(range(1, len(models) + 1), models)
            ax.set_ylabel(label)
            if key == "knn_change":
                ax.set_ylim(-0.02, 1.02)
        layers = sorted({result.displacement[m]["layer"] for m in models})
        fig.suptitle(f"Which samples moved ({', '.join(layer_title(x) for x in layers)})")
    return fig


def plot_by_modality(result: CompareResult, key: str, *, base_key: str | None = None) -> Any:
    """Metric ``key`` by layer, one panel per modality of the records (image+text probes:
    ``image``, ``text``, ``all``; see :meth:`~repspace.results.compare.CompareResult.for_modality`).
    Returns the figure."""
    modalities = result.modalities
    with paper_style():
        fig, axes = plt.subplots(1, len(modalities), figsize=(3.2 * len(modalities), 2.6),
                                 squeeze=False)
        for ax, modality in zip(axes[0], modalities, strict=True):
            plot_metric_by_layer(result.for_modality(modality), key, ax=ax, base_key=base_key)
            ax.set_title(f"{modality} tokens" if modality != "all" else "all tokens")
    return fig


def save_compare_figures(result: CompareResult, out_dir: Path) -> list[Path]:
    """Write the comparison figures as PNG and PDF (with a displacement section also
    ``displacement``; with records of several modalities also ``cka_by_modality`` and
    ``effective_rank_by_modality``); returns the paths written."""
    figures = {
        "cka_by_layer": plot_metric_by_layer(result, "cka"),
        "effective_rank_by_layer": plot_metric_by_layer(result, "effective_rank",
                                                        base_key="effective_rank_base"),
        "spectra_last_layer": plot_spectra(result),
        "cka_heatmap": plot_cka_heatmaps(result),
    }
    if result.displacement:
        figures["displacement"] = plot_displacement(result)
    if len(result.modalities) > 1:
        figures["cka_by_modality"] = plot_by_modality(result, "cka")
        figures["effective_rank_by_modality"] = plot_by_modality(
            result, "effective_rank", base_key="effective_rank_base")
    paths: list[Path] = []
    for stem, fig in figures.items():
        paths.extend(save(fig, out_dir, stem))
    return paths
