"""Figures of the demo study (from a :class:`~repspace.demo.run.DemoResult`; nothing is
computed here but the layout)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from repspace.plots.style import (
    BASE_COLOR,
    COLUMN_WIDTH,
    color,
    draw_spectra,
    layer_axis,
    marker,
    paper_style,
    save,
)


def _tuned(result: Any) -> list[dict[str, Any]]:
    return result.summary


def plot_cka_by_layer(result: Any) -> Any:
    """Linear CKA to the base by layer: mean over seeds, band = one standard deviation."""
    with paper_style():
        fig, ax = plt.subplots()
        x = np.arange(len(result.layers))
        for i, row in enumerate(_tuned(result)):
            mean, std = np.array(row["cka_by_layer_mean"]), np.array(row["cka_by_layer_std"])
            ax.plot(x, mean, color=color(i), marker=marker(i), label=row["method"])
            ax.fill_between(x, mean - std, mean + std, color=color(i), alpha=0.15, linewidth=0)
        layer_axis(ax, result.layers)
        ax.set_ylabel("Linear CKA to base")
        ax.legend(frameon=False, ncol=2)
    return fig


def plot_effective_rank_by_layer(result: Any) -> Any:
    """Effective rank of the probe features by layer (mean over seeds), base dashed."""
    with paper_style():
        fig, ax = plt.subplots()
        x = np.arange(len(result.layers))
        ax.plot(x, result.base["effective_rank"], color=BASE_COLOR, linestyle="--", marker="o",
                label="base")
        for i, row in enumerate(_tuned(result)):
            ax.plot(x, row["effective_rank_by_layer_mean"], color=color(i), marker=marker(i),
                    label=row["method"])
        layer_axis(ax, result.layers)
        ax.set_ylabel("Effective rank")
        ax.legend(frameon=False, ncol=2)
    return fig


def plot_spectra(result: Any) -> Any:
    """Normalised singular values of last-layer probe features (seed 0), log scale."""
    with paper_style():
        fig, ax = plt.subplots()
        draw_spectra(ax, result.spectra, ["base", *result.methods])
    return fig


def plot_tradeoff(result: Any) -> Any:
    """Task accuracy against CKA to the base at the last layer (mean +- std over seeds)."""
    with paper_style():
        fig, ax = plt.subplots()
        for i, row in enumerate(_tuned(result)):
            ax.errorbar(row["cka_last_mean"], row["accuracy_mean"],
                        xerr=row["cka_last_std"], yerr=row["accuracy_std"], color=color(i),
                        marker=marker(i), linestyle="none", capsize=2, label=row["method"])
        ax.set_xlabel("Linear CKA to base, last layer (higher = space kept)")
        ax.set_ylabel("Task accuracy")
        ax.legend(frameon=False, fontsize=6)
    return fig


def plot_umap(result: Any) -> Any:
    """UMAP of base (grey) and tuned (colour) last-layer probe features, one panel per method."""
    names = list(result.umap)
    cols = min(4, len(names))
    rows = int(np.ceil(len(names) / cols))
    with paper_style():
        fig, axes = plt.subplots(rows, cols, figsize=(2 * COLUMN_WIDTH, 1.8 * rows),
                                 squeeze=False)
        for ax in axes.flat[len(names):]:
            ax.axis("off")
        for i, (ax, name) in enumerate(zip(axes.flat, names, strict=False)):
            base = np.asarray(result.umap[name]["base"])
            tuned = np.asarray(result.umap[name]["tuned"])
            ax.scatter(base[:, 0], base[:, 1], s=3, color="#999999", label="base")
            ax.scatter(tuned[:, 0], tuned[:, 1], s=3, color=color(i), label=name)
            ax.set_title(name)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
        axes.flat[0].legend(frameon=False, markerscale=3, loc="best")
    return fig


def save_demo_figures(result: Any, out_dir: Path) -> dict[str, list[Path]]:
    """Every demo figure as PNG and PDF; returns ``{figure name: paths}``."""
    figures = {
        "cka_by_layer": plot_cka_by_layer(result),
        "effective_rank_by_layer": plot_effective_rank_by_layer(result),
        "spectra_last_layer": plot_spectra(result),
        "tradeoff": plot_tradeoff(result),
        "umap_last_layer": plot_umap(result),
    }
    return {name: save(fig, out_dir, name) for name, fig in figures.items()}
