"""Writes the cases of frontend/tests/quantized_ops.rs: one small model per quantized op kiln
imports (the com.microsoft QLinear ops, and QLinearConv, QLinearMatMul, MatMulInteger and
ConvInteger in forms the ONNX node tests do not cover: per-channel weights, bias, broadcasting,
channels_last, int8 and uint8), with onnxruntime's outputs (numpy's for MatMulInteger with
per-row zero points, which onnxruntime refuses).

Usage: make_cases.py OUT_DIR. Each case is OUT_DIR/NAME/{model.onnx, input_K.npy, output_K.npy,
tolerance.txt}. The integer tensors are graph inputs drawn over their whole range (so results
saturate too); scales, zero points and weights are initializers. tolerance.txt holds the
largest difference kiln may show, in units of the output's last place, then '#' and why.
"""

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

MS = "com.microsoft"
RNG = np.random.default_rng(11)

EXACT = "0  # same arithmetic: onnxruntime's integer result is exact"
FLOAT_REQUANT = (
    "1  # onnxruntime requantizes an exact integer accumulator with one float multiplier (MLAS); "
    "kiln at -O0 computes in float from the dequantized values, so a result within float error "
    "of a half can round the other way"
)
TABLE = (
    "1  # onnxruntime builds a 256-entry table with MLAS's approximations of the function; kiln "
    "at -O0 computes it in float with libm (identical on every code of these cases)"
)
POOL = (
    "1  # the exact average often lands on a half here (scale ratio 2.5, windows of 1 to 9 "
    "taps); onnxruntime and kiln's float evaluation (dequantize, sum, divide, quantize) put it "
    "on different sides of the tie"
)


def q8(dtype, shape):
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max + 1, size=shape, dtype=np.int64).astype(dtype)


def onnx_type(dtype):
    return {np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8, np.int32: TensorProto.INT32}[
        np.dtype(dtype).type
    ]


def zp(dtype, value):
    return np.array(value, dtype=dtype)


def scale(value):
    return np.array(value, dtype=np.float32)


def save(out, name, nodes, inputs, inits, tolerance, ms=True, opset=13, out_dtype=None, expected=None):
    """`inputs`: (name, array) graph inputs; `inits`: (name, array) initializers. The output
    has the first input's type unless `out_dtype` says otherwise. `expected` replaces
    onnxruntime's outputs where it does not run the model."""
    out_type = onnx_type(out_dtype or inputs[0][1].dtype)
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(n, onnx_type(a.dtype), a.shape) for n, a in inputs],
        [helper.make_tensor_value_info(o, out_type, None) for o in nodes[-1].output],
        [numpy_helper.from_array(a, n) for n, a in inits],
    )
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(MS, 1)] if ms else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    opts = ort.SessionOptions()
    # onnxruntime's own fusions would change what runs; its kernels for these ops are the reference.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if expected is None:
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        outputs = sess.run(None, dict(inputs))
    else:
        outputs = expected
    # Declare the outputs' types as onnxruntime computed them.
    del model.graph.output[:]
    for o, y in zip(nodes[-1].output, outputs):
        model.graph.output.append(helper.make_tensor_value_info(o, onnx_type(y.dtype), y.shape))
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    onnx.save(model, os.path.join(d, "model.onnx"))
    for k, (_, x) in enumerate(inputs):
        np.save(os.path.join(d, f"input_{k}.npy"), x)
    for k, y in enumerate(outputs):
        np.save(os.path.join(d, f"output_{k}.npy"), y)
    with open(os.path.join(d, "tolerance.txt"), "w") as f:
        f.write(tolerance + "\n")


def binary(out, op, dtype, b_shape, tolerance):
    t = np.dtype(dtype).name
    name = f"{op.lower()}_{t}" + ("_broadcast" if b_shape != [1, 4, 5, 5] else "")
    mid = 128 if dtype == np.uint8 else 0
    node = helper.make_node(
        op,
        ["A", "A_scale", "A_zero_point", "B", "B_scale", "B_zero_point", "C_scale", "C_zero_point"],
        ["C"],
        domain=MS,
    )
    inits = [
        ("A_scale", scale(0.05)),
        ("A_zero_point", zp(dtype, mid - 9)),
        ("B_scale", scale(0.031)),
        ("B_zero_point", zp(dtype, mid + 4)),
        ("C_scale", scale(0.07 if op == "QLinearAdd" else 0.6)),
        ("C_zero_point", zp(dtype, mid - 3)),
    ]
    save(out, name, [node], [("A", q8(dtype, [1, 4, 5, 5])), ("B", q8(dtype, b_shape))], inits, tolerance)


