"""Small hand-written graphs, each reduced from a failure the differential tester found.

`gen_graphs.py --regressions --out DIR` writes every case of `CASES` like a generated graph
(model, inputs, onnxruntime's outputs), and `tests/differential.rs` runs them through every
backend at -O0, -O1 and -O2 on each run. To add a case: shrink the failing graph
(`gen_graphs.py --shrink DIR/gNNNN --backend B --level L`), print it (`--show DIR/gNNNN-min`),
and write it here as a function returning `(model, inputs)`, with a docstring saying what
failed. Names are the case directories, so keep them short and unique. Where onnxruntime is
itself too imprecise to judge (badly conditioned inputs), a case returns a third item,
`{"expected": [arrays], "scales": [floats]}`: exact outputs (computed in f64) and the magnitude
the 1e-4 tolerance is relative to.

Where onnxruntime departs from the onnx reference implementation (Resize), kiln follows
onnxruntime, and so do these cases; the test says when kiln matches the reference instead.
"""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

OPSET = 18
F32 = np.float32


def model(nodes, inputs, outputs, inits=(), opset=OPSET):
    """A model from nodes, (name, shape) inputs and outputs, and {name: array} initializers."""
    g = helper.make_graph(
        nodes,
        "regression",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        initializer=[numpy_helper.from_array(np.asarray(a), n) for n, a in dict(inits).items()],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def data(shape, seed=0, lo=-2.0, hi=2.0):
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(F32)


FLOAT, BOOL = TensorProto.FLOAT, TensorProto.BOOL


def bn_after_relu():
    """BatchNormalization after Relu: fold-batchnorm indexed the Relu's (absent) weight input and
    panicked at -O1/-O2 (also after Softmax, AveragePool, Reshape, Flatten)."""
    c = 3
    inits = {"s": data([c], 1, 0.5, 1.5), "b": data([c], 2), "m": data([c], 3), "v": data([c], 4, 0.2, 2.0)}
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("BatchNormalization", ["r", "s", "b", "m", "v"], ["y"])]
    return model(nodes, [("x", [1, c, 4, 4])], [("y", FLOAT, [1, c, 4, 4])], inits), [data([1, c, 4, 4])]


def bn_after_flatten():
    """BatchNormalization on [N, C] after Flatten."""
    c = 12
    inits = {"s": data([c], 1, 0.5, 1.5), "b": data([c], 2), "m": data([c], 3), "v": data([c], 4, 0.2, 2.0)}
    nodes = [helper.make_node("Flatten", ["x"], ["f"]),
             helper.make_node("BatchNormalization", ["f", "s", "b", "m", "v"], ["y"])]
    return model(nodes, [("x", [2, 3, 2, 2])], [("y", FLOAT, [2, c])], inits), [data([2, 3, 2, 2])]


def layernorm_sub_read_twice():
    """Decomposed LayerNorm whose `d = Sub(x, mean)` is also read by a Neg: fuse-layernorm removed
    `d` anyway and the verifier rejected the graph at -O2."""
    inits = {"axes": np.array([1], np.int64), "two": np.array(2.0, F32), "eps": np.array(1e-5, F32)}
    nodes = [
        helper.make_node("ReduceMean", ["x", "axes"], ["m"]),
        helper.make_node("Sub", ["x", "m"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["sq"]),
        helper.make_node("ReduceMean", ["sq", "axes"], ["var"]),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["s"]),
        helper.make_node("Div", ["d", "s"], ["y"]),
        helper.make_node("Neg", ["d"], ["z"]),
    ]
    return (model(nodes, [("x", [9, 6])], [("y", FLOAT, [9, 6]), ("z", FLOAT, [9, 6])], inits),
            [data([9, 6])])


def resize(mode, coord, in_shape, scales=None, sizes=None, opset=OPSET, **attrs):
    inits = {"scales": np.array(scales, F32)} if scales is not None else {"sizes": np.array(sizes, np.int64)}
    ins = ["x", "", "scales"] if scales is not None else ["x", "", "", "sizes"]
    out = [int(np.floor(d * s)) for d, s in zip(in_shape, scales)] if scales is not None else sizes
    node = helper.make_node("Resize", ins, ["y"], mode=mode, coordinate_transformation_mode=coord, **attrs)
    return model([node], [("x", in_shape)], [("y", FLOAT, out)], inits, opset=opset), [data(in_shape)]


def resize_align_corners_fractional():
    """Resize linear, align_corners, scale 1.7 (8 -> 13 rows, 8 * 1.7 not an integer): kiln
    diverged from onnxruntime."""
    return resize("linear", "align_corners", [1, 2, 8, 9], scales=[1.0, 1.0, 1.7, 1.0])


