"""The demo report: ``report.md``, a self-contained ``report.html`` (figures embedded), and the
figures as PDF and PNG. The text that states what the numbers show is built from the numbers."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from repspace.plots.demo import save_demo_figures
from repspace.plots.weights import save_weight_figures

COLUMNS = [
    ("method", "Method"),
    ("accuracy", "Task accuracy"),
    ("cka_last", "CKA last (biased)"),
    ("cka_last_ci", "95% CI"),
    ("cka_last_debiased", "CKA last (debiased)"),
    ("cka_mean_layers", "Mean CKA over layers"),
    ("task_cka_last", "CKA last, task set"),
    ("rank_ratio_last", "Rank ratio last"),
    ("effective_rank_last", "Eff. rank last"),
    ("retrieval", "Paraphrase retrieval"),
    ("trainable", "Trainable params (%)"),
]

WEIGHT_COLUMNS = [
    ("method", "Method"),
    ("matrices", "Matrices changed"),
    ("vectors", "Vectors changed"),
    ("added_params", "Added params"),
    ("rel_frobenius_mean", "Mean rel. ‖dW‖_F"),
    ("numerical_rank_median", "Median rank of dW"),
    ("effective_rank_mean", "Mean eff. rank of dW"),
    ("intruders", "Intruder dims"),
    ("intruder_share_mean", "Intruder energy share"),
    ("angle_max_deg", "Max principal angle (°)"),
]

FIGURES = {
    "cka_by_layer": "Linear CKA to the base by layer on the general probe (mean over seeds, "
                    "band = 1 std).",
    "effective_rank_by_layer": "Effective rank of probe features by layer (base dashed).",
    "spectra_last_layer": "Singular value spectra of last-layer probe features (seed 0).",
    "tradeoff": "Task accuracy against CKA to the base at the last layer: the trade-off.",
    "umap_last_layer": "UMAP of base (grey) and tuned last-layer probe features (seed 0).",
    "weights_dw_heatmap": "Relative change ‖dW‖_F / ‖W‖_F of each weight matrix by layer "
                          "(seed 0; LoRA merged into W; blank = unchanged).",
    "weights_dw_spectra": "Singular values of dW per changed matrix (solid) and of added "
                          "adapter / prefix tensors (dashed), normalised by the largest (seed 0).",
    "weights_intruders": "Intruder dimensions per layer (Shuttleworth et al. 2024: top-10 "
                         "singular vectors of W_tuned with |cos| < 0.5 to all of W_base's).",
}


def _pm(row: dict[str, Any], key: str, digits: int = 3) -> str:
    mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
    if mean is None:
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if row["seeds"] > 1 else f"{mean:.{digits}f}"


def table_rows(result: Any) -> list[list[str]]:
    """The results table as strings, one row per method."""
    rows = []
    for row in result.summary:
        low, high = row["cka_last_ci"]
        rows.append([
            row["method"], _pm(row, "accuracy"), _pm(row, "cka_last"),
            f"[{low:.3f}, {high:.3f}]", _pm(row, "cka_last_debiased"),
            _pm(row, "cka_mean_layers"), _pm(row, "task_cka_last"), _pm(row, "rank_ratio_last"),
            _pm(row, "effective_rank_last", 1), _pm(row, "retrieval"),
            f"{row['trainable_params']:,} ({row['trainable_percent']:.2f}%)"])
    return rows


def weight_rows(result: Any) -> list[list[str]]:
    """The weight-space table as strings, one row per method (``-`` where undefined)."""
    def cell(row: dict[str, Any], key: str) -> str:
        value = row.get(key)
        if value is None:
            return "-"
        if isinstance(value, int) and key != "intruders":
            return f"{value:,}"
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    return [[cell(row, key) for key, _ in WEIGHT_COLUMNS] for row in result.weights]


def _weight_text(result: Any) -> str:
    rows = {r["method"]: r for r in result.weights}
    if not all(m in rows for m in ("full", "lora", "adapter", "prefix")):
        return ""
    full, lora = rows["full"], rows["lora"]
    return (f"In weight space (seed 0), full fine-tuning changed {full['matrices']} matrices "
            f"with a median dW rank of {full.get('numerical_rank_median', 0):.0f} and "
            f"{full['intruders']} intruder dimensions; LoRA changed {lora['matrices']} with a "
            f"median rank of {lora.get('numerical_rank_median', 0):.0f} and "
            f"{lora['intruders']} intruder dimensions; adapters and prefix tuning leave every "
            f"base weight as it was and add {rows['adapter']['added_params']:,} / "
            f"{rows['prefix']['added_params']:,} parameters.")


def smoke_label(result: Any) -> str:
    """``smoke run: numbers are not meaningful (why)`` for a ``--quick`` run, else ``""``."""
    reason = result.settings.get("smoke_run")
    return f"smoke run: numbers are not meaningful ({reason})" if reason else ""


def _permutation(stats: dict[str, Any]) -> str:
    """The permutation test's p-value, or why there is none (``n/a (1 seed)``)."""
    p = stats.get("permutation_p")
    return f"p = {p:.3f}" if p is not None else stats.get("permutation", "n/a")


