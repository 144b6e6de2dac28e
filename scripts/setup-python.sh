#!/usr/bin/env bash
# Create <workspace>/.venv with the Python packages of scripts/requirements-ci.txt (coremltools 9.0,
# numpy, ...), used by `mlpackage::coremltools_check` and scripts/validate_mlpackage.py.
#
# Idempotent and quick when already done: a stamp file records the requirements' hash, and nothing
# is installed if it matches and coremltools 9.0 imports. Set PYTHON to choose the base interpreter
# (default python3, >= 3.9 with the venv module).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
req="$root/scripts/requirements-ci.txt"
stamp="$venv/.requirements.sha256"
base="${PYTHON:-python3}"
want="$(sha256sum "$req" | cut -d' ' -f1)"

check() {
    "$venv/bin/python" -c 'import coremltools, sys; sys.exit(coremltools.__version__ != "9.0")' \
        >/dev/null 2>&1
}

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && check; then
    echo "setup-python: $venv is up to date"
    exit 0
fi

echo "setup-python: creating $venv from $req"
"$base" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
if ! check; then
    echo "setup-python: coremltools 9.0 does not import in $venv" >&2
    exit 1
fi
echo "$want" > "$stamp"
echo "setup-python: done ($("$venv/bin/python" --version))"
