#!/usr/bin/env bash
# Installs the Python packages the tests use (pinned, from PyPI) into a
# virtual environment, target/pyenv (HEYVM_PYENV overrides). Run by test.sh;
# the e2e tests look for it there.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${HEYVM_PYENV:-target/pyenv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r scripts/python-requirements.txt
