"""Writes the regression cases of tests/soundness.rs: small ONNX models where kiln once crashed,
emitted broken code, or diverged from onnxruntime, each with its inputs and onnxruntime's
outputs (graph optimizations off, so onnxruntime's own rewrites hide nothing).

Usage: make_cases.py OUT_DIR. Each case is OUT_DIR/NAME/{model.onnx, input_K.npy, output_K.npy};
a case that needs an exact reference instead (the badly conditioned normalizations) also gets
exact_K.npy (float64 statistics, rounded once) and ort_error.txt (onnxruntime's max error
against it).
"""

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def model(name, nodes, inputs, outputs, inits=(), opset=OPSET):
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    # Outputs are declared without a shape; shape inference fills them in for the checker.
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    onnx.checker.check_model(m)
    return m


def run_ort(m, feeds):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def save(out, name, m, xs, extra=None):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    onnx.save(m, os.path.join(d, "model.onnx"))
    feeds = {i.name: x for i, x in zip(m.graph.input, xs)}
    for k, x in enumerate(xs):
        np.save(os.path.join(d, f"input_{k}.npy"), x)
    for k, y in enumerate(run_ort(m, feeds)):
        np.save(os.path.join(d, f"output_{k}.npy"), y)
    for fname, value in (extra or {}).items():
        if isinstance(value, np.ndarray):
            np.save(os.path.join(d, fname), value)
        else:
            with open(os.path.join(d, fname), "w") as f:
                f.write(str(value))


def rng_input(shape, seed, lo=-1.0, hi=1.0):
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(np.float32)


def bn_inits(prefix, c, seed):
    r = np.random.default_rng(seed)
    return [
        (f"{prefix}_scale", r.uniform(0.5, 1.5, c).astype(np.float32)),
        (f"{prefix}_bias", r.uniform(-0.5, 0.5, c).astype(np.float32)),
        (f"{prefix}_mean", r.uniform(-0.5, 0.5, c).astype(np.float32)),
        (f"{prefix}_var", r.uniform(0.5, 1.5, c).astype(np.float32)),
    ]


def bn_node(x, y, prefix):
    ins = [x] + [f"{prefix}_{p}" for p in ("scale", "bias", "mean", "var")]
    return helper.make_node("BatchNormalization", ins, [y], name=f"{prefix}")


def batchnorm_after_one_input_ops(out):
    """Issue 16, bug 1: BN after Relu, Softmax, AveragePool, Reshape, Flatten panicked at -O1/-O2."""
    pre = {
        "relu": (helper.make_node("Relu", ["x"], ["p"], name="relu"), []),
        "softmax": (helper.make_node("Softmax", ["x"], ["p"], name="softmax", axis=1), []),
        "avgpool": (
            helper.make_node(
                "AveragePool", ["x"], ["p"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]
            ),
            [],
        ),
        "reshape": (
            helper.make_node("Reshape", ["x", "shape"], ["p"], name="reshape"),
            [("shape", np.array([1, 3, 4, 4], dtype=np.int64))],
        ),
    }
    for name, (node, inits) in pre.items():
        m = model(
            f"bn_after_{name}",
            [node, bn_node("p", "y", "bn")],
            [("x", [1, 3, 4, 4])],
            ["y"],
            inits + bn_inits("bn", 3, 1),
        )
        save(out, f"bn_after_{name}", m, [rng_input([1, 3, 4, 4], 2)])
    # Flatten, then a BN over the 12 features.
    m = model(
        "bn_after_flatten",
        [helper.make_node("Flatten", ["x"], ["p"], name="flatten"), bn_node("p", "y", "bn")],
        [("x", [2, 3, 2, 2])],
        ["y"],
        bn_inits("bn", 12, 3),
    )
    save(out, "bn_after_flatten", m, [rng_input([2, 3, 2, 2], 4)])


def layernorm_with_extra_reader(out):
    """Issue 16, bug 2: fuse-layernorm removed d = Sub(x, mean) although Neg(d) still read it."""
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], name="mean", axes=[-1]),
        helper.make_node("Sub", ["x", "m"], ["d"], name="sub"),
        helper.make_node("Pow", ["d", "two"], ["sq"], name="pow"),
        helper.make_node("ReduceMean", ["sq"], ["v"], name="var", axes=[-1]),
        helper.make_node("Add", ["v", "eps"], ["ve"], name="add_eps"),
        helper.make_node("Sqrt", ["ve"], ["s"], name="sqrt"),
        helper.make_node("Div", ["d", "s"], ["n"], name="div"),
        helper.make_node("Mul", ["n", "gamma"], ["ng"], name="mul_gamma"),
        helper.make_node("Add", ["ng", "beta"], ["ln"], name="add_beta"),
        helper.make_node("Neg", ["d"], ["nd"], name="neg"),
        helper.make_node("Add", ["ln", "nd"], ["y"], name="sum"),
    ]
    r = np.random.default_rng(5)
    inits = [
        ("two", np.array(2.0, dtype=np.float32)),
        ("eps", np.array(1e-5, dtype=np.float32)),
        ("gamma", r.uniform(0.5, 1.5, 8).astype(np.float32)),
        ("beta", r.uniform(-0.5, 0.5, 8).astype(np.float32)),
    ]
    m = model("layernorm_extra_reader", nodes, [("x", [2, 3, 8])], ["y"], inits)
    save(out, "layernorm_extra_reader", m, [rng_input([2, 3, 8], 6)])


