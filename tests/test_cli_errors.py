"""The command line: help texts, and bad input giving one error line, exit status 2 and no
output that looks complete."""

from __future__ import annotations

import copy
import errno
import json
import os
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import repspace
from repspace.cli import main
from repspace.errors import FormatError
from repspace.models.checkpoint import write_checkpoint
from repspace.models.sources import base_payload
from repspace.probes import load_probe, text_id
from repspace.store import FeatureStore, StoreWriter

SENTENCES = ["The cat sat on the warm mat.", "Rain is expected later this evening.",
             "She finished the report before lunch."]
BLOCKS = [f"encoder.layer.{i}" for i in range(6)]


class _RunsCode:
    """Unpickling this runs a shell command (it creates ``marker``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    (folder / "small.txt").write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    (folder / "latin1.txt").write_bytes(b"A fine line.\nCaf\xe9 au lait.\n")
    (folder / "empty.txt").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def other_base_pt(base: repspace.LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MiniLM base with one weight changed: another base with another fingerprint."""
    model = copy.deepcopy(base.model)
    with torch.no_grad():
        model.get_parameter("encoder.layer.0.attention.self.query.weight")[0, 0] += 0.5
    path = tmp_path_factory.mktemp("other") / "other_base.pt"
    return write_checkpoint(base_payload(model, base.tokenizer, "perturbed"), path)


def run_cli(capsys: pytest.CaptureFixture, args: list) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what fixtures printed
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code: int, out: str, err: str, *fragments: str) -> str:
    """Exit status 2, nothing on stdout, and on stderr one line ``repspace: error: ...`` holding
    every fragment, after nothing but progress bars; never a traceback."""
    assert code == 2, err
    assert "Traceback" not in err
    *before, line = err.strip("\n").splitlines()
    assert all("%|" in earlier or not earlier.strip() for earlier in before), err
    assert line.startswith("repspace: error: ")
    for fragment in fragments:
        assert fragment in line
    assert out == ""
    return line


def assert_no_complete_store(path: Path) -> None:
    if path.exists():
        with pytest.raises(FormatError):
            FeatureStore(path).close()


# -- help ----------------------------------------------------------------------------------------

