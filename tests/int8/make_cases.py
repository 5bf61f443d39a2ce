"""Inputs for tests/int8.rs, written at test time into OUT_DIR:

- ort_digits_cnn_qdq.npy: onnxruntime's outputs (graph optimizations on, as users run it) of
  tests/models/quantized/digits_cnn_qdq on every digits test sample, [450, 10] float32, and
  ort_digits_cnn_qdq_scale.txt, the output's quantization scale;
- worst_case/model.onnx: a QDQ MatMul whose int32 accumulator can overflow (K = 140000, every
  weight 127, int8 input): kiln must refuse it;
- calib_NAME.npy: seeded standard-normal calibration samples for the random-weight models
  (their reference inputs are standard normal too).

Usage: make_cases.py REPO_ROOT OUT_DIR
"""

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def ort_digits(root, out):
    model = os.path.join(root, "tests/models/quantized/digits_cnn_qdq/model.onnx")
    x = np.load(os.path.join(root, "tests/models/data/digits_test_x.npy")).reshape(-1, 1, 1, 8, 8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    y = np.stack([sess.run(None, {"input": xi})[0][0] for xi in x]).astype(np.float32)
    np.save(os.path.join(out, "ort_digits_cnn_qdq.npy"), y)
    m = onnx.load(model)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    dq = next(n for n in m.graph.node if n.output[0] == m.graph.output[0].name)
    with open(os.path.join(out, "ort_digits_cnn_qdq_scale.txt"), "w") as f:
        f.write(repr(float(inits[dq.input[1]])))


def worst_case(out):
    k = 140_000
    inits = [
        numpy_helper.from_array(np.full((k, 1), 127, dtype=np.int8), "w_q"),
        numpy_helper.from_array(np.array(0.01, dtype=np.float32), "w_scale"),
        numpy_helper.from_array(np.array(0, dtype=np.int8), "w_zp"),
        numpy_helper.from_array(np.array(0.02, dtype=np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, dtype=np.int8), "x_zp"),
        numpy_helper.from_array(np.array(50.0, dtype=np.float32), "y_scale"),
        numpy_helper.from_array(np.array(0, dtype=np.int8), "y_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="quantize_x"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="dequantize_x"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="dequantize_w"),
        helper.make_node("MatMul", ["x_dq", "w"], ["y"], name="huge_matmul"),
        helper.make_node("QuantizeLinear", ["y", "y_scale", "y_zp"], ["y_q"], name="quantize_y"),
        helper.make_node("DequantizeLinear", ["y_q", "y_scale", "y_zp"], ["out"], name="dequantize_y"),
    ]
    g = helper.make_graph(
        nodes, "worst_case",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    os.makedirs(os.path.join(out, "worst_case"), exist_ok=True)
    onnx.save(m, os.path.join(out, "worst_case", "model.onnx"))


def calibration(out):
    shapes = {
        "kws_dscnn": (1, 49, 10),
        "vww_mobilenet_v1_025": (3, 96, 96),
        "resnet8_cifar": (3, 32, 32),
    }
    for name, shape in shapes.items():
        x = np.random.default_rng(7).standard_normal((16,) + shape).astype(np.float32)
        np.save(os.path.join(out, f"calib_{name}.npy"), x)


def main():
    root, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    ort_digits(root, out)
    worst_case(out)
    calibration(out)


if __name__ == "__main__":
    main()
