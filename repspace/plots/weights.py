"""Figures of a :class:`~repspace.results.weights.WeightReport` (no metric is computed here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    NullLocator,
)

from repspace.plots.style import (
    COLUMN_WIDTH,
    PALETTE,
    color,
    layer_axis,
    linestyle,
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


def _changed_block_matrix(r: dict[str, Any]) -> bool:
    """A record of a block matrix that tuning changed (``rel_frobenius`` > 0)."""
    return r["kind"] == "matrix" and r["layer"] is not None and bool(r["rel_frobenius"])


def _with(report: Any, keep: Any) -> list[Any]:
    """The models with a record that ``keep`` accepts (the others have nothing to draw: the
    tables say what they changed)."""
    return [m for m in report.models if any(keep(r) for r in report.model_records(m.name))]


def _matrix_types(report: Any, keep: Any) -> list[str]:
    """Matrix types (paths inside a block) of the records ``keep`` accepts, in the order of
    the model that changed the most types (its parameter order: query, key, value, ...)."""
    by_model = [list(dict.fromkeys(r["matrix"] for r in report.model_records(m.name) if keep(r)))
                for m in report.models]
    ordered = max(by_model, key=len, default=[])
    rest = [t for types in by_model for t in types if t not in ordered]
    return list(dict.fromkeys(ordered + rest))


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def _log_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """About ``count`` ticks with 2 significant digits, spread evenly on a log scale and all
    within [low, high] (the ends rounded inwards)."""
    def rounded(value: float, inwards: Any) -> float:
        step = 10.0 ** (np.floor(np.log10(value)) - 1)
        return float(f"{inwards(value / step) * step:.2g}")

    if high <= low:
        return [float(f"{low:.2g}")]
    inner = [float(f"{t:.2g}") for t in np.geomspace(low, high, count)[1:-1]]
    return sorted({rounded(low, np.ceil), *inner, rounded(high, np.floor)})


def _tick_text(value: float, _: Any = None) -> str:
    return f"{value:g}"


def plot_dw_heatmap(report: Any) -> Any:
    """Relative ||dW||_F (log colour scale) per block (x) and matrix type (y, in the block's
    order from the top), one panel per model that changed a block matrix; blank cells are
    matrices the model left unchanged."""
    types = _matrix_types(report, _changed_block_matrix)
    models = _with(report, _changed_block_matrix)
    with paper_style():
        fig, axes = _panels(len(models), height=0.22 * len(types) + 1.3)
        if not models:
            _empty(axes[0], "no weight matrix inside a block changed")
            return fig
        values = [r["rel_frobenius"] for r in report.records if _changed_block_matrix(r)]
        norm = LogNorm(min(values), max(values))
        cols = min(4, len(models))
        for i, (ax, model) in enumerate(zip(axes, models, strict=True)):
            grid = np.full((len(types), len(report.layers)), np.nan)
            for r in filter(_changed_block_matrix, report.model_records(model.name)):
                grid[types.index(r["matrix"]), report.layers.index(r["layer"])] = \
                    r["rel_frobenius"]
            image = ax.imshow(np.ma.masked_invalid(grid), norm=norm, cmap="viridis",
                              aspect="auto", origin="upper")
            ax.set_title(model.name)
            layer_axis(ax, report.layers)
            ax.set_yticks(range(len(types)), types if i % cols == 0 else [""] * len(types))
            ax.grid(False)
        bar = fig.colorbar(image, ax=axes, label=r"$\|\Delta W\|_F / \|W\|_F$", shrink=0.9)
        bar.ax.yaxis.set_major_locator(FixedLocator(_log_ticks(min(values), max(values))))
        bar.ax.yaxis.set_major_formatter(FuncFormatter(_tick_text))
        bar.ax.yaxis.set_minor_locator(NullLocator())
    return fig


def plot_dw_spectra(report: Any) -> Any:
    """Singular values of dW = W_tuned - W_base of every changed matrix above the
    numerical-rank tolerance, normalised by the largest, log scale; one panel per model that
    changed a matrix, colour = matrix type (one legend for all panels). Tensors that tuning
    added (adapters, prefix embeddings) are no dW and are not drawn (see the tables)."""
    def drawn(r: dict[str, Any]) -> bool:
        return r["kind"] == "matrix" and bool(r.get("spectrum")) and r["numerical_rank"] > 0

    types = _matrix_types(report, drawn)
    models = _with(report, drawn)
    with paper_style():
        fig, axes = _panels(len(models), height=2.4)
        if not models:
            _empty(axes[0], "no weight matrix changed")
            return fig
        handles: dict[str, Any] = {}
        handles.update((t, None) for t in types)  # the legend in the block's order
        for ax, model in zip(axes, models, strict=True):
            ax.set_title(model.name)
            records = [r for r in report.model_records(model.name) if drawn(r)]
            lowest = 1.0
            for r in records:
                # Values below the rank tolerance are rounding noise of the stored weights.
                s = np.asarray(r["spectrum"][: r["numerical_rank"]], dtype=float)
                lowest = min(lowest, float(s[-1] / s[0]))
                index = types.index(r["matrix"])
                (line,) = ax.plot(np.arange(1, s.size + 1), s / s[0], color=color(index),
                                  linestyle=linestyle(index // len(PALETTE)), linewidth=0.8,
                                  alpha=0.8)
                handles[r["matrix"]] = handles[r["matrix"]] or line
            longest = max(r["numerical_rank"] for r in records)
            if longest > 20:
                ax.set_xscale("log")
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_yscale("log")  # 1-2-5 ticks over a short range, decades over a long one
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if lowest > 0.005
                                                  else (1.0,), numticks=8))
            ax.yaxis.set_major_formatter(FuncFormatter(_tick_text))
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("Index (largest first)")
        axes[0].set_ylabel(r"$\sigma_i(\Delta W)\,/\,\sigma_1(\Delta W)$")
        shown = {t: line for t, line in handles.items() if line is not None}
        fig.legend(list(shown.values()), list(shown), frameon=False, loc="outside lower center",
                   ncol=min(3, len(shown)), title="matrix", fontsize=7)
    return fig


def plot_intruders(report: Any) -> Any:
    """Intruder dimensions per block (summed over its matrices), one line per model that
    changed a block matrix (models that change none have no intruders to count)."""
    models = _with(report, _changed_block_matrix)
    with paper_style():
        fig, ax = plt.subplots()
        if not report.layers or not models:
            _empty(ax, "the model has no stack of blocks" if not report.layers
                   else "no weight matrix inside a block changed")
            return fig
        x = np.arange(len(report.layers))
        highest = 1.0
        for i, model in enumerate(report.models):
            if model not in models:
                continue
            counts = np.zeros(len(report.layers))
            for r in report.model_records(model.name, "matrix"):
                if r["layer"] is not None:
                    counts[report.layers.index(r["layer"])] += r["intruders"]
            ax.plot(x, counts, color=color(i), marker=marker(i), linestyle=linestyle(i),
                    markersize=5 - i % 3, label=model.name)
            highest = max(highest, counts.max())
        layer_axis(ax, report.layers)
        ax.set_ylim(-0.05 * highest, 1.1 * highest)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        k, epsilon = report.settings.get("k"), report.settings.get("epsilon")
        ax.set_ylabel(f"Intruder dimensions (k={k}, eps={epsilon})")
        ax.legend(frameon=False, ncol=2 if len(models) > 4 else 1)
    return fig


def save_weight_figures(report: Any, out_dir: Path) -> dict[str, list[Path]]:
    """Every weight figure as PNG and PDF; returns ``{figure name: paths}``."""
    figures = {
        "weights_dw_heatmap": plot_dw_heatmap(report),
        "weights_dw_spectra": plot_dw_spectra(report),
        "weights_intruders": plot_intruders(report),
    }
    return {name: save(fig, out_dir, name) for name, fig in figures.items()}