def summary_text(result: Any) -> str:
    """What the numbers show, and whether they agree with the claim."""
    claims, stats = result.claims, result.stats["prefix_vs_lora_cka_last"]
    cka, acc = claims["cka_last"], claims["accuracy"]
    rows = {r["method"]: r for r in result.summary}
    said = [
        f"At the last layer, linear CKA to the pretrained space is {cka['lora']:.3f} for LoRA, "
        f"{cka['adapter']:.3f} for adapters and {cka['full']:.3f} for full fine-tuning, against "
        f"{cka['prefix']:.3f} for prefix tuning and {cka['pt-peft-lora']:.3f} / "
        f"{cka['pt-peft-adapter']:.3f} for PT-PEFT (LoRA / adapter).",
        f"Task accuracy is {acc['lora']:.3f} (LoRA), {acc['adapter']:.3f} (adapter), "
        f"{acc['prefix']:.3f} (prefix), {acc['pt-peft-lora']:.3f} / "
        f"{acc['pt-peft-adapter']:.3f} (PT-PEFT), {acc['full']:.3f} (full) and "
        f"{acc['linear-probe']:.3f} for a linear head on the frozen model.",
        f"Prefix minus LoRA CKA at the last layer is {stats['difference']:.3f} (95% bootstrap CI "
        f"[{stats['difference_ci'][0]:.3f}, {stats['difference_ci'][1]:.3f}] over probe "
        f"samples; permutation test over seeds: {_permutation(stats)}).",
        f"Paraphrase retrieval (upstream retention) is {result.base['retrieval']:.3f} for the "
        f"base and {rows['lora']['retrieval_mean']:.3f} / {rows['prefix']['retrieval_mean']:.3f}"
        f" / {rows['pt-peft-lora']['retrieval_mean']:.3f} for LoRA / prefix / PT-PEFT (LoRA).",
    ]
    failed = [name.replace("_", " ").replace("pt peft", "PT-PEFT")
              for name, ok in claims["checks"].items() if not ok]
    verdict = ("These numbers agree with the claim: LoRA and adapters bend the space, prefix "
               "tuning keeps it, and PT-PEFT gets the task score of the first with more of the "
               "space kept." if claims["holds"] else
               "These numbers do not fully agree with the claim; expected but not seen: "
               + "; ".join(failed) + ".")
    return " ".join([*said, _weight_text(result), verdict]).replace("  ", " ")


def _markdown(result: Any, figures: dict[str, list[Path]]) -> str:
    header = [title for _, title in COLUMNS]
    smoke = smoke_label(result)
    lines = ["# repspace demo: how tuning methods bend the pretrained space", "",
             *([f"**{smoke}**", ""] if smoke else []),
             f"Base: `{result.settings['base']}`; {result.settings['seeds']} seed(s); "
             f"{result.settings['epochs']} epoch(s) per method; "
             f"{result.settings['probe_limit']} general probe sentences. "
             "CKA is linear CKA to the base (biased HSIC unless marked debiased; "
             "the CI is a 95% normal-approximation bootstrap over probe samples of the seed "
             "mean).", "",
             "## Results", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(result)]
    weight_header = [title for _, title in WEIGHT_COLUMNS]
    lines += ["", "## Weight space", "",
              "dW = W_tuned - W_base per weight matrix, PEFT tuners merged into W (seed 0; no "
              "data needed; `weights.json` / `weights.csv` hold every number). Intruder "
              "dimensions: top-10 singular vectors of W_tuned whose |cos| with every singular "
              "vector of W_base is below 0.5 (Shuttleworth et al. 2024).", "",
              "| " + " | ".join(weight_header) + " |", "|" + "---|" * len(weight_header)]
    lines += ["| " + " | ".join(row) + " |" for row in weight_rows(result)]
    lines += ["", "## What the numbers show", "", summary_text(result), "", "## Figures", ""]
    for name, caption in FIGURES.items():
        png, pdf = (path.as_posix() for path in figures[name])
        lines += [f"![{caption}]({png})", "", f"*{caption}* ([PDF]({pdf}))", ""]
    return "\n".join(lines)


def _html(result: Any, figures: dict[str, list[Path]]) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in table_rows(result))
    weight_head = "".join(f"<th>{html.escape(title)}</th>" for _, title in WEIGHT_COLUMNS)
    weight_body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row)
                          + "</tr>" for row in weight_rows(result))
    images = "".join(
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,'
        f'{base64.b64encode(figures[name][0].read_bytes()).decode()}"/>'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for name, caption in FIGURES.items())
    smoke = (f"<p><strong>{html.escape(smoke_label(result))}</strong></p>"
             if smoke_label(result) else "")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;"
             "padding:4px 6px;text-align:right}td:first-child{text-align:left}"
             "img{max-width:100%}figure{margin:1.5em 0}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>repspace demo</title>"
            f"<style>{style}</style></head><body><h1>repspace demo: how tuning methods bend "
            f"the pretrained space</h1>{smoke}<h2>Results</h2><table><tr>{head}</tr>{body}</table>"
            f"<h2>Weight space</h2><p>dW = W_tuned - W_base per weight matrix, PEFT tuners "
            f"merged (seed 0); intruder dimensions after Shuttleworth et al. 2024.</p>"
            f"<table><tr>{weight_head}</tr>{weight_body}</table>"
            f"<h2>What the numbers show</h2><p>{html.escape(summary_text(result))}</p>"
            f"<h2>Figures</h2>{images}</body></html>")


def write_report(result: Any, out: Path, weights: Any) -> list[Path]:
    """Write ``report.md``, ``report.html`` and the figures (those of the
    :class:`~repspace.results.weights.WeightReport` ``weights`` too) into ``out``."""
    figures = {**save_demo_figures(result, out / "figures"),
               **save_weight_figures(weights, out / "figures")}
    relative = {k: [p.relative_to(out) for p in v] for k, v in figures.items()}
    (out / "report.md").write_text(_markdown(result, relative), encoding="utf-8")
    (out / "report.html").write_text(_html(result, figures), encoding="utf-8")
    return [out / "report.md", out / "report.html", *(p for v in figures.values() for p in v)]
