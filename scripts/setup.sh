#!/usr/bin/env bash
# One-command set-up: installs what kiln needs, builds it, and runs it on a model in the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-python.sh
bash scripts/setup-toolchains.sh
cargo build --release
model=tests/models/digits_cnn
./target/release/kiln inspect "$model/model.onnx"
./target/release/kiln compile "$model/model.onnx" --emit c -o target/example-c --name digits
./target/release/kiln run "$model/model.onnx" --input "$model/input_0.npy" --backend c --output-dir target/example-out
./target/release/kiln verify "$model/model.onnx" --input "$model/input_0.npy" --target cortex-m4
echo "C sources in target/example-c/, outputs of the compiled C in target/example-out/"
