"""Figures are ones to put in a paper: axes span the informative range, titles and labels say
what is drawn, nothing is drawn that does not belong there; and tables fit the terminal."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest

from repspace.plots.compare import plot_spectra
from repspace.plots.style import numerical_spectrum
from repspace.plots.weights import plot_dw_heatmap, plot_dw_spectra, plot_intruders
from repspace.results import CompareResult, ModelInfo, WeightReport
from repspace.results.tables import fixed_width, fmt, fmt_bytes

LAYERS = [f"encoder.layer.{i}" for i in range(3)]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _spectrum(n: int, decay: float) -> list[float]:
    return list(10.0 * np.exp(-decay * np.arange(n)))


def test_spectra_drop_numerical_zeros_and_name_the_layer() -> None:
    """One near-zero singular value (what centring leaves) must not stretch the log axis."""
    spectra = {name: [*_spectrum(50, decay), 1e-9] for name, decay in
               (("base", 0.05), ("lora", 0.06), ("prefix", 0.055))}
    result = CompareResult(base=ModelInfo("base", "base.pt", "f"),
                           models=[ModelInfo("lora", "lora.pt", "g"),
                                   ModelInfo("prefix", "prefix.pt", "h")],
                           layers=LAYERS, records=[], spectra=spectra)
    ax = plot_spectra(result).axes[0]
    low, high = ax.get_ylim()
    smallest = min(min(numerical_spectrum(v)) for v in spectra.values())
    assert smallest == pytest.approx(np.exp(-0.06 * 49))
    assert smallest / 2 < low < smallest and 1 < high < 2  # informative range only
    assert ax.get_title() == "Last layer (block 2)"
    styles = {(line.get_linestyle(), line.get_marker()) for line in ax.get_lines()}
    assert len(styles) == 3  # overlapping spectra stay apart


def test_numerical_spectrum_keeps_values_above_float32_rounding() -> None:
    values = numerical_spectrum([4.0, 2.0, 1e-3, 1e-9, 0.0])
    assert values.tolist() == [1.0, 0.5, 2.5e-4]


def _matrix(model: str, layer: int, matrix: str, change: float, rank: int) -> dict:
    return {"model": model, "name": f"encoder.layer.{layer}.{matrix}.weight",
            "layer": f"encoder.layer.{layer}", "matrix": matrix, "kind": "matrix",
            "shape": "8x8", "params": 64, "rel_frobenius": change, "numerical_rank": rank,
            "effective_rank": rank - 0.5, "energy_rank": rank, "intruders": layer % 2,
            "intruder_share": 0.01, "angle_max_deg": 3.0,
            "spectrum": list(np.geomspace(1.0, 0.2, rank)) + [1e-9] * (8 - rank)}


@pytest.fixture
def report() -> WeightReport:
    """LoRA changes query and value in three blocks; prefix only adds its embeddings."""
    records = [_matrix("lora", i, m, 0.01 * (i + 1) * (2 if m.endswith("value") else 1), 4)
               for i in range(3) for m in ("attention.self.query", "attention.self.value")]
    records.append({"model": "prefix", "name": "prompt_embeddings", "layer": None,
                    "matrix": "prompt_embeddings", "kind": "added", "shape": "10x384",
                    "params": 3840, "numerical_rank": 10, "spectrum": [3.0] * 10, "norm": 1.0})
    return WeightReport(base=ModelInfo("base", "base.pt", "f"),
                        models=[ModelInfo("lora", "lora.pt", "g", "lora"),
                                ModelInfo("prefix", "prefix.pt", "h", "prefix_tuning")],
                        layers=LAYERS, records=records, settings={"k": 10, "epsilon": 0.5})


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]


def test_heatmap_draws_changed_models_only_with_labelled_colour_ticks(report) -> None:
    fig = plot_dw_heatmap(report)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["lora"]
    assert not any("not shown" in t or "prefix" in t for t in _texts(fig))
    bar = next(ax for ax in fig.axes if ax not in panels)
    labels = [t.get_text() for t in bar.get_yticklabels() if t.get_text()]
    assert len(labels) >= 3 and labels[0] == "0.01" and labels[-1] == "0.06"
    assert [t.get_text() for t in panels[0].get_yticklabels()] == [
        "attention.self.query", "attention.self.value"]  # top to bottom, the block's order


def test_dw_spectra_show_dw_only_with_readable_ticks_and_legend(report) -> None:
    fig = plot_dw_spectra(report)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["lora"]
    assert "Delta W" in panels[0].get_ylabel()
    fig.canvas.draw()
    ticks = [t.get_text() for t in panels[0].get_yticklabels() if t.get_text()]
    assert len(ticks) >= 3
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["attention.self.query",
                                                          "attention.self.value"]
    assert min(t.get_fontsize() for t in legend.get_texts()) >= 6
    assert "prompt_embeddings" not in _texts(fig)
    for line in panels[0].get_lines():  # numerical zeros cut: 4 values from 1 down to 0.2
        assert len(line.get_ydata()) == 4 and min(line.get_ydata()) == pytest.approx(0.2)


def test_intruders_skip_models_that_change_no_matrix(report) -> None:
    ax = plot_intruders(report).axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["lora"]
    assert ax.get_lines()[0].get_ydata().tolist() == [0, 2, 0]  # query + value per block


def test_weight_summary_leaves_undefined_columns_empty(report, monkeypatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)  # one block, whatever the terminal
    rows = {r["model"]: r for r in report.summary()}
    assert rows["prefix"]["intruders"] is None and rows["lora"]["intruders"] == 2
    assert rows["lora"]["numerical_rank_median"] == 4
    assert isinstance(rows["lora"]["numerical_rank_median"], int)
    line = next(x for x in report.table().splitlines() if x.startswith("prefix"))
    assert " 0 " not in line.split("3,840", 1)[1]  # nothing after its added params is a 0


def test_cells_format_integers_with_separators() -> None:
    assert [fmt(1769472), fmt(8), fmt(0.5), fmt(None), fmt(True)] == [
        "1,769,472", "8", "0.5000", "-", "True"]
    assert [fmt_bytes(229_412_000), fmt_bytes(512), fmt_bytes(2_500)] == [
        "229.4 MB", "512 B", "2.5 kB"]


def test_wide_tables_wrap_into_blocks_that_fit() -> None:
    header = ["model", *(f"column_{i}" for i in range(12))]
    rows = [["lora", *range(12)], ["prefix", *range(12, 24)]]
    text = fixed_width(header, rows, width=60)
    assert max(len(line) for line in text.splitlines()) <= 60
    blocks = text.split("\n\n")
    assert len(blocks) > 1 and all(b.splitlines()[0].startswith("model") for b in blocks)
    cells = [c for b in blocks for c in b.splitlines()[0].split()[1:]]
    assert cells == header[1:]  # every column once, in order
    assert len(fixed_width(header, rows, width=None).split("\n\n")) == 1
