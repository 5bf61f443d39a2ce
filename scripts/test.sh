#!/usr/bin/env bash
# The test command (README, .ci/run): formatting, lints, then every test in the workspace,
# including the ONNX conformance suite and the real-model tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-python.sh
bash scripts/setup-toolchains.sh
export KILN_PYTHON="$PWD/.venv/bin/python"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