def resize(out):
    """Issue 16, points 3 and 4: Resize's integer output length and exact ties, as onnxruntime."""

    def case(name, in_shape, mode, coord, nearest="round_prefer_floor", scales=None, sizes=None):
        inits = [("roi", np.zeros([0], dtype=np.float32))]
        ins = ["x", "roi"]
        if scales is not None:
            inits.append(("scales", np.array(scales, dtype=np.float32)))
            ins.append("scales")
        else:
            inits.append(("scales", np.zeros([0], dtype=np.float32)))
            inits.append(("sizes", np.array(sizes, dtype=np.int64)))
            ins += ["scales", "sizes"]
        node = helper.make_node(
            "Resize",
            ins,
            ["y"],
            name="resize",
            mode=mode,
            coordinate_transformation_mode=coord,
            nearest_mode=nearest,
        )
        m = model(name, [node], [("x", in_shape)], ["y"], inits)
        x = np.arange(np.prod(in_shape), dtype=np.float32).reshape(in_shape)
        save(out, name, m, [x])

    # input x scale not an integer: 3 * 1.5 = 4.5 rows, 4 * 0.6 = 2.4 columns.
    for coord in ["align_corners", "pytorch_half_pixel", "half_pixel", "asymmetric"]:
        for mode in ["linear", "cubic"]:
            case(f"resize_{mode}_{coord}_fractional", [1, 1, 3, 4], mode, coord, scales=[1, 1, 1.5, 0.6])
    # A one-element output axis (3 * 0.4 = 1.2 -> 1): pytorch_half_pixel samples coordinate 0.
    case("resize_linear_pytorch_unit", [1, 1, 3, 5], "linear", "pytorch_half_pixel", scales=[1, 1, 0.4, 1])
    # Exact ties and integers: half_pixel 7 -> 17 (output 8 maps to input 3 exactly).
    for nearest in ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]:
        case(f"resize_nearest_7_to_17_{nearest}", [1, 1, 1, 7], "nearest", "half_pixel", nearest, sizes=[1, 1, 1, 17])
        case(f"resize_nearest_5_to_2_{nearest}", [1, 1, 5, 5], "nearest", "half_pixel", nearest, sizes=[1, 1, 2, 2])


def clip_without_bounds(out):
    """Issue 16, point 5: Clip with neither bound clamps +-inf to the float range."""
    x = np.array([[-np.inf, -1.0, 0.0, 2.5, np.inf, 3.0e38, -3.0e38]], dtype=np.float32)
    m = model("clip_no_bounds", [helper.make_node("Clip", ["x"], ["y"], name="clip")], [("x", [1, 7])], ["y"])
    save(out, "clip_no_bounds", m, [x])
    # Only a lower bound: +inf still clamps to the float max.
    m = model(
        "clip_min_only",
        [helper.make_node("Clip", ["x", "lo"], ["y"], name="clip")],
        [("x", [1, 7])],
        ["y"],
        [("lo", np.array(-1.5, dtype=np.float32))],
    )
    save(out, "clip_min_only", m, [x])


def badly_conditioned_norms(out):
    """Issue 16, point 6: rows with mean 300 and std 1e-3. exact_0.npy is the f64 result."""
    r = np.random.default_rng(7)
    x = (300.0 + 1e-3 * r.standard_normal([2, 4, 64])).astype(np.float32)
    gamma = r.uniform(0.5, 1.5, 64).astype(np.float32)
    beta = r.uniform(-0.5, 0.5, 64).astype(np.float32)
    xd = x.astype(np.float64)
    mean = xd.mean(-1, keepdims=True)
    var = ((xd - mean) ** 2).mean(-1, keepdims=True)
    exact = ((xd - mean) / np.sqrt(var + 1e-5) * gamma + beta).astype(np.float32)
    m = model(
        "layernorm_ill_conditioned",
        [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["y"], name="ln", axis=-1, epsilon=1e-5)],
        [("x", [2, 4, 64])],
        ["y"],
        [("gamma", gamma), ("beta", beta)],
    )
    y = run_ort(m, {"x": x})[0]
    save(out, "layernorm_ill_conditioned", m, [x], {"exact_0.npy": exact, "ort_error.txt": float(np.abs(y - exact).max())})

    xi = x.reshape(2, 4, 8, 8)
    scale = r.uniform(0.5, 1.5, 4).astype(np.float32)
    bias = r.uniform(-0.5, 0.5, 4).astype(np.float32)
    xd = xi.astype(np.float64)
    mean = xd.mean((2, 3), keepdims=True)
    var = ((xd - mean) ** 2).mean((2, 3), keepdims=True)
    exact = ((xd - mean) / np.sqrt(var + 1e-5) * scale[:, None, None] + bias[:, None, None]).astype(np.float32)
    m = model(
        "instancenorm_ill_conditioned",
        [helper.make_node("InstanceNormalization", ["x", "scale", "bias"], ["y"], name="in", epsilon=1e-5)],
        [("x", [2, 4, 8, 8])],
        ["y"],
        [("scale", scale), ("bias", bias)],
    )
    y = run_ort(m, {"x": xi})[0]
    save(out, "instancenorm_ill_conditioned", m, [xi], {"exact_0.npy": exact, "ort_error.txt": float(np.abs(y - exact).max())})


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    batchnorm_after_one_input_ops(out)
    layernorm_with_extra_reader(out)
    resize(out)
    clip_without_bounds(out)
    badly_conditioned_norms(out)


if __name__ == "__main__":
    main()
