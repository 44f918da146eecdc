#!/usr/bin/env bash
# Create .venv and install repspace with the extras named in $1 (default: test).
# On a machine without an NVIDIA GPU the CPU build of PyTorch is installed first,
# so that resolving the package's dependencies never pulls a multi-GB CUDA build.
set -euo pipefail
extras="${1:-test}"
cd "$(dirname "$0")/.."
python3 -m venv .venv 2>/dev/null || true
py=.venv/bin/python
stamp=".venv/.repspace-$extras-$(sha256sum pyproject.toml | cut -c1-16)"
[ -f "$stamp" ] && exit 0
"$py" -m pip install --quiet --upgrade pip
if ! "$py" -c "import torch" 2>/dev/null && ! command -v nvidia-smi >/dev/null 2>&1; then
    "$py" -m pip install --quiet "torch==2.13.0"
fi
"$py" -m pip install --quiet -e ".[$extras]"
touch "$stamp"
