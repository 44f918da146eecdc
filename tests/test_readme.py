"""Every ```bash and ```python block of README.md runs, in order, in a scratch folder.

Generic by design: whatever blocks the README holds are run, so a README that is rewritten
stays tested. A block opts out with an HTML comment on the line right before its fence,
``<!-- no-test -->`` (optionally ``<!-- no-test: why -->``), meant for what this machine cannot
run (several GPUs, models from a hub, the set-up commands themselves).

Bash blocks run with ``bash -e -o pipefail`` and the virtual environment's ``bin`` first on
``PATH`` (the scratch folder has ``.venv`` pointing to it and ``data`` pointing to the
repository's data, so ``. .venv/bin/activate`` and ``data/...`` work as written). Each Python
block runs alone in a fresh interpreter, so it must import what it uses. Offline, with the
feature-store cache inside the scratch folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
LANGUAGES = ("bash", "python")
_FENCE = re.compile(r"^```(\w+)\s*$")
_OPT_OUT = re.compile(r"^<!--\s*no-test\b.*-->\s*$")


@dataclass
class Block:
    line: int  # of the opening fence, counted from 1
    language: str
    code: str
    skip: bool


def code_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, each marked ``skip`` when the last non-blank
    line before its fence is a ``<!-- no-test -->`` comment."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start = i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")),
                   len(lines))
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        blocks.append(Block(start + 1, match[1], "\n".join(lines[start + 1:end]) + "\n",
                            bool(_OPT_OUT.match(before.strip()))))
        i = end + 1
    return blocks


def test_code_blocks_are_found_with_their_opt_outs() -> None:
    text = ("intro\n\n```bash\necho one\n```\n\n<!-- no-test: needs a GPU -->\n```python\n"
            "print(2)\n```\n<!-- a comment -->\n```python\nprint(3)\n```\n```text\nx\n```\n")
    blocks = code_blocks(text)
    assert [(b.line, b.language, b.skip) for b in blocks] == [
        (3, "bash", False), (8, "python", True), (12, "python", False), (15, "text", False)]
    assert blocks[0].code == "echo one\n"


def test_the_readme_has_blocks_to_run() -> None:
    runnable = [b for b in code_blocks(README.read_text(encoding="utf-8"))
                if b.language in LANGUAGES and not b.skip]
    assert any(b.language == "bash" for b in runnable)
    assert any(b.language == "python" for b in runnable)


def _environment(folder: Path) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "REPSPACE_CACHE": str(folder / "cache"), "MPLBACKEND": "Agg",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    env.pop("REPSPACE_DEBUG", None)
    return env


def test_every_readme_block_runs_in_order(tmp_path: Path) -> None:
    """The blocks share the scratch folder: later ones use the files earlier ones wrote."""
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    (tmp_path / "data").symlink_to(ROOT / "data", target_is_directory=True)
    env = _environment(tmp_path)
    blocks = [b for b in code_blocks(README.read_text(encoding="utf-8"))
              if b.language in LANGUAGES]
    ran = 0
    for block in blocks:
        if block.skip:
            continue
        command = (["bash", "-e", "-o", "pipefail", "-c", block.code] if block.language == "bash"
                   else [sys.executable, "-c", block.code])
        proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=1800)
        assert proc.returncode == 0, (
            f"README.md:{block.line} ({block.language} block) exited {proc.returncode}:\n"
            f"{block.code}\n--- stdout (end) ---\n{proc.stdout[-2000:]}\n"
            f"--- stderr (end) ---\n{proc.stderr[-4000:]}")
        assert "Traceback" not in proc.stderr, f"README.md:{block.line}:\n{proc.stderr[-4000:]}"
        ran += 1
    assert ran >= 2


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_failing_block_fails(tmp_path: Path, language: str) -> None:
    """The runner sees a failing command in the middle of a block (bash -e) or a NameError."""
    code = "true\nfalse\ntrue\n" if language == "bash" else "print(undefined_name)\n"
    command = (["bash", "-e", "-o", "pipefail", "-c", code] if language == "bash"
               else [sys.executable, "-c", code])
    proc = subprocess.run(command, cwd=tmp_path, env=_environment(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
