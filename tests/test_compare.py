"""compare(): identity gives CKA 1, a perturbation at layer k shows up from layer k on, outputs
are complete, and stores are cached by model and probe fingerprints."""

from __future__ import annotations

import json

import numpy as np
import peft
import pytest

import repspace
from repspace.analysis import cache as cache_module
from repspace.cli import main
from repspace.results.compare import COLUMNS, CompareResult
from repspace.store import FeatureStore, StoreWriter
from tests.conftest import make_peft


@pytest.fixture(scope="module")
def self_result(base, base_pt, probe, tmp_path_factory):
    out = tmp_path_factory.mktemp("self")
    return repspace.compare(base, [base_pt], data=probe, cache_dir=out / "cache",
                            out=out / "report", progress=False), out


def test_base_against_itself_is_identical(self_result):
    result, _ = self_result
    assert len(result.records) == 6
    for record in result.records:
        assert abs(record["cka"] - 1) < 1e-6
        assert abs(record["cka_debiased"] - 1) < 1e-6
        assert abs(record["mutual_knn"] - 1) < 1e-12
        assert record["procrustes"] < 1e-3
        assert record["effective_rank"] == pytest.approx(record["effective_rank_base"], abs=1e-9)
        assert record["rank_ratio"] == record["rank_ratio_base"]
    np.testing.assert_array_equal(result.spectra["base"], result.spectra["base-2"])
    matrix = np.asarray(result.cka_matrices["base-2"])
    np.testing.assert_allclose(np.diag(matrix), 1, atol=1e-6)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-9)
    moved = result.displacement["base-2"]
    assert moved["layer"] == result.layers[-1] and moved["k"] == 10
    assert max(moved["distance"]) < 1e-3 and set(moved["knn_change"]) == {0.0}


def test_outputs_are_written_and_reload(self_result):
    result, out = self_result
    report = out / "report"
    for stem in ("cka_by_layer", "effective_rank_by_layer", "spectra_last_layer", "cka_heatmap",
                 "displacement"):
        for ext in ("png", "pdf"):
            assert (report / f"{stem}.{ext}").stat().st_size > 1000
    again = CompareResult.from_json(report / "metrics.json")
    assert again.records == json.loads(result.to_json())["records"]
    assert again.displacement == json.loads(result.to_json())["displacement"]
    rows = (report / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",") == ["model", "layer", "modality", *COLUMNS]
    assert len(rows) == 1 + len(result.records)
    table = result.table()
    assert "encoder.layer.5" in table and "cka_debiased" in table
    assert "most and least moved samples, layer encoder.layer.5" in table
    assert sum(line.startswith("base-2  most") for line in table.splitlines()) == 5


def test_lora_on_one_layer_changes_only_that_layer_and_after(base, probe, tmp_path):
    k = 3
    model = make_peft(base, peft.LoraConfig(r=8, target_modules=["query", "value", "dense"],
                                            layers_to_transform=[k]))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.3)
    tuned = repspace.save_tuned_checkpoint(model, base, tmp_path / "layer3.pt")
    result = repspace.compare(base, [tuned], data=probe, cache_dir=tmp_path, progress=False,
                              tokens=False)
    cka = result.column("layer3", "cka")
    assert all(abs(c - 1) < 1e-6 for c in cka[:k])
    assert all(c < 1 - 1e-3 for c in cka[k:])
    assert result.column("layer3", "rank_ratio") == [None] * 6
    # Which samples moved: the metric on the stores' last layer, named by the probe's texts.
    moved = result.displacement["layer3"]
    with FeatureStore(result.stores["base"]) as b, FeatureStore(result.stores["layer3"]) as t:
        expected = repspace.metrics.displacement(b.pooled(moved["layer"]),
                                                 t.pooled(moved["layer"]), k=10)
    np.testing.assert_allclose(moved["distance"], expected.distance, rtol=0, atol=1e-12)
    np.testing.assert_allclose(moved["knn_change"], expected.knn_change, rtol=0, atol=0)
    order = np.argsort(-expected.distance, kind="stable")
    text_of = dict(zip(probe.ids, probe.texts, strict=True))
    assert [s["index"] for s in moved["most"]] == order[:5].tolist()
    assert [s["index"] for s in moved["least"]] == order[::-1][:5].tolist()
    for s in moved["most"] + moved["least"]:
        assert s["text"] == text_of[s["id"]]
        assert s["distance"] == expected.distance[s["index"]]
    most, least = moved["most"], moved["least"]
    assert most[0]["distance"] == max(moved["distance"]) > least[0]["distance"] > 0
    fig = result.plot_displacement()
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["layer3"]


def test_stores_are_cached_by_fingerprint(base, base_pt, probe, tmp_path, monkeypatch):
    kwargs = {"data": probe, "cache_dir": tmp_path, "progress": False, "layers": "blocks"}
    first = repspace.compare(base, [base_pt], **kwargs)
    stores = sorted((tmp_path / "stores").glob("*.h5"))
    assert len(stores) == 1  # base.pt and the loaded base have the same fingerprint

    def fail(*args, **kwargs):
        raise AssertionError("capture ran although the store was cached")

    monkeypatch.setattr(cache_module, "capture", fail)
    second = repspace.compare(base, [base_pt], **kwargs)
    assert second.records == first.records
    with pytest.raises(AssertionError, match="capture ran"):
        repspace.compare(base, [base_pt], **{**kwargs, "layers": "embeddings"})