def resize_pytorch_half_pixel_to_one():
    """Resize linear, pytorch_half_pixel, scale 0.2 on 5 columns (one output column, which the
    mode maps to source 0)."""
    return resize("linear", "pytorch_half_pixel", [1, 2, 4, 5], scales=[1.0, 1.0, 1.0, 0.2])


def resize_nearest_half_tie():
    """Resize nearest, half_pixel, 7 -> 17 columns: source coordinates at exact .5 ties rounded
    differently from onnxruntime."""
    return resize("nearest", "half_pixel", [1, 1, 2, 7], sizes=[1, 1, 2, 17])


def clip_without_bounds_on_infinity():
    """Clip with neither bound on +-inf: onnxruntime clamps to +-3.4e38, kiln passed the
    infinities through."""
    x = data([2, 3])
    x[0, 0], x[1, 2] = np.inf, -np.inf
    nodes = [helper.make_node("Clip", ["x"], ["y"])]
    return model(nodes, [("x", [2, 3])], [("y", FLOAT, [2, 3])]), [x]


def normalized_f64(x, axes, eps=1e-5):
    """(x - mean) / sqrt(var + eps) over `axes`, in f64: the exact answer, rounded once."""
    xd = x.astype(np.float64)
    mean = xd.mean(axis=axes, keepdims=True)
    var = ((xd - mean) ** 2).mean(axis=axes, keepdims=True)
    return ((xd - mean) / np.sqrt(var + eps)).astype(F32)


def layernorm_large_mean():
    """LayerNormalization of 300 + 0.001 * x: the generated code lost about 1e-2 of the unit
    output (the interpreter 2e-8). onnxruntime loses as much (3.5e-3), so the expected output
    here is the exact f64 result, with the output's own scale (tolerance 1e-4)."""
    inits = {"scale": np.ones([16], F32), "bias": np.zeros([16], F32)}
    nodes = [helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y"], axis=-1)]
    x = (300.0 + 0.001 * np.random.default_rng(0).standard_normal([2, 4, 16])).astype(F32)
    exact = normalized_f64(x, (2,))
    return (model(nodes, [("x", [2, 4, 16])], [("y", FLOAT, [2, 4, 16])], inits), [x],
            {"expected": [exact], "scales": [1.0]})


def instancenorm_large_mean():
    """InstanceNormalization of 300 + 0.001 * x, against the exact f64 result (onnxruntime
    itself is 1.2e-2 off)."""
    inits = {"scale": np.ones([4], F32), "bias": np.zeros([4], F32)}
    nodes = [helper.make_node("InstanceNormalization", ["x", "scale", "bias"], ["y"])]
    x = (300.0 + 0.001 * np.random.default_rng(1).standard_normal([2, 4, 16])).astype(F32)
    exact = normalized_f64(x, (2,))
    return (model(nodes, [("x", [2, 4, 16])], [("y", FLOAT, [2, 4, 16])], inits), [x],
            {"expected": [exact], "scales": [1.0]})


def dropout_mask_output():
    """Dropout (inference) whose mask is the only graph output (Y unread): the C and Cranelift
    backends return an all-false mask at every level; onnxruntime and the interpreter all
    true. With Y also an output the mask is right."""
    inits = {"ratio": np.array(0.5, F32), "training": np.array(False)}
    nodes = [helper.make_node("Dropout", ["x", "ratio", "training"], ["y", "mask"])]
    return (model(nodes, [("x", [1, 5, 4])], [("mask", BOOL, [1, 5, 4])], inits),
            [data([1, 5, 4])])


def dropout_mask_cast():
    """Dropout's mask read by a Cast at -O0: the C and Cranelift backends read the mask's
    never-written bytes (255 or 0 after the Cast; the JIT's two runs differed)."""
    inits = {"ratio": np.array(0.5, F32)}
    nodes = [helper.make_node("Dropout", ["x", "ratio"], ["y", "mask"]),
             helper.make_node("Cast", ["mask"], ["m"], to=TensorProto.FLOAT)]
    return (model(nodes, [("x", [1, 5, 8])], [("m", FLOAT, [1, 5, 8])], inits), [data([1, 5, 8])])


def resize_tf_crop_floor_tie():
    """Resize nearest (floor), tf_crop_and_resize, roi columns [0.1, 1.0], 3 -> 4 columns: the
    last column's source coordinate is 0.1 * 2 + 3 * 0.9 * 2 / 3 = 2 in exact arithmetic;
    onnxruntime and the onnx reference compute 1.99999 in f32 and take column 1, kiln takes
    column 2 (a tie decided by the precision of the coordinate arithmetic)."""
    inits = {"roi": np.array([0, 0, 0, 0.1, 1, 1, 0.9, 1.0], F32), "sizes": np.array([1, 2, 6, 4], np.int64)}
    node = helper.make_node("Resize", ["x", "roi", "", "sizes"], ["y"], mode="nearest", nearest_mode="floor",
                            coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=0.5)
    return model([node], [("x", [1, 2, 3, 3])], [("y", FLOAT, [1, 2, 6, 4])], inits), [data([1, 2, 3, 3])]


def resize_tf_crop_cubic_last_index():
    """Resize cubic, tf_crop_and_resize, roi columns [0.2, 1.2], scale 2 on 8 columns: output 12
    samples 0.2 * 7 + 12 * 7 / 15 = 7, the last input column; onnxruntime and the onnx
    reference interpolate there, kiln returns the extrapolation value."""
    inits = {"roi": np.array([0, 0, 0, 0.2, 1, 1, 1, 1.2], F32), "scales": np.array([1, 1, 1, 2], F32)}
    node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="cubic", cubic_coeff_a=-0.5,
                            coordinate_transformation_mode="tf_crop_and_resize")
    x = np.arange(8, dtype=F32).reshape(1, 1, 1, 8)
    return model([node], [("x", [1, 1, 1, 8])], [("y", FLOAT, [1, 1, 1, 16])], inits), [x]


