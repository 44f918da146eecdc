"""Figures of a study (from a :class:`~repspace.demo.run.StudyResult`; nothing is computed
here but the layout). Arms keep one colour and marker across figures."""

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
    linestyle,
    marker,
    paper_style,
    save,
)

SET_TITLES = {"task": "task inputs", "general": "general text"}


def _score_label(result: Any) -> str:
    return "Task accuracy" if result.metric == "accuracy" else "Task exact match"


def _panels(count: int, height: float = 2.4) -> tuple[Any, np.ndarray]:
    fig, axes = plt.subplots(1, count, figsize=(COLUMN_WIDTH * count, height), squeeze=False)
    return fig, axes[0]


def plot_trajectories(result: Any) -> Any:
    """Each arm's path (seed 0) from the base through its evaluations: task score against
    CKA to the base and effective-rank ratio, on the task inputs at the last layer. Higher and
    further right is better: a task score reached with more of the space kept."""
    with paper_style():
        fig, axes = _panels(2)
        for ax, key, label in zip(axes, ("cka", "effective_rank_ratio"),
                                  ("Linear CKA to base", "Effective rank / base's"), strict=True):
            for i, name in enumerate(result.methods):
                points = result.trajectories[name]
                ax.plot([p["score"] for p in points], [p[key] for p in points], color=color(i),
                        marker=marker(i), linestyle=linestyle(i), markersize=3, label=name)
            start = result.trajectories[result.methods[0]][0]
            ax.plot(start["score"], start[key], marker="*", color=BASE_COLOR, markersize=8,
                    linestyle="none", label="base")
            ax.set_xlabel(_score_label(result))
            ax.set_ylabel(f"{label} (task inputs, last layer)")
        axes[0].legend(frameon=False, fontsize=6)
    return fig


def plot_learning_curves(result: Any) -> Any:
    """Task score at each evaluation (seed 0) against optimizer steps; arms whose score was
    still rising at the end are marked ``(not plateaued)``, those whose last rise is within
    the eval set's noise ``(rise within noise)``."""
    with paper_style():
        fig, ax = plt.subplots()
        for i, name in enumerate(result.methods):
            points = result.trajectories[name]
            row = result.method_summary(name)
            flag = ("" if row["plateaued"] or row["last_gain"] is None else
                    " (not plateaued)" if row["still_rising"] else " (rise within noise)")
            ax.plot([p["step"] for p in points], [p["score"] for p in points], color=color(i),
                    marker=marker(i), linestyle=linestyle(i), markersize=3, label=name + flag)
        ax.set_xlabel("Optimizer steps")
        ax.set_ylabel(_score_label(result))
        # beside the axes: inside, the flagged arms' long labels cover the curves
        ax.legend(frameon=False, fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _by_layer(result: Any, key: str, ylabel: str, base_key: str | None = None) -> Any:
    """One panel per probe set; a second row of the last-token curves (``KEY_last_token``)
    when the study measured the last token."""
    rows = [("", "")]
    if f"task_{key}_last_token_by_layer" in result.summary[0]:
        rows.append(("_last_token", ", last token"))
    with paper_style():
        fig, grid = plt.subplots(len(rows), 2, figsize=(COLUMN_WIDTH * 2, 2.4 * len(rows)),
                                 squeeze=False, layout="constrained")
        x = np.arange(len(result.layers))
        for axes, (suffix, title) in zip(grid, rows, strict=True):
            for ax, probe_set in zip(axes, ("task", "general"), strict=True):
                if base_key and not suffix:
                    ax.plot(x, [row[base_key] for row in result.base[f"{probe_set}_space"]],
                            color=BASE_COLOR, linestyle="--", marker="o", markersize=3,
                            label="base")
                for i, row in enumerate(result.summary):
                    values = [np.nan if v is None else v
                              for v in row[f"{probe_set}_{key}{suffix}_by_layer"]]
                    ax.plot(x, values, color=color(i), marker=marker(i),
                            linestyle=linestyle(i), markersize=3, label=row["method"])
                layer_axis(ax, result.layers)
                ax.set_title(SET_TITLES[probe_set] + title)
                ax.set_ylabel(ylabel)
        grid[0][0].legend(frameon=False, ncol=2, fontsize=6)
    return fig


def plot_cka_by_layer(result: Any) -> Any:
    """Linear CKA to the base by layer on both probe sets (mean over seeds); for decoder
    studies a second row on the last token."""
    return _by_layer(result, "cka", "Linear CKA to base")


def plot_effective_rank_by_layer(result: Any) -> Any:
    """Effective rank of the pooled features by layer on both probe sets, base dashed."""
    return _by_layer(result, "effective_rank", "Effective rank", base_key="effective_rank")


def _forgetting_measures(result: Any) -> list[tuple[str, str]]:
    keys = [("knowledge", "General-knowledge accuracy"), ("lm_loss", "LM loss, general text"),
            ("retrieval", "Paraphrase retrieval")]
    return [(k, label) for k, label in keys if f"{k}_mean" in result.summary[0]]


def plot_forgetting(result: Any) -> Any:
    """Forgetting against the task score (mean +- std over seeds), the base as a star:
    specialization on x, stability on y (for LM loss, lower is better)."""
    measures = _forgetting_measures(result)
    with paper_style():
        fig, axes = _panels(len(measures))
        for ax, (key, label) in zip(axes, measures, strict=True):
            for i, row in enumerate(result.summary):
                ax.errorbar(row["score_mean"], row[f"{key}_mean"], xerr=row["score_std"],
                            yerr=row[f"{key}_std"], color=color(i), marker=marker(i),
                            linestyle="none", capsize=2, label=row["method"])
            ax.plot(result.base["score"], result.base[key], marker="*", color=BASE_COLOR,
                    markersize=8, linestyle="none", label="base")
            ax.set_xlabel(_score_label(result))
            ax.set_ylabel(label)
        axes[0].legend(frameon=False, fontsize=6)
    return fig


def plot_spectra(result: Any) -> Any:
    """Normalised singular values of last-layer task-input features (seed 0), log scale."""
    with paper_style():
        fig, ax = plt.subplots()
        draw_spectra(ax, result.spectra, ["base", *result.methods])
    return fig


FIGURES = {
    "trajectories": (plot_trajectories, "Training trajectories (seed 0): task score against "
                     "CKA to the base and effective-rank ratio on the task inputs, last layer; "
                     "each point is one evaluation, the star the base."),
    "learning_curves": (plot_learning_curves, "Task score at each evaluation against optimizer "
                        "steps (seed 0)."),
    "cka_by_layer": (plot_cka_by_layer, "Linear CKA to the base by layer, on the task inputs "
                     "and on general text (mean over seeds; decoders: features pooled over "
                     "tokens, then the last token's)."),
    "effective_rank_by_layer": (plot_effective_rank_by_layer, "Effective rank of the pooled "
                                "features by layer on both probe sets (base dashed)."),
    "forgetting": (plot_forgetting, "Forgetting against specialization: the general measures "
                   "against the task score (mean ± std over seeds; star = base)."),
    "spectra_last_layer": (plot_spectra, "Singular value spectra of last-layer task-input "
                           "features (seed 0)."),
}


def save_demo_figures(result: Any, out_dir: Path) -> dict[str, list[Path]]:
    """Every study figure as PNG and PDF; returns ``{figure name: paths}``."""
    return {name: save(draw(result), out_dir, name) for name, (draw, _) in FIGURES.items()}
