#!/usr/bin/env python3
"""Checks an ONNX model (onnx.checker full_check) and runs it under onnxruntime.

Usage: ort_run.py MODEL.onnx INPUT.npy OUT.npy [MODEL.onnx INPUT.npy OUT.npy ...]

Binds each INPUT to its model's only input and writes the model's first output to OUT. Used by
tests/prune.rs to run exports of pruned graphs (`kiln compile --emit onnx`).
"""

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402


def main(model_path, input_path, out_path):
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        sys.exit(f"{model_path}: expected one input, found {len(inputs)}")
    out = sess.run(None, {inputs[0].name: np.load(input_path)})[0]
    np.save(out_path, out)
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or len(args) % 3:
        sys.exit(__doc__)
    for i in range(0, len(args), 3):
        main(*args[i:i + 3])