def unary(out, op, dtype, attrs, tolerance):
    name = f"{op.lower()}_{np.dtype(dtype).name}"
    mid = 128 if dtype == np.uint8 else 0
    node = helper.make_node(
        op, ["X", "X_scale", "X_zero_point", "Y_scale", "Y_zero_point"], ["Y"], domain=MS, **attrs
    )
    y_scale, y_zp = (1 / 256, 0 if dtype == np.uint8 else -128) if op == "QLinearSigmoid" else (0.04, mid + 10)
    inits = [
        ("X_scale", scale(0.045)),
        ("X_zero_point", zp(dtype, mid + 7)),
        ("Y_scale", scale(y_scale)),
        ("Y_zero_point", zp(dtype, y_zp)),
    ]
    # Every input code once, so the whole table is compared.
    info = np.iinfo(dtype)
    x = np.arange(info.min, info.max + 1, dtype=np.int64).astype(dtype).reshape(1, 4, 8, 8)
    save(out, name, [node], [("X", x)], inits, tolerance)


def concat(out, dtype):
    name = f"qlinearconcat_{np.dtype(dtype).name}"
    mid = 128 if dtype == np.uint8 else 0
    shapes = [[1, 2, 3, 3], [1, 3, 3, 3], [1, 1, 3, 3]]
    params = [(0.02, mid + 5), (0.05, mid), (0.03, mid - 20)]  # the first is the output's own
    ins = ["Y_scale", "Y_zero_point"]
    inits = [("Y_scale", scale(0.02)), ("Y_zero_point", zp(dtype, mid + 5))]
    inputs = []
    for i, (s, (sc, z)) in enumerate(zip(shapes, params)):
        ins += [f"x{i}", f"x{i}_scale", f"x{i}_zero_point"]
        inits += [(f"x{i}_scale", scale(sc)), (f"x{i}_zero_point", zp(dtype, z))]
        inputs.append((f"x{i}", q8(dtype, s)))
    node = helper.make_node("QLinearConcat", ins, ["Y"], domain=MS, axis=1)
    save(out, name, [node], inputs, inits,
         "1  # onnxruntime requantizes each input through a table built with MLAS; kiln at -O0 "
         "dequantizes and quantizes in float (identical on these cases)")


def pool(out, op, dtype, channels_last, attrs, tolerance, suffix=""):
    name = f"{op.lower()}_{np.dtype(dtype).name}" + ("_channels_last" if channels_last else "") + suffix
    mid = 128 if dtype == np.uint8 else 0
    node = helper.make_node(
        op,
        ["X", "x_scale", "x_zero_point", "y_scale", "y_zero_point"],
        ["Y"],
        domain=MS,
        channels_last=int(channels_last),
        **attrs,
    )
    inits = [
        ("x_scale", scale(0.05)),
        ("x_zero_point", zp(dtype, mid + 6)),
        ("y_scale", scale(0.02)),
        ("y_zero_point", zp(dtype, mid - 5)),
    ]
    shape = [1, 9, 9, 6] if channels_last else [1, 6, 9, 9]
    save(out, name, [node], [("X", q8(dtype, shape))], inits, tolerance)