def resize_asymmetric_floor_integer_tie():
    """Resize nearest (floor), asymmetric, scale 0.6 on 9 columns: column 3 samples 3 / 0.6 = 5
    exactly; onnxruntime computes 4.9999998 in f32 and takes column 4, kiln column 5."""
    return resize("nearest", "asymmetric", [1, 5, 9], scales=[1.0, 1.0, 0.6], nearest_mode="floor")


def resize_half_pixel_symmetric_half_tie():
    """Resize nearest (round_prefer_ceil), half_pixel_symmetric, scale 0.6 on 7 columns (4.2 ->
    4): output column 3 samples 5.5 in exact arithmetic; onnxruntime takes column 6 (rounding
    the tie up), kiln column 5 (its coordinate, computed with the f32 scale 0.6000000238, falls
    just under 5.5, outside the 1e-9 it snaps)."""
    return resize("nearest", "half_pixel_symmetric", [2, 4, 1, 7], scales=[1.0, 1.0, 2.0, 0.6],
                  opset=19, nearest_mode="round_prefer_ceil")


def resize_tf_crop_and_resize_axes():
    """Resize linear, tf_crop_and_resize with `axes` [2, 3] and their roi [0.1, 0.1, 0.9, 0.8],
    scales [0.75, 1.5]. (With a scale of 1 on an axis, onnxruntime ignores that axis's roi,
    against the spec and the onnx reference, which kiln follows there.)"""
    inits = {"roi": np.array([0.1, 0.1, 0.9, 0.8], F32), "scales": np.array([0.75, 1.5], F32)}
    node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="linear",
                            coordinate_transformation_mode="tf_crop_and_resize", axes=[2, 3])
    return model([node], [("x", [2, 1, 8, 6])], [("y", FLOAT, [2, 1, 6, 9])], inits), [data([2, 1, 8, 6])]


def resize_nearest_floor_integer_tie():
    """Resize nearest (floor), pytorch_half_pixel, sizes 10 -> 6 columns: column 1 samples
    (1 + 0.5) / 0.6 - 0.5 = 2 exactly; onnxruntime computes 1.9999999 in f32 and takes column 1,
    kiln (and the onnx reference) column 2."""
    inits = {"sizes": np.array([1, 5, 6], np.int64)}
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="nearest", nearest_mode="floor",
                            coordinate_transformation_mode="pytorch_half_pixel")
    return model([node], [("x", [1, 5, 10])], [("y", FLOAT, [1, 5, 6])], inits, opset=13), [data([1, 5, 10])]


def resize_tf_crop_and_resize_fractional():
    """Resize linear, tf_crop_and_resize over the whole input, scale 0.6 on 6 columns (3.6 -> 3):
    onnxruntime (which kiln follows) departs from the onnx reference here."""
    inits = {"roi": np.array([0, 0, 0, 1, 1, 1], F32), "scales": np.array([1.0, 1.0, 0.6], F32)}
    node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="linear",
                            coordinate_transformation_mode="tf_crop_and_resize")
    return model([node], [("x", [1, 7, 6])], [("y", FLOAT, [1, 7, 3])], inits), [data([1, 7, 6])]


