"""Weight-space analysis on the real MiniLM: merged LoRA equals W + scale * B @ A computed by
hand, only the targeted matrices change, BitFit changes only biases, full fine-tuning of a
rank-2 update measures rank 2 with 2 intruders, adapters and prefixes are reported as added
tensors; the CLI writes JSON / CSV / figures with the same numbers; bad input is one line."""

from __future__ import annotations

import copy
import csv
import json
import math

import numpy as np
import peft
import pytest
import torch

import repspace
from repspace import metrics
from repspace.analysis.weights import weight_report
from repspace.cli import main
from repspace.models.adapters import BottleneckConfig, inject_bottleneck
from repspace.models.merging import PROMPT_EMBEDDINGS, merged_parameters
from repspace.models.tuned import bottleneck_part
from repspace.probes import load_probe
from repspace.results.weights import WEIGHT_COLUMNS, WeightReport
from tests.conftest import make_peft

FFN = "encoder.layer.2.intermediate.dense.weight"
NORM = "encoder.layer.4.output.LayerNorm.weight"


@pytest.fixture(scope="module")
def params(base):
    return {n: p.detach().clone() for n, p in base.model.named_parameters()}


@pytest.fixture(scope="module")
def bitfit_pt(base, params, tmp_path_factory):
    torch.manual_seed(1)
    biases = {n: p + 0.01 * torch.randn_like(p) for n, p in params.items()
              if n.endswith("bias") and "encoder.layer.1." in n}
    return repspace.save_tuned_checkpoint(base.model, base, tmp_path_factory.mktemp("w") /
                                          "bitfit.pt", method="bitfit", weights=biases), biases


@pytest.fixture(scope="module")
def full_pt(base, params, tmp_path_factory):
    """A 'full fine-tuning' checkpoint: a large rank-2 update of one feed-forward matrix and a
    shifted LayerNorm scale."""
    g = torch.Generator().manual_seed(2)
    W = params[FFN]
    update = 50 * torch.randn(W.shape[0], 2, generator=g) @ torch.randn(2, W.shape[1],
                                                                          generator=g)
    weights = {FFN: W + update * W.norm() / update.norm(), NORM: params[NORM] + 0.1}
    return repspace.save_tuned_checkpoint(base.model, base, tmp_path_factory.mktemp("w") /
                                          "full.pt", method="full", weights=weights), weights


@pytest.fixture(scope="module")
def adapter_pt(base, tmp_path_factory):
    model = copy.deepcopy(base.model)
    config = BottleneckConfig(reduction=16)
    inject_bottleneck(model, config)
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".adapter.up." in name:
                param.normal_(0, 0.01)
    part = bottleneck_part(model, config)
    path = repspace.save_tuned_checkpoint([part], base, tmp_path_factory.mktemp("w") /
                                          "adapter.pt", method="adapter")
    return path, part.state


@pytest.fixture(scope="module")
def report(base, tuned_pts, bitfit_pt, full_pt, adapter_pt):
    return weight_report(base, [tuned_pts["lora"], bitfit_pt[0], full_pt[0], adapter_pt[0],
                                tuned_pts["prefix"]], progress=False)


def _lora_factors(path):
    payload = torch.load(path, weights_only=True)
    config = payload["parts"][0]["config"]
    scale = config["lora_alpha"] / config["r"]
    state = {k.split("/", 1)[1].removeprefix("base_model.model."): v
             for k, v in payload["state_dict"].items()}
    modules = sorted({k.rsplit(".lora_", 1)[0] for k in state})
    return scale, config["r"], {m: (state[f"{m}.lora_B.weight"].double(),
                                    state[f"{m}.lora_A.weight"].double()) for m in modules}


def test_merged_lora_equals_base_plus_scaled_BA(base, params, tuned_pts):
    merged, extra = merged_parameters(repspace.load_model(tuned_pts["lora"], base=base))
    scale, _, factors = _lora_factors(tuned_pts["lora"])
    assert scale == 2.0 and len(factors) == 12 and not extra
    for module, (B, A) in factors.items():
        expected = params[f"{module}.weight"].double() + scale * B @ A
        np.testing.assert_allclose(merged[f"{module}.weight"].double(), expected, atol=2e-7)
    targeted = {f"{m}.weight" for m in factors}
    assert set(merged) == set(params)
    assert all(torch.equal(merged[n], params[n]) for n in params if n not in targeted)


