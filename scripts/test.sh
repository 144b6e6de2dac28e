#!/usr/bin/env bash
# The project's test command: prepares the Python side (coremltools 9.0 in .venv, used by tests that
# validate written packages) and runs every Rust test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-python.sh
export GEMMA_CONVERT_PYTHON="${GEMMA_CONVERT_PYTHON:-$PWD/.venv/bin/python}"
cargo test --workspace "$@"
