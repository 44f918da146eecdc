"""`repspace demo --quick` (the encoder study) and `--study decoder --quick`: the report is
complete and renders in a browser, every number is finite, the numbers equal what recomputing
from the stored features gives, the trajectories end at the final models, the checks follow
their stated rule, and a second run reuses the cache."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from repspace import metrics
from repspace.capture import capture
from repspace.cli import main
from repspace.demo.claims import PLATEAU_GAIN, verdict
from repspace.demo.forgetting import is_correct, normalize
from repspace.demo.report import WEIGHT_FIGURES
from repspace.demo.run import _Features
from repspace.demo.settings import StudySettings
from repspace.plots.demo import FIGURES
from repspace.probes import load_probe
from repspace.store import FeatureStore
from tests.browser import render

#: Values that are legitimately undefined: a trajectory check has no CI and no test (and no
#: estimate when neither arm passed the base's score); the rank ratio of short inputs.
UNDEFINED = re.compile(r"^\.checks\[\d+\]\.(ci|p|estimate|values\.[\w-]+)$|rank_ratio")


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


def test_report_puts_the_verdict_first_and_renders(demo, tmp_path):
    out, results = demo
    for name in [*FIGURES, *WEIGHT_FIGURES]:
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"{name}.{ext}").stat().st_size > 2000
    markdown = (out / "report.md").read_text()
    sections = [markdown.index(f"## {s}") for s in ("Verdict", "Figures", "Results")]
    assert sections == sorted(sections)
    assert "smoke run: numbers are not meaningful" in markdown
    for check in results["checks"]:
        assert f"| {check['claim']} | {check['probe_set']} |" in markdown
    probe_sets = {c["probe_set"] for c in results["checks"]}
    assert probe_sets == {"task", "general"}
    page = render(out / "report.html", tmp_path / "report.png")
    assert len(page["images"]) == len(FIGURES) + len(WEIGHT_FIGURES)
    assert all(image["ok"] for image in page["images"]), page["images"]
    assert not page["wide"] and page["scroll"] <= page["width"], page
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_every_number_is_finite(demo):
    _, results = demo
    bad = [path for path, value in _numbers(results) if not math.isfinite(value)
           and not UNDEFINED.search(path) and not path.startswith(".settings.")]
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
    layers, last = results["layers"], results["layers"][-1]
    rank_tokens = results["settings"]["rank_tokens"]
    base = {}
    for probe_set in ("task", "general"):
        with FeatureStore(out / results["base"]["stores"][probe_set]) as store:
            base[probe_set] = {la: store.pooled(la) for la in layers}
    for run in results["runs"]:
        for probe_set in ("task", "general"):
            with FeatureStore(out / run["stores"][probe_set]) as store:
                for i, layer in enumerate(layers):
                    tuned, record = store.pooled(layer), run[probe_set][i]
                    assert record["cka"] == pytest.approx(
                        metrics.linear_cka(base[probe_set][layer], tuned), abs=1e-9)
                    assert record["cka_debiased"] == pytest.approx(
                        metrics.linear_cka(base[probe_set][layer], tuned, debiased=True),
                        abs=1e-9)
                    assert record["effective_rank_ratio"] == pytest.approx(
                        metrics.effective_rank(tuned)
                        / metrics.effective_rank(base[probe_set][layer]), abs=1e-9)
                if run["seed"] == 0:  # seed 0 keeps token features: the rank ratio
                    long = [t[:rank_tokens] for t in store.tokens(last)
                            if t.shape[0] >= rank_tokens]
                    assert run[probe_set][-1]["rank_samples"] == len(long)
                    if probe_set == "general":
                        assert len(long) > 50
                        assert run[probe_set][-1]["rank_ratio"] == pytest.approx(
                            metrics.rank_ratio(long), abs=1e-12)
        with FeatureStore(out / run["stores"]["paraphrase"]) as store:
            features = store.pooled(last)
            half = len(features) // 2
            expected = (metrics.retrieval_accuracy(features[:half], features[half:])
                        + metrics.retrieval_accuracy(features[half:], features[:half])) / 2
            assert run["retrieval"] == pytest.approx(expected, abs=1e-12)
    probe = next(r for r in results["runs"] if r["method"] == "linear-probe")
    assert probe["task"][-1]["cka"] == pytest.approx(1.0, abs=1e-9)  # the space is untouched


def test_trajectories_run_from_the_base_to_the_final_model(demo):
    _, results = demo
    evaluations = results["settings"]["evaluations"]
    for name, points in results["trajectories"].items():
        run = next(r for r in results["runs"] if r["method"] == name and r["seed"] == 0)
        assert points[0] == {"step": 0, "score": results["base"]["score"], "cka": 1.0,
                             "effective_rank_ratio": 1.0}
        steps = [p["step"] for p in points]
        assert steps == sorted(steps) and len(steps) == evaluations + 1
        assert points[-1]["cka"] == pytest.approx(run["task"][-1]["cka"], abs=1e-12)
        assert points[-1]["score"] == pytest.approx(run["score"])
        assert [p["score"] for p in points[1:]] == [
            h["accuracy"] for h in run["history"]]
    summary = {row["method"]: row for row in results["summary"]}
    for name, row in summary.items():
        history = next(r for r in results["runs"] if r["method"] == name)["history"]
        gain = history[-1]["accuracy"] - history[-2]["accuracy"]
        assert row["last_gain"] == pytest.approx(gain)
        assert row["plateaued"] == (gain <= PLATEAU_GAIN)
        for record in history:
            assert np.mean(record["eval_hits"]) == pytest.approx(record["accuracy"])
            assert len(record["eval_hits"]) == results["settings"]["eval_limit"]
        moved = np.subtract(history[-1]["eval_hits"], history[-2]["eval_hits"])
        assert row["plateau_test"]["gained"] == np.sum(moved > 0)
        assert row["plateau_test"]["lost"] == np.sum(moved < 0)


def test_checks_follow_their_rule(demo):
    _, results = demo
    summary = {row["method"]: row for row in results["summary"]}
    for check in results["checks"]:
        low = check["ci"][0] if check["ci"] else None
        threshold = -0.01 if "matches the task score" in check["claim"] else 0.0
        if check["kind"] != "trajectory":
            assert check["verdict"] == verdict(check["estimate"], low, threshold)
            assert check["ci"][0] <= check["estimate"] <= check["ci"][1]
            assert 0 <= check["p"] <= 1
        if check["kind"] == "representation" and "CKA" in check["numbers"]:
            a, b = check["values"]
            key = f"{check['probe_set']}_cka_mean"
            assert check["values"][a] == pytest.approx(summary[a][key], abs=1e-9)
            assert check["estimate"] == pytest.approx(summary[a][key] - summary[b][key],
                                                      abs=1e-9)
    assert set(results["verdict"]) == {"task", "general"}


def test_second_run_reuses_the_cache(demo):
    out, results = demo
    checkpoints = {out / r["checkpoint"]: os.stat(out / r["checkpoint"]).st_mtime_ns
                   for r in results["runs"]}
    assert main(["demo", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["summary"] == results["summary"]
    for path, mtime in checkpoints.items():
        assert os.stat(path).st_mtime_ns == mtime


def test_the_knowledge_rule():
    assert normalize("The Eiffel Tower, in Paris!") == ["eiffel", "tower", "in", "paris"]
    assert is_correct("It has twelve sides.", "12")
    assert is_correct("About 300,000 km/s.", "300000")
    assert not is_correct("Parisian food", "Paris")
    assert not is_correct("10.0 metres", "0")


@pytest.fixture(scope="module")
def decoder(smollm2_pt, tmp_path_factory):
    """The decoder study's smoke run, on the session's export of SmolLM2."""
    out = tmp_path_factory.mktemp("decoder")
    (out / "cache").mkdir()
    shutil.copy(smollm2_pt, out / "cache" / "base-decoder.pt")
    assert main(["demo", "--study", "decoder", "--quick", "--out", str(out),
                 "--device", "cpu"]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_decoder_study_measures_forgetting_and_last_tokens(decoder):
    out, results = decoder
    assert results["settings"]["study"] == "decoder"
    assert results["base"]["knowledge"] == 1.0  # the shipped questions are those it answers
    assert 0 < results["base"]["lm_loss"] < 6
    for run in results["runs"]:
        assert 0 <= run["knowledge"] <= 1 and len(run["knowledge_hits"]) == 24
        assert run["lm_loss"] > 0
        for probe_set in ("task", "general"):
            assert 0 < run[probe_set][-1]["cka_last_token"] <= 1 + 1e-9
            assert run[probe_set][-1]["rank_ratio"] is not None
    claims = {c["claim"] for c in results["checks"]}
    assert "prefix forgets less than LoRA" in claims
    markdown = (out / "report.md").read_text()
    assert "GK accuracy" in markdown and "LM loss" in markdown
    assert "CKA task (last token)" in markdown
    assert "after the first (the attention sink)" in markdown


def test_decoder_features_skip_the_sink_and_last_tokens_recompute(decoder, tmp_path):
    """Decoder stores leave the first token (the attention sink) out; the last-token features
    are the last row of each sample's token matrix, which a separate capture with last-token
    pooling reproduces, and the last-token CKA and its claim checks are recomputed from them."""
    out, results = decoder
    last = results["layers"][-1]

    def features(stores: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
        assert f"{name}@last" not in stores  # seed 0 keeps its tokens: no second pass
        with FeatureStore(out / stores[name]) as store:
            assert store.meta["settings"]["skip_first"] is True
            tokens = store.tokens(last)
            np.testing.assert_allclose(store.pooled(last), np.stack([t.mean(0) for t in tokens]),
                                       rtol=1e-5, atol=1e-4)
            return store.pooled(last), np.stack([t[-1] for t in tokens])

    base = {s: features(results["base"]["stores"], s) for s in ("task", "general")}
    settings = StudySettings.preset_of("decoder", "quick")
    general = load_probe(settings.general, limit=settings.general_limit)
    direct = capture(out / "cache" / "base-decoder.pt", general, out=tmp_path / "last.h5",
                     layers=[last], pooling="last", max_length=settings.general_length,
                     device="cpu", progress=False, skip_first=True)
    with FeatureStore(direct) as store:
        direct_last = store.pooled(last)
    np.testing.assert_allclose(direct_last, base["general"][1], rtol=1e-4, atol=1e-4)
    # a model captured without tokens (seeds after the first) reads the SET@last store instead
    stores = {"general": out / results["base"]["stores"]["general"], "general@last": direct}
    read = _Features(stores, [last], last_token=True).last["general"][last]
    np.testing.assert_array_equal(read, direct_last)
    summary = {row["method"]: row for row in results["summary"]}
    for run in results["runs"]:
        for s in ("task", "general"):
            tuned = features(run["stores"], s)[1]
            assert run[s][-1]["cka_last_token"] == pytest.approx(
                metrics.linear_cka(base[s][1], tuned), abs=1e-9)
    last_checks = [c for c in results["checks"] if c["probe_set"].endswith(", last token")]
    assert {c["probe_set"] for c in last_checks} == {"task, last token", "general, last token"}
    for check in last_checks:
        a, b = check["values"]
        key = f"{check['probe_set'].split(',')[0]}_cka_last_token_mean"
        assert check["values"][a] == pytest.approx(summary[a][key], abs=1e-9)
        assert check["estimate"] == pytest.approx(summary[a][key] - summary[b][key], abs=1e-9)
