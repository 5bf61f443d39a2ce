#!/usr/bin/env python3
"""Pruning's near misses: small models where a channel is zeroed (all-zero weights, a bias making
it 0 or a constant) next to something that may or may not let it go, with onnxruntime's output.

Usage: make_cases.py OUT_DIR

Writes OUT_DIR/<case>/{model.onnx, input_0.npy, output_0.npy} and OUT_DIR/manifest.json:
for each case, the layer it is about (`node`), how many output channels that layer keeps at
-O2 (exact pruning; null where kiln may or may not prove the channel removable) and whether
magnitude pruning must keep all of them (`pinned`), with the reason. tests/prune.rs runs them.
Seeded: two runs write the same files.
"""

import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto as TP  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402

RNG = np.random.default_rng(14)


def w(*shape):
    return (RNG.standard_normal(shape) * 0.3).astype(np.float32)


def node(op, inputs, outputs, **attrs):
    return helper.make_node(op, inputs, outputs, name=f"{outputs[0]}_{op}", **attrs)


def zeroed_conv(cout, cin, k, chan, bias):
    """Conv weights [cout, cin, k, k] and bias with output channel `chan` zeroed to `bias`."""
    wt, b = w(cout, cin, k, k), w(cout)
    wt[chan] = 0.0
    b[chan] = bias
    return wt, b


CASES = {}


def case(name, nodes, inits, outputs, expect, in_shape=(1, 4, 8, 8)):
    CASES[name] = (nodes, inits, outputs, in_shape, expect)


def expect(o2, pinned, why, node_name="c1_Conv"):
    return {"node": node_name, "o2": o2, "pinned": pinned, "why": why}


w1, b1 = zeroed_conv(8, 4, 1, 1, 0.5)
case("mid_output",
     [node("Conv", ["input", "w1", "b1"], ["c1"]), node("Relu", ["c1"], ["mid"]),
      node("Conv", ["mid", "w2", "b2"], ["c2"]), node("Relu", ["c2"], ["output"])],
     {"w1": w1, "b1": b1, "w2": w(6, 8, 1, 1), "b2": w(6)}, ["output", "mid"],
     expect(8, True, "its channels are also a graph output"))

w1, b1 = zeroed_conv(8, 4, 1, 2, 0.0)
case("reshape_mix",
     [node("Conv", ["input", "w1", "b1"], ["c1"]), node("Relu", ["c1"], ["r1"]),
      node("Reshape", ["r1", "shape"], ["rs"]), node("MatMul", ["rs", "wm"], ["output"])],
     {"w1": w1, "b1": b1, "shape": np.array([1, 4, 128], np.int64), "wm": w(128, 5)}, ["output"],
     expect(8, True, "a Reshape puts two channels in one row"))

w0, b0 = zeroed_conv(8, 4, 1, 3, -1.0)
wy, by = zeroed_conv(8, 8, 3, 3, -0.5)
case("add_third_reader",
     [node("Conv", ["input", "w0", "b0"], ["c1"]), node("Relu", ["c1"], ["x"]),
      node("Conv", ["x", "wy", "by"], ["y"], pads=[1, 1, 1, 1]), node("Add", ["x", "y"], ["z"]),
      node("Conv", ["x", "w2", "b2"], ["t"]), node("Concat", ["z", "t"], ["cat"], axis=1),
      node("Conv", ["cat", "w3", "b3"], ["output"])],
     {"w0": w0, "b0": b0, "wy": wy, "by": by, "w2": w(6, 8, 1, 1), "b2": w(6), "w3": w(5, 14, 1, 1),
      "b3": w(5)}, ["output"],
     expect(7, False, "residual Add whose input has a third reader: 0 + (-0.5) folded into a 1x1 conv"))

w1, b1 = zeroed_conv(8, 4, 1, 4, -0.3)
case("depthwise_multiplier",
     [node("Conv", ["input", "w1", "b1"], ["c1"]), node("Relu", ["c1"], ["r1"]),
      node("Conv", ["r1", "wd", "bd"], ["d"], group=8, pads=[1, 1, 1, 1]), node("Relu", ["d"], ["rd"]),
      node("Conv", ["rd", "w3", "b3"], ["output"])],
     {"w1": w1, "b1": b1, "wd": w(16, 1, 3, 3), "bd": w(16), "w3": w(5, 16, 1, 1), "b3": w(5)}, ["output"],
     expect(7, False, "a zero channel into a depthwise conv with multiplier 2"))

