"""Figures of a :class:`~repspace.results.weights.WeightReport` (no metric is computed here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.ticker import MaxNLocator

from repspace.plots.style import (
    COLUMN_WIDTH,
    color,
    layer_axis,
    marker,
    paper_style,
    save,
)


def _panels(count: int, height: float = 2.3) -> tuple[Any, list[Any]]:
    """A grid of ``count`` panels (at least one), four per row."""
    count = max(1, count)
    cols = min(4, count)
    rows = int(np.ceil(count / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(max(COLUMN_WIDTH, 2.4 * cols + 0.6),
                                                  height * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[count:]:
        ax.axis("off")
    return fig, list(axes.flat[:count])


def _with(report: Any, keep: Any) -> tuple[list[Any], str]:
    """The models with a record that ``keep`` accepts, and a note naming the others."""
    shown = [m for m in report.models if any(keep(r) for r in report.model_records(m.name))]
    others = [m.name for m in report.models if m not in shown]
    return shown, ("not shown (nothing to draw): " + ", ".join(others)) if others else ""


def _block_matrix_types(report: Any) -> list[str]:
    """Matrix types (paths inside a block) of the changed block matrices, in first-seen order."""
    return list(dict.fromkeys(r["matrix"] for r in report.records
                              if r["kind"] == "matrix" and r["layer"] is not None))


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def plot_dw_heatmap(report: Any) -> Any:
    """Relative ||dW||_F (log colour scale) per block (x) and matrix type (y), one panel per
    model; blank cells are matrices the model left unchanged."""
    types = _block_matrix_types(report)

    def drawn(r: dict[str, Any]) -> bool:
        return r["kind"] == "matrix" and r["layer"] is not None and bool(r["rel_frobenius"])

    models, note = _with(report, drawn)
    with paper_style():
        fig, axes = _panels(len(models), height=0.22 * len(types) + 1.3)
        if not models:
            _empty(axes[0], "no weight matrix inside a block changed")
            return fig
        values = [r["rel_frobenius"] for r in report.records if drawn(r)]
        norm = LogNorm(min(values), max(values))
        cols = min(4, len(models))
        for i, (ax, model) in enumerate(zip(axes, models, strict=True)):
            grid = np.full((len(types), len(report.layers)), np.nan)
            for r in filter(drawn, report.model_records(model.name)):
                grid[types.index(r["matrix"]), report.layers.index(r["layer"])] = \
                    r["rel_frobenius"]
            image = ax.imshow(np.ma.masked_invalid(grid), norm=norm, cmap="viridis",
                              aspect="auto", origin="lower")
            ax.set_title(model.name)
            layer_axis(ax, report.layers)
            ax.set_yticks(range(len(types)), types if i % cols == 0 else [""] * len(types))
            ax.grid(False)
        fig.colorbar(image, ax=axes, label=r"$\|\Delta W\|_F / \|W\|_F$", shrink=0.9)
        if note:
            fig.suptitle(note, fontsize=6, y=0)
    return fig


def plot_dw_spectra(report: Any) -> Any:
    """Singular values of dW per changed matrix (solid) and of added matrices (dashed) above
    the numerical-rank tolerance, normalised by the largest, log scale; one panel per model,
    colour = matrix type."""
    types = list(dict.fromkeys(r["matrix"] for r in report.records if r.get("spectrum")))
    models, note = _with(report, lambda r: bool(r.get("spectrum")))
    with paper_style():
        fig, axes = _panels(len(models))
        if not models:
            _empty(axes[0], "no matrix changed or added")
            return fig
        for ax, model in zip(axes, models, strict=True):
            ax.set_title(model.name)
            records = [r for r in report.model_records(model.name) if r.get("spectrum")]
            labelled: set[str] = set()
            for r in records:
                # Values below the rank tolerance are rounding noise of the stored weights.
                s = np.asarray(r["spectrum"][: r["numerical_rank"]], dtype=float)
                s = s / s[0] if s.size else s
                index = types.index(r["matrix"])
                ax.plot(np.arange(1, s.size + 1), s, color=color(index), linewidth=0.8,
                        alpha=0.7, linestyle="--" if r["kind"] == "added" else "-",
                        label=None if r["matrix"] in labelled else r["matrix"])
                labelled.add(r["matrix"])
            if max(r["numerical_rank"] for r in records) > 20:
                ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("Index")
            ax.legend(frameon=False, fontsize=5)
        axes[0].set_ylabel(r"Singular value of $\Delta W$ / largest")
        if note:
            fig.suptitle(note, fontsize=6, y=0)
    return fig


def plot_intruders(report: Any) -> Any:
    """Intruder dimensions per block (summed over its matrices), one line per model."""
    with paper_style():
        fig, ax = plt.subplots()
        if not report.layers:
            _empty(ax, "the model has no stack of blocks")
            return fig
        x = np.arange(len(report.layers))
        highest = 1.0
        for i, model in enumerate(report.models):
            counts = np.zeros(len(report.layers))
            for r in report.model_records(model.name, "matrix"):
                if r["layer"] is not None:
                    counts[report.layers.index(r["layer"])] += r["intruders"]
            ax.plot(x, counts, color=color(i), marker=marker(i), label=model.name)
            highest = max(highest, counts.max())
        layer_axis(ax, report.layers)
        ax.set_ylim(-0.05 * highest, 1.1 * highest)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        k, epsilon = report.settings.get("k"), report.settings.get("epsilon")
        ax.set_ylabel(f"Intruder dimensions (k={k}, eps={epsilon})")
        ax.legend(frameon=False, ncol=2 if len(report.models) > 4 else 1)
    return fig


def save_weight_figures(report: Any, out_dir: Path) -> dict[str, list[Path]]:
    """Every weight figure as PNG and PDF; returns ``{figure name: paths}``."""
    figures = {
        "weights_dw_heatmap": plot_dw_heatmap(report),
        "weights_dw_spectra": plot_dw_spectra(report),
        "weights_intruders": plot_intruders(report),
    }
    return {name: save(fig, out_dir, name) for name, fig in figures.items()}
