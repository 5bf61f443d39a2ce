"""Writes the malformed models the bad-input tests feed to kiln (committed; rerun to regenerate).

Each case is a file tests/bad_models/<case>.onnx (or .bin for non-ONNX bytes). The expected error
fragments live in tests/bad_input.rs next to the case name.
"""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))


def model(nodes, inputs, outputs, initializers=(), opset=13):
    graph = helper.make_graph(nodes, "bad", inputs, outputs, initializer=list(initializers))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def save(name, m):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(m.SerializeToString())


def f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def main():
    good = model(
        [helper.make_node("Relu", ["x"], ["y"], name="relu0")],
        [f32("x", [1, 4])],
        [f32("y", [1, 4])],
        [numpy_helper.from_array(np.ones((64, 64), np.float32), "unused_weight")],
    )
    data = good.SerializeToString()
    with open(os.path.join(HERE, "truncated.onnx"), "wb") as f:
        f.write(data[: len(data) // 2])
    rng = np.random.default_rng(1234)
    with open(os.path.join(HERE, "random_bytes.onnx"), "wb") as f:
        f.write(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with open(os.path.join(HERE, "wrong_magic.onnx"), "wb") as f:
        # A PNG header followed by zeros: a common mistake is passing the wrong file.
        f.write(b"\x89PNG\r\n\x1a\n" + bytes(256))
    save(
        "unknown_op.onnx",
        model(
            [
                helper.make_node("Relu", ["x"], ["a"], name="relu0"),
                helper.make_node("FancyNewOp", ["a"], ["b"], name="fancy0"),
                helper.make_node("Det", ["b"], ["y"], name="det0"),
            ],
            [f32("x", [1, 4])],
            [f32("y", [1, 4])],
        ),
    )
    # Every problem at once: the unknown op's output type is declared (value_info), so the
    # unsupported attribute downstream of it is found in the same run.
    chained = model(
        [
            helper.make_node("FancyNewOp", ["x"], ["a"], name="fancy0"),
            helper.make_node("LayerNormalization", ["a", "gamma"], ["b"], name="ln_stash", stash_type=0),
            helper.make_node("Relu", ["b"], ["y"], name="relu0"),
        ],
        [f32("x", [1, 4])],
        [f32("y", [1, 4])],
        [numpy_helper.from_array(np.ones((4,), np.float32), "gamma")],
        opset=17,
    )
    chained.graph.value_info.extend([f32("a", [1, 4]), f32("b", [1, 4])])
    save("unknown_op_then_unsupported_attr.onnx", chained)
    save(
        "shape_mismatch.onnx",
        model(
            [helper.make_node("Add", ["x", "w"], ["y"], name="add_bad")],
            [f32("x", [2, 3])],
            [f32("y", [2, 3])],
            [numpy_helper.from_array(np.ones((4, 5), np.float32), "w")],
        ),
    )
    save(
        "missing_input.onnx",
        model(
            [helper.make_node("Add", ["x", "nowhere"], ["y"], name="add_missing")],
            [f32("x", [2, 3])],
            [f32("y", [2, 3])],
        ),
    )
    save(
        "negative_dim.onnx",
        model([helper.make_node("Relu", ["x"], ["y"], name="relu0")], [f32("x", [1, -3])], [f32("y", [1, 3])]),
    )
    save(
        "absurd_input_dim.onnx",
        model(
            [helper.make_node("Relu", ["x"], ["y"], name="relu0")],
            [f32("x", [1 << 20, 1 << 20])],
            [f32("y", [1 << 20, 1 << 20])],
        ),
    )
    # A header claiming 2^40 elements with (almost) no data: must be refused before allocating.
    huge = TensorProto(name="huge_weight", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 20])
    huge.raw_data = bytes(16)
    save(
        "absurd_initializer.onnx",
        model(
            [helper.make_node("Add", ["x", "huge_weight"], ["y"], name="add_huge")],
            [f32("x", [1, 1])],
            [f32("y", [1 << 20, 1 << 20])],
            [huge],
        ),
    )
    shape = numpy_helper.from_array(np.array([1 << 20, 1 << 20], np.int64), "big_shape")
    save(
        "absurd_expand.onnx",
        model(
            [helper.make_node("Expand", ["x", "big_shape"], ["y"], name="expand_huge")],
            [f32("x", [1, 1])],
            [f32("y", [1 << 20, 1 << 20])],
            [shape],
        ),
    )
    save(
        "cycle.onnx",
        model(
            [
                helper.make_node("Add", ["x", "c"], ["a"], name="add_a"),
                helper.make_node("Relu", ["a"], ["b"], name="relu_b"),
                helper.make_node("Relu", ["b"], ["c"], name="relu_c"),
            ],
            [f32("x", [1, 4])],
            [f32("c", [1, 4])],
        ),
    )
    save(
        "symbolic_dim.onnx",
        model([helper.make_node("Relu", ["x"], ["y"], name="relu0")], [f32("x", ["batch", 4])], [f32("y", ["batch", 4])]),
    )
    save(
        "control_flow.onnx",
        model(
            [
                helper.make_node(
                    "If",
                    ["cond"],
                    ["y"],
                    name="branch0",
                    then_branch=helper.make_graph([], "t", [], [f32("x", [1])]),
                    else_branch=helper.make_graph([], "e", [], [f32("x", [1])]),
                )
            ],
            [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
            [f32("y", [1])],
        ),
    )
    save(
        "unsupported_attr.onnx",
        model(
            [helper.make_node("LayerNormalization", ["x", "gamma"], ["y"], name="ln_stash", stash_type=0)],
            [f32("x", [1, 4])],
            [f32("y", [1, 4])],
            [numpy_helper.from_array(np.ones((4,), np.float32), "gamma")],
            opset=17,
        ),
    )
    save(
        "unsupported_dtype.onnx",
        model(
            [helper.make_node("Relu", ["x"], ["y"], name="relu_f64")],
            [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 4])],
            [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, 4])],
        ),
    )
    ext = numpy_helper.from_array(np.ones((4,), np.float32), "ext_weight")
    ext.ClearField("raw_data")
    ext.data_location = TensorProto.EXTERNAL
    ext.external_data.add(key="location", value="weights.bin")
    save(
        "external_data.onnx",
        model(
            [helper.make_node("Add", ["x", "ext_weight"], ["y"], name="add_ext")],
            [f32("x", [1, 4])],
            [f32("y", [1, 4])],
            [ext],
        ),
    )
    seq_in = helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, [1, 4])
    save(
        "sequence_input.onnx",
        model(
            [helper.make_node("SequenceAt", ["seq", "idx"], ["y"], name="seq_at")],
            [seq_in, helper.make_tensor_value_info("idx", TensorProto.INT64, [])],
            [f32("y", [1, 4])],
        ),
    )


if __name__ == "__main__":
    main()
