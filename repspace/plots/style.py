"""One figure style for every repspace plot: sized for a paper column, colour-blind-safe."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from repspace.utils.files import write_atomic

#: Okabe & Ito (2008) colour-blind-safe palette; the base model is always drawn in black.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442")
BASE_COLOR = "#000000"
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
COLUMN_WIDTH = 3.5  # inches: one column of a two-column paper

RC = {
    "figure.figsize": (COLUMN_WIDTH, 2.6),
    "figure.dpi": 150,
    "savefig.dpi": 300,
    "savefig.bbox": "tight",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.3,
    "lines.markersize": 3.5,
    "pdf.fonttype": 42,
}


@contextmanager
def paper_style() -> Iterator[None]:
    """Apply the repspace rcParams within the block."""
    with plt.rc_context(RC):
        yield


def color(i: int) -> str:
    """The ``i``-th series colour."""
    return PALETTE[i % len(PALETTE)]


def marker(i: int) -> str:
    return MARKERS[i % len(MARKERS)]


#: Tick prefixes of the blocks of vision-language model parts (vision tower V, language L).
_PART_TAGS = {"vision_tower": "V", "visual": "V", "vision_model": "V", "language_model": "L"}
_CONNECTORS = ("multi_modal_projector", "merger", "mm_projector", "connector")
_MODALITY_TAGS = {"@image": " img", "@text": " txt"}


def short_layer(name: str) -> str:
    """A compact tick label for a module path (``encoder.layer.3`` -> ``3``; in vision-language
    models ``model.visual.blocks.3`` -> ``V3``, ``model.language_model.layers.3@image`` ->
    ``L3 img``, the projector -> ``proj``)."""
    path, at, modality = name.partition("@")
    parts = path.split(".")
    tail = parts[-1]
    tags = [_PART_TAGS[p] for p in parts if p in _PART_TAGS]
    if tail.isdigit():
        label = (tags[0] if tags else "") + tail
    else:
        label = "proj" if tail in _CONNECTORS else tail.replace(":input", " in")
    return label + _MODALITY_TAGS.get(at + modality, "")


def layer_axis(ax: Any, layers: list[str]) -> None:
    """Ticks and label of an x axis that runs over ``layers``."""
    ax.set_xticks(list(range(len(layers))), [short_layer(layer) for layer in layers])
    ax.set_xlabel("Layer")


#: Line styles that keep overlapping series apart (with the markers), in series order.
LINESTYLES = ("-", (0, (5, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)), (0, (3, 1, 1, 1, 1, 1)))


def linestyle(i: int) -> Any:
    return LINESTYLES[i % len(LINESTYLES)]


#: Singular values below this share of the largest, times the number of values, are rounding
#: noise of float32 features (numpy's ``matrix_rank`` tolerance): not drawn.
FLOAT32_EPS = float(np.finfo(np.float32).eps)


def numerical_spectrum(values: Any) -> np.ndarray:
    """Singular values divided by the largest, without the numerical zeros (those below
    ``len(values) * eps(float32)`` of the largest, e.g. the one that centring removes)."""
    values = np.asarray(values, dtype=float)
    if not values.size or values[0] <= 0:
        return np.zeros(0)
    scaled = values / values[0]
    return scaled[scaled > len(values) * FLOAT32_EPS]


def layer_title(name: str) -> str:
    """A layer for a title: ``encoder.layer.5`` -> ``block 5``, else its tick label."""
    label = short_layer(name)
    return f"block {label}" if label.isdigit() else label


def draw_spectra(ax: Any, spectra: dict[str, list[float]], names: list[str]) -> None:
    """Singular values normalised by the largest, log scale, numerical zeros dropped (see
    :func:`numerical_spectrum`); ``names`` starts with ``base`` (dashed black), the others follow
    in palette order, each with its own line style and markers so that overlapping spectra stay
    apart. The y axis spans the smallest value drawn."""
    lowest = 1.0
    for i, name in enumerate(names):
        values = numerical_spectrum(spectra[name])
        if not values.size:
            continue
        lowest = min(lowest, float(values.min()))
        index = np.arange(1, len(values) + 1)
        marks = np.unique(np.geomspace(1, len(values), 8).astype(int)) - 1
        style = ({"color": BASE_COLOR, "linestyle": "--", "linewidth": 1.0, "zorder": 3}
                 if name == "base"
                 else {"color": color(i - 1), "linestyle": linestyle(i - 1),
                       "marker": marker(i - 1), "markevery": list(marks)})
        ax.plot(index, values, label=name, **style)
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_ylim(lowest / 1.5, 1.5)
    ax.set_xlabel("Index (largest first)")
    ax.set_ylabel("Singular value / largest")
    ax.legend(frameon=False, ncol=2 if len(names) > 4 else 1)


def save(fig: Any, out_dir: Path, stem: str) -> list[Path]:
    """Save ``fig`` as ``stem.png`` and ``stem.pdf`` (vector) and close it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.{ext}" for ext in ("png", "pdf")]
    for path in paths:  # through a temporary name: a failed write leaves no truncated figure
        write_atomic(path, lambda tmp, ext=path.suffix[1:]: fig.savefig(
            tmp, format=ext, dpi=RC["savefig.dpi"], bbox_inches="tight"))
    plt.close(fig)
    return paths
