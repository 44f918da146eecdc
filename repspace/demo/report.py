"""The study report: ``report.md``, a self-contained ``report.html`` (figures embedded), and the
figures as PDF and PNG. The verdict table comes first, then the figures, then the detail; the
text that states what was found is built from the numbers."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from repspace.demo.claims import PLATEAU_ALPHA, PLATEAU_GAIN, SCORE_MARGIN
from repspace.plots.demo import FIGURES, save_demo_figures
from repspace.plots.weights import save_weight_figures

VERDICT_COLUMNS = ["Claim", "Probe set", "Numbers", "Difference (95% CI)", "Test", "Verdict"]

WEIGHT_COLUMNS = [
    ("method", "Method"),
    ("matrices", "Matrices changed"),
    ("vectors", "Vectors changed"),
    ("added_params", "Added params"),
    ("rel_frobenius_mean", "Mean rel. ‖dW‖_F"),
    ("numerical_rank_median", "Median rank of dW"),
    ("effective_rank_mean", "Mean eff. rank of dW"),
    ("intruders", "Intruder dims"),
    ("angle_max_deg", "Max principal angle (°)"),
]

WEIGHT_FIGURES = {
    "weights_dw_heatmap": "Relative change ‖dW‖_F / ‖W‖_F of each weight matrix by layer "
                          "(seed 0; LoRA merged into W; blank = unchanged).",
    "weights_dw_spectra": "Singular values of dW per changed matrix (solid) and of added "
                          "adapter / prefix tensors (dashed), normalised by the largest (seed 0).",
    "weights_intruders": "Intruder dimensions per layer (Shuttleworth et al. 2024: top-10 "
                         "singular vectors of W_tuned with |cos| < 0.5 to all of W_base's).",
}

LEGEND = ("✓: the 95% CI lies on the claim's side; ~: the estimate does but the CI crosses "
          "(not resolved at this size); ✗: the estimate is on the other side. Representation "
          "checks are decided on the task inputs (the paper's setting) and repeated on general "
          "text; every difference is stated so that a positive value supports the claim. "
          f"'Matches the task score' allows {SCORE_MARGIN:.2f} less.")


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pm(row: dict[str, Any], key: str, digits: int = 3) -> str:
    mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
    if mean is None:
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if row["seeds"] > 1 else f"{mean:.{digits}f}"


def verdict_rows(result: Any) -> list[list[str]]:
    """The verdict table as strings, one row per check."""
    rows = []
    for check in result.checks:
        ci = check["ci"]
        difference = _f(check["estimate"]) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        rows.append([check["claim"], check["probe_set"], check["numbers"], difference,
                     check["test"], check["verdict"]])
    return rows


TERMINAL_COLUMNS = ["Claim", "Set", "Difference (95% CI)", "p", ""]


def terminal_rows(result: Any) -> list[list[str]]:
    """The verdict table for the terminal: claim, probe set, difference with CI, p, verdict
    (the numbers and the tests' names are in the report)."""
    return [[row[0], row[1], row[3], _f(check["p"]), row[5]]
            for row, check in zip(verdict_rows(result), result.checks, strict=True)]


def columns(result: Any) -> list[tuple[str, str]]:
    """``(key, title)`` of the per-arm table: the task score, then per probe set CKA (also on
    the last token when the study captured it), the effective-rank ratio and the rank ratio at
    the last layer, then forgetting."""
    score = "Accuracy" if result.metric == "accuracy" else "Exact match"
    cols = [("method", "Method"), ("score", score)]
    for s, tag in (("task", "task"), ("general", "general")):
        cols += [(f"{s}_cka", f"CKA {tag}"), (f"{s}_cka_debiased", f"CKA {tag} (debiased)")]
        if f"{s}_cka_last_token_mean" in result.summary[0]:
            cols.append((f"{s}_cka_last_token", f"CKA {tag} (last token)"))
        cols += [(f"{s}_effective_rank_ratio", f"Eff. rank ratio {tag}"),
                 (f"{s}_rank_ratio", f"Rank ratio {tag}")]
    for key, title in (("retrieval", "Paraphrase retrieval"), ("knowledge", "GK accuracy"),
                       ("lm_loss", "LM loss")):
        if f"{key}_mean" in result.summary[0]:
            cols.append((key, title))
    return [*cols, ("trainable", "Trainable (%)"), ("plateaued", "Plateaued")]


def table_rows(result: Any) -> list[list[str]]:
    """The per-arm table as strings (means ± std over seeds, last layer)."""
    rows = []
    for row in result.summary:
        cells = []
        for key, _ in columns(result):
            if key == "method":
                cells.append(row["method"])
            elif key == "trainable":
                cells.append(f"{row['trainable_params']:,} ({row['trainable_percent']:.2f}%)")
            elif key == "plateaued":
                cells.append(_plateau_cell(row))
            else:
                cells.append(_pm(row, key))
        rows.append(cells)
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


def smoke_label(result: Any) -> str:
    """``smoke run: numbers are not meaningful (why)`` for a ``--quick`` run, else ``""``."""
    reason = result.settings.get("smoke_run")
    return f"smoke run: numbers are not meaningful ({reason})" if reason else ""


def _rise(row: dict[str, Any]) -> str:
    """``+gain, p = P`` of an arm's last evaluation (no p without per-example hits)."""
    p = row["plateau_test"]["p"]
    shown = "" if p is None else ", p < 0.001" if p < 0.001 else f", p = {p:.3f}"
    return f"+{row['last_gain']:.3f}{shown}"


def _plateau_cell(row: dict[str, Any]) -> str:
    """``yes``; ``no (rise)`` while still rising beyond noise; ``within noise (rise)`` for a
    rise past the threshold that its paired test does not resolve; ``-`` untested."""
    if row["last_gain"] is None:
        return "-"
    if row["plateaued"]:
        return "yes"
    return f"{'no' if row['still_rising'] else 'within noise'} ({_rise(row)})"


def plateau_text(result: Any) -> str:
    """Which arms had not plateaued (score still rising by more than 1 point at the end),
    apart from those whose rise is a few answers within the eval set's noise."""
    def listed(rows: list[dict[str, Any]]) -> str:
        return ", ".join(f"{r['method']} ({_rise(r)})" for r in rows)

    rows = [r for r in result.summary if r["last_gain"] is not None and not r["plateaued"]]
    rising = [r for r in rows if r["still_rising"]]
    noisy = [r for r in rows if not r["still_rising"]]
    if not rows:
        return (f"Every arm had plateaued: no task score rose by more than {PLATEAU_GAIN:.2f} "
                "between its last two evaluations.")
    parts = []
    if rising:
        parts.append(f"Not plateaued (task score still rising by more than {PLATEAU_GAIN:.2f} "
                     f"at the last evaluation, McNemar p < {PLATEAU_ALPHA:g}): "
                     f"{listed(rising)}. Their endpoints understate what they reach; compare "
                     "them on the trajectories.")
    if noisy:
        parts.append(f"Up by more than {PLATEAU_GAIN:.2f} at the last evaluation but within the "
                     f"eval set's noise (McNemar p >= {PLATEAU_ALPHA:g}: a few answers): "
                     f"{listed(noisy)}.")
    return " ".join(parts)


def verdict_text(result: Any) -> str:
    """The overall verdict per probe set, in words."""
    words = {"supported": "supported (every check ✓)",
             "not resolved": "not resolved (no check against it, some not significant)",
             "contradicted": "contradicted by at least one check (✗)"}
    return "; ".join(f"on {s}: {words[v]}" for s, v in result.verdict.items())


def summary_text(result: Any) -> str:
    """What the numbers show, in a few sentences."""
    rows = {r["method"]: r for r in result.summary}
    parts = []
    cka = ", ".join(f"{m} {rows[m]['task_cka_mean']:.3f}" for m in result.methods)
    parts.append(f"On the task inputs, last-layer linear CKA to the base is: {cka}.")
    general = ", ".join(f"{m} {rows[m]['general_cka_mean']:.3f}" for m in result.methods)
    parts.append(f"On general text: {general}.")
    score = ", ".join(f"{m} {rows[m]['score_mean']:.3f}" for m in result.methods)
    parts.append(f"Task score (base {result.base['score']:.3f}): {score}.")
    if "knowledge" in result.base:
        gk = ", ".join(f"{m} {rows[m]['knowledge_mean']:.3f}" for m in result.methods)
        loss = ", ".join(f"{m} {rows[m]['lm_loss_mean']:.3f}" for m in result.methods)
        parts.append(f"General-knowledge accuracy (base {result.base['knowledge']:.3f}): {gk}; "
                     f"LM loss on general text (base {result.base['lm_loss']:.3f}): {loss}.")
    if "retrieval" in result.base:
        ret = ", ".join(f"{m} {rows[m]['retrieval_mean']:.3f}" for m in result.methods)
        parts.append(f"Paraphrase retrieval (base {result.base['retrieval']:.3f}): {ret}.")
    parts.append(plateau_text(result))
    parts.append(f"The claim is {verdict_text(result)}.")
    return " ".join(parts)


def _settings_text(result: Any) -> str:
    s = result.settings
    return (f"Study `{s['study']}` (preset `{s['preset']}`), base `{s['base']}`; "
            f"{s['seeds']} seed(s); {s['epochs']} epoch(s) of {s['train_limit'] or 'all'} "
            f"training examples at batch {s['batch_size']} for every arm (PT-PEFT: half per "
            f"stage); {s['evaluations']} evaluation(s) per epoch. Probe sets: "
            f"{s['eval_limit'] or 'all'} task inputs (the eval set) and {s['general_limit']} "
            f"passages of general text. Features are hidden states at real tokens"
            f"{' after the first (the attention sink)' if s.get('skip_first') else ''}; "
            f"CKA is linear CKA to the base at the last layer; the "
            f"rank ratio uses samples of at least {s['rank_tokens']} tokens (their first "
            f"{s['rank_tokens']}).")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows)]


