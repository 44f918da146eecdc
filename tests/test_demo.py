"""`repspace demo --quick`: the report is complete, every number is finite, and the numbers
equal what recomputing from the stored features gives; a second run reuses the cache."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

from repspace import metrics
from repspace.cli import main
from repspace.demo.report import FIGURES
from repspace.store import FeatureStore


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    return out, json.loads((out / "results.json").read_text())


def _numbers(value, path=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(value, float | int) and not isinstance(value, bool):
        yield path, value
    elif value is None:
        yield path, math.nan


def test_report_structure(demo):
    out, results = demo
    for name in FIGURES:
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"{name}.{ext}").stat().st_size > 2000
    markdown = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert "## Results" in markdown and "## What the numbers show" in markdown
    sources = re.findall(r'src="([^"]+)"', html)
    assert len(sources) == len(FIGURES) and all(s.startswith("data:image/png;base64,")
                                                for s in sources)
    for row in results["summary"]:
        assert f"| {row['method']} | {row['accuracy_mean']:.3f} | {row['cka_last_mean']:.3f} |" \
            in markdown
    verdict = "agree with the claim" if results["claims"]["holds"] else "do not fully agree"
    assert verdict in markdown and verdict in html


def test_every_number_is_finite(demo):
    _, results = demo
    bad = [path for path, value in _numbers(results) if not math.isfinite(value)]
    assert not bad, bad[:5]
    assert len(results["runs"]) == len(results["methods"]) == 7


def test_results_name_no_absolute_path(demo):
    out, results = demo
    text = (out / "results.json").read_text()
    assert str(out) not in text and str(Path(__file__).resolve().parent.parent) not in text
    assert results["settings"]["train"]["file"] == "data/task_train.jsonl"
    assert len(results["settings"]["train"]["sha256"]) == 64


def test_numbers_equal_recomputation_from_stores(demo):
    out, results = demo
    last = results["layers"][-1]
    base_stores = results["base"]["stores"]
    with FeatureStore(out / base_stores["probe"]) as store:
        base = store.pooled(last)
        assert store.sample_ids[:1] and len(store.sample_ids) == results["settings"][
            "probe_limit"]
    for run in results["runs"]:
        with FeatureStore(out / run["stores"]["probe"]) as store:
            tuned = store.pooled(last)
            record = run["layers"][-1]
            assert record["cka"] == pytest.approx(metrics.linear_cka(base, tuned), abs=1e-9)
            assert record["cka_debiased"] == pytest.approx(
                metrics.linear_cka(base, tuned, debiased=True), abs=1e-9)
            assert record["effective_rank"] == pytest.approx(metrics.effective_rank(tuned),
                                                             abs=1e-9)
            assert record["rank_ratio"] == pytest.approx(
                metrics.rank_ratio(store.tokens(last)), abs=1e-12)
        with FeatureStore(out / run["stores"]["paraphrase"]) as store:
            features = store.pooled(last)
            half = len(features) // 2
            expected = (metrics.retrieval_accuracy(features[:half], features[half:])
                        + metrics.retrieval_accuracy(features[half:], features[:half])) / 2
            assert run["retrieval"] == pytest.approx(expected, abs=1e-12)
    for row in results["summary"]:
        runs = [r for r in results["runs"] if r["method"] == row["method"]]
        assert row["cka_last_mean"] == pytest.approx(np.mean([r["layers"][-1]["cka"]
                                                              for r in runs]), abs=1e-12)
        assert row["accuracy_mean"] == pytest.approx(np.mean([r["accuracy"] for r in runs]))
        low, high = row["cka_last_ci"]
        assert low <= high
    probe = next(r for r in results["runs"] if r["method"] == "linear-probe")
    assert probe["layers"][-1]["cka"] == pytest.approx(1.0, abs=1e-9)  # the space is untouched


def test_second_run_reuses_the_cache(demo):
    out, results = demo
    checkpoints = {out / r["checkpoint"]: os.stat(out / r["checkpoint"]).st_mtime_ns
                   for r in results["runs"]}
    assert main(["demo", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["summary"] == results["summary"]
    for path, mtime in checkpoints.items():
        assert os.stat(path).st_mtime_ns == mtime
