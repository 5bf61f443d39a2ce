#!/usr/bin/env python3
"""Checks an ONNX model (onnx.checker full_check) and runs it under onnxruntime.

Usage: ort_run.py MODEL.onnx INPUT.npy OUT.npy

Binds INPUT to the model's only input and writes its first output to OUT. Used by
tests/prune.rs to run `kiln compile --emit onnx` exports.
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
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