def _captions() -> dict[str, str]:
    return {**{name: caption for name, (_, caption) in FIGURES.items()}, **WEIGHT_FIGURES}


def _markdown(result: Any, figures: dict[str, list[Path]]) -> str:
    smoke = smoke_label(result)
    lines = [f"# repspace study ({result.settings['study']}): how tuning methods bend the "
             "pretrained space", "", *([f"**{smoke}**", ""] if smoke else []),
             _settings_text(result), "", "## Verdict", "",
             *_md_table(VERDICT_COLUMNS, verdict_rows(result)), "", LEGEND, "",
             f"**The claim is {verdict_text(result)}.** {plateau_text(result)}", "",
             "## Figures", ""]
    for name, caption in _captions().items():
        png, pdf = (path.as_posix() for path in figures[name])
        lines += [f"![{caption}]({png})", "", f"*{caption}* ([PDF]({pdf}))", ""]
    lines += ["## Results", "", "Per arm, last layer, mean ± std over seeds "
              "(`results.json` holds every layer).", "",
              *_md_table([t for _, t in columns(result)], table_rows(result)), "",
              "## Weight space", "",
              "dW = W_tuned - W_base per weight matrix, PEFT tuners merged into W (seed 0; no "
              "data needed; `weights.json` / `weights.csv` hold every number).", "",
              *_md_table([t for _, t in WEIGHT_COLUMNS], weight_rows(result)), "",
              "## What the numbers show", "", summary_text(result), ""]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(t)}</th>" for t in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(result: Any, figures: dict[str, list[Path]]) -> str:
    images = "".join(
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,'
        f'{base64.b64encode(figures[name][0].read_bytes()).decode()}"/>'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for name, caption in _captions().items())
    smoke = (f"<p><strong>{html.escape(smoke_label(result))}</strong></p>"
             if smoke_label(result) else "")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
             "line-height:1.4}table{border-collapse:collapse;font-size:0.8em;width:100%}"
             "td,th{border:1px solid #ccc;padding:3px 5px;text-align:right;"
             "overflow-wrap:anywhere}th{overflow-wrap:normal;hyphens:auto}"
             "td:first-child,th:first-child{text-align:left}"
             "img{max-width:100%}figure{margin:1.5em 0}")
    title = (f"repspace study ({html.escape(result.settings['study'])}): how tuning methods "
             "bend the pretrained space")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{style}</style></head><body><h1>{title}</h1>{smoke}"
            f"<p>{html.escape(_settings_text(result))}</p><h2>Verdict</h2>"
            f"{_html_table(VERDICT_COLUMNS, verdict_rows(result))}"
            f"<p>{html.escape(LEGEND)}</p><p><strong>The claim is "
            f"{html.escape(verdict_text(result))}.</strong> {html.escape(plateau_text(result))}"
            f"</p><h2>Figures</h2>{images}<h2>Results</h2><p>Per arm, last layer, mean ± std "
            f"over seeds.</p>{_html_table([t for _, t in columns(result)], table_rows(result))}"
            f"<h2>Weight space</h2><p>dW = W_tuned - W_base per weight matrix, PEFT tuners "
            f"merged (seed 0); intruder dimensions after Shuttleworth et al. 2024.</p>"
            f"{_html_table([t for _, t in WEIGHT_COLUMNS], weight_rows(result))}"
            f"<h2>What the numbers show</h2><p>{html.escape(summary_text(result))}</p>"
            f"</body></html>")


def write_report(result: Any, out: Path, weights: Any) -> list[Path]:
    """Write ``report.md``, ``report.html`` and the figures (those of the
    :class:`~repspace.results.weights.WeightReport` ``weights`` too) into ``out``."""
    from repspace.utils.files import write_text_atomic

    figures = {**save_demo_figures(result, out / "figures"),
               **save_weight_figures(weights, out / "figures")}
    relative = {k: [p.relative_to(out) for p in v] for k, v in figures.items()}
    write_text_atomic(out / "report.md", _markdown(result, relative))
    write_text_atomic(out / "report.html", _html(result, figures))
    return [out / "report.md", out / "report.html", *(p for v in figures.values() for p in v)]
