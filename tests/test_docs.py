"""The documentation site builds with ``mkdocs build --strict`` (a broken link or anchor, a
docstring that names no object, a warning of the docstring parser fail it), loads nothing from
the network, its command-line page documents every subcommand of the parser, and its API pages
every public metric."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from repspace.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
HOOKS = ROOT / "docs" / "hooks"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                          str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log
    return out, log


def test_build_is_strict_and_clean(site):
    _, log = site
    assert "WARNING" not in log, log
    assert "ERROR" not in log, log


def test_site_loads_nothing_from_the_network(site):
    out, _ = site
    for path in out.rglob("*.html"):  # no web fonts, no CDN scripts or styles
        text = path.read_text(encoding="utf-8")
        assert not re.search(r'<(script|link)[^>]*(src|href)="(https?:)?//', text), path


def test_cli_page_documents_every_subcommand(site):
    out, _ = site
    page = (out / "cli.html").read_text(encoding="utf-8")
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert len(sub.choices) >= 8
    for name, command in sub.choices.items():
        assert f'id="{name}"' in page, name
        assert f"usage: repspace {name}" in page, name
        for action in command._actions:  # every flag of the command, with its default
            for flag in action.option_strings:
                assert f"<code>{flag}</code>" in page, (name, flag)


def test_api_pages_document_the_public_functions(site):
    out, _ = site
    from repspace import metrics

    page = (out / "api" / "metrics.html").read_text(encoding="utf-8")
    for name in metrics.__all__:
        assert f'id="repspace.metrics.{name}"' in page, name
    for path in (out / "api").glob("*.html"):  # Sphinx roles became links or code
        text = path.read_text(encoding="utf-8")
        assert not re.search(r":(func|class|mod|meth|attr|data):`", text), path.name


def _roles_extension():
    spec = importlib.util.spec_from_file_location("griffe_roles", HOOKS / "griffe_roles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docstring_roles_resolve_or_are_reported():
    import griffe

    roles = _roles_extension()
    pkg = griffe.load("repspace", search_paths=[str(ROOT)], docstring_parser="numpy")
    capture = pkg["capture.run.capture"]
    assert roles._resolve(capture, "repspace.store.merge_stores", pkg) == (
        "repspace.store.hdf5.merge_stores", True)
    assert roles._resolve(capture, "LoadedModel", pkg) == ("repspace.models.loaded.LoadedModel",
                                                           True)
    assert roles._resolve(pkg["store.hdf5.StoreWriter"], "append", pkg)[0] == (
        "repspace.store.hdf5.StoreWriter.append")
    assert roles._resolve(capture, "OSError", pkg) == (None, True)        # a builtin
    assert roles._resolve(capture, "torch.device", pkg) == (None, True)   # another package
    assert roles._resolve(capture, "repspace.no_such_thing", pkg) == (None, False)
    assert roles._resolve(capture, "no_such_name", pkg) == (None, False)
