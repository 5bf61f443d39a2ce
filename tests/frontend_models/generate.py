"""Small models that exercise frontend features, with onnxruntime reference outputs (committed).

Each case is a directory tests/frontend_models/<case>/ with model.onnx, input_0.npy and
output_0.npy. Cases: a model-local function (as the dynamo torch.onnx exporter emits), weights
listed as graph inputs with initializers (IR version 3 style), initializers in typed fields
instead of raw_data, Constant nodes of every value kind, an unused initializer, a symbolic batch
dimension (run with --input-shape), opset-12 forms of Clip/Pad/Squeeze/Split, and Upsample
(opset 7 with `scales` as an attribute, opset 9 with `scales` an initializer; nearest and linear).

`cli/` holds models the command-line tests (tests/cli.rs) pass extra options to, as loose files
(not case directories, which every model test walks): a Reshape whose shape is a graph input
(`--const-input`), and inputs whose dimensions are written as -1 (as Paddle2ONNX does) or 0.
"""

import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
RNG = np.random.default_rng(7)


def f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def save(case, model, x, kiln_args=()):
    onnx.checker.check_model(model)
    d = os.path.join(HERE, case)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "model.onnx"), "wb") as f:
        f.write(model.SerializeToString())
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {model.graph.input[0].name: x})[0]
    np.save(os.path.join(d, "input_0.npy"), x)
    np.save(os.path.join(d, "output_0.npy"), y)
    if kiln_args:
        # Extra `kiln run` arguments, one per line (read by tests/models.rs).
        with open(os.path.join(d, "kiln_args"), "w") as f:
            f.write("".join(a + "\n" for a in kiln_args))


def local_function():
    # y = gelu_tanh(x * alpha) + x, with "ScaledGelu" a model-local function taking an attribute.
    fn = helper.make_function(
        "custom.lib",
        "ScaledGelu",
        ["X"],
        ["Y"],
        [
            helper.make_node("Constant", [], ["alpha"], value_float=0.0, name="c"),
            helper.make_node("Constant", [], ["a"], name="ca", value=helper.make_tensor("v", TensorProto.FLOAT, [], [0.0])),
            helper.make_node("Mul", ["X", "s"], ["xs"], name="mul"),
            helper.make_node("Sigmoid", ["xs"], ["sg"], name="sig"),
            helper.make_node("Mul", ["xs", "sg"], ["Y"], name="silu"),
        ],
        [helper.make_opsetid("", 18)],
    )
    # The scale is a function input bound to an initializer at the call site.
    fn.input.append("s")
    graph = helper.make_graph(
        [
            helper.make_node("ScaledGelu", ["x", "scale"], ["g"], domain="custom.lib", name="/block/ScaledGelu"),
            helper.make_node("ScaledGelu", ["g", "scale"], ["h"], domain="custom.lib", name="/block/ScaledGelu_1"),
            helper.make_node("Add", ["h", "x"], ["y"], name="/block/Add"),
        ],
        "local_function",
        [f32("x", [2, 8])],
        [f32("y", [2, 8])],
        initializer=[numpy_helper.from_array(np.array([1.5], np.float32), "scale")],
    )
    m = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("custom.lib", 1)],
        functions=[fn],
    )
    save("local_function", m, RNG.standard_normal((2, 8)).astype(np.float32))


def legacy_weights_as_inputs():
    # Weights also listed as graph inputs (as IR version 3 required); typed-field initializers.
    w = RNG.standard_normal((4, 3)).astype(np.float32)
    b = RNG.standard_normal((3,)).astype(np.float32)
    w_t = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], w.flatten().tolist())
    b_t = helper.make_tensor("b", TensorProto.FLOAT, [3], b.flatten().tolist())
    unused = numpy_helper.from_array(np.ones((5,), np.float32), "unused")
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w", "b"], ["g"], name="gemm"),
            helper.make_node("Clip", ["g"], ["y"], name="clip6", min=0.0, max=6.0),
        ],
        "legacy",
        [f32("x", [2, 4]), f32("w", [4, 3]), f32("b", [3])],
        [f32("y", [2, 3])],
        initializer=[w_t, b_t, unused],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    m.ir_version = 4
    save("legacy_weights_as_inputs", m, RNG.standard_normal((2, 4)).astype(np.float32))