w1, b1 = zeroed_conv(8, 4, 3, 5, 0.7)
case("flatten_gemm",
     [node("Conv", ["input", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
      node("Relu", ["c1"], ["r1"]), node("Flatten", ["r1"], ["f"], axis=1),
      node("Gemm", ["f", "wg", "bg"], ["output"], transB=1)],
     {"w1": w1, "b1": b1, "wg": w(10, 128), "bg": w(10)}, ["output"],
     expect(7, False, "a constant channel through Flatten: a block of 16 features folded into the Gemm"))

w1, b1 = zeroed_conv(4, 4, 1, 2, 0.0)
case("add_graph_input",
     [node("Conv", ["input", "w1", "b1"], ["c1"]), node("Add", ["c1", "input"], ["a"]),
      node("Conv", ["a", "w2", "b2"], ["output"])],
     {"w1": w1, "b1": b1, "w2": w(6, 4, 1, 1), "b2": w(6)}, ["output"],
     expect(4, True, "a residual Add with the graph input"))

w1, b1 = zeroed_conv(8, 4, 1, 6, -5.0)
case("softmax_channels",
     [node("Conv", ["input", "w1", "b1"], ["c1"]), node("Softmax", ["c1"], ["s"], axis=1),
      node("Conv", ["s", "w2", "b2"], ["output"])],
     {"w1": w1, "b1": b1, "w2": w(6, 8, 1, 1), "b2": w(6)}, ["output"],
     expect(8, True, "a Softmax across the channels"))

w1, b1 = zeroed_conv(8, 4, 1, 6, 0.0)
case("reduce_channels",
     [node("Conv", ["input", "w1", "b1"], ["c1"]), node("Relu", ["c1"], ["r"]),
      node("ReduceMean", ["r"], ["m"], axes=[1], keepdims=1), node("Mul", ["r", "m"], ["p"]),
      node("Conv", ["p", "w2", "b2"], ["output"])],
     {"w1": w1, "b1": b1, "w2": w(6, 8, 1, 1), "b2": w(6)}, ["output"],
     expect(8, True, "a mean across the channels"))

w1, b1 = zeroed_conv(8, 4, 1, 1, 0.0)
w1[6] = 0.0
b1[6] = 0.0
case("split_channels",
     [node("Conv", ["input", "w1", "b1"], ["c1"]), node("Split", ["c1", "sizes"], ["s0", "s1"], axis=1),
      node("Conv", ["s0", "w2", "b2"], ["o0"]), node("Conv", ["s1", "w3", "b3"], ["o1"]),
      node("Add", ["o0", "o1"], ["output"])],
     {"w1": w1, "b1": b1, "sizes": np.array([3, 5], np.int64), "w2": w(6, 3, 1, 1), "b2": w(6),
      "w3": w(6, 5, 1, 1), "b3": w(6)}, ["output"],
     expect(6, False, "one zero channel in each part of a Split"))

w1, b1 = zeroed_conv(8, 4, 1, 3, 0.4)
case("pad_after",
     [node("Conv", ["input", "w1", "b1"], ["c1"]), node("Pad", ["c1", "pads"], ["p"]),
      node("Conv", ["p", "w2", "b2"], ["output"])],
     {"w1": w1, "b1": b1, "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "w2": w(6, 8, 1, 1),
      "b2": w(6)}, ["output"],
     expect(8, False, "a constant 0.4 zero-padded: not constant any more"))

w1, b1 = zeroed_conv(8, 4, 1, 1, 0.0)
case("grouped_reader",
     [node("Conv", ["input", "w1", "b1"], ["c1"]), node("Conv", ["c1", "w2", "b2"], ["output"], group=2)],
     {"w1": w1, "b1": b1, "w2": w(6, 4, 1, 1), "b2": w(6)}, ["output"],
     expect(8, True, "read by a grouped (not depthwise) conv"))

w1, b1 = zeroed_conv(8, 4, 1, 3, 0.5)
case("avgpool_pad",
     [node("Conv", ["input", "w1", "b1"], ["c1"]),
      node("AveragePool", ["c1"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1),
      node("Conv", ["p", "w2", "b2"], ["output"])],
     {"w1": w1, "b1": b1, "w2": w(6, 8, 1, 1), "b2": w(6)}, ["output"],
     expect(8, False, "an AveragePool counting its padding: a constant is smaller at the border"))

w1, b1 = zeroed_conv(8, 4, 1, 3, 0.0)
case("convtranspose_reader",
     [node("Conv", ["input", "w1", "b1"], ["c1"]),
      node("ConvTranspose", ["c1", "w2", "b2"], ["output"], strides=[2, 2], kernel_shape=[2, 2])],
     {"w1": w1, "b1": b1, "w2": w(8, 5, 2, 2), "b2": w(5)}, ["output"],
     expect(8, True, "read by a ConvTranspose"))

w1, b1 = zeroed_conv(8, 4, 1, 3, 0.0)
case("matmul_batch",
     [node("Conv", ["input", "w1", "b1"], ["c1"]), node("MatMul", ["a", "c1"], ["m"]),
      node("Conv", ["m", "w2", "b2"], ["output"])],
     {"w1": w1, "b1": b1, "a": w(1, 8, 5, 8), "w2": w(6, 8, 1, 1), "b2": w(6)}, ["output"],
     expect(8, True, "the channels are a MatMul batch dimension"))

wa, ba = zeroed_conv(4, 4, 1, 1, 0.0)
wb, bb = zeroed_conv(4, 4, 1, 2, 0.0)
case("concat_swap_add",
     [node("Conv", ["input", "wa", "bias_a"], ["c1"]), node("Conv", ["input", "wb", "bias_b"], ["b"]),
      node("Concat", ["c1", "b"], ["ab"], axis=1), node("Concat", ["b", "c1"], ["ba"], axis=1),
      node("Add", ["ab", "ba"], ["s"]), node("Conv", ["s", "w3", "b3"], ["output"])],
     {"wa": wa, "bias_a": ba, "wb": wb, "bias_b": bb, "w3": w(6, 8, 1, 1), "b3": w(6)}, ["output"],
     expect(4, False, "two Concats in opposite orders added: a's zero channel 1 meets b's live channel 1"))

w1, b1 = zeroed_conv(8, 4, 3, 2, 0.3)
case("gemm_no_trans",
     [node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), node("Relu", ["c1"], ["r"]),
      node("GlobalAveragePool", ["r"], ["g"]), node("Flatten", ["g"], ["f"]),
      node("Gemm", ["f", "wg", "bg"], ["output"], alpha=0.5, beta=2.0)],
     {"w1": w1, "b1": b1, "wg": w(8, 10), "bg": w(10)}, ["output"],
     expect(7, False, "a constant folded into a Gemm with transB=0, alpha and beta"))

w1, b1 = zeroed_conv(8, 4, 1, 3, 0.5)
case("constant_padded_and_1x1",
     [node("Conv", ["input", "w1", "b1"], ["c1"]), node("Conv", ["c1", "w2", "b2"], ["x"], pads=[1, 1, 1, 1]),
      node("Conv", ["c1", "w3", "b3"], ["y"]), node("Add", ["x", "y"], ["output"])],
     {"w1": w1, "b1": b1, "w2": w(6, 8, 3, 3), "b2": w(6), "w3": w(6, 8, 1, 1), "b3": w(6)}, ["output"],
     expect(8, False, "a constant 0.5 read by a 1x1 conv and by a padded 3x3 conv"))

w1, b1 = zeroed_conv(8, 4, 1, 5, 0.0)
case("mul_scale_sigmoid",
     [node("Conv", ["input", "w1", "b1"], ["c1"]), node("Mul", ["c1", "scale"], ["m"]),
      node("Sigmoid", ["m"], ["sg"]), node("Conv", ["sg", "w2", "b2"], ["output"])],
     {"w1": w1, "b1": b1, "scale": w(1, 8, 1, 1), "w2": w(6, 8, 1, 1), "b2": w(6)}, ["output"],
     expect(7, False, "0 times a per-channel scale, then Sigmoid: the constant 0.5"))


w1, b1 = zeroed_conv(8, 4, 1, 2, 0.0)
case("dequantized_weights",
     [node("DequantizeLinear", ["w1_q", "w1_scale"], ["w1"]),
      node("Conv", ["input", "w1", "b1"], ["c1"]), node("Relu", ["c1"], ["r"]),
      node("Conv", ["r", "w2", "b2"], ["output"])],
     {"w1_q": np.clip(np.round(w1 / 0.01), -127, 127).astype(np.int8), "w1_scale": np.array(0.01, np.float32),
      "b1": b1, "w2": w(6, 8, 1, 1), "b2": w(6)}, ["output"],
     expect(8, True, "int8 weights dequantized at run time (a hybrid model): not constants"))


def main(out_dir):
    manifest = {}
    for name, (nodes, inits, outputs, in_shape, exp) in CASES.items():
        g = helper.make_graph(
            nodes, name, [helper.make_tensor_value_info("input", TP.FLOAT, list(in_shape))],
            [helper.make_tensor_value_info(o, TP.FLOAT, None) for o in outputs],
            initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
        onnx.checker.check_model(m, full_check=True)
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        onnx.save(m, os.path.join(d, "model.onnx"))
        x = np.random.default_rng(len(manifest)).standard_normal(in_shape).astype(np.float32)
        np.save(os.path.join(d, "input_0.npy"), x)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(m.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])
        for i, o in enumerate(sess.run(None, {"input": x})):
            np.save(os.path.join(d, f"output_{i}.npy"), o)
        manifest[name] = exp
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