def qlinear_conv(out, name, x_dtype, c, m, group, per_channel, bias, attrs):
    x_mid = 128 if x_dtype == np.uint8 else 0
    w = q8(np.int8, [m, c // group, 3, 3])
    w_scale = RNG.uniform(0.002, 0.01, m if per_channel else 1).astype(np.float32)
    x_scale = scale(0.02)
    inits = [
        ("x_scale", x_scale),
        ("x_zero_point", zp(x_dtype, x_mid + 3)),
        ("w", w),
        ("w_scale", w_scale if per_channel else w_scale.reshape([])),
        ("w_zero_point", np.zeros(m if per_channel else [], dtype=np.int8)),
        ("y_scale", scale(0.25)),
        ("y_zero_point", zp(x_dtype, x_mid - 7)),
    ]
    ins = ["x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point", "y_scale", "y_zero_point"]
    if bias:
        inits.append(("B", RNG.integers(-20000, 20000, m).astype(np.int32)))
        ins.append("B")
    node = helper.make_node("QLinearConv", ins, ["y"], group=group, **attrs)
    save(out, name, [node], [("x", q8(x_dtype, [1, c, 8, 8]))], inits, FLOAT_REQUANT, ms=False)


def qlinear_matmul(out, name, a_dtype, a_shape, b_shape, per_column):
    mid = 128 if a_dtype == np.uint8 else 0
    n = b_shape[-1]
    b_scale = RNG.uniform(0.002, 0.01, n if per_column else 1).astype(np.float32)
    inits = [
        ("a_scale", scale(0.02)),
        ("a_zero_point", zp(a_dtype, mid + 3)),
        ("b", q8(np.int8, b_shape)),
        ("b_scale", b_scale if per_column else b_scale.reshape([])),
        ("b_zero_point", np.zeros(n if per_column else [], dtype=np.int8)),
        ("y_scale", scale(0.05)),
        ("y_zero_point", zp(a_dtype, mid + 1)),
    ]
    ins = ["a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point", "y_scale", "y_zero_point"]
    node = helper.make_node("QLinearMatMul", ins, ["y"])
    save(out, name, [node], [("a", q8(a_dtype, a_shape))], inits, FLOAT_REQUANT, ms=False)


def matmul_integer(out, name, a_dtype, a_shape, b_dtype, b_shape, b_zp_shape):
    inits = [
        ("B", q8(b_dtype, b_shape)),
        ("a_zero_point", zp(a_dtype, 5)),
        ("b_zero_point", q8(b_dtype, b_zp_shape)),
    ]
    node = helper.make_node("MatMulInteger", ["A", "B", "a_zero_point", "b_zero_point"], ["Y"])
    save(out, name, [node], [("A", q8(a_dtype, a_shape))], inits, EXACT, ms=False, out_dtype=np.int32)


def matmul_integer_per_row(out):
    """Per-row A zero points, which onnxruntime refuses: the expected output is the spec's
    formula in numpy."""
    a = q8(np.uint8, [2, 3, 8])
    a_zp = q8(np.uint8, [2, 3, 1])
    b = q8(np.int8, [8, 4])
    b_zp = q8(np.int8, [4])
    inits = [("B", b), ("a_zero_point", a_zp), ("b_zero_point", b_zp)]
    node = helper.make_node("MatMulInteger", ["A", "B", "a_zero_point", "b_zero_point"], ["Y"])
    y = np.matmul(a.astype(np.int32) - a_zp, b.astype(np.int32) - b_zp)
    save(out, "matmulinteger_u8_per_row", [node], [("A", a)], inits,
         "0  # exact integer arithmetic (numpy: onnxruntime refuses per-row zero points)",
         ms=False, out_dtype=np.int32, expected=[y])


def conv_integer(out, name, x_dtype, w_dtype, w_zero_point, attrs):
    inits = [
        ("w", q8(w_dtype, [4, 2, 3, 3])),
        ("x_zero_point", zp(x_dtype, 9)),
        ("w_zero_point", zp(w_dtype, w_zero_point)),
    ]
    node = helper.make_node("ConvInteger", ["x", "w", "x_zero_point", "w_zero_point"], ["y"], **attrs)
    save(out, name, [node], [("x", q8(x_dtype, [1, 2, 7, 7]))], inits, EXACT, ms=False, out_dtype=np.int32)


def main(out):
    for dtype in (np.uint8, np.int8):
        binary(out, "QLinearAdd", dtype, [1, 4, 5, 5], FLOAT_REQUANT)
        binary(out, "QLinearAdd", dtype, [1, 4, 1, 1], FLOAT_REQUANT)
        binary(out, "QLinearMul", dtype, [1, 4, 5, 5], FLOAT_REQUANT)
        binary(out, "QLinearMul", dtype, [4, 1, 5], FLOAT_REQUANT)
        unary(out, "QLinearSigmoid", dtype, {}, TABLE)
        unary(out, "QLinearLeakyRelu", dtype, {"alpha": 0.1}, TABLE)
        concat(out, dtype)
        for channels_last in (False, True):
            pool(out, "QLinearGlobalAveragePool", dtype, channels_last, {}, POOL)
            pool(
                out,
                "QLinearAveragePool",
                dtype,
                channels_last,
                {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
                POOL,
            )
        pool(
            out,
            "QLinearAveragePool",
            dtype,
            False,
            {"kernel_shape": [2, 3], "strides": [2, 1], "auto_pad": "SAME_UPPER",
             "count_include_pad": 1, "ceil_mode": 0},
            POOL,
            "_same_include_pad",
        )
    qlinear_conv(out, "qlinearconv_u8_per_channel_bias", np.uint8, 3, 6, 1, True, True,
                 {"pads": [1, 1, 1, 1], "strides": [2, 2]})
    qlinear_conv(out, "qlinearconv_i8_per_tensor", np.int8, 3, 5, 1, False, False, {"auto_pad": "SAME_UPPER"})
    qlinear_conv(out, "qlinearconv_i8_depthwise_bias", np.int8, 4, 4, 4, True, True, {"pads": [1, 1, 1, 1]})
    qlinear_matmul(out, "qlinearmatmul_u8_per_column", np.uint8, [2, 3, 16], [16, 5], True)
    qlinear_matmul(out, "qlinearmatmul_i8_batched", np.int8, [2, 3, 16], [2, 16, 5], False)
    matmul_integer(out, "matmulinteger_u8_i8_per_column", np.uint8, [3, 16], np.int8, [16, 5], [5])
    matmul_integer(out, "matmulinteger_u8_u8_batched", np.uint8, [2, 3, 16], np.uint8, [16, 5], [])
    matmul_integer(out, "matmulinteger_i8_vector", np.int8, [16], np.int8, [16, 5], [])
    matmul_integer_per_row(out)
    conv_integer(out, "convinteger_u8_padded", np.uint8, np.uint8, 3, {"pads": [1, 1, 1, 1]})
    conv_integer(out, "convinteger_u8_i8_strided", np.uint8, np.int8, 0, {"strides": [2, 2]})


if __name__ == "__main__":
    main(sys.argv[1])