def constants_and_symbolic_batch():
    # Constant nodes of each kind; a symbolic batch dim; opset-12 Pad/Squeeze/Split/Clip forms.
    nodes = [
        helper.make_node("Constant", [], ["pads"], name="c_pads", value_ints=[0, 0, 1, 0, 0, 1]),
        helper.make_node("Constant", [], ["lo"], name="c_lo", value_float=-0.5),
        helper.make_node("Constant", [], ["hi"], name="c_hi", value=helper.make_tensor("hi", TensorProto.FLOAT, [], [0.5])),
        helper.make_node("Pad", ["x", "pads"], ["p"], name="pad", mode="reflect"),
        helper.make_node("Clip", ["p", "lo", "hi"], ["c"], name="clip"),
        helper.make_node("Split", ["c"], ["s0", "s1"], name="split", axis=2, split=[3, 3]),
        helper.make_node("Sub", ["s0", "s1"], ["d"], name="sub"),
        helper.make_node("Unsqueeze", ["d"], ["u"], name="unsq", axes=[1]),
        helper.make_node("Squeeze", ["u"], ["y"], name="sq", axes=[1]),
    ]
    graph = helper.make_graph(nodes, "constants", [f32("x", ["batch", 3, 4])], [f32("y", ["batch", 3, 3])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    save(
        "constants_and_symbolic_batch",
        m,
        RNG.standard_normal((2, 3, 4)).astype(np.float32),
        kiln_args=["--input-shape", "x=2,3,4"],
    )


def upsample_opset7():
    # Upsample-7: scales as an attribute; nearest and linear on the same input.
    nodes = [
        helper.make_node("Upsample", ["x"], ["n"], name="up_nearest", mode="nearest", scales=[1.0, 1.0, 2.0, 3.0]),
        helper.make_node("Upsample", ["x"], ["l"], name="up_linear", mode="linear", scales=[1.0, 1.0, 2.0, 3.0]),
        helper.make_node("Add", ["n", "l"], ["y"], name="add"),
    ]
    graph = helper.make_graph(nodes, "upsample7", [f32("x", [1, 2, 3, 4])], [f32("y", [1, 2, 6, 12])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)])
    m.ir_version = 3
    save("upsample_opset7", m, RNG.standard_normal((1, 2, 3, 4)).astype(np.float32))


def upsample_opset9():
    # Upsample-9: scales as an input (here an initializer, so known at compile time).
    nodes = [
        helper.make_node("Upsample", ["x", "scales"], ["n"], name="up_nearest", mode="nearest"),
        helper.make_node("Upsample", ["x", "scales"], ["l"], name="up_linear", mode="linear"),
        helper.make_node("Sub", ["n", "l"], ["y"], name="sub"),
    ]
    scales = numpy_helper.from_array(np.array([1.0, 1.0, 2.0, 2.5], np.float32), "scales")
    graph = helper.make_graph(
        nodes, "upsample9", [f32("x", [1, 3, 2, 4])], [f32("y", [1, 3, 4, 10])], initializer=[scales]
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    m.ir_version = 4
    save("upsample_opset9", m, RNG.standard_normal((1, 3, 2, 4)).astype(np.float32))


def cli_models():
    d = os.path.join(HERE, "cli")
    os.makedirs(d, exist_ok=True)

    def write(name, model):
        onnx.checker.check_model(model)
        with open(os.path.join(d, name), "wb") as f:
            f.write(model.SerializeToString())

    # Reshape whose target shape is a graph input (`kiln ... --const-input shape=shape.npy`).
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"),
            helper.make_node("Relu", ["r"], ["y"], name="relu"),
        ],
        "reshape_shape_input",
        [f32("x", [2, 3, 4]), helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [f32("y", ["rows", "cols"])],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    write("reshape_shape_input.onnx", m)
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    shape = np.array([4, 6], np.int64)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    np.save(os.path.join(d, "reshape_x.npy"), x)
    np.save(os.path.join(d, "reshape_shape.npy"), shape)
    np.save(os.path.join(d, "reshape_y.npy"), sess.run(None, {"x": x, "shape": shape})[0])
    # Values of the wrong type and shape for `shape`, for the errors.
    np.save(os.path.join(d, "reshape_shape_i32.npy"), shape.astype(np.int32))
    np.save(os.path.join(d, "reshape_shape_3.npy"), np.array([2, 3, 4], np.int64))

    # Dynamic dimensions as exporters write them: -1 (Paddle2ONNX) and 0.
    w = numpy_helper.from_array(RNG.standard_normal((4, 3)).astype(np.float32), "w")
    for name, dims in [("dynamic_minus_one.onnx", [-1, 4]), ("dynamic_zero.onnx", [0, 4])]:
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")],
            "dynamic",
            [f32("x", dims)],
            [f32("y", [dims[0], 3])],
            initializer=[w],
        )
        write(name, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


if __name__ == "__main__":
    local_function()
    legacy_weights_as_inputs()
    constants_and_symbolic_batch()
    upsample_opset7()
    upsample_opset9()
    cli_models()
