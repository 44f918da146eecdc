"""Paper-ready matplotlib figures drawn from result objects."""

from repspace.plots.compare import (
    plot_by_modality,
    plot_cka_heatmaps,
    plot_metric_by_layer,
    plot_spectra,
    save_compare_figures,
)
from repspace.plots.style import PALETTE, paper_style

__all__ = ["PALETTE", "paper_style", "plot_by_modality", "plot_cka_heatmaps",
           "plot_metric_by_layer", "plot_spectra", "save_compare_figures"]
