#!/usr/bin/env bash
# Re-resolve every dependency at its newest release and write constraints.txt.
#
# The constraints pin what CI tested; pyproject.toml keeps the permissive ranges a user's
# `pip install sdverify` resolves.  Run this in a checkout, then `bash .ci/run`, and commit
# constraints.txt only when CI is green with it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)/venv"
python -m venv "$venv"
# torch first: the CPU build (a bare `pip install torch` may pull a multi-GB CUDA build).
"$venv/bin/pip" install --quiet torch==2.13.0
"$venv/bin/pip" install --quiet -e ".[test,notebooks,lint]"
{
    echo "# Exact versions CI tested (Python $("$venv/bin/python" -c 'import platform; print(platform.python_version())'), CPU)."
    echo "# Use: pip install torch==2.13.0 && pip install -c constraints.txt -e \".[test,notebooks]\""
    echo "# Refresh: bash scripts/refresh_constraints.sh (README: Pinned and latest dependencies)."
    # A local version label (+cpu) would refuse the same release built for CUDA.
    "$venv/bin/pip" freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/' | sort -f
} > constraints.txt
rm -rf "$(dirname "$venv")"
echo "constraints.txt: $(grep -vc '^#' constraints.txt) packages"