def test_top_level_help_lists_commands(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("export", "capture", "merge", "metrics", "compare", "weights", "tune",
                    "demo"):
        assert command in out
    assert "COMMAND --help" in out


def test_version(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"repspace {repspace.__version__}"


@pytest.mark.parametrize("command", ["export", "capture", "merge", "metrics", "compare",
                                     "weights", "tune", "demo"])
def test_subcommand_help_has_examples(capsys: pytest.CaptureFixture, command: str) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    examples = out.split("examples:", 1)[1]
    assert f"repspace {command} " in examples


def test_missing_required_argument_is_a_usage_error(capsys: pytest.CaptureFixture,
                                                    base_pt: Path) -> None:
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["capture", str(base_pt)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--out" in err
    assert "Traceback" not in err


# -- bad checkpoints -----------------------------------------------------------------------------

def test_missing_checkpoint(capsys: pytest.CaptureFixture, tmp_path: Path, files: Path) -> None:
    out = tmp_path / "o.h5"
    result = run_cli(capsys, ["capture", tmp_path / "absent.pt", "--data", files / "small.txt",
                              "--out", out])
    assert_one_error_line(*result, "not found", "absent.pt")
    assert not out.exists()


def test_empty_checkpoint(capsys: pytest.CaptureFixture, tmp_path: Path, files: Path) -> None:
    ckpt = tmp_path / "empty.pt"
    ckpt.write_bytes(b"")
    out = tmp_path / "o.h5"
    result = run_cli(capsys, ["capture", ckpt, "--data", files / "small.txt", "--out", out])
    assert_one_error_line(*result, "empty", "empty.pt")
    assert not out.exists()


def test_truncated_checkpoint(capsys: pytest.CaptureFixture, tmp_path: Path, files: Path,
                              base_pt: Path) -> None:
    raw = base_pt.read_bytes()
    ckpt = tmp_path / "half.pt"
    ckpt.write_bytes(raw[: len(raw) // 2])
    out = tmp_path / "o.h5"
    result = run_cli(capsys, ["capture", ckpt, "--data", files / "small.txt", "--out", out])
    assert_one_error_line(*result, "corrupt or truncated", "half.pt")
    assert not out.exists()


def test_checkpoint_with_code_is_refused_and_not_run(capsys: pytest.CaptureFixture,
                                                     tmp_path: Path, files: Path) -> None:
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pt"
    torch.save({"format": "repspace-checkpoint", "format_version": 1, "kind": "base",
                "state_dict": _RunsCode(marker)}, ckpt)
    with zipfile.ZipFile(ckpt) as archive:  # the file really carries a call of os.system
        pickled = next(archive.read(n) for n in archive.namelist() if n.endswith("data.pkl"))
    assert b"system" in pickled
    out = tmp_path / "o.h5"
    result = run_cli(capsys, ["capture", ckpt, "--data", files / "small.txt", "--out", out])
    assert_one_error_line(*result, "refuses to unpickle code (weights_only=True)", "system",
                          "evil.pt")
    assert not marker.exists()
    assert not out.exists()


def test_unknown_checkpoint_version(capsys: pytest.CaptureFixture, tmp_path: Path,
                                    files: Path, tuned_pts: dict) -> None:
    payload = torch.load(tuned_pts["lora"], weights_only=True)
    payload["format_version"] = 99
    ckpt = tmp_path / "future.pt"
    torch.save(payload, ckpt)
    out = tmp_path / "o.h5"
    result = run_cli(capsys, ["capture", ckpt, "--data", files / "small.txt", "--out", out])
    line = assert_one_error_line(*result, "version", "future.pt")
    assert "99" in line
    assert not out.exists()


def test_tuned_checkpoint_on_another_base(capsys: pytest.CaptureFixture, tmp_path: Path,
                                          files: Path, base_pt: Path, other_base_pt: Path,
                                          tuned_pts: dict) -> None:
    out = tmp_path / "o.h5"
    args = ["capture", tuned_pts["lora"], "--data", files / "small.txt", "--out", out]
    result = run_cli(capsys, [*args, "--base", other_base_pt])
    assert_one_error_line(*result, "tuned from base", "other_base.pt")
    assert not out.exists()
    # The same command with the base it was tuned from works: the base was the only problem.
    code, _, err = run_cli(capsys, [*args, "--base", base_pt, "--json"])
    assert code == 0, err
    with FeatureStore(out) as store:
        assert len(store.sample_ids) == len(SENTENCES)


# -- bad layers and probes -----------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["encoder.layr.*", "re:decoder.*"])
def test_layers_matching_nothing_name_the_closest(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                  files: Path, base_pt: Path,
                                                  spec: str) -> None:
    out = tmp_path / "o.h5"
    result = run_cli(capsys, ["capture", base_pt, "--data", files / "small.txt", "--layers",
                              spec, "--out", out])
    assert_one_error_line(*result, "matches no module", spec, "encoder.layer")
    assert not out.exists()


def test_non_utf8_probe(capsys: pytest.CaptureFixture, tmp_path: Path, files: Path,
                        base_pt: Path) -> None:
    out = tmp_path / "o.h5"
    result = run_cli(capsys, ["capture", base_pt, "--data", files / "latin1.txt", "--out", out])
    assert_one_error_line(*result, "latin1.txt:2:", "UTF-8")
    assert not out.exists()


def test_empty_probe(capsys: pytest.CaptureFixture, tmp_path: Path, files: Path,
                     base_pt: Path) -> None:
    out = tmp_path / "o.h5"
    result = run_cli(capsys, ["capture", base_pt, "--data", files / "empty.txt", "--out", out])
    assert_one_error_line(*result, "empty", "empty.txt")
    assert not out.exists()


def test_export_of_a_missing_folder(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    out = tmp_path / "base.pt"
    result = run_cli(capsys, ["export", tmp_path / "no-such-model", out])
    assert_one_error_line(*result, "not found", "no-such-model")
    assert not out.exists()


def test_compare_with_a_missing_tuned_checkpoint(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                 five: Path, base_pt: Path) -> None:
    out = tmp_path / "results"
    result = run_cli(capsys, ["compare", base_pt, tmp_path / "absent.pt", "--data", five,
                              "--k", "2", "--out", out, "--cache-dir", tmp_path / "cache"])
    assert_one_error_line(*result, "not found", "absent.pt")
    assert not (out / "metrics.json").exists()


# -- a capture interrupted half way, then resumed -------------------------------------------------

def test_disk_full_mid_capture_leaves_an_incomplete_store_that_resumes(
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        base_pt: Path) -> None:
    # 10 samples in batches of 1: capture writes windows of 8 batches, so 2 segments.
    whole = tmp_path / "whole.h5"
    args = ["capture", base_pt, "--limit", "10", "--batch-size", "1", "--max-length", "16",
            "--json"]
    assert run_cli(capsys, [*args, "--out", whole])[0] == 0

    out = tmp_path / "cut.h5"
    real_append = StoreWriter.append

    def append_then_fill_disk(self: StoreWriter, ids: list, *rest: object) -> None:
        if self.n_written >= 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        real_append(self, ids, *rest)

    monkeypatch.setattr(StoreWriter, "append", append_then_fill_disk)
    code, stdout, err = run_cli(capsys, [*args, "--out", out])
    assert code == 2
    assert stdout == ""
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # a progress bar may come before it
    assert last.startswith("repspace: error: disk full while writing")
    assert "--resume" in last
    assert [ln for ln in err.splitlines() if "error" in ln] == [last]
    with pytest.raises(FormatError, match="incomplete"):
        FeatureStore(out)

    monkeypatch.undo()
    code, stdout, err = run_cli(capsys, [*args, "--out", out, "--resume"])
    assert code == 0, err
    assert json.loads(stdout)["samples"] == 10
    with FeatureStore(whole) as a, FeatureStore(out) as b:
        assert b.sample_ids == a.sample_ids == list(load_probe(limit=10).ids)
        for layer in BLOCKS:
            np.testing.assert_allclose(b.pooled(layer), a.pooled(layer), rtol=1e-5, atol=1e-6)


# -- success -------------------------------------------------------------------------------------

def test_capture_json_summary(capsys: pytest.CaptureFixture, tmp_path: Path, files: Path,
                              base_pt: Path, base: repspace.LoadedModel) -> None:
    out = tmp_path / "s.h5"
    code, stdout, err = run_cli(capsys, ["capture", base_pt, "--data", files / "small.txt",
                                         "--out", out, "--json"])
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["samples"] == len(SENTENCES)
    assert summary["store"] == str(out)
    assert summary["layers"] == BLOCKS
    assert summary["pooling"] == "mean"
    assert summary["tokens"] is False
    assert summary["model_fingerprint"] == base.fingerprint
    with FeatureStore(out) as store:
        assert store.sample_ids == [text_id(s) for s in SENTENCES]
        assert store.pooled("encoder.layer.5").shape == (len(SENTENCES), 384)


def test_capture_plain_summary(capsys: pytest.CaptureFixture, tmp_path: Path, files: Path,
                               base_pt: Path) -> None:
    out = tmp_path / "s.h5"
    code, stdout, err = run_cli(capsys, ["capture", base_pt, "--data", files / "small.txt",
                                         "--out", out])
    assert code == 0, err
    assert f"{len(SENTENCES)} samples x {len(BLOCKS)} layers" in stdout


# -- the real console entry point ----------------------------------------------------------------

def test_python_m_repspace_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    out = tmp_path / "o.h5"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("REPSPACE_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "repspace", "capture",
                           str(tmp_path / "absent.pt"), "--out", str(out)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("repspace: error: checkpoint not found")
    assert proc.stdout == ""
    assert not out.exists()


# == issue #8: every kind of bad input, through the command line ===============================

FIVE = [*SENTENCES, "The museum opens at nine on Sundays.", "He fixed the bike with a spoon."]


@pytest.fixture(scope="module")
def five(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("five") / "five.txt"
    path.write_text("\n".join(FIVE) + "\n", encoding="utf-8")
    return path


def _variant(base: repspace.LoadedModel, folder: Path, name: str, change: dict) -> Path:
    """The MiniLM base with some parameters set to a value, as a base checkpoint."""
    model = copy.deepcopy(base.model)
    with torch.no_grad():
        for param, value in change.items():
            model.get_parameter(param).fill_(value)
    return write_checkpoint(base_payload(model, base.tokenizer, name), folder / f"{name}.pt")


@pytest.fixture(scope="module")
def nan_pt(base: repspace.LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base whose layer 3 attention query bias is NaN: every feature from layer 3 on is NaN."""
    return _variant(base, tmp_path_factory.mktemp("nan"), "nan",
                    {"encoder.layer.3.attention.self.query.bias": float("nan")})


@pytest.fixture(scope="module")
def constant_pt(base: repspace.LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base whose last LayerNorm has weight 0 and bias 0.5: layer 5 outputs 0.5 everywhere."""
    prefix = "encoder.layer.5.output.LayerNorm"
    return _variant(base, tmp_path_factory.mktemp("const"), "constant",
                    {f"{prefix}.weight": 0.0, f"{prefix}.bias": 0.5})


def _no_outputs(out: Path) -> None:
    assert not (out / "metrics.json").exists()
    assert not (out / "metrics.csv").exists()


# -- checkpoints that are not what they claim ----------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 4])
def test_plain_pickle_with_code_is_refused_naming_the_call(capsys: pytest.CaptureFixture,
                                                           tmp_path: Path, files: Path,
                                                           protocol: int) -> None:
    """A legacy (non-zip) pickle: protocol 2 names the call with GLOBAL, protocol 4 with
    STACK_GLOBAL from memoised strings; both are refused naming os.system, which never runs."""
    import pickle

    marker = tmp_path / "pwned"
    ckpt = tmp_path / "legacy.pt"
    ckpt.write_bytes(pickle.dumps({"state_dict": _RunsCode(marker)}, protocol=protocol))
    result = run_cli(capsys, ["capture", ckpt, "--data", files / "small.txt", "--out",
                              tmp_path / "o.h5"])
    line = assert_one_error_line(*result, "refuses to unpickle code (weights_only=True)",
                                 "legacy.pt")
    assert f"{os.system.__module__}.system" in line  # posix.system: what the pickle would call
    assert not marker.exists()
    assert not (tmp_path / "o.h5").exists()


@pytest.mark.parametrize("content", [
    np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes(),
    b"hello notes\n",  # torch's legacy unpickler raises KeyError on text
    b"e\x01\x02garbage",  # ... and IndexError on this
], ids=["random", "text", "short"])
def test_random_bytes_are_corrupt_not_code(capsys: pytest.CaptureFixture, tmp_path: Path,
                                           files: Path, content: bytes) -> None:
    ckpt = tmp_path / "noise.pt"
    ckpt.write_bytes(content)
    result = run_cli(capsys, ["capture", ckpt, "--data", files / "small.txt", "--out",
                              tmp_path / "o.h5"])
    line = assert_one_error_line(*result, "not a readable checkpoint", "noise.pt")
    assert "code" not in line


def test_base_checkpoint_of_unknown_version_in_compare(capsys: pytest.CaptureFixture,
                                                       tmp_path: Path, five: Path,
                                                       base_pt: Path) -> None:
    payload = torch.load(base_pt, weights_only=True)
    payload["format_version"] = 2
    future = tmp_path / "future_base.pt"
    torch.save(payload, future)
    out = tmp_path / "res"
    result = run_cli(capsys, ["compare", future, base_pt, "--data", five, "--k", "2", "--out",
                              out, "--cache-dir", tmp_path / "cache"])
    assert_one_error_line(*result, "future_base.pt", "format version 2", "reads version 1")
    _no_outputs(out)


def test_compare_tuned_checkpoint_on_another_base(capsys: pytest.CaptureFixture,
                                                  tmp_path: Path, five: Path,
                                                  other_base_pt: Path, tuned_pts: dict) -> None:
    out = tmp_path / "res"
    result = run_cli(capsys, ["compare", other_base_pt, tuned_pts["lora"], "--data", five,
                              "--k", "2", "--out", out, "--cache-dir", tmp_path / "cache"])
    assert_one_error_line(*result, "tuned from base", "lora.pt")
    _no_outputs(out)


def test_compare_layers_matching_nothing(capsys: pytest.CaptureFixture, tmp_path: Path,
                                         five: Path, base_pt: Path,
                                         other_base_pt: Path) -> None:
    out = tmp_path / "res"
    result = run_cli(capsys, ["compare", base_pt, other_base_pt, "--data", five, "--k", "2",
                              "--layers", "decoder.*", "--out", out, "--cache-dir",
                              tmp_path / "cache"])
    assert_one_error_line(*result, "matches no module", "decoder.*")
    _no_outputs(out)


def _minilm_copy(minilm_dir: Path, folder: Path, weights: bytes) -> Path:
    """A model folder with the real config and tokenizer (linked) and the given weights file."""
    folder.mkdir()
    for item in minilm_dir.iterdir():
        if item.is_file() and item.name != "model.safetensors":
            (folder / item.name).symlink_to(item)
    (folder / "model.safetensors").write_bytes(weights)
    return folder


@pytest.mark.parametrize("size", [0, 100_000])
def test_export_of_a_folder_with_corrupt_weights(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                 minilm_dir: Path, size: int) -> None:
    with open(minilm_dir / "model.safetensors", "rb") as weights:
        folder = _minilm_copy(minilm_dir, tmp_path / "model", weights.read(size))
    out = tmp_path / "base.pt"
    result = run_cli(capsys, ["export", folder, out])
    assert_one_error_line(*result, "cannot load model", "model", "deserializing header")
    assert not out.exists()


def test_export_of_a_truncated_safetensors_file(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                minilm_dir: Path) -> None:
    with open(minilm_dir / "model.safetensors", "rb") as weights:
        (tmp_path / "cut.safetensors").write_bytes(weights.read(1_000_000))
    out = tmp_path / "base.pt"
    result = run_cli(capsys, ["export", tmp_path / "cut.safetensors", out, "--config",
                              minilm_dir])
    assert_one_error_line(*result, "cut.safetensors", "not a readable safetensors file")
    assert not out.exists()


# -- feature stores: corrupt, of another version, misaligned -------------------------------------

@pytest.fixture(scope="module")
def shard_store(base_pt: Path, five: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shard") / "part0.h5"
    repspace.capture(base_pt, five, out=out, layers="encoder.layer.0", shard=(0, 1),
                     progress=False)
    return out


def _damaged(store: Path, folder: Path, how: str) -> Path:
    import h5py

    path = folder / f"{how}.h5"
    raw = store.read_bytes()
    path.write_bytes({"empty": b"", "truncated": raw[: len(raw) // 2]}.get(how, raw))
    if how == "version":
        with h5py.File(path, "r+") as f:
            f.attrs["format_version"] = 7
    return path


@pytest.mark.parametrize(("how", "message"), [
    ("empty", "not a readable HDF5 feature store (corrupt or truncated)"),
    ("truncated", "not a readable HDF5 feature store (corrupt or truncated)"),
    ("version", "feature store format version 7; this repspace reads version 1"),
])
def test_merge_of_a_bad_store(capsys: pytest.CaptureFixture, tmp_path: Path, shard_store: Path,
                              how: str, message: str) -> None:
    bad = _damaged(shard_store, tmp_path, how)
    out = tmp_path / "merged.h5"
    result = run_cli(capsys, ["merge", out, bad])
    assert_one_error_line(*result, message, bad.name)
    assert_no_complete_store(out)
    # The undamaged shard merges: the damage was the only problem.
    assert run_cli(capsys, ["merge", out, shard_store])[0] == 0
    with FeatureStore(out) as merged:
        assert merged.sample_ids == [text_id(s) for s in FIVE]


def test_merge_of_a_missing_store(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    result = run_cli(capsys, ["merge", tmp_path / "m.h5", tmp_path / "absent.h5"])
    assert_one_error_line(*result, "not found", "absent.h5")
    assert not (tmp_path / "m.h5").exists()


def _cached_compare(capsys: pytest.CaptureFixture, base_pt: Path, other: Path, five: Path,
                    cache: Path, out: Path) -> tuple[int, str, str]:
    return run_cli(capsys, ["compare", base_pt, other, "--data", five, "--k", "2", "--no-tokens",
                            "--layers", "encoder.layer.0,encoder.layer.5", "--max-length", "16",
                            "--out", out, "--cache-dir", cache])


def _other_store(cache: Path, other_base_pt: Path) -> Path:
    fingerprint = repspace.load_model(other_base_pt).fingerprint
    (store,) = (cache / "stores").glob(f"{fingerprint[:16]}-*.h5")
    return store


def test_compare_recaptures_a_damaged_cached_store(capsys: pytest.CaptureFixture,
                                                   tmp_path: Path, five: Path, base_pt: Path,
                                                   other_base_pt: Path) -> None:
    """The cache holds derived data: a cached store that cannot be read (here truncated; an
    empty one or one of another format version is read the same way, see the merge tests) is
    captured again, and the numbers are those of the first run."""
    cache = tmp_path / "cache"
    code, _, err = _cached_compare(capsys, base_pt, other_base_pt, five, cache, tmp_path / "a")
    assert code == 0, err
    store = _other_store(cache, other_base_pt)
    store.write_bytes(_damaged(store, tmp_path, "truncated").read_bytes())
    with pytest.raises(FormatError):
        FeatureStore(store)
    code, _, err = _cached_compare(capsys, base_pt, other_base_pt, five, cache, tmp_path / "b")
    assert code == 0, err
    with FeatureStore(store) as recaptured:
        assert recaptured.sample_ids == [text_id(s) for s in FIVE]
    first, second = (json.loads((tmp_path / d / "metrics.json").read_text())["records"]
                     for d in "ab")
    assert second == first


def test_compare_refuses_misaligned_stores(capsys: pytest.CaptureFixture, tmp_path: Path,
                                           five: Path, base_pt: Path,
                                           other_base_pt: Path) -> None:
    """A cached store whose sample ids differ from the base's, or come in another order, is an
    error, never aligned."""
    import h5py

    cache = tmp_path / "cache"
    assert _cached_compare(capsys, base_pt, other_base_pt, five, cache, tmp_path / "a")[0] == 0
    store = _other_store(cache, other_base_pt)
    with h5py.File(store, "r+") as f:
        ids = f["sample_ids"][:]
        f["sample_ids"][:] = ids[::-1]
    out = tmp_path / "b"
    result = _cached_compare(capsys, base_pt, other_base_pt, five, cache, out)
    assert_one_error_line(*result, "hold the same samples in a different order", store.name)
    _no_outputs(out)
    with h5py.File(store, "r+") as f:
        f["sample_ids"][:] = [b"someone-else", *ids[1:]]
    result = _cached_compare(capsys, base_pt, other_base_pt, five, cache, out)
    assert_one_error_line(*result, "hold different samples (2 ids differ", store.name)
    _no_outputs(out)


# -- probe and training data files ---------------------------------------------------------------

PROBE_FILES = {
    "cut.jsonl": (b'{"text": "one"}\n{"text": "tw', "cut.jsonl:2: invalid JSON"),
    "notext.jsonl": (b'{"text": "one"}\n{"txt": "two"}\n',
                     'notext.jsonl:2: no "text" field (the line has: txt)'),
    "array.jsonl": (b'{"text": "one"}\n["two"]\n', "array.jsonl:2: expected a JSON object with "
                    '"text", got list'),
    "latin1.jsonl": (b'{"text": "one"}\n{"text": "caf\xe9"}\n', "latin1.jsonl:2: not valid UTF-8"),
    "empty.jsonl": (b"\n\n", "empty.jsonl has no samples"),
    "binary.txt": (bytes(range(256)), "binary.txt:2: not valid UTF-8"),
}


@pytest.mark.parametrize("name", list(PROBE_FILES))
def test_bad_probe_file(capsys: pytest.CaptureFixture, tmp_path: Path, base_pt: Path,
                        name: str) -> None:
    content, message = PROBE_FILES[name]
    (tmp_path / name).write_bytes(content)
    out = tmp_path / "o.h5"
    result = run_cli(capsys, ["capture", base_pt, "--data", tmp_path / name, "--out", out])
    assert_one_error_line(*result, message)
    assert not out.exists()


TASK_FILES = {
    "empty.jsonl": (b"", "data file is empty: "),
    "cut.jsonl": (b'{"text": "good", "label": "pos"}\n{"text": "ba', "cut.jsonl:2: invalid JSON"),
    "nolabel.jsonl": (b'{"text": "good", "label": "pos"}\n{"text": "bad"}\n',
                      'nolabel.jsonl:2: no "label" field (the line has: text)'),
    "sentence.jsonl": (b'{"sentence": "good", "label": "pos"}\n',
                       'sentence.jsonl:1: no "text" field (the line has: sentence, label)'),
    "nulllabel.jsonl": (b'{"text": "good", "label": null}\n',
                        'nulllabel.jsonl:1: field "label" is null (the line has: text, label)'),
    "latin1.jsonl": (b'{"text": "good", "label": "pos"}\n{"text": "caf\xe9", "label": "neg"}\n',
                     "latin1.jsonl:2: not valid UTF-8"),
    "onelabel.jsonl": (b'{"text": "good", "label": "pos"}\n{"text": "fine", "label": "pos"}\n',
                       "needs at least 2 labels"),
}


@pytest.mark.parametrize("name", list(TASK_FILES))
def test_bad_training_file(capsys: pytest.CaptureFixture, tmp_path: Path, base_pt: Path,
                           name: str) -> None:
    content, message = TASK_FILES[name]
    (tmp_path / name).write_bytes(content)
    out = tmp_path / "t.pt"
    result = run_cli(capsys, ["tune", base_pt, "--method", "lora", "--data", tmp_path / name,
                              "--epochs", "1", "--out", out])
    assert_one_error_line(*result, message)
    assert not out.exists()


def test_image_that_does_not_decode(capsys: pytest.CaptureFixture, tmp_path: Path,
                                    tiny_llava_dir: Path) -> None:
    from PIL import Image

    Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "red.png")
    (tmp_path / "broken.png").write_bytes((tmp_path / "red.png").read_bytes()[:40])
    (tmp_path / "captions.jsonl").write_text(
        '{"id": "a", "image": "red.png", "text": "a red square"}\n'
        '{"id": "b", "image": "broken.png", "text": "a broken file"}\n', encoding="utf-8")
    out = tmp_path / "o.h5"
    result = run_cli(capsys, ["capture", tiny_llava_dir, "--data", tmp_path, "--out", out])
    assert_one_error_line(*result, "cannot decode image", "broken.png")
    assert not out.exists()


# -- degenerate features -------------------------------------------------------------------------

def test_nan_weights_stop_capture_naming_the_layer(capsys: pytest.CaptureFixture,
                                                   tmp_path: Path, five: Path,
                                                   nan_pt: Path) -> None:
    out = tmp_path / "o.h5"
    result = run_cli(capsys, ["capture", nan_pt, "--data", five, "--out", out])
    assert_one_error_line(*result, "features of layer encoder.layer.3 of", "nan.pt",
                          "contain NaN/inf (model weights or inputs?)")
    assert_no_complete_store(out)


def test_nan_weights_stop_compare(capsys: pytest.CaptureFixture, tmp_path: Path, five: Path,
                                  base_pt: Path, nan_pt: Path) -> None:
    out = tmp_path / "res"
    result = run_cli(capsys, ["compare", base_pt, nan_pt, "--data", five, "--k", "2", "--out",
                              out, "--cache-dir", tmp_path / "cache"])
    assert_one_error_line(*result, "encoder.layer.3", "NaN/inf")
    _no_outputs(out)


def test_constant_features_name_model_and_layer(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                five: Path, base_pt: Path,
                                                constant_pt: Path) -> None:
    """CKA is undefined for a constant feature matrix: an error naming the model and the layer,
    never a NaN in the table."""
    out = tmp_path / "res"
    result = run_cli(capsys, ["compare", base_pt, constant_pt, "--data", five, "--k", "2",
                              "--no-tokens", "--out", out, "--cache-dir", tmp_path / "cache"])
    assert_one_error_line(*result, "constant (Y)", "layer encoder.layer.5",
                          "Y is constant", "undefined")
    _no_outputs(out)


@pytest.mark.parametrize(("extra", "message"), [
    (["--limit", "3"], "comparisons need at least 4 samples; the probe has 3"),
    (["--k", "5"], "k = 5 needs at least 6 samples; the probe has 5"),
    (["--k", "0"], "must be at least 1, got 0"),
])
def test_too_few_samples_for_an_estimator(capsys: pytest.CaptureFixture, tmp_path: Path,
                                          five: Path, base_pt: Path, other_base_pt: Path,
                                          extra: list, message: str) -> None:
    out = tmp_path / "res"
    result = run_cli(capsys, ["compare", base_pt, other_base_pt, "--data", five, *extra,
                              "--out", out, "--cache-dir", tmp_path / "cache"])
    assert_one_error_line(*result, message)
    _no_outputs(out)


# -- out of memory, a full disk, a bug -----------------------------------------------------------

def _forward_raises(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    import transformers

    def forward(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(transformers.BertModel, "forward", forward)


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to "
                                                          "allocate 2.00 GiB"), MemoryError()])
def test_out_of_memory_in_capture(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                  tmp_path: Path, five: Path, base_pt: Path,
                                  error: BaseException) -> None:
    _forward_raises(monkeypatch, error)
    out = tmp_path / "o.h5"
    result = run_cli(capsys, ["capture", base_pt, "--data", five, "--batch-size", "4", "--out",
                              out])
    assert_one_error_line(*result, "out of memory while running capture",
                          "smaller --batch-size (now 4)", "--max-length (now 128)")
    assert_no_complete_store(out)


def test_out_of_memory_in_tune_suggests_grad_accum(capsys: pytest.CaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path, base_pt: Path,
                                                   task_files: tuple) -> None:
    _forward_raises(monkeypatch, torch.OutOfMemoryError("CUDA out of memory"))
    out = tmp_path / "t.pt"
    result = run_cli(capsys, ["tune", base_pt, "--method", "lora", "--data", task_files[0],
                              "--epochs", "1", "--batch-size", "8", "--out", out])
    assert_one_error_line(*result, "out of memory while running tune",
                          "--batch-size (now 8)", "--grad-accum")
    assert not out.exists()


def test_an_internal_error_is_one_line_with_status_1(capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path, five: Path,
                                                     base_pt: Path) -> None:
    _forward_raises(monkeypatch, ZeroDivisionError("a bug"))
    code, out, err = run_cli(capsys, ["capture", base_pt, "--data", five, "--out",
                                      tmp_path / "o.h5"])
    assert code == 1
    assert out == ""
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "repspace: error: internal error (ZeroDivisionError: a bug); set REPSPACE_DEBUG=1 for "
        "the traceback")


def _import_failed_by_interrupt() -> ImportError:
    """What pybind11 raises when Ctrl-C arrives while an extension module initialises."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as interrupt:
        error = ImportError("initialization failed")
        error.__cause__ = interrupt
        return error


@pytest.mark.parametrize("wrap", [False, True])
def test_an_import_interrupted_by_ctrl_c_is_an_interrupt(capsys: pytest.CaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path, five: Path,
                                                         base_pt: Path, wrap: bool) -> None:
    """Not an internal error: the interrupt is found behind the ImportError, also when a library
    re-raises that as its own error."""
    error: BaseException = _import_failed_by_interrupt()
    if wrap:
        wrapped = RuntimeError("Failed to import transformers.models.bert")
        wrapped.__cause__ = error
        error = wrapped
    _forward_raises(monkeypatch, error)
    code, out, err = run_cli(capsys, ["capture", base_pt, "--data", five, "--out",
                                      tmp_path / "o.h5"])
    assert (code, out) == (130, "")
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "repspace: error: interrupted"


def test_disk_full_while_writing_a_checkpoint(capsys: pytest.CaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              minilm_dir: Path) -> None:
    """torch.save reports a failed write as a RuntimeError raised while handling the OSError;
    the error names the checkpoint, and neither it nor its temporary file is left."""
    from repspace.models import checkpoint

    def save_until_full(payload: object, file: object) -> None:
        file.write(b"PK\x03\x04 half a checkpoint")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos") from None

    monkeypatch.setattr(checkpoint.torch, "save", save_until_full)
    out = tmp_path / "base.pt"
    result = run_cli(capsys, ["export", minilm_dir, out])
    assert_one_error_line(*result, f"disk full while writing {out}")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_while_writing_compare_outputs(capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path, five: Path, base_pt: Path,
                                                 other_base_pt: Path) -> None:
    real_write_text = Path.write_text

    def write_text(self: Path, text: str, *args: object, **kwargs: object) -> int:
        if self.name.endswith(".csv.tmp"):
            real_write_text(self, text[:10], *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    out = tmp_path / "res"
    result = _cached_compare(capsys, base_pt, other_base_pt, five, tmp_path / "cache", out)
    assert_one_error_line(*result, "disk full while writing", str(out))
    assert not (out / "metrics.csv").exists()
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())


def _run_limited(args: list, tmp_path: Path, limit: int) -> subprocess.CompletedProcess:
    """``python -m repspace ARGS`` with files limited to ``limit`` bytes (RLIMIT_FSIZE), SIGXFSZ
    ignored so that a write past the limit fails with EFBIG, as on a full disk."""
    import resource
    import signal

    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("REPSPACE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "repspace", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
                          preexec_fn=limit_files)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE semantics are Linux's")
def test_real_file_size_limit_while_exporting(tmp_path: Path, minilm_dir: Path) -> None:
    out = tmp_path / "base.pt"
    proc = _run_limited(["export", minilm_dir, out], tmp_path, 4 * 2**20)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"repspace: error: file size limit reached while writing {out}"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE semantics are Linux's")
def test_real_file_size_limit_while_capturing_then_resume(capsys: pytest.CaptureFixture,
                                                          tmp_path: Path, base_pt: Path) -> None:
    """HDF5 fails a write past the limit: one line naming the file being written, no store at
    OUT, and --resume (without the limit) completes it."""
    out = tmp_path / "o.h5"
    args = ["capture", base_pt, "--limit", "64", "--max-length", "16", "--out", out]
    proc = _run_limited(args, tmp_path, 300_000)  # 64 x 6 x 384 float32 = 590 kB of features
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    *bars, line = proc.stderr.strip().splitlines()
    assert all("%|" in bar or not bar.strip() for bar in bars), proc.stderr
    assert line.startswith("repspace: error: file size limit reached while writing")
    assert out.name in line  # the segment file HDF5 names, or else the output
    assert line.endswith("free some space, then rerun with --resume to continue")
    assert_no_complete_store(out)
    code, _, err = run_cli(capsys, [*args, "--resume", "--json"])
    assert code == 0, err
    with FeatureStore(out) as store:
        assert store.sample_ids == list(load_probe(limit=64).ids)


def test_demo_with_no_seeds(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_cli(capsys, ["demo", "--quick", "--seeds", "0", "--out", out])
    assert_one_error_line(*result, "a study needs at least 1 seed per method, got 0")
    assert not (out / "results.json").exists()


def test_demo_into_a_file(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder\n", encoding="utf-8")
    result = run_cli(capsys, ["demo", "--quick", "--out", blocker])
    assert_one_error_line(*result, f"--out {blocker} is a file; give a folder for the results")
    assert blocker.read_text(encoding="utf-8") == "not a folder\n"


# == issue #14: a new user's first hour ========================================================

def test_export_of_the_shipped_safetensors_file(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                minilm_dir: Path, base: repspace.LoadedModel
                                                ) -> None:
    """The packaged file holds the legacy buffer embeddings.position_ids, which the model does
    not keep in its state dict: it is accepted, with or without --config, and the weights are
    those of the folder."""
    for extra in ([], ["--config", minilm_dir]):
        out = tmp_path / f"st{len(extra)}.pt"
        code, stdout, err = run_cli(capsys, ["export", minilm_dir / "model.safetensors", out,
                                             *extra])
        assert code == 0, err
        assert f"fingerprint {base.fingerprint[:16]}" in stdout
        assert repspace.load_model(out).fingerprint == base.fingerprint


def test_a_safetensors_file_that_does_not_fit_names_the_keys(capsys: pytest.CaptureFixture,
                                                             tmp_path: Path, minilm_dir: Path,
                                                             base: repspace.LoadedModel) -> None:
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in base.model.state_dict().items()}
    del state["encoder.layer.3.output.dense.bias"]
    state["encoder.layer.9.extra.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "odd.safetensors"))
    out = tmp_path / "odd.pt"
    result = run_cli(capsys, ["export", tmp_path / "odd.safetensors", out, "--config",
                              minilm_dir])
    assert_one_error_line(*result, "odd.safetensors: tensors do not match the model",
                          "missing: encoder.layer.3.output.dense.bias",
                          "not in the model: encoder.layer.9.extra.weight")
    assert not out.exists()


def _tuned_and_base(tmp_path: Path, base_pt: Path, tuned_pts: dict) -> tuple[Path, Path]:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "base.pt").symlink_to(base_pt)
    (folder / "lora.pt").symlink_to(tuned_pts["lora"])
    return folder / "base.pt", folder / "lora.pt"


@pytest.mark.parametrize("command", ["compare", "weights"])
def test_swapped_base_and_tuned_arguments(capsys: pytest.CaptureFixture, tmp_path: Path,
                                          five: Path, base_pt: Path, tuned_pts: dict,
                                          command: str) -> None:
    base_file, lora = _tuned_and_base(tmp_path, base_pt, tuned_pts)
    out = tmp_path / "res"
    extra = ["--data", five, "--k", "2", "--cache-dir", tmp_path / "cache"] \
        if command == "compare" else []
    result = run_cli(capsys, [command, lora, base_file, "--out", out, *extra])
    assert_one_error_line(*result, f"{lora} is a tuned checkpoint", "given as the base model",
                          "the first model argument")
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_a_misspelled_file_is_not_looked_up_on_the_hub(capsys: pytest.CaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path, base_pt: Path) -> None:
    import transformers

    def no_hub(*args: object, **kwargs: object) -> None:
        raise AssertionError("a file name was looked up on the hub")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", no_hub)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lora.pt").symlink_to(base_pt)
    for name, message in (("lora.pth", "model not found: lora.pth; did you mean lora.pt?"),
                          ("./models/mine", "model not found: ./models/mine"),
                          ("runs/a/b", "model not found: runs/a/b")):
        result = run_cli(capsys, ["capture", name, "--out", tmp_path / "o.h5"])
        assert_one_error_line(*result, message)


def test_a_hub_id_fails_at_once_offline_or_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    """No download retries: offline mode, or a hub that no connection reaches, is an error
    before transformers is asked (unless the id is in the local hub cache)."""
    import transformers
    from huggingface_hub import constants

    from repspace.models import sources

    def no_hub(*args: object, **kwargs: object) -> None:
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", no_hub)
    with pytest.raises(FormatError, match="not in the local hub cache, and offline mode"):
        repspace.load_model("someone/no-such-model")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy",
                 "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sources, "_reachable", lambda url, timeout=3.0: False)
    with pytest.raises(FormatError, match=r"the hub \(https?://[^)]+\) cannot be reached"):
        repspace.load_model("someone/no-such-model")


def test_reachability_is_bounded_by_its_timeout() -> None:
    from repspace.models.sources import _reachable

    assert _reachable("http://127.0.0.1:9", timeout=1.0) is False  # the discard port: refused


def test_feature_store_given_as_a_model(capsys: pytest.CaptureFixture, tmp_path: Path,
                                        shard_store: Path) -> None:
    result = run_cli(capsys, ["capture", shard_store, "--out", tmp_path / "o.h5"])
    assert_one_error_line(*result, "is a feature store (HDF5), not a model",
                          "repspace metrics A.h5 B.h5")


def test_a_tuned_checkpoint_finds_its_base_beside_it(capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path, five: Path, base_pt: Path,
                                                     base: repspace.LoadedModel,
                                                     tuned_pts: dict) -> None:
    """The checkpoint records its base as the path given when it was tuned; run from
    elsewhere, the base is found relative to the checkpoint (by name, then by fingerprint)."""
    payload = torch.load(tuned_pts["lora"], weights_only=True)
    payload["base_source"] = "base.pt"  # as `repspace tune base.pt ...` records it
    folder = tmp_path / "run"
    folder.mkdir()
    torch.save(payload, folder / "lora.pt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    args = ["capture", folder / "lora.pt", "--data", five, "--max-length", "16", "--out"]
    result = run_cli(capsys, [*args, "missing.h5"])
    assert_one_error_line(*result, "its base was not found (it was tuned from base.pt",
                          "with --base")
    (folder / "renamed.pt").symlink_to(base_pt)  # found by fingerprint
    code, _, err = run_cli(capsys, [*args, "a.h5"])
    assert code == 0, err
    (folder / "renamed.pt").unlink()
    (folder / "base.pt").symlink_to(base_pt)  # found by name
    code, _, err = run_cli(capsys, [*args, "b.h5"])
    assert code == 0, err
    (folder / "base.pt").unlink()
    other = tmp_path / "other"
    other.mkdir()
    write_checkpoint(base_payload(base.model, base.tokenizer, "x"), other / "base.pt")
    monkeypatch.chdir(other)  # a base.pt here (cwd) is taken only with the right fingerprint
    with torch.no_grad():
        model = copy.deepcopy(base.model)
        model.get_parameter("pooler.dense.bias")[0] += 1
    write_checkpoint(base_payload(model, base.tokenizer, "x"), other / "base.pt")
    result = run_cli(capsys, [*args, "c.h5"])
    assert_one_error_line(*result, "its base was not found")


@pytest.mark.parametrize("command", ["compare", "metrics", "weights", "capture", "export",
                                     "tune", "merge", "demo"])
def test_outputs_are_checked_before_any_work(capsys: pytest.CaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             base_pt: Path, tuned_pts: dict, shard_store: Path,
                                             command: str) -> None:
    """An --out that cannot be written is an error before a model is loaded."""
    from repspace.models import sources

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before the output was checked")

    monkeypatch.setattr(sources, "read_checkpoint", no_work)
    monkeypatch.setattr(sources, "_from_pretrained", no_work)
    blocker = tmp_path / "taken"
    blocker.write_text("a file\n", encoding="utf-8")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    lora = tuned_pts["lora"]
    args, expected = {
        "compare": (["compare", base_pt, lora, "--out", blocker], f"--out {blocker} is a file"),
        "metrics": (["metrics", shard_store, shard_store, "--out", blocker],
                    f"--out {blocker} is a file"),
        "weights": (["weights", base_pt, lora, "--out", blocker / "sub"],
                    f"--out {blocker / 'sub'}: {blocker} is a file, not a folder"),
        "capture": (["capture", base_pt, "--out", folder], f"--out {folder} is a folder"),
        "export": (["export", base_pt, folder], f"OUT {folder} is a folder"),
        "tune": (["tune", base_pt, "--method", "lora", "--data", "x.jsonl", "--out", folder],
                 f"--out {folder} is a folder"),
        "merge": (["merge", folder, shard_store], f"OUT {folder} is a folder"),
        "demo": (["demo", "--out", blocker], f"--out {blocker} is a file"),
    }[command]
    result = run_cli(capsys, args)
    assert_one_error_line(*result, expected)
    assert blocker.read_text(encoding="utf-8") == "a file\n"
    assert list(folder.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-folder", "taken"]


def test_capture_into_a_folder_leaves_no_temporary_files(capsys: pytest.CaptureFixture,
                                                         tmp_path: Path, five: Path,
                                                         base_pt: Path) -> None:
    folder = tmp_path / "out.h5"
    folder.mkdir()
    result = run_cli(capsys, ["capture", base_pt, "--data", five, "--out", folder])
    assert_one_error_line(*result, "is a folder; give a file name")
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"] and not any(folder.iterdir())


def test_resume_of_a_complete_store_says_it_was_kept(capsys: pytest.CaptureFixture,
                                                     tmp_path: Path, five: Path,
                                                     base_pt: Path) -> None:
    out = tmp_path / "base.h5"
    args = ["capture", base_pt, "--data", five, "--max-length", "16", "--out", out]
    code, stdout, err = run_cli(capsys, args)
    assert code == 0, err
    assert stdout.startswith(f"wrote {out}:")
    code, stdout, err = run_cli(capsys, [*args, "--resume"])
    assert code == 0, err
    assert stdout.startswith(f"kept (already complete) {out}:")


def test_compare_names_its_outputs_and_the_cache_it_used(capsys: pytest.CaptureFixture,
                                                         tmp_path: Path, five: Path,
                                                         base_pt: Path,
                                                         other_base_pt: Path) -> None:
    cache = tmp_path / "cache"
    code, stdout, err = _cached_compare(capsys, base_pt, other_base_pt, five, cache,
                                        Path(f"{tmp_path}/res/"))
    assert code == 0, err
    assert f"wrote {tmp_path}/res/metrics.json," in stdout and "//" not in stdout
    stores = sorted((cache / "stores").glob("*.h5"))
    size = sum(p.stat().st_size for p in stores)
    from repspace.results.tables import fmt_bytes

    assert f"cache: 2 feature stores, {fmt_bytes(size)} in {cache / 'stores'}" in stdout


def test_cache_list_and_clean(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                              tmp_path: Path, five: Path, base_pt: Path,
                              other_base_pt: Path) -> None:
    from repspace.results.tables import fmt_bytes

    monkeypatch.delenv("COLUMNS", raising=False)  # one block, whatever the terminal

    cache = tmp_path / "cache"
    code, _, err = _cached_compare(capsys, base_pt, other_base_pt, five, cache, tmp_path / "r")
    assert code == 0, err
    stores = sorted((cache / "stores").glob("*.h5"))
    sizes = {p.name: p.stat().st_size + p.with_suffix(".json").stat().st_size for p in stores}
    code, stdout, err = run_cli(capsys, ["cache", "list", "--cache-dir", cache])
    assert code == 0, err
    for name, size in sizes.items():
        row = next(line for line in stdout.splitlines() if line.startswith(name))
        assert fmt_bytes(size) in row and "five.txt" in row and " 5 " in row
    assert any(str(base_pt) in line for line in stdout.splitlines())
    assert stdout.strip().endswith(f"2 cached feature stores, {fmt_bytes(sum(sizes.values()))} "
                                   f"in {cache / 'stores'}")
    result = run_cli(capsys, ["cache", "clean", "--cache-dir", cache])
    assert_one_error_line(*result, "say what to clean")
    code, stdout, err = run_cli(capsys, ["cache", "clean", "--cache-dir", cache,
                                         "--older-than", "1"])
    assert code == 0 and stdout.startswith("freed 0 B (0 feature stores)"), err
    code, stdout, err = run_cli(capsys, ["cache", "clean", "--cache-dir", cache, "--model",
                                         "other_base.pt"])
    assert code == 0, err
    other = repspace.load_model(other_base_pt).fingerprint[:16]
    (gone,) = [n for n in sizes if n.startswith(other)]
    assert stdout.splitlines()[0].startswith(f"removed {gone} ")
    assert sorted(p.name for p in (cache / "stores").iterdir()) == sorted(
        x for n in sizes if n != gone for x in (n, n.replace(".h5", ".json")))
    code, stdout, err = run_cli(capsys, ["cache", "clean", "--cache-dir", cache, "--all"])
    assert code == 0 and f"freed {fmt_bytes(sum(sizes.values()) - sizes[gone])}" in stdout
    assert list((cache / "stores").iterdir()) == []


@pytest.mark.parametrize(("args", "message"), [
    (["comapre", "a.pt", "b.pt"], "invalid choice: 'comapre'; did you mean 'compare'?"),
    (["Weights", "a.pt", "b.pt"], "did you mean 'weights'?"),
    (["capture", "a.pt", "--out", "o.h5", "--pooling", "meen"], "did you mean 'mean'?"),
    (["capture", "a.pt", "--out", "o.h5", "--lmit", "3"],
     "unrecognized arguments: --lmit 3; did you mean --limit? (see 'repspace capture --help')"),
])
def test_misspelled_commands_and_choices_suggest_the_closest(capsys: pytest.CaptureFixture,
                                                             args: list, message: str) -> None:
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("repspace: error: ") and message in err


def test_labels_not_seen_in_training_name_the_file_and_line(capsys: pytest.CaptureFixture,
                                                            tmp_path: Path,
                                                            base_pt: Path) -> None:
    (tmp_path / "train.jsonl").write_text('{"text": "good", "label": "pos"}\n'
                                          '{"text": "bad", "label": "neg"}\n', encoding="utf-8")
    (tmp_path / "eval.jsonl").write_text('{"text": "fine", "label": "pos"}\n\n'
                                         '{"text": "dns down", "label": "dns"}\n',
                                         encoding="utf-8")
    out = tmp_path / "t.pt"
    result = run_cli(capsys, ["tune", base_pt, "--method", "lora", "--data",
                              tmp_path / "train.jsonl", "--eval", tmp_path / "eval.jsonl",
                              "--epochs", "1", "--out", out])
    assert_one_error_line(*result, f"{tmp_path / 'eval.jsonl'}:3: label 'dns' was not seen in "
                          "training (training labels: neg, pos; 1 lines have unseen labels: dns)")
    assert not out.exists()


def _sigint_during_start_up(tmp_path: Path, base_pt: Path, delay: float) -> tuple[int, list]:
    """Run `python -X importtime -m repspace compare ...`, wait until its own modules are being
    imported (the import log shows repspace.errors: the command line's code runs), then
    ``delay`` seconds more, and send SIGINT. Returns the exit status and the stderr lines that
    are not the import log."""
    import signal
    import threading
    import time

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "REPSPACE_CACHE": str(tmp_path / "cache")}
    env.pop("REPSPACE_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "repspace", "compare",
                             str(base_pt), str(base_pt), "--out", str(tmp_path / "res")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=tmp_path)
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if "repspace.errors" in line:
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(120), "".join(lines[-20:])
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    proc.wait(120)
    reader.join(10)
    return proc.returncode, [x.rstrip("\n") for x in lines if not x.startswith("import time:")]


@pytest.mark.parametrize("delay", [0.0, 0.3, 1.5])
def test_ctrl_c_during_start_up_is_one_line(tmp_path: Path, base_pt: Path,
                                            delay: float) -> None:
    """While the command line imports (its own modules, then torch and transformers) or loads
    the model: one line, exit status 130, no traceback."""
    code, other = _sigint_during_start_up(tmp_path, base_pt, delay)
    assert (code, other) == (130, ["repspace: error: interrupted"])


def test_cka_of_a_matrix_with_itself_stays_in_its_range() -> None:
    """Rounding put linear_cka(X, X) at 1.0000000000000002; it is clipped to [0, 1] (debiased:
    [-1, 1]), and still 1 to rounding (the float64 formula, computed apart)."""
    X = np.random.default_rng(0).normal(size=(30, 100))  # unclipped: 1.0000000000000009
    Xc = X - X.mean(0)
    reference = np.linalg.norm(Xc.T @ Xc) ** 2 / np.linalg.norm(Xc.T @ Xc) ** 2
    for debiased in (False, True):
        values = [repspace.metrics.linear_cka(X * s, X * s, debiased=debiased)
                  for s in (1.0, 3.7, 1e-3, 123.0)]
        assert all(v <= 1.0 for v in values)
        assert values == pytest.approx([reference] * 4, abs=1e-12)
