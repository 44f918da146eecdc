#!/usr/bin/env bash
# Regenerate requirements.lock from the newest releases pyproject.toml allows (scripts/latest.sh),
# then run `make test` on it before committing. The lock holds every package of the extras
# test and bench (one tested set for `make test`, `make demo` and CI) without local build
# labels, so a GPU machine installs the CUDA build of the same torch version.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
scripts/latest.sh "$tmp/venv" >/dev/null
{
    echo "# The exact, tested versions that 'make test', 'make demo' and CI install"
    echo "# (scripts/setup.sh, with --no-deps). Regenerate with 'make lock' (scripts/lock.sh)."
    echo "# Python $("$tmp/venv/bin/python" -c 'import platform; print(platform.python_version())'), $(date -u +%Y-%m-%d)."
    "$tmp/venv/bin/python" -m pip freeze --all --exclude-editable --disable-pip-version-check \
        | sed -E 's/^(torch==[^+]+)\+.*/\1/' | grep -viE "^(nvidia-|triton==|pip==)" | LC_ALL=C sort -f
} > requirements.lock
echo "wrote requirements.lock ($(grep -c '==' requirements.lock) packages); now run: make test"