@pytest.mark.parametrize("config", [
    peft.LoraConfig(r=4, target_modules=["key"], use_dora=True, layers_to_transform=[0, 3]),
    peft.IA3Config(target_modules=["key", "output.dense"], feedforward_modules=["output.dense"]),
], ids=["dora", "ia3"])
def test_merge_matches_peft_merge_and_unload(base, tmp_path, config):
    model = make_peft(base, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ia3_l" in name:
                param.uniform_(0.5, 1.5)
    path = repspace.save_tuned_checkpoint(model, base, tmp_path / "tuned.pt")
    merged, _ = merged_parameters(repspace.load_model(path, base=base))
    reference = dict(copy.deepcopy(model).merge_and_unload().named_parameters())
    assert set(merged) == set(reference)
    for name, value in reference.items():
        torch.testing.assert_close(merged[name], value, rtol=0, atol=1e-6)
    originals = dict(base.model.named_parameters())
    assert sum(not torch.equal(v, originals[n]) for n, v in reference.items()) >= 2


def test_lora_changes_only_the_targeted_matrices_by_a_rank_r_update(report, base, params,
                                                                     tuned_pts):
    scale, r, factors = _lora_factors(tuned_pts["lora"])
    records = report.model_records("lora")
    assert {rec["name"] for rec in records} == {f"{m}.weight" for m in factors}
    assert all(rec["kind"] == "matrix" for rec in records)
    for rec in records:
        B, A = factors[rec["name"].removesuffix(".weight")]
        W = params[rec["name"]].double().numpy()
        update = (scale * B @ A).numpy()
        assert rec["numerical_rank"] == r
        assert rec["energy_rank"] <= r
        assert rec["rel_frobenius"] == pytest.approx(np.linalg.norm(update) / np.linalg.norm(W),
                                                     rel=1e-5)
        assert rec["intruders"] == metrics.intruder_dimensions(W, W + update).count
        assert rec["layer"] == rec["name"].rsplit(".attention", 1)[0]
        assert rec["matrix"] in ("attention.self.query", "attention.self.value")


def test_bitfit_changes_only_biases(report, params, bitfit_pt):
    _, biases = bitfit_pt
    records = report.model_records("bitfit")
    assert {rec["name"] for rec in records} == set(biases)
    for rec in records:
        assert rec["kind"] == "vector" and rec.get("numerical_rank") is None
        b, tuned = params[rec["name"]].double(), biases[rec["name"]].double()
        assert rec["rel_frobenius"] == pytest.approx(float((tuned - b).norm() / b.norm()),
                                                     rel=1e-5)
    summary = next(row for row in report.summary() if row["model"] == "bitfit")
    assert summary["vectors"] == len(biases) and summary["matrices"] == 0
    assert summary["changed_params"] == sum(b.numel() for b in biases.values())


def test_full_rank_two_update_has_rank_two_and_two_intruders(report, base, full_pt, tmp_path):
    matrix = next(r for r in report.model_records("full") if r["name"] == FFN)
    assert matrix["numerical_rank"] == 2 and matrix["energy_rank"] <= 2
    assert matrix["rel_frobenius"] == pytest.approx(1.0, rel=1e-5)
    assert matrix["intruders"] == 2
    s = torch.linalg.svdvals(full_pt[1][FFN].double())
    assert matrix["intruder_share"] == pytest.approx(float((s[:2] ** 2).sum() / (s**2).sum()),
                                                     rel=1e-6)
    assert matrix["shape"] == "1536x384" and matrix["params"] == 1536 * 384
    norm = next(r for r in report.model_records("full") if r["name"] == NORM)
    assert norm["kind"] == "vector"
    assert norm["dw_frobenius"] == pytest.approx(0.1 * math.sqrt(384), rel=1e-5)
    assert len(report.model_records("full")) == 2
    small = weight_report(base, [full_pt[0]], max_dim=1000, progress=False)
    skipped = next(r for r in small.records if r["name"] == FFN)
    assert skipped.get("numerical_rank") is None
    assert skipped["rel_frobenius"] == pytest.approx(matrix["rel_frobenius"], rel=1e-12)


def test_adapters_and_prefix_are_added_tensors(report, adapter_pt, tuned_pts):
    _, state = adapter_pt
    added = report.model_records("adapter")
    assert all(r["kind"] == "added" for r in added)
    assert {r["name"] for r in added} == set(state)
    assert sum(r["params"] for r in added) == 226_080  # the README's adapter count
    for r in added:
        assert r["norm"] == pytest.approx(float(state[r["name"]].double().norm()), rel=1e-6)
        if r["name"].endswith("down.weight"):
            assert r["numerical_rank"] == 24 and len(r["spectrum"]) == 24
    (prefix,) = report.model_records("prefix")
    stored = torch.load(tuned_pts["prefix"], weights_only=True)["state_dict"]
    embeddings = stored[f"0/{PROMPT_EMBEDDINGS}"].double()
    assert prefix["name"] == PROMPT_EMBEDDINGS and prefix["kind"] == "added"
    assert prefix["shape"] == "6x4608" and prefix["params"] == 6 * 4608
    assert prefix["norm"] == pytest.approx(float(embeddings.norm()), rel=1e-6)
    np.testing.assert_allclose(prefix["spectrum"], torch.linalg.svdvals(embeddings).numpy(),
                               rtol=1e-6)


def test_cli_writes_json_csv_and_figures_with_the_same_numbers(report, base_pt, tuned_pts,
                                                               bitfit_pt, tmp_path, capsys):
    out = tmp_path / "weights"
    assert main(["weights", str(base_pt), str(tuned_pts["lora"]), str(bitfit_pt[0]),
                 "--out", str(out), "--k", "5", "--epsilon", "0.4", "--top", "6"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:3] == ["model", "matrices", "vectors"]
    assert any(line.startswith("lora ") for line in printed.splitlines())
    data = json.loads((out / "weights.json").read_text())
    again = WeightReport.from_json(out / "weights.json")
    assert again.settings["k"] == 5 and again.settings["epsilon"] == 0.4
    expected = [r for r in json.loads(report.to_json())["records"]
                if r["model"] in ("lora", "bitfit")]
    assert len(expected) == len(data["records"])
    for mine, theirs in zip(data["records"], expected, strict=True):  # k-independent numbers
        for key in ("name", "kind", "rel_frobenius", "rel_spectral", "numerical_rank",
                    "effective_rank", "energy_rank", "spectrum"):
            assert mine.get(key) == theirs.get(key)
    assert all(len(r["angles_deg"]) == 6 and len(r["intruder_max_cos"]) == 5
               for r in data["records"] if r["kind"] == "matrix")
    with open(out / "weights.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["model", "name", "layer", "matrix", *WEIGHT_COLUMNS]
    assert len(rows) == len(data["records"]) == 12 + len(bitfit_pt[1])
    for row, record in zip(rows, data["records"], strict=True):
        for key in ("rel_frobenius", "rel_spectral", "effective_rank", "intruder_share"):
            if record.get(key) is not None:
                assert float(row[key]) == record[key]
    for stem in ("weights_dw_heatmap", "weights_dw_spectra", "weights_intruders"):
        for ext in ("png", "pdf"):
            assert (out / f"{stem}.{ext}").stat().st_size > 1000


def test_compare_adds_the_weight_section(base, tuned_pts, report, tmp_path):
    result = repspace.compare(base, [tuned_pts["lora"]], data=load_probe(limit=12), tokens=False,
                              cache_dir=tmp_path / "cache", out=tmp_path / "out",
                              progress=False)
    assert result.weights is not None
    assert json.loads(result.weights.to_json())["records"] == [
        r for r in json.loads(report.to_json())["records"] if r["model"] == "lora"]
    assert (tmp_path / "out" / "weights.csv").is_file()
    again = repspace.CompareResult.from_json(tmp_path / "out" / "metrics.json")
    assert again.weights.summary() == WeightReport.from_json(
        tmp_path / "out" / "weights.json").summary()


def test_bad_input_is_one_line(base_pt, tuned_pts, tmp_path, capsys):
    payload = torch.load(tuned_pts["lora"], weights_only=True)
    payload["base_fingerprint"] = "0" * 64
    other = tmp_path / "other-base.pt"
    torch.save(payload, other)
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.ones(2)}, plain)
    cases = [([str(other)], "was tuned from base 000000000000"),
             ([str(plain)], "not a repspace checkpoint"),
             ([str(tmp_path / "missing.pt")], "not found"),
             ([str(tuned_pts["lora"]), "--epsilon", "2"], "epsilon must be in (0, 1]"),
             ([str(tuned_pts["lora"]), "--k", "0"], "k must be a positive integer")]
    for args, message in cases:
        assert main(["weights", str(base_pt), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("repspace: error: ") and message in err and "\n" not in err


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as info:
        main(["weights", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "repspace weights base.pt lora.pt" in out.split("examples:", 1)[1]
    for option in ("--k", "--epsilon", "--top", "--out"):
        assert option in out