def resize_half_pixel_symmetric_fractional():
    """Resize linear, half_pixel_symmetric (opset 19), scales [2, 0.5] on 2 x 7 (3.5 -> 3
    columns): onnxruntime (which kiln follows) departs from the onnx reference by up to 2.2."""
    inits = {"scales": np.array([1.0, 1.0, 2.0, 0.5], F32)}
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear",
                            coordinate_transformation_mode="half_pixel_symmetric")
    return (model([node], [("x", [1, 3, 2, 7])], [("y", FLOAT, [1, 3, 4, 3])], inits, opset=19),
            [data([1, 3, 2, 7])])


def resize_tf_crop_and_resize_antialias():
    """Resize linear, antialias, tf_crop_and_resize with roi [0.2, 0.1]-[0.9, 1.2] and scales
    [0.5, 1.5]: onnxruntime (which kiln follows) departs from the onnx reference by 0.9."""
    inits = {"roi": np.array([0, 0, 0.2, 0.1, 1, 1, 0.9, 1.2], F32), "scales": np.array([1, 1, 0.5, 1.5], F32)}
    node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="linear", antialias=1,
                            coordinate_transformation_mode="tf_crop_and_resize")
    return model([node], [("x", [1, 6, 5, 4])], [("y", FLOAT, [1, 6, 2, 6])], inits), [data([1, 6, 5, 4])]


def resize_tf_crop_and_resize_cubic_exclude_outside():
    """Resize cubic, exclude_outside, tf_crop_and_resize with roi [0.2, 0.1]-[0.9, 1.0], scales
    [1.5, 2], extrapolation 0.5: onnxruntime (which kiln follows) departs from the onnx
    reference by 0.86."""
    inits = {"roi": np.array([0, 0, 0.2, 0.1, 1, 1, 0.9, 1.0], F32), "scales": np.array([1, 1, 1.5, 2], F32)}
    node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="cubic", exclude_outside=1,
                            extrapolation_value=0.5, coordinate_transformation_mode="tf_crop_and_resize")
    return model([node], [("x", [1, 3, 9, 5])], [("y", FLOAT, [1, 3, 13, 10])], inits), [data([1, 3, 9, 5])]


def requantize_f32_tie():
    """Q(DQ(x)) from scale 0.05 to 0.1 (alone, and on one operand of a Concat): lower-qdq made it
    a fixed-point Requantize of the exact ratio 0.5, so odd steps (-21 * 0.5 = -10.5) rounded to
    even, where the f32 quotient (-10.500001) and onnxruntime round away: one step off at -O1."""
    inits = {"s5": np.array(0.05, F32), "s10": np.array(0.1, F32), "z": np.array(0, np.int8)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s5", "z"], ["q5"]),
             helper.make_node("DequantizeLinear", ["q5", "s5", "z"], ["d5"]),
             helper.make_node("QuantizeLinear", ["d5", "s10", "z"], ["q10"]),
             helper.make_node("DequantizeLinear", ["q10", "s10", "z"], ["y"]),
             helper.make_node("QuantizeLinear", ["x2", "s10", "z"], ["p10"]),
             helper.make_node("DequantizeLinear", ["p10", "s10", "z"], ["e10"]),
             helper.make_node("Concat", ["d5", "e10"], ["c"], axis=1),
             helper.make_node("QuantizeLinear", ["c", "s10", "z"], ["qc"]),
             helper.make_node("DequantizeLinear", ["qc", "s10", "z"], ["yc"])]
    x = (np.arange(-64, 64, dtype=F32) * F32(0.05)).reshape(1, 128)
    x2 = data([1, 8], 5)
    outputs = [("y", FLOAT, [1, 128]), ("yc", FLOAT, [1, 136])]
    return model(nodes, [("x", [1, 128]), ("x2", [1, 8])], outputs, inits), [x, x2]


CASES = {f.__name__: f for f in [
    bn_after_relu,
    bn_after_flatten,
    layernorm_sub_read_twice,
    resize_align_corners_fractional,
    resize_pytorch_half_pixel_to_one,
    resize_nearest_half_tie,
    clip_without_bounds_on_infinity,
    layernorm_large_mean,
    instancenorm_large_mean,
    dropout_mask_output,
    dropout_mask_cast,
    resize_tf_crop_floor_tie,
    resize_tf_crop_cubic_last_index,
    resize_nearest_floor_integer_tie,
    resize_asymmetric_floor_integer_tie,
    resize_half_pixel_symmetric_half_tie,
    resize_tf_crop_and_resize_axes,
    resize_tf_crop_and_resize_fractional,
    resize_half_pixel_symmetric_fractional,
    resize_tf_crop_and_resize_antialias,
    resize_tf_crop_and_resize_cubic_exclude_outside,
    requantize_f32_tie,
]}