def test_an_interrupted_cached_capture_is_resumed_not_restarted(base, probe, tmp_path,
                                                                monkeypatch):
    kwargs = {"data": probe, "progress": False, "layers": "blocks", "batch_size": 2,
              "tokens": False}
    fresh = repspace.compare(base, [base], cache_dir=tmp_path / "fresh", **kwargs)
    real_append = StoreWriter.append
    appended = []

    def append_then_die(self, ids, *rest):
        if self.n_written >= 16:  # windows of 8 batches of 2: the second window dies
            raise KeyboardInterrupt
        appended.append(len(ids))
        real_append(self, ids, *rest)

    monkeypatch.setattr(StoreWriter, "append", append_then_die)
    with pytest.raises(KeyboardInterrupt):
        repspace.compare(base, [base], cache_dir=tmp_path / "cut", **kwargs)
    assert appended == [16]
    monkeypatch.setattr(StoreWriter, "append", lambda self, ids, *rest: (
        appended.append(len(ids)), real_append(self, ids, *rest)))
    resumed = repspace.compare(base, [base], cache_dir=tmp_path / "cut", **kwargs)
    assert appended == [16, 16, 16]  # only the two missing windows were captured
    assert resumed.records == fresh.records


def test_compare_needs_a_tuned_model_and_enough_samples(base, probe, tmp_path):
    with pytest.raises(repspace.InputError, match="at least one"):
        repspace.compare(base, [], data=probe)
    with pytest.raises(repspace.InputError, match="at least 4 samples"):
        repspace.compare(base, [base], data=probe.subset(3), cache_dir=tmp_path)


@pytest.fixture(scope="module")
def layer3_pt(base, tmp_path_factory):
    model = make_peft(base, peft.LoraConfig(r=8, target_modules=["query", "value", "dense"],
                                            layers_to_transform=[3]))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.3)
    return repspace.save_tuned_checkpoint(model, base, tmp_path_factory.mktemp("l3") / "l3.pt")


def test_stores_over_the_memory_budget_are_streamed_to_the_same_numbers(
        base_pt, layer3_pt, probe, tmp_path, capsys):
    kwargs = {"data": probe, "cache_dir": tmp_path, "progress": False, "tokens": False,
              "weights": False}
    held = repspace.compare(base_pt, [layer3_pt], **kwargs)
    assert held.settings["streamed"] is False
    assert held.settings["memory_in_memory"] > 10**6  # so that a 1 MB budget streams
    out = tmp_path / "report"
    assert main(["compare", str(base_pt), str(layer3_pt), "--limit", "48", "--no-tokens",
                 "--no-weights", "--cache-dir", str(tmp_path), "--out", str(out),
                 "--memory-budget", "1MB"]) == 0
    printed = capsys.readouterr().out
    assert "streamed: in memory this comparison needs about" in printed
    streamed = CompareResult.from_json(out / "metrics.json")
    assert streamed.settings["streamed"] is True and streamed.settings["memory_budget"] == 10**6
    assert streamed.stores == held.stores  # the same cached stores, read the other way
    for a, b in zip(held.records, streamed.records, strict=True):
        assert (a["model"], a["layer"]) == (b["model"], b["layer"])
        for key in ("cka", "cka_debiased", "effective_rank", "effective_rank_base"):
            assert b[key] == pytest.approx(a[key], abs=1e-9), key
        assert b["procrustes"] == pytest.approx(a["procrustes"], abs=1e-7)
        assert b["mutual_knn"] is None and b["rank_ratio"] is None
    for name in ("base", "l3"):
        s = np.asarray(held.spectra[name])
        np.testing.assert_allclose(streamed.spectra[name], s, rtol=0, atol=1e-9 * s[0])
    np.testing.assert_allclose(streamed.cka_matrices["l3"], held.cka_matrices["l3"], atol=1e-6)
    assert streamed.displacement == {} and streamed.settings["left_out"] == [
        "mutual_knn", "rank_ratio", "displacement"]
    for stem in ("cka_by_layer", "effective_rank_by_layer", "spectra_last_layer", "cka_heatmap"):
        assert (out / f"{stem}.png").stat().st_size > 1000
    assert not (out / "displacement.png").exists()
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + len(held.records)


def test_a_budget_too_small_even_to_stream_or_not_a_size_is_refused(base_pt, layer3_pt, probe,
                                                                    tmp_path, capsys):
    kwargs = {"data": probe, "cache_dir": tmp_path, "progress": False, "tokens": False,
              "weights": False}
    with pytest.raises(repspace.InputError, match=r"even streamed, comparing 6 layers of 48 "
                       r"samples needs about .* more than the memory budget of 100.0 kB"):
        repspace.compare(base_pt, [layer3_pt], memory_budget="100kB", **kwargs)
    assert main(["compare", str(base_pt), str(layer3_pt), "--memory-budget", "lots",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["repspace: error: memory budget must be a size such as 2GB or 512MB, got "
                   "'lots'"]
