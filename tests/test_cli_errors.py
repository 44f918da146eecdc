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
from repspace.probes import text_id
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
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    line = lines[0]
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
    for command in ("export", "capture", "compare"):
        assert command in out
    assert "COMMAND --help" in out


def test_version(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"repspace {repspace.__version__}"


@pytest.mark.parametrize("command", ["export", "capture", "compare"])
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
    assert_one_error_line(*result, "would run code", "evil.pt")
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
                                                 files: Path, base_pt: Path) -> None:
    out = tmp_path / "results"
    result = run_cli(capsys, ["compare", base_pt, tmp_path / "absent.pt", "--data",
                              files / "small.txt", "--out", out, "--cache-dir",
                              tmp_path / "cache"])
    assert_one_error_line(*result, "not found", "absent.pt")
    assert not (out / "metrics.json").exists()


# -- a capture interrupted half way, then resumed -------------------------------------------------

def test_disk_full_mid_capture_leaves_an_incomplete_store_that_resumes(
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        files: Path, base_pt: Path) -> None:
    data = files / "small.txt"
    whole = tmp_path / "whole.h5"
    args = ["capture", base_pt, "--data", data, "--batch-size", "1", "--json"]
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
    assert last.startswith("repspace: error: no space left")
    assert [ln for ln in err.splitlines() if "error" in ln] == [last]
    with pytest.raises(FormatError, match="incomplete"):
        FeatureStore(out)

    monkeypatch.undo()
    code, stdout, err = run_cli(capsys, [*args, "--out", out, "--resume"])
    assert code == 0, err
    assert json.loads(stdout)["samples"] == len(SENTENCES)
    with FeatureStore(whole) as a, FeatureStore(out) as b:
        assert b.sample_ids == a.sample_ids == [text_id(s) for s in SENTENCES]
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
