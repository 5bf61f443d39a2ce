#!/usr/bin/env python3
"""Seeded generator of small, valid ONNX graphs for kiln's differential test.

Usage (from the repository root, with the project's venv):

    .venv/bin/python tests/differential/gen_graphs.py --seed S --count N --out DIR
    .venv/bin/python tests/differential/gen_graphs.py --regressions --out DIR
    .venv/bin/python tests/differential/gen_graphs.py --show DIR/g0042
    .venv/bin/python tests/differential/gen_graphs.py --shrink DIR/g0042 --backend c --level 2

Every graph `DIR/gNNNN/` holds `model.onnx`, `input_K.npy`, onnxruntime's `output_K.npy` (no
graph optimization, one thread) and `meta.json` (seed, opset, ops, the templates that built it,
and per output the largest magnitude among the values it depends on, for the tolerance).
Graph `i` of seed `S` depends only on `(S, i)`, so `--count 10` is a prefix of `--count 1000`.

A graph is kept only when onnx's checker (with strict shape inference) accepts it, onnxruntime
runs it and agrees with the declared output shapes, and every float value it computes is finite
and moderate (|v| <= 1e4, except in the deliberate "special values" lane, which carries
infinities through ops that are exact on them). A rejected graph is regenerated from the next
attempt's seed; the rejection reasons are counted on stderr.

Values are well conditioned by construction: Log, Sqrt, Reciprocal, Div's divisor and Pow's base
get a positive guard (e.g. `Add(Abs(x), 0.5)`), Exp a bounded input, and discontinuous ops
(Floor, Ceil, Round, comparisons, ArgMax, Cast to integers, quantization) read only *exact*
values: graph inputs and what exact ops (movement, Abs, Neg, Relu, Max/Min, MaxPool, ...)
compute from them, which every engine computes bit for bit.

The graphs are built from templates: single ops of every family kiln imports, and above all the
patterns kiln's optimizer rewrites (BatchNormalization folding, transpose clean-up, MatMul+Add,
Pad folding, LayerNorm and GELU fusion, activation fusion, identity removal, constant folding,
dead code), each emitted exactly and as near misses (an extra reader of an intermediate, an
intermediate that is also a graph output, another op in one slot, non-constant parameters).

`--shrink` reduces a failing graph: it repeatedly bypasses nodes (replacing a node's result by
one of its inputs of the same type, or by a new graph input fed with onnxruntime's value) and
drops outputs, keeping each step while `kiln run` still disagrees with onnxruntime, and writes
the result next to the original as `gNNNN-min/`.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pickle  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, defs, helper, numpy_helper, shape_inference  # noqa: E402

ort.set_default_logger_severity(4)

HERE = Path(__file__).resolve().parent
IR_VERSION = 9
MIN_NODES, MAX_NODES = 3, 43
MAX_ELEMS = 4096
MAX_MAGNITUDE = 1e4
MAX_INPUTS = 4
OPSETS = [(13, 0.15), (17, 0.25), (18, 0.15), (19, 0.15), (20, 0.30)]

F32 = np.float32
ONNX_TYPE = {
    "f32": TensorProto.FLOAT,
    "i64": TensorProto.INT64,
    "i32": TensorProto.INT32,
    "i8": TensorProto.INT8,
    "u8": TensorProto.UINT8,
    "bool": TensorProto.BOOL,
}
FROM_ONNX = {v: k for k, v in ONNX_TYPE.items()}
NP_TYPE = {
    "f32": np.float32,
    "i64": np.int64,
    "i32": np.int32,
    "i8": np.int8,
    "u8": np.uint8,
    "bool": np.bool_,
}
NP_TO = {np.dtype(v): k for k, v in NP_TYPE.items()}


class Reject(Exception):
    """A template (or a whole graph) cannot be built as drawn; the caller draws again."""


class Val:
    """What the generator knows about one value."""

    __slots__ = ("name", "shape", "dtype", "exact", "special", "lo", "hi", "node")

    def __init__(self, name, shape, dtype, exact=False, special=False, lo=None, hi=None, node=None):
        self.name = name
        self.shape = tuple(int(d) for d in shape)
        self.dtype = dtype
        self.exact = exact
        self.special = special
        self.lo = lo
        self.hi = hi
        self.node = node

    @property
    def rank(self):
        return len(self.shape)

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def is_float(self):
        return self.dtype == "f32"


def nelems(shape):
    return int(np.prod(shape, dtype=np.int64))


def bcast(*shapes):
    try:
        return tuple(np.broadcast_shapes(*[tuple(s) for s in shapes]))
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# The builder: nodes, constants, inputs, and per-node shape inference through onnx itself.


class Builder:
    def __init__(self, rng, opset):
        self.rng = rng
        self.opset = opset
        self.nodes = []
        self.inits = []
        self.inputs = []  # names
        self.feeds = {}  # name -> array
        self.vals = {}  # name -> Val
        self.known = {}  # name -> array (compile-time values: constants and shape chains)
        self.pool = []  # names of values later ops may read
        self.counter = 0
        self.templates = []
        self.forced_outputs = []  # names that must be graph outputs (near misses)
        self.dead = []  # results left unread on purpose (dead-code)

    # -- randomness ------------------------------------------------------------------------
    def p(self, prob):
        return self.rng.random() < prob

    def choice(self, items, weights=None):
        if weights is None:
            return items[int(self.rng.integers(len(items)))]
        w = np.asarray(weights, dtype=np.float64)
        return items[int(self.rng.choice(len(items), p=w / w.sum()))]

    def randint(self, lo, hi):
        """Uniform in [lo, hi] (inclusive)."""
        return int(self.rng.integers(lo, hi + 1))

    def uniform(self, lo, hi, shape=()):
        return self.rng.uniform(lo, hi, size=shape).astype(F32)

    # -- transactions ----------------------------------------------------------------------
    def snapshot(self):
        return (
            len(self.nodes),
            len(self.inits),
            list(self.inputs),
            dict(self.feeds),
            dict(self.vals),
            dict(self.known),
            list(self.pool),
            self.counter,
            list(self.forced_outputs),
            list(self.dead),
        )

    def restore(self, s):
        del self.nodes[s[0]:]
        del self.inits[s[1]:]
        self.inputs, self.feeds, self.vals, self.known, self.pool = (
            s[2], s[3], s[4], s[5], s[6])
        self.counter = s[7]
        self.forced_outputs = s[8]
        self.dead = s[9]

    # -- values ----------------------------------------------------------------------------
    def fresh(self, hint):
        self.counter += 1
        return f"{hint}{self.counter}"

    def v(self, name):
        return self.vals[name]

    def new_input(self, shape, special=False):
        if len(self.inputs) >= MAX_INPUTS:
            raise Reject("too many inputs")
        if nelems(shape) > MAX_ELEMS or any(d < 1 for d in shape):
            raise Reject("input too large")
        name = self.fresh("in")
        data = self.uniform(-2.0, 2.0, shape)
        if special:
            flat = data.reshape(-1)
            k = max(1, flat.size // 4)
            idx = self.rng.choice(flat.size, size=k, replace=False)
            flat[idx] = self.rng.choice(np.array([np.inf, -np.inf], dtype=F32), size=k)
        self.inputs.append(name)
        self.feeds[name] = data
        self.vals[name] = Val(name, shape, "f32", exact=True, special=special, lo=-2.0 if not special else None, hi=2.0 if not special else None)
        if not special:
            self.pool.append(name)
        return name

    def const(self, arr, hint="c", node=None):
        """A constant: an initializer, or (sometimes, or when `node` is True) a Constant node."""
        arr = np.asarray(arr)
        dtype = NP_TO[arr.dtype]
        name = self.fresh(hint)
        if node is None:
            node = self.p(0.1) and len(self.nodes) < MAX_NODES - 8
        if node:
            self.nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name)))
        else:
            self.inits.append(numpy_helper.from_array(arr, name))
        lo = float(arr.min()) if arr.size and dtype == "f32" else None
        hi = float(arr.max()) if arr.size and dtype == "f32" else None
        # Constants are the same bits in every engine: exact.
        self.vals[name] = Val(name, arr.shape, dtype, exact=True, lo=lo, hi=hi)
        self.known[name] = arr
        return name

    def scalar_like(self, value, max_rank=4):
        """A one-element constant: a scalar, or sometimes of shape [1], [1, 1], ... (which
        broadcasting may use to raise the rank of the result)."""
        if self.p(0.8):
            return self.scalar(value)
        return self.scalar(value, shape=[1] * self.randint(1, max_rank))

    def ints(self, values, hint="i"):
        return self.const(np.asarray(values, dtype=np.int64), hint)

    def scalar(self, value, hint="s", shape=()):
        return self.const(np.full(shape, value, dtype=F32), hint)

    def weight(self, shape, scale=1.0, lo=-1.0, hi=1.0):
        return self.const((self.uniform(lo, hi, shape) * F32(scale)).astype(F32), "w")

    # -- nodes -----------------------------------------------------------------------------
    def node(self, op, ins, attrs=None, n_out=1, exact=False, lo=None, hi=None, pool=True, special=False):
        """Adds one node; returns its output name (or the list of names when n_out > 1)."""
        attrs = {k: v for k, v in (attrs or {}).items() if v is not None}
        outs = [self.fresh("v") for _ in range(n_out)]
        node = helper.make_node(op, list(ins), outs, name=self.fresh(f"{op}_"), **attrs)
        types = {}
        data = {}
        for i in ins:
            if i == "":
                continue
            v = self.vals[i]
            types[i] = helper.make_tensor_type_proto(ONNX_TYPE[v.dtype], list(v.shape))
            if i in self.known:
                data[i] = numpy_helper.from_array(self.known[i], i)
        try:
            schema = defs.get_schema(op, self.opset)
            inferred = shape_inference.infer_node_outputs(
                schema, node, types, data,
                opset_imports=[helper.make_opsetid("", self.opset)])
        except Exception as e:  # noqa: BLE001 - onnx raises several types
            raise Reject(f"inference: {op}: {e}") from None
        new_vals = []
        for o in outs:
            t = inferred.get(o)
            if t is None or not t.tensor_type.HasField("shape"):
                raise Reject(f"no shape for {op}")
            dims = []
            for d in t.tensor_type.shape.dim:
                if not d.HasField("dim_value") or d.dim_value < 1:
                    raise Reject(f"{op}: unknown or empty dimension")
                dims.append(d.dim_value)
            if nelems(dims) > MAX_ELEMS:
                raise Reject(f"{op}: too large")
            dtype = FROM_ONNX.get(t.tensor_type.elem_type)
            if dtype is None:
                raise Reject(f"{op}: unsupported type")
            new_vals.append(Val(o, dims, dtype, exact=exact, special=special, lo=lo, hi=hi, node=op))
        if len(self.nodes) >= MAX_NODES:
            raise Reject("node budget")
        self.nodes.append(node)
        for val in new_vals:
            self.vals[val.name] = val
            if pool and val.dtype == "f32":
                self.pool.append(val.name)
        # Compile-time values of small integer chains (Shape -> Gather -> Concat ...).
        if op == "Shape":
            shp = np.array(self.vals[ins[0]].shape, dtype=np.int64)
            start = attrs.get("start", 0)
            end = attrs.get("end", len(shp))
            self.known[outs[0]] = shp[start:end]
        elif ins and all(i in self.known for i in ins if i) and all(
                self.vals[o].dtype == "i64" for o in outs) and op != "Constant":
            from onnx.reference import ReferenceEvaluator
            g = helper.make_graph(
                [node], "k", [],
                [helper.make_tensor_value_info(o, TensorProto.INT64, None) for o in outs],
                initializer=[numpy_helper.from_array(self.known[i], i) for i in ins if i])
            m = helper.make_model(g, opset_imports=[helper.make_opsetid("", self.opset)])
            res = ReferenceEvaluator(m).run(None, {})
            for o, r in zip(outs, res):
                self.known[o] = np.asarray(r)
        return outs[0] if n_out == 1 else outs

    # -- picking values --------------------------------------------------------------------
    def candidates(self, pred):
        return [n for n in self.pool if pred(self.vals[n])]

    def pick(self, pred=lambda v: True, make=None):
        """A pool value satisfying `pred`, recent ones likelier; else `make()`."""
        c = self.candidates(lambda v: v.is_float and not v.special and v.rank >= 1 and pred(v))
        if not c:
            if make is None:
                raise Reject("no candidate")
            return make()
        w = np.arange(1, len(c) + 1, dtype=np.float64) ** 2
        return self.choice(c, w)

    def nodes_left(self):
        return MAX_NODES - len(self.nodes)


# ---------------------------------------------------------------------------------------------
# Templates. Each adds a few nodes reading values of the pool and returns nothing; it raises
# Reject when its random choices do not fit, and the builder rolls back.

UNARY = [
    # (op, attrs, exact on exact input, bounds (lo, hi) or None)
    ("Abs", {}, True, (0.0, None)),
    ("Neg", {}, True, None),
    ("Relu", {}, True, (0.0, None)),
    ("Sigmoid", {}, False, (0.0, 1.0)),
    ("Tanh", {}, False, (-1.0, 1.0)),
    ("Softplus", {}, False, (0.0, None)),
    ("Erf", {}, False, (-1.0, 1.0)),
    ("Elu", {"alpha": 0.7}, False, (-0.7, None)),
    ("Elu", {}, False, (-1.0, None)),
    ("Selu", {}, False, (-1.76, None)),
    ("Selu", {"alpha": 1.5, "gamma": 0.9}, False, (-1.35, None)),
    ("LeakyRelu", {}, False, None),
    ("LeakyRelu", {"alpha": 0.2}, False, None),
    ("HardSigmoid", {}, False, (0.0, 1.0)),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, False, (0.0, 1.0)),
    ("HardSwish", {}, False, (-0.375, None)),
    ("Identity", {}, True, "same"),
    ("Dropout", {}, True, "same"),
    ("Floor", {}, True, None),
    ("Ceil", {}, True, None),
    ("Round", {}, True, None),
]
DISCONTINUOUS = {"Floor", "Ceil", "Round"}
ACTIVATIONS = ["Relu", "Clip6", "Clip", "LeakyRelu", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh"]


class Gen(Builder):
    # -- helpers shared by templates -------------------------------------------------------
    def unary(self, op, x, attrs=None, exact=None, bounds=None, pool=True):
        v = self.v(x)
        if bounds == "same":
            lo, hi = v.lo, v.hi
        elif bounds:
            lo, hi = bounds
        else:
            lo = hi = None
        ex = v.exact if exact is None else (exact and v.exact)
        return self.node(op, [x], attrs, exact=ex, lo=lo, hi=hi, pool=pool)

    def activation(self, x, kind=None, pool=True):
        kind = kind or self.choice(ACTIVATIONS)
        v = self.v(x)
        if kind == "Relu":
            return self.node("Relu", [x], exact=v.exact, lo=0.0, pool=pool)
        if kind == "Clip6":
            return self.node("Clip", [x, self.scalar(0.0), self.scalar(6.0)], exact=v.exact, lo=0.0, hi=6.0, pool=pool)
        if kind == "Clip":
            lo, hi = sorted(self.uniform(-1.5, 1.5, 2).tolist())
            which = self.choice(["both", "min", "max"])
            ins = [x, self.scalar(lo) if which != "max" else "", self.scalar(hi) if which != "min" else ""]
            while ins and ins[-1] == "":
                ins.pop()
            return self.node("Clip", ins, exact=v.exact, lo=lo if which != "max" else None, hi=hi if which != "min" else None, pool=pool)
        if kind == "LeakyRelu":
            return self.node("LeakyRelu", [x], {"alpha": self.choice([0.01, 0.1, 0.3])}, pool=pool)
        if kind == "HardSigmoid":
            return self.node("HardSigmoid", [x], {"alpha": 0.25, "beta": 0.45}, lo=0.0, hi=1.0, pool=pool)
        if kind == "Sigmoid":
            return self.node("Sigmoid", [x], lo=0.0, hi=1.0, pool=pool)
        if kind == "Tanh":
            return self.node("Tanh", [x], lo=-1.0, hi=1.0, pool=pool)
        return self.node(kind, [x], pool=pool)

    def positive(self, x, margin=0.3):
        """`x` itself when it is known to be >= margin, else a guarded positive version."""
        v = self.v(x)
        if v.lo is not None and v.lo >= margin and v.hi is not None and v.hi < 50:
            return x
        kind = self.choice(["abs", "softplus", "sigmoid", "exp_tanh"])
        c = float(self.choice([0.3, 0.5, 1.0]))
        if kind == "abs":
            a = self.node("Abs", [x], lo=0.0, pool=False)
            hi = None if v.hi is None or v.lo is None else max(abs(v.lo), abs(v.hi)) + c
            return self.node("Add", [a, self.scalar(c)], lo=c, hi=hi, pool=self.p(0.3))
        if kind == "softplus":
            a = self.node("Softplus", [x], lo=0.0, pool=False)
            return self.node("Add", [a, self.scalar(c)], lo=c, pool=self.p(0.3))
        if kind == "sigmoid":
            a = self.node("Sigmoid", [x], lo=0.0, hi=1.0, pool=False)
            return self.node("Add", [a, self.scalar(c)], lo=c, hi=1.0 + c, pool=self.p(0.3))
        t = self.node("Tanh", [x], lo=-1.0, hi=1.0, pool=False)
        return self.node("Exp", [t], lo=0.36, hi=2.72, pool=self.p(0.3))

    def bounded(self, x, limit=4.0):
        v = self.v(x)
        if v.lo is not None and v.hi is not None and -limit <= v.lo and v.hi <= limit:
            return x
        if self.p(0.5):
            return self.node("Tanh", [x], lo=-1.0, hi=1.0, pool=False)
        return self.node("Clip", [x, self.scalar(-limit), self.scalar(limit)], lo=-limit, hi=limit, pool=False, exact=v.exact)

    def bshape_for(self, shape):
        """A shape that broadcasts onto `shape` (unidirectionally)."""
        r = self.choice(["same", "ones", "drop", "scalar", "one"], [3, 3, 2, 1, 1])
        shape = list(shape)
        if r == "scalar":
            return []
        if r == "one":
            return [1]
        if r == "same":
            return shape
        out = [d if self.p(0.5) else 1 for d in shape]
        if r == "drop" and out:
            out = out[self.randint(0, len(out) - 1):]
        return out

    def operand(self, x, positive=False, exact_only=False, allow_self=True):
        """A second operand for a broadcasting binary op on `x`."""
        v = self.v(x)
        kind = self.choice(["const", "value", "self", "input"], [5, 4, 1 if allow_self else 0, 1])
        if kind == "value":
            cands = self.candidates(lambda u: u.is_float and not u.special and u.name != x
                                    and (u.exact or not exact_only)
                                    and bcast(u.shape, v.shape) is not None
                                    and nelems(bcast(u.shape, v.shape)) <= MAX_ELEMS
                                    and (not positive or (u.lo is not None and u.lo >= 0.3)))
            if cands:
                return self.choice(cands)
            if positive and not exact_only:
                cands = self.candidates(lambda u: u.is_float and not u.special and u.name != x
                                        and bcast(u.shape, v.shape) is not None
                                        and nelems(bcast(u.shape, v.shape)) <= MAX_ELEMS)
                if cands:
                    return self.positive(self.choice(cands))
            kind = "const"
        if kind == "self" and not positive:
            return x
        if kind == "input" and len(self.inputs) < MAX_INPUTS and not positive:
            return self.new_input(self.bshape_for(v.shape) or [1])
        shape = self.bshape_for(v.shape)
        if positive:
            return self.const((self.uniform(0.5, 2.0, shape)), "c")
        if exact_only:
            return self.const(np.round(self.uniform(-2, 2, shape) * 4) / F32(4), "c")
        return self.const(self.uniform(-1.5, 1.5, shape), "c")

    def image(self, rank=4, min_spatial=1):
        """An [N, C, spatial..] value, or a new input of that shape."""
        def make():
            shape = [self.choice([1, 1, 1, 2]), self.randint(1, 6)] + [self.randint(max(min_spatial, 2), 9) for _ in range(rank - 2)]
            return self.new_input(shape)
        return self.pick(lambda v: v.rank == rank and all(d >= min_spatial for d in v.shape[2:]), make)

    def matrix(self):
        return self.pick(lambda v: v.rank == 2, lambda: self.new_input([self.randint(1, 8), self.randint(1, 12)]))

    def conv_window(self, spatial, rank_sp, transpose=False):
        """Kernel, strides, dilations, pads that give outputs of at least 1."""
        for _ in range(20):
            k = [self.choice([1, 2, 3, 3, 3]) if self.p(0.8) else self.randint(1, 5) for _ in range(rank_sp)]
            s = [self.choice([1, 1, 1, 2, 2, 3]) for _ in range(rank_sp)]
            d = [self.choice([1, 1, 1, 1, 2]) for _ in range(rank_sp)]
            keff = [(kk - 1) * dd + 1 for kk, dd in zip(k, d)]
            pads = [self.randint(0, max(0, ke - 1)) if self.p(0.6) else 0 for ke in keff for _ in range(1)]
            pads = pads + [self.randint(0, max(0, ke - 1)) if self.p(0.6) else 0 for ke in keff]
            if transpose:
                return k, s, d, pads
            ok = all(spatial[i] + pads[i] + pads[rank_sp + i] >= keff[i] for i in range(rank_sp))
            if ok:
                return k, s, d, pads
        raise Reject("no window fits")

    # -- elementwise templates -------------------------------------------------------------
    def t_unary(self):
        op, attrs, ex, bounds = self.choice(UNARY)
        if op in DISCONTINUOUS:
            x = self.pick(lambda v: v.exact)
        else:
            x = self.pick()
        if op == "Dropout" and self.opset >= 12 and self.p(0.5):
            ins = [x, self.scalar(self.choice([0.0, 0.5]))]
            if self.p(0.5):
                ins.append(self.const(np.array(False)))
            if self.p(0.4):
                y, mask = self.node("Dropout", ins, n_out=2, exact=self.v(x).exact, lo=self.v(x).lo, hi=self.v(x).hi)
                self.mask_use(mask)
                return
            self.node("Dropout", ins, exact=self.v(x).exact, lo=self.v(x).lo, hi=self.v(x).hi)
            return
        self.unary(op, x, attrs, exact=ex, bounds=bounds)

    def mask_use(self, mask):
        k = self.choice(["cast", "where", "out", "not"])
        if k == "cast":
            self.node("Cast", [mask], {"to": TensorProto.FLOAT}, exact=True, lo=0.0, hi=1.0)
        elif k == "where":
            m = self.v(mask)
            a = self.pick(lambda v: bcast(v.shape, m.shape) is not None)
            self.node("Where", [mask, a, self.scalar(-1.0)], exact=self.v(a).exact)
        elif k == "not":
            self.node("Not", [mask])
            self.forced_outputs.append(self.nodes[-1].output[0])
        else:
            self.forced_outputs.append(mask)

    def t_guarded_unary(self):
        op = self.choice(["Sqrt", "Log", "Reciprocal", "Exp", "Exp", "Softplus", "Pow"])
        x = self.pick()
        if op == "Exp":
            b = self.bounded(x, 3.0)
            bv = self.v(b)
            self.node("Exp", [b], lo=math.exp(bv.lo) if bv.lo is not None else 0.0, hi=math.exp(bv.hi) if bv.hi is not None else None)
            return
        if op == "Softplus":
            self.node("Softplus", [x], lo=0.0)
            return
        p = self.positive(x, 0.3)
        pv = self.v(p)
        if op == "Sqrt":
            self.node("Sqrt", [p], lo=math.sqrt(pv.lo), hi=math.sqrt(pv.hi) if pv.hi else None)
        elif op == "Log":
            self.node("Log", [p], lo=math.log(pv.lo), hi=math.log(pv.hi) if pv.hi else None)
        elif op == "Reciprocal":
            self.node("Reciprocal", [p], lo=0.0, hi=1.0 / pv.lo)
        else:
            e = self.choice([0.5, 1.5, -1.0, -0.5, 2.0, 3.0, 2.5])
            if self.p(0.2):
                ex = self.const(np.full(self.bshape_for(pv.shape), e, F32))
            elif self.p(0.15):
                ex = self.const(np.array(int(round(e)) if e == round(e) else 2, dtype=np.int64))
            else:
                ex = self.scalar(e)
            self.node("Pow", [p, ex], lo=0.0)

    def t_binary(self):
        op = self.choice(["Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "PRelu", "Pow2"],
                         [4, 3, 4, 2, 2, 2, 1, 1, 1, 1])
        x = self.pick()
        v = self.v(x)
        if op == "Div":
            y = self.operand(x, positive=True)
            a, b = (x, y)
            self.node("Div", [a, b])
            return
        if op == "Pow2":
            x = self.bounded(x, 4.0)
            self.node("Pow", [x, self.scalar(self.choice([2.0, 3.0]))])
            return
        if op == "PRelu":
            shape = self.bshape_for(v.shape)
            if self.p(0.5) and v.rank >= 2:
                shape = [v.shape[1]] + [1] * (v.rank - 2)
            self.node("PRelu", [x, self.const(self.uniform(-0.5, 0.5, shape))])
            return
        if op in ("Sum", "Mean", "Max", "Min") and self.p(0.4):
            ins = [x] + [self.operand(x) for _ in range(self.randint(1, 3))]
            self.node(op, ins, exact=op in ("Max", "Min") and all(self.v(i).exact for i in ins))
            return
        y = self.operand(x)
        ins = [x, y] if self.p(0.7) else [y, x]
        exact = op in ("Max", "Min") and all(self.v(i).exact for i in ins)
        lo = None
        if op in ("Add", "Sum") and all(self.v(i).lo is not None for i in ins):
            lo = sum(self.v(i).lo for i in ins)
        self.node(op, ins, exact=exact, lo=lo)

    def t_compare(self):
        """Comparisons and logic on exact values, Where, Not/And/Or, Cast of bools."""
        x = self.pick(lambda v: v.exact)
        v = self.v(x)
        op = self.choice(["Less", "Greater", "Equal"])
        if op == "Equal":
            r = self.node("Round", [x], exact=True)
            y = self.const(np.round(self.uniform(-2, 2, self.bshape_for(v.shape))))
            c = self.node("Equal", [r, y] if self.p(0.5) else [y, r])
        else:
            y = self.operand(x, exact_only=True)
            c = self.node(op, [x, y])
        cv = self.v(c)
        if self.p(0.3):
            other = self.candidates(lambda u: u.dtype == "bool" and u.name != c and bcast(u.shape, cv.shape) is not None)
            if other:
                c = self.node(self.choice(["And", "Or"]), [c, self.choice(other)])
            else:
                c = self.node("Not", [c])
            cv = self.v(c)
        use = self.choice(["where", "where", "cast", "out"])
        if use == "where":
            a = self.pick(lambda u: bcast(u.shape, cv.shape) is not None and nelems(bcast(u.shape, cv.shape)) <= MAX_ELEMS)
            b = self.operand(a) if self.p(0.6) else self.pick(lambda u: bcast(u.shape, cv.shape, self.v(a).shape) is not None)
            ins = [c, a, b] if self.p(0.5) else [c, b, a]
            self.node("Where", ins, exact=self.v(a).exact and self.v(b).exact)
        elif use == "cast":
            self.node("Cast", [c], {"to": TensorProto.FLOAT}, exact=True, lo=0.0, hi=1.0)
        else:
            self.forced_outputs.append(c)

    def t_cast(self):
        x = self.pick(lambda v: v.exact)
        v = self.v(x)
        kind = self.choice(["i64", "i32", "u8", "i8", "f32", "bool"])
        if kind == "u8" or kind == "i8":
            x = self.node("Clip", [x, self.scalar(0.0 if kind == "u8" else -2.0), self.scalar(2.0)], exact=True, lo=0.0)
        if kind == "f32":
            self.node("Cast", [x], {"to": TensorProto.FLOAT}, exact=True, lo=v.lo, hi=v.hi)
            return
        i = self.node("Cast", [x], {"to": ONNX_TYPE[kind]}, exact=True)
        if self.p(0.15):
            self.forced_outputs.append(i)
            return
        if kind == "i64" and self.p(0.4):
            i = self.node(self.choice(["Add", "Mul", "Sub"]), [i, self.const(np.array(self.randint(-2, 3), dtype=np.int64))], exact=True)
        self.node("Cast", [i], {"to": TensorProto.FLOAT}, exact=True)

    def t_special(self):
        """The special-values lane: a graph input holding infinities through ops exact on them."""
        shape = self.choice([[2, 3], [1, 2, 3, 3], [5], [2, 2, 4]])
        x = self.new_input(shape, special=True)
        for _ in range(self.randint(0, 2)):
            op = self.choice(["Relu", "Neg", "Abs", "Transpose", "Max", "MaxPool", "Identity"])
            xv = self.v(x)
            if op == "Transpose":
                x = self.node("Transpose", [x], {"perm": list(self.rng.permutation(xv.rank))}, exact=True, special=True, pool=False)
            elif op == "Max":
                x = self.node(self.choice(["Max", "Min"]), [x, self.scalar(self.uniform(-1, 1).item())], exact=True, special=True, pool=False)
            elif op == "MaxPool":
                if xv.rank != 4:
                    continue
                x = self.node("MaxPool", [x], {"kernel_shape": [2, 2], "pads": [0, 0, 1, 1]}, exact=True, special=True, pool=False)
            else:
                x = self.node(op, [x], exact=True, special=True, pool=False)
        kind = self.choice(["clip_none", "clip_one", "clip_both"])
        if kind == "clip_none":
            y = self.node("Clip", [x], exact=True, special=True, pool=False)
            self.forced_outputs.append(y)
        elif kind == "clip_one":
            ins = [x, self.scalar(-1.0)] if self.p(0.5) else [x, "", self.scalar(1.0)]
            y = self.node("Clip", ins, exact=True, special=True, pool=False)
            self.forced_outputs.append(y)
        else:
            self.node("Clip", [x, self.scalar(-1.5), self.scalar(1.5)], exact=True, lo=-1.5, hi=1.5)

    # -- nn templates -------------------------------------------------------------------------
    def conv(self, x, out_ch=None, group=None, window=None, bias=None, weights_const=True, auto_pad=None):
        v = self.v(x)
        rank_sp = v.rank - 2
        cin = v.shape[1]
        if group is None:
            g = self.choice(["one", "dw", "grouped"], [6, 2, 1])
            if g == "dw":
                group = cin
            elif g == "grouped":
                divs = [d for d in range(2, cin + 1) if cin % d == 0]
                group = self.choice(divs) if divs else 1
            else:
                group = 1
        if out_ch is None:
            out_ch = group * self.randint(1, max(1, 8 // group)) if group > 1 else self.randint(1, 8)
        if out_ch % group:
            raise Reject("group")
        k, s, d, pads = window or self.conv_window(v.shape[2:], rank_sp)
        wshape = [out_ch, cin // group] + k
        fan_in = cin // group * nelems(k)
        if weights_const:
            w = self.weight(wshape, scale=1.5 / math.sqrt(fan_in))
        else:
            w = self.new_input(wshape)
        ins = [x, w]
        if bias if bias is not None else self.p(0.7):
            ins.append(self.weight([out_ch], 0.5))
        attrs = {"kernel_shape": k if self.p(0.7) else None, "group": group if group > 1 or self.p(0.2) else None}
        if auto_pad is None and self.p(0.15):
            auto_pad = self.choice(["SAME_UPPER", "SAME_LOWER", "VALID"])
        if auto_pad:
            attrs["auto_pad"] = auto_pad
            if auto_pad != "VALID":
                d = [1] * rank_sp  # onnxruntime refuses dilations with SAME padding
            if auto_pad == "VALID" and any(v.shape[2 + i] < (k[i] - 1) * d[i] + 1 for i in range(rank_sp)):
                raise Reject("valid")
        else:
            attrs["pads"] = pads if any(pads) or self.p(0.3) else None
        attrs["strides"] = s if any(x != 1 for x in s) or self.p(0.3) else None
        attrs["dilations"] = d if any(x != 1 for x in d) or self.p(0.3) else None
        return self.node("Conv", ins, attrs)

    def t_conv(self):
        rank = self.choice([4, 4, 4, 3, 5], None)
        x = self.image(rank)
        y = self.conv(x, weights_const=self.p(0.9))
        if self.p(0.3):
            self.activation(y)

    def t_conv_transpose(self):
        rank = self.choice([4, 4, 3])
        x = self.image(rank)
        v = self.v(x)
        rank_sp = rank - 2
        cin = v.shape[1]
        group = self.choice([1, 1, 1, cin]) if cin > 1 else 1
        if group == 1 and cin % 2 == 0 and self.p(0.2):
            group = 2
        opg = self.randint(1, 4)
        k, s, d, pads = self.conv_window(v.shape[2:], rank_sp, transpose=True)
        outp = [self.randint(0, max(0, max(ss, dd) - 1)) if self.p(0.3) else 0 for ss, dd in zip(s, d)]
        outp = [min(o, ss - 1) for o, ss in zip(outp, s)]
        w = self.weight([cin, opg] + k, 1.5 / math.sqrt(cin // group * nelems(k) / max(1, nelems(s))))
        ins = [x, w]
        if self.p(0.6):
            ins.append(self.weight([opg * group], 0.5))
        attrs = {"kernel_shape": k if self.p(0.6) else None, "group": group if group > 1 else None,
                 "strides": s, "dilations": d if any(x != 1 for x in d) else None}
        mode = self.choice(["pads", "pads", "output_shape", "same"])
        full = [s[i] * (v.shape[2 + i] - 1) + outp[i] + (k[i] - 1) * d[i] + 1 for i in range(rank_sp)]
        if mode == "pads":
            if any(full[i] - pads[i] - pads[rank_sp + i] < 1 for i in range(rank_sp)):
                raise Reject("convT pads")
            attrs["pads"] = pads
            attrs["output_padding"] = outp if any(outp) else None
        elif mode == "output_shape":
            attrs["output_shape"] = [max(1, f - self.randint(0, 2)) for f in full]
        else:
            attrs["auto_pad"] = self.choice(["SAME_UPPER", "SAME_LOWER"])
        y = self.node("ConvTranspose", ins, attrs)
        if self.p(0.25):
            self.activation(y)

    def t_matmul(self):
        kind = self.choice(["2d", "batched_const", "batched_vals", "bcast", "vec", "self"], [4, 2, 2, 1, 1, 1])
        if kind == "2d":
            x = self.matrix()
            k = self.v(x).shape[1]
            n = self.randint(1, 10)
            w = self.weight([k, n], 1.5 / math.sqrt(k)) if self.p(0.8) else self.new_input([k, n])
            y = self.node("MatMul", [x, w])
        elif kind == "batched_const":
            x = self.pick(lambda v: v.rank in (3, 4), lambda: self.new_input([self.randint(1, 3), self.randint(1, 6), self.randint(1, 8)]))
            k = self.v(x).shape[-1]
            w = self.weight([k, self.randint(1, 8)], 1.5 / math.sqrt(k))
            y = self.node("MatMul", [x, w] if self.p(0.85) else [self.weight([self.randint(1, 5), self.v(x).shape[-2]], 1.0), x])
        elif kind == "batched_vals":
            x = self.pick(lambda v: v.rank == 3, lambda: self.new_input([self.randint(1, 3), self.randint(1, 6), self.randint(1, 8)]))
            xv = self.v(x)
            t = self.node("Transpose", [x], {"perm": [0, 2, 1]}, exact=xv.exact)
            y = self.node("MatMul", [x, t] if self.p(0.5) else [t, x])
        elif kind == "bcast":
            b, m, k = self.randint(2, 3), self.randint(1, 5), self.randint(1, 6)
            a = self.new_input([1, m, k]) if self.p(0.5) else self.new_input([b, m, k])
            bb = self.weight([b, k, self.randint(1, 5)], 1.0) if self.v(a).shape[0] == 1 else self.weight([1, k, self.randint(1, 5)], 1.0)
            y = self.node("MatMul", [a, bb])
        elif kind == "vec":
            x = self.pick(lambda v: v.rank in (1, 2), lambda: self.new_input([self.randint(1, 8)]))
            xv = self.v(x)
            if xv.rank == 1:
                y = self.node("MatMul", [x, self.weight([xv.shape[0], self.randint(1, 6)], 0.7)])
            else:
                y = self.node("MatMul", [x, self.weight([xv.shape[1]], 0.7)])
        else:
            x = self.matrix()
            t = self.node("Transpose", [x], exact=self.v(x).exact)
            y = self.node("MatMul", [x, t])
        if self.p(0.2):
            self.activation(y)

    def t_gemm(self):
        x = self.matrix()
        xv = self.v(x)
        trans_a = self.p(0.3)
        m, k = (xv.shape[1], xv.shape[0]) if trans_a else xv.shape
        n = self.randint(1, 10)
        trans_b = self.p(0.4)
        b = self.weight([n, k] if trans_b else [k, n], 1.5 / math.sqrt(k)) if self.p(0.85) else self.new_input([n, k] if trans_b else [k, n])
        ins = [x, b]
        if self.p(0.75):
            cshape = self.choice([[], [1], [n], [1, n], [m, 1], [m, n]])
            ins.append(self.weight(cshape, 0.5) if self.p(0.85) else self.pick(lambda u: list(u.shape) == cshape, lambda: self.new_input(cshape or [1])))
            if self.v(ins[-1]).shape not in [tuple(cshape)] and bcast(self.v(ins[-1]).shape, (m, n)) != (m, n):
                raise Reject("gemm c")
        attrs = {"transA": 1 if trans_a else None, "transB": 1 if trans_b else None,
                 "alpha": self.choice([None, 0.5, -1.25, 2.0]), "beta": self.choice([None, 0.5, -1.0, 1.5])}
        y = self.node("Gemm", ins, attrs)
        if self.p(0.3):
            self.activation(y)

    def t_pool(self):
        kind = self.choice(["MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"], [4, 4, 1, 1])
        rank = self.choice([4, 4, 3])
        x = self.image(rank)
        v = self.v(x)
        if kind.startswith("Global"):
            self.node(kind, [x], exact=v.exact and kind == "GlobalMaxPool", lo=v.lo if kind == "GlobalMaxPool" else None)
            return
        self.pool_node(kind, x)

    def pool_node(self, kind, x, pads_allowed=True, **force):
        v = self.v(x)
        rank_sp = v.rank - 2
        for _ in range(10):
            k = [self.choice([1, 2, 2, 3, 3]) for _ in range(rank_sp)]
            s = [self.choice([1, 1, 2, 2, 3]) for _ in range(rank_sp)]
            d = [self.choice([1, 1, 1, 2]) for _ in range(rank_sp)] if (kind == "MaxPool" or self.opset >= 19) and self.p(0.3) else [1] * rank_sp
            keff = [(kk - 1) * dd + 1 for kk, dd in zip(k, d)]
            pads = [self.randint(0, kk - 1) if pads_allowed and self.p(0.5) else 0 for kk in k for _ in (0, 1)]
            pads = pads[0::2] + pads[1::2]
            if all(v.shape[2 + i] + pads[i] + pads[rank_sp + i] >= keff[i] for i in range(rank_sp)):
                break
        else:
            raise Reject("pool window")
        attrs = {"kernel_shape": k, "strides": s if any(x != 1 for x in s) or self.p(0.3) else None,
                 "pads": pads if any(pads) else None,
                 "dilations": d if any(x != 1 for x in d) else None,
                 "ceil_mode": 1 if self.p(0.25) else None}
        if kind == "AveragePool":
            attrs["count_include_pad"] = 1 if self.p(0.4) else None
        # onnxruntime computes negative pads for SAME when a stride exceeds the kernel.
        if self.p(0.1) and "pads" not in force and all(ss <= kk for ss, kk in zip(s, k)):
            attrs["pads"] = None
            attrs["auto_pad"] = self.choice(["SAME_UPPER", "SAME_LOWER", "VALID"])
            if attrs["auto_pad"] == "VALID" and any(v.shape[2 + i] < keff[i] for i in range(rank_sp)):
                raise Reject("pool window larger than the input")
        attrs.update(force)
        if kind == "MaxPool" and self.p(0.15) and "indices" not in force:
            y, idx = self.node("MaxPool", [x], attrs, n_out=2, exact=v.exact, lo=v.lo, hi=v.hi)
            if self.p(0.6):
                self.forced_outputs.append(idx)
            else:
                self.node("Cast", [idx], {"to": TensorProto.FLOAT}, exact=True, lo=0.0)
            return y
        attrs.pop("indices", None)
        if kind == "MaxPool":
            return self.node("MaxPool", [x], attrs, exact=v.exact, lo=v.lo, hi=v.hi)
        return self.node("AveragePool", [x], attrs)

    def bn(self, x, eps=None):
        v = self.v(x)
        c = v.shape[1]
        scale = self.uniform(0.5, 1.5, [c]) * np.where(self.rng.random(c) < 0.2, -1, 1).astype(F32)
        ins = [x, self.const(scale, "bn_scale"), self.const(self.uniform(-1, 1, [c]), "bn_b"),
               self.const(self.uniform(-1, 1, [c]), "bn_mean"), self.const(self.uniform(0.2, 2.0, [c]), "bn_var")]
        return self.node("BatchNormalization", ins, {"epsilon": eps if eps is not None else self.choice([None, 1e-3, 1e-2])})

    def offset(self, x):
        """Sometimes `x * 0.01 + 30` (or + 100): a large mean and a small spread, which a
        normalization must compute in two passes (or wider) to keep accurate. The decomposed
        patterns never get this: onnxruntime's own float result would be noise there."""
        if not self.p(0.15):
            return x
        small = self.node("Mul", [x, self.scalar(0.01)], pool=False)
        return self.node("Add", [small, self.scalar(self.choice([30.0, 100.0]))], pool=False)

    def t_norm(self):
        kind = self.choice(["bn", "in", "ln", "softmax", "logsoftmax"], [2, 2, 2 if self.opset >= 17 else 0, 2, 1])
        if kind == "bn":
            x = self.pick(lambda v: v.rank >= 2, lambda: self.image(4))
            self.bn(x)
        elif kind == "in":
            x = self.pick(lambda v: v.rank >= 3, lambda: self.image(self.choice([3, 4])))
            c = self.v(x).shape[1]
            x = self.offset(x)
            self.node("InstanceNormalization", [x, self.const(self.uniform(0.5, 1.5, [c])), self.const(self.uniform(-1, 1, [c]))],
                      {"epsilon": self.choice([None, 1e-3])})
        elif kind == "ln":
            x = self.pick(lambda v: v.rank >= 1)
            v = self.v(x)
            axis = self.randint(-v.rank, v.rank - 1)
            norm = v.shape[axis % v.rank:]
            ins = [x, self.const(self.uniform(0.5, 1.5, norm))]
            if self.p(0.7):
                ins.append(self.const(self.uniform(-1, 1, norm)))
            ins[0] = self.offset(x)
            n_out = self.choice([1, 1, 1, 2, 3])
            if n_out == 3 and x not in self.inputs:
                # InvStdDev of a nearly constant row is 1 / sqrt(eps + rounding noise), which
                # onnxruntime's single-pass variance gets 3e-4 wrong: test it on inputs only.
                n_out = 2
            outs = self.node("LayerNormalization", ins, {"axis": axis, "epsilon": self.choice([None, 1e-3])}, n_out=n_out)
            if n_out > 1:
                self.forced_outputs.append(outs[self.randint(1, n_out - 1)])
        else:
            x = self.pick(lambda v: v.rank >= 1)
            v = self.v(x)
            axis = self.randint(-v.rank, v.rank - 1) if self.p(0.8) else None
            self.node("Softmax" if kind == "softmax" else "LogSoftmax", [x], {"axis": axis},
                      lo=0.0 if kind == "softmax" else None, hi=1.0 if kind == "softmax" else None)

    def reduce(self, op, x, axes, keepdims):
        v = self.v(x)
        exact = v.exact and op in ("ReduceMax", "ReduceMin")
        lohi = (v.lo, v.hi) if op in ("ReduceMax", "ReduceMin", "ReduceMean") else (None, None)
        attrs = {"keepdims": None if keepdims is None else int(keepdims)}
        input_axes = op == "ReduceSum" and self.opset >= 13 or self.opset >= 18
        if axes is None:
            return self.node(op, [x], attrs, exact=exact, lo=lohi[0], hi=lohi[1])
        if input_axes:
            return self.node(op, [x, self.ints(axes)], attrs, exact=exact, lo=lohi[0], hi=lohi[1])
        attrs["axes"] = axes
        return self.node(op, [x], attrs, exact=exact, lo=lohi[0], hi=lohi[1])

    def t_reduce(self):
        op = self.choice(["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ArgMax"])
        if op == "ArgMax":
            x = self.pick(lambda v: v.exact)
            v = self.v(x)
            a = self.node("ArgMax", [x], {"axis": self.randint(-v.rank, v.rank - 1), "keepdims": self.choice([None, 0, 1]),
                                          "select_last_index": self.choice([None, 0, 1])}, exact=True)
            if self.p(0.5):
                self.forced_outputs.append(a)
            else:
                self.node("Cast", [a], {"to": TensorProto.FLOAT}, exact=True, lo=0.0)
            return
        x = self.pick()
        v = self.v(x)
        if self.p(0.2):
            axes = None
        else:
            n = self.randint(1, v.rank)
            axes = sorted(self.rng.choice(v.rank, size=n, replace=False).tolist())
            axes = [a - v.rank if self.p(0.3) else a for a in axes]
        self.reduce(op, x, axes, self.choice([None, 0, 1]))

    # -- movement templates -------------------------------------------------------------------
    def reshape_target(self, shape):
        total = nelems(shape)
        # Random factorization of total into 1..5 dims.
        factors = []
        t = total
        p = 2
        while t > 1:
            while t % p == 0:
                factors.append(p)
                t //= p
            p += 1
        self.rng.shuffle(factors)
        rank = self.randint(1, min(5, max(1, len(factors) + 1)))
        dims = [1] * rank
        for f in factors:
            dims[self.randint(0, rank - 1)] *= f
        spec = list(dims)
        if self.p(0.4):
            spec[self.randint(0, rank - 1)] = -1
        for i in range(min(rank, len(shape))):
            if spec[i] == shape[i] and spec[i] != -1 and self.p(0.3):
                spec[i] = 0
        return spec

    def t_movement(self):
        op = self.choice(["Reshape", "Flatten", "Transpose", "Concat", "Split", "Slice", "Squeeze", "Unsqueeze",
                          "Pad", "Gather", "Expand", "Tile", "DepthToSpace", "SpaceToDepth", "Resize"],
                         [3, 2, 3, 3, 2, 3, 1, 2, 3, 2, 2, 1, 1, 1, 3])
        getattr(self, "m_" + op.lower())()

    def m_reshape(self):
        x = self.pick()
        v = self.v(x)
        self.node("Reshape", [x, self.ints(self.reshape_target(v.shape))], exact=v.exact, lo=v.lo, hi=v.hi)

    def m_flatten(self):
        x = self.pick()
        v = self.v(x)
        self.node("Flatten", [x], {"axis": self.randint(-v.rank, v.rank) if self.p(0.7) else None}, exact=v.exact, lo=v.lo, hi=v.hi)

    def m_transpose(self):
        x = self.pick(lambda v: v.rank >= 2)
        v = self.v(x)
        perm = self.rng.permutation(v.rank).tolist() if self.p(0.85) else None
        self.node("Transpose", [x], {"perm": perm}, exact=v.exact, lo=v.lo, hi=v.hi)

    def m_concat(self):
        x = self.pick()
        v = self.v(x)
        axis = self.randint(0, v.rank - 1)
        ins = [x]
        for _ in range(self.randint(1, 3)):
            kind = self.choice(["same", "value", "const", "derived"])
            shape = list(v.shape)
            shape[axis] = self.randint(1, 4)
            if kind == "same":
                ins.append(x)
            elif kind == "value":
                c = self.candidates(lambda u: u.is_float and not u.special and u.rank == v.rank and all(
                    u.shape[i] == v.shape[i] for i in range(v.rank) if i != axis))
                ins.append(self.choice(c) if c else self.const(self.uniform(-1, 1, shape)))
            elif kind == "const":
                ins.append(self.const(self.uniform(-1, 1, shape)))
            else:
                ins.append(self.node(self.choice(["Sigmoid", "Neg", "Tanh"]), [x], pool=False))
        self.node("Concat", ins, {"axis": axis - v.rank if self.p(0.3) else axis},
                  exact=all(self.v(i).exact for i in ins))

    def m_split(self):
        x = self.pick(lambda v: max(v.shape) >= 2)
        v = self.v(x)
        axis = self.choice([i for i, d in enumerate(v.shape) if d >= 2])
        dim = v.shape[axis]
        n = self.randint(2, min(4, dim))
        attrs = {"axis": axis if axis or self.p(0.5) else None}
        ins = [x]
        if self.p(0.5):
            cuts = sorted(self.rng.choice(np.arange(1, dim), size=n - 1, replace=False).tolist())
            sizes = [b - a for a, b in zip([0] + cuts, cuts + [dim])]
            if self.opset >= 13:
                ins.append(self.ints(sizes))
            else:
                attrs["split"] = sizes
        elif self.opset >= 18:
            attrs["num_outputs"] = n
        elif dim % n:
            raise Reject("uneven split")
        outs = self.node("Split", ins, attrs, n_out=n, exact=v.exact, lo=v.lo, hi=v.hi)
        if self.p(0.3):
            self.forced_outputs.append(outs[0])

    def m_slice(self):
        x = self.pick()
        v = self.v(x)
        n = self.randint(1, v.rank)
        axes = self.rng.choice(v.rank, size=n, replace=False).tolist()
        starts, ends, steps = [], [], []
        for a in axes:
            d = v.shape[a]
            step = self.choice([1, 1, 1, 2, -1, -2, 3])
            if step > 0:
                s = self.randint(0, d - 1)
                e = self.randint(s + 1, d) if self.p(0.8) else self.choice([d + 5, 2**62, -1 if d > s + 1 else d])
            else:
                s = self.randint(0, d - 1)
                e = self.randint(-1, s - 1) if s > 0 else -d - 5
                if e == -1:
                    e = -d - 5
            if self.p(0.3) and s > 0:
                s -= d  # negative form
            starts.append(s)
            ends.append(e)
            steps.append(step)
        ins = [x, self.ints(starts), self.ints(ends)]
        if self.p(0.8) or any(s != 1 for s in steps):
            ins.append(self.ints([a - v.rank if self.p(0.3) else a for a in axes]))
        if any(s != 1 for s in steps) or self.p(0.3):
            ins.append(self.ints(steps))
        self.node("Slice", ins, exact=v.exact, lo=v.lo, hi=v.hi)

    def m_squeeze(self):
        x = self.pick(lambda v: 1 in v.shape and v.rank >= 2)
        v = self.v(x)
        ones = [i for i, d in enumerate(v.shape) if d == 1]
        if self.p(0.3):
            ins = [x]
        else:
            axes = sorted(self.rng.choice(ones, size=self.randint(1, len(ones)), replace=False).tolist())
            ins = [x, self.ints(axes)] if self.opset >= 13 else [x]
        self.node("Squeeze", ins, exact=v.exact, lo=v.lo, hi=v.hi)

    def m_unsqueeze(self):
        x = self.pick(lambda v: v.rank <= 4)
        v = self.v(x)
        k = self.randint(1, 5 - v.rank) if v.rank < 5 else 1
        out_rank = v.rank + k
        axes = sorted(self.rng.choice(out_rank, size=k, replace=False).tolist())
        axes = [a - out_rank if self.p(0.3) else a for a in axes]
        self.node("Unsqueeze", [x, self.ints(axes)], exact=v.exact, lo=v.lo, hi=v.hi)

    def pad_node(self, x, pads, mode=None, value=None, axes=None):
        v = self.v(x)
        ins = [x, self.ints(pads)]
        if value is not None or axes is not None:
            ins.append(self.scalar(value) if value is not None else "")
        if axes is not None:
            ins.append(self.ints(axes))
        lo, hi = v.lo, v.hi
        if mode in (None, "constant"):
            val = value or 0.0
            lo = None if lo is None else min(lo, val)
            hi = None if hi is None else max(hi, val)
        return self.node("Pad", ins, {"mode": mode}, exact=v.exact, lo=lo, hi=hi)

    def m_pad(self):
        x = self.pick()
        v = self.v(x)
        mode = self.choice([None, "constant", "reflect", "edge", "wrap" if self.opset >= 19 else "edge"])
        if self.opset >= 18 and self.p(0.3):
            n = self.randint(1, v.rank)
            axes = self.rng.choice(v.rank, size=n, replace=False).tolist()
        else:
            axes = None
        dims = [v.shape[a] for a in (axes if axes is not None else range(v.rank))]
        pads = []
        for d in dims + dims:
            limit = d - 1 if mode == "reflect" else (d if mode == "wrap" else 3)
            p = self.randint(0, max(0, min(3, limit)))
            if p == 0 and d > 1 and self.p(0.15) and mode in (None, "constant"):
                p = -1
            pads.append(p)
        value = self.choice([None, 0.0, 0.5, -1.25]) if mode in (None, "constant") else None
        self.pad_node(x, pads, mode, value, [a - v.rank if self.p(0.3) else a for a in axes] if axes is not None else None)

    def m_gather(self):
        x = self.pick()
        v = self.v(x)
        axis = self.randint(-v.rank, v.rank - 1)
        d = v.shape[axis]
        shape = self.choice([[], [self.randint(1, 4)], [2, self.randint(1, 3)]])
        idx = self.rng.integers(-d, d, size=shape).astype(np.int64)
        self.node("Gather", [x, self.const(idx, "idx")], {"axis": axis}, exact=v.exact, lo=v.lo, hi=v.hi)

    def m_expand(self):
        x = self.pick(lambda v: v.size <= 256)
        v = self.v(x)
        target = [d if d != 1 or self.p(0.5) else self.randint(2, 4) for d in v.shape]
        if self.p(0.3):
            target = [self.randint(1, 3)] + target
        if self.p(0.2):
            target = [1 if (d == v.shape[i] and self.p(0.5)) else d for i, d in enumerate(target[:v.rank])] + target[v.rank:]
        self.node("Expand", [x, self.ints(target)], exact=v.exact, lo=v.lo, hi=v.hi)

    def m_tile(self):
        x = self.pick(lambda v: v.size <= 512)
        v = self.v(x)
        reps = [self.choice([1, 1, 2, 3]) for _ in v.shape]
        self.node("Tile", [x, self.ints(reps)], exact=v.exact, lo=v.lo, hi=v.hi)

    def m_depthtospace(self):
        b = self.choice([2, 2, 3])
        x = self.pick(lambda v: v.rank == 4 and v.shape[1] % (b * b) == 0,
                      lambda: self.new_input([1, b * b * self.randint(1, 2), self.randint(1, 4), self.randint(1, 4)]))
        v = self.v(x)
        self.node("DepthToSpace", [x], {"blocksize": b, "mode": self.choice([None, "DCR", "CRD"])}, exact=v.exact, lo=v.lo, hi=v.hi)

    def m_spacetodepth(self):
        b = self.choice([2, 2, 3])
        x = self.pick(lambda v: v.rank == 4 and v.shape[2] % b == 0 and v.shape[3] % b == 0,
                      lambda: self.new_input([1, self.randint(1, 3), b * self.randint(1, 3), b * self.randint(1, 3)]))
        v = self.v(x)
        self.node("SpaceToDepth", [x], {"blocksize": b}, exact=v.exact, lo=v.lo, hi=v.hi)

    def m_resize(self):
        x = self.pick(lambda v: v.rank in (3, 4), lambda: self.image(4))
        v = self.v(x)
        # onnxruntime's cubic mode takes 2-D inputs, or 4-D ones resized on the last two axes.
        mode = self.choice(["nearest", "linear", "cubic"], [4, 4, 2 if v.rank == 4 else 0])
        coords = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_crop_and_resize"]
        if self.opset >= 19:
            coords.append("half_pixel_symmetric")
        coord = self.choice(coords)
        attrs = {"mode": mode, "coordinate_transformation_mode": coord}
        if mode == "nearest":
            attrs["nearest_mode"] = self.choice(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
        if mode == "cubic":
            attrs["cubic_coeff_a"] = self.choice([None, -0.5])
            attrs["exclude_outside"] = self.choice([None, 1])
        if coord == "tf_crop_and_resize":
            attrs["extrapolation_value"] = self.choice([None, 0.5])
        spatial = list(range(2, v.rank))
        use_axes = self.opset >= 18 and self.p(0.3)
        axes = spatial if use_axes else list(range(v.rank))
        if use_axes:
            attrs["axes"] = axes
        by = self.choice(["scales", "sizes"])
        factors = [self.choice([2.0, 2.0, 0.5, 1.5, 3.0, 0.75, 1.7, 1.0, 2.5, 0.6]) for _ in spatial]
        ins = [x]
        roi = ""
        if coord == "tf_crop_and_resize":
            # Mostly exactly representable bounds: with 0.1 or 1.2 a sample often lands on an
            # input index (or on the last one) in exact arithmetic, and which side it falls in
            # f32 is a tie (a class of divergence worth some, not most, of the graphs).
            if self.p(0.75):
                starts = [self.choice([0.0, 0.125, 0.25]) for _ in axes]
                ends = [self.choice([1.0, 0.875, 0.75, 1.25]) for _ in axes]
            else:
                starts = [self.choice([0.0, 0.1, 0.2]) for _ in axes]
                ends = [self.choice([1.0, 0.9, 0.8, 1.2]) for _ in axes]
            if not use_axes:
                starts[0] = starts[1] = 0.0
                ends[0] = ends[1] = 1.0
            roi = self.const(np.array(starts + ends, dtype=F32), "roi")
        if by == "scales":
            scales = ([] if use_axes else [1.0, 1.0]) + factors
            ins += [roi, self.const(np.array(scales, dtype=F32), "scales")]
        else:
            sizes = ([] if use_axes else list(v.shape[:2])) + [max(1, int(round(v.shape[2 + i] * f))) for i, f in enumerate(factors)]
            if self.opset >= 18 and self.p(0.3):
                attrs["keep_aspect_ratio_policy"] = self.choice(["not_larger", "not_smaller"])
                if not use_axes:
                    raise Reject("keep_aspect_ratio_policy needs axes over the spatial dims only")
            ins += [roi, "", self.ints(sizes)]
        if self.opset >= 18 and mode != "nearest" and self.p(0.15):
            attrs["antialias"] = 1
        bounds = (v.lo, v.hi) if mode != "cubic" and coord != "tf_crop_and_resize" else (None, None)
        y = self.node("Resize", ins, attrs, exact=v.exact and mode == "nearest" and coord != "tf_crop_and_resize", lo=bounds[0], hi=bounds[1])
        if coord == "tf_crop_and_resize":
            # onnxruntime ignores the roi of an axis it does not resize (scale 1), against the
            # spec and the onnx reference; such graphs would test onnxruntime, not kiln.
            r = self.known[roi]
            n = len(axes)
            for i, a in enumerate(axes):
                if self.v(y).shape[a] == v.shape[a] and (r[i] != 0.0 or r[n + i] != 1.0):
                    raise Reject("tf_crop_and_resize roi on an unscaled axis")

    def t_shape_chain(self):
        """Shape/Gather/Concat/ConstantOfShape/Range chains that constant folding resolves."""
        kind = self.choice(["reshape_from_shape", "constant_of_shape", "range", "shape_out"])
        x = self.pick()
        v = self.v(x)
        if kind == "reshape_from_shape":
            s = self.node("Shape", [x], exact=True)
            if v.rank >= 2 and self.p(0.7):
                first = self.node("Gather", [s, self.ints([0])], {"axis": 0}, exact=True)
                c = self.node("Concat", [first, self.ints([-1])], {"axis": 0}, exact=True)
            else:
                c = s
            y = self.pick(lambda u: u.size == v.size)
            self.node("Reshape", [y, c], exact=self.v(y).exact, lo=self.v(y).lo, hi=self.v(y).hi)
        elif kind == "constant_of_shape":
            s = self.node("Shape", [x], exact=True)
            c = self.node("ConstantOfShape", [s], {"value": numpy_helper.from_array(np.array([self.choice([0.5, -1.0, 2.0])], dtype=F32))}, exact=True)
            self.node(self.choice(["Add", "Mul"]), [x, c])
        elif kind == "range":
            n = v.shape[-1]
            start = float(self.choice([0, -1, 2]))
            delta = float(self.choice([1, 0.5, -0.25]))
            r = self.node("Range", [self.scalar(start), self.scalar(start + delta * n - delta / 2), self.scalar(delta)], exact=True)
            if self.v(r).shape != (n,):
                raise Reject("range length")
            self.node("Mul", [x, r])
        else:
            s = self.node("Shape", [x], {"start": self.choice([None, 1, -2]) if self.opset >= 15 else None}, exact=True)
            self.forced_outputs.append(s)

    def t_qdq(self):
        x = self.pick(lambda v: v.exact)
        v = self.v(x)
        dt = self.choice(["u8", "i8"])
        scale = self.choice([0.02, 0.05, 0.1])
        zp = np.array(128 if dt == "u8" else 0, dtype=NP_TYPE[dt])
        q = self.node("QuantizeLinear", [x, self.scalar(scale), self.const(zp)], exact=True)
        dq = self.node("DequantizeLinear", [q, self.scalar(scale), self.const(zp)], exact=True)
        if self.p(0.3) and v.rank == 4:
            cin = v.shape[1]
            wq = self.rng.integers(-20, 20, size=[self.randint(1, 4), cin, 1, 1]).astype(np.int8)
            w = self.node("DequantizeLinear", [self.const(wq, "wq"), self.scalar(0.02), self.const(np.array(0, np.int8))], exact=True, pool=False)
            self.node("Conv", [dq, w])

    # -- optimizer patterns, exact and near misses ---------------------------------------------
    def t_conv_bn(self):
        """Conv / ConvTranspose / Gemm followed by BatchNormalization (fold-batchnorm)."""
        kind = self.choice(["conv", "conv", "convT", "gemm"])
        if kind == "gemm":
            x = self.matrix()
            k = self.v(x).shape[1]
            n = self.randint(1, 8)
            trans_b = self.p(0.4)
            ins = [x, self.weight([n, k] if trans_b else [k, n], 1.0 / math.sqrt(k))]
            if self.p(0.7):
                ins.append(self.weight(self.choice([[n], [1, n], [], [1]]), 0.5))
            y = self.node("Gemm", ins, {"transB": 1 if trans_b else None, "alpha": self.choice([None, 0.5]), "beta": self.choice([None, 2.0])})
        elif kind == "convT":
            x = self.image(4)
            cin = self.v(x).shape[1]
            opg = self.randint(1, 4)
            group = cin if cin > 1 and self.p(0.3) else 1
            ins = [x, self.weight([cin, opg, 2, 2], 0.7)]
            if self.p(0.6):
                ins.append(self.weight([opg * group], 0.5))
            y = self.node("ConvTranspose", ins, {"strides": [2, 2], "group": group if group > 1 else None})
        else:
            x = self.image(self.choice([4, 4, 3]))
            y = self.conv(x, weights_const=self.p(0.9))
        near = self.choice(["exact", "exact", "fanout", "output", "act_between"])
        if near == "fanout":
            self.node(self.choice(["Sigmoid", "Neg", "Relu"]), [y])
        elif near == "output":
            self.forced_outputs.append(y)
        elif near == "act_between":
            y = self.node("Relu", [y])
        z = self.bn(y)
        if self.p(0.5):
            self.activation(z)

    def t_bn_after(self):
        """BatchNormalization after a one-input op that is not a convolution."""
        kind = self.choice(["Relu", "Softmax", "AveragePool", "Reshape", "Flatten", "MaxPool", "Sigmoid", "Add", "MatMul", "Transpose"])
        if kind in ("AveragePool", "MaxPool"):
            x = self.image(4)
            y = self.pool_node(kind, x)
        elif kind == "Reshape":
            x = self.pick(lambda v: v.rank >= 2)
            v = self.v(x)
            target = [v.shape[0], -1] if self.p(0.5) else [v.shape[0], v.shape[1], -1, 1] if v.rank >= 2 else None
            y = self.node("Reshape", [x, self.ints(target)], exact=v.exact)
        elif kind == "Flatten":
            x = self.pick(lambda v: v.rank >= 2)
            y = self.node("Flatten", [x], exact=self.v(x).exact)
        elif kind == "Softmax":
            x = self.pick(lambda v: v.rank >= 2)
            y = self.node("Softmax", [x], {"axis": 1 if self.p(0.5) else None})
        elif kind == "Add":
            x = self.pick(lambda v: v.rank >= 2)
            y = self.node("Add", [x, self.operand(x)])
        elif kind == "MatMul":
            x = self.matrix()
            y = self.node("MatMul", [x, self.weight([self.v(x).shape[1], self.randint(1, 6)], 0.7)])
        elif kind == "Transpose":
            x = self.pick(lambda v: v.rank >= 2)
            y = self.node("Transpose", [x], exact=self.v(x).exact)
        else:
            x = self.pick(lambda v: v.rank >= 2)
            y = self.node(kind, [x])
        if self.v(y).rank < 2:
            raise Reject("bn rank")
        self.bn(y)

    def t_residual(self):
        """Conv-BN-Relu-Conv-BN + skip Add + Relu, optionally with a projection shortcut."""
        x = self.image(4, min_spatial=2)
        v = self.v(x)
        c = v.shape[1]
        stride = 2 if self.p(0.3) else 1
        out = c if stride == 1 and self.p(0.7) else self.randint(1, 6)
        w3 = ([3, 3], [stride, stride], [1, 1], [1, 1, 1, 1])
        a = self.conv(x, out_ch=out, group=1, window=w3, bias=self.p(0.5), auto_pad=False)
        a = self.bn(a)
        a = self.node("Relu", [a], lo=0.0)
        if self.p(0.2):
            self.forced_outputs.append(a)
        b = self.conv(a, out_ch=out, group=1, window=([3, 3], [1, 1], [1, 1], [1, 1, 1, 1]), bias=self.p(0.5), auto_pad=False)
        b = self.bn(b)
        skip = x
        if stride != 1 or out != c:
            skip = self.conv(x, out_ch=out, group=1, window=([1, 1], [stride, stride], [1, 1], [0, 0, 0, 0]), bias=False, auto_pad=False)
            if self.p(0.5):
                skip = self.bn(skip)
        s = self.node("Add", [b, skip] if self.p(0.5) else [skip, b])
        self.node("Relu", [s], lo=0.0)

    def t_transpose_pair(self):
        """Transpose, element-wise ops, and a second Transpose that does or does not cancel."""
        x = self.pick(lambda v: v.rank >= 2)
        v = self.v(x)
        p = self.rng.permutation(v.rank).tolist()
        t = self.node("Transpose", [x], {"perm": p}, exact=v.exact)
        near = self.choice(["exact", "exact", "fanout", "output", "other_perm"])
        for _ in range(self.randint(0, 2)):
            tv = self.v(t)
            kind = self.choice(["unary", "binary", "clip", "prelu", "pow", "div", "cast", "sum", "value"])
            if kind == "unary":
                t = self.node(self.choice(["Relu", "Sigmoid", "Neg", "Tanh", "Abs", "LeakyRelu", "HardSwish"]), [t])
            elif kind == "clip":
                t = self.activation(t, "Clip")
            elif kind == "prelu":
                t = self.node("PRelu", [t, self.const(self.uniform(-0.5, 0.5, self.bshape_for(tv.shape)))])
            elif kind == "pow":
                t = self.node("Pow", [self.bounded(t, 3.0), self.const(np.full(self.bshape_for(tv.shape), 2.0, F32))])
            elif kind == "div":
                t = self.node("Div", [t, self.const(self.uniform(0.5, 2.0, self.bshape_for(tv.shape)))])
            elif kind == "cast":
                t = self.node("Cast", [t], {"to": TensorProto.FLOAT})
            elif kind == "sum":
                cs = [self.const(self.uniform(-1, 1, self.bshape_for(tv.shape))) for _ in range(self.randint(1, 2))]
                t = self.node(self.choice(["Sum", "Mean", "Max", "Min"]), [t] + cs)
            elif kind == "value":
                # A non-constant operand: the Transpose cannot move past this one.
                t = self.node("Add", [t, self.operand(t)])
            else:
                c = self.const(self.uniform(-1, 1, self.bshape_for(tv.shape)))
                t = self.node(self.choice(["Add", "Mul", "Sub", "Max"]), [t, c] if self.p(0.6) else [c, t])
            if self.v(t).shape != tv.shape:
                raise Reject("transpose pair: broadcast changed the shape")
        if near == "fanout":
            self.node("Sigmoid", [t])
        elif near == "output":
            self.forced_outputs.append(t)
        inv = [0] * v.rank
        for i, a in enumerate(p):
            inv[a] = i
        q = self.rng.permutation(v.rank).tolist() if near == "other_perm" else inv
        y = self.node("Transpose", [t], {"perm": q}, exact=False)
        if self.v(y).rank == 2 and self.p(0.4):
            yv = self.v(y)
            self.node("MatMul", [y, self.weight([yv.shape[1], self.randint(1, 5)], 0.7)])

    def t_transpose_gemm(self):
        """A 2-D Transpose feeding a Gemm or MatMul operand (folded into transA/transB)."""
        x = self.matrix()
        v = self.v(x)
        t = self.node("Transpose", [x], exact=v.exact)
        m, k = self.v(t).shape
        if self.p(0.2):
            self.forced_outputs.append(t)
        if self.p(0.5):
            y = self.node("MatMul", [t, self.weight([k, self.randint(1, 6)], 0.7)])
        else:
            wt = self.node("Transpose", [self.weight([self.randint(1, 6), k], 0.7)], exact=True) if self.p(0.5) else self.weight([k, self.randint(1, 6)], 0.7)
            n = self.v(wt).shape[1]
            ins = [t, wt]
            if self.p(0.6):
                ins.append(self.weight([n], 0.5))
            y = self.node("Gemm", ins, {"alpha": self.choice([None, 0.75])})
        if self.p(0.3):
            self.activation(y)

    def t_matmul_add(self):
        """MatMul + Add (matmul-add-to-gemm), exact and near misses."""
        x = self.matrix() if self.p(0.8) else self.pick(lambda v: v.rank == 3, lambda: self.new_input([2, self.randint(1, 4), self.randint(1, 6)]))
        v = self.v(x)
        k = v.shape[-1]
        n = self.randint(1, 8)
        mm = self.node("MatMul", [x, self.weight([k, n], 1.0 / math.sqrt(k))])
        m = v.shape[-2]
        cshape = self.choice([[], [1], [n], [1, n], [m, 1], [m, n], [2, m, n], [1, 1, n]])
        if self.p(0.8):
            c = self.weight(cshape, 0.5)
        else:
            c = self.pick(lambda u: list(u.shape) == cshape, lambda: self.new_input(cshape or [1]))
        near = self.choice(["exact", "exact", "fanout", "output", "twice"])
        if near == "fanout":
            self.node("Relu", [mm])
        elif near == "output":
            self.forced_outputs.append(mm)
        if near == "twice":
            y = self.node("Add", [mm, mm])
        else:
            y = self.node("Add", [mm, c] if self.p(0.6) else [c, mm])
        if self.p(0.3):
            self.activation(y)

    def t_pad_conv(self):
        """Pad followed by Conv or AveragePool (fold-pad), exact and near misses."""
        x = self.image(4)
        v = self.v(x)
        sp = [self.randint(0, 2) for _ in range(4)]
        near = self.choice(["exact", "exact", "exact", "value", "channel", "mode", "fanout", "maxpool", "output"])
        pads = [0, 0, sp[0], sp[1], 0, 0, sp[2], sp[3]]
        mode = None
        value = self.choice([None, 0.0])
        if near == "value":
            value = self.choice([0.5, -1.0, 1e-3])
        elif near == "channel":
            pads[1] = 1
        elif near == "mode":
            mode = self.choice(["edge", "reflect"])
            if mode == "reflect":
                pads = [min(p, v.shape[i % 4] - 1) for i, p in enumerate(pads)]
        if self.opset >= 18 and self.p(0.3) and near != "channel":
            p = self.pad_node(x, [sp[0], sp[1], sp[2], sp[3]], mode, value, [2, 3] if self.p(0.5) else [-2, -1])
        else:
            p = self.pad_node(x, pads, mode, value)
        if near == "fanout":
            self.node("Relu", [p])
        elif near == "output":
            self.forced_outputs.append(p)
        consumer = self.choice(["Conv", "Conv", "AveragePool"]) if near != "maxpool" else "MaxPool"
        if consumer == "Conv":
            self.conv(p)
        else:
            self.pool_node(consumer, p)

    def t_layernorm(self):
        """Decomposed LayerNorm (fuse-layernorm), exact and near misses."""
        x = self.pick(lambda v: v.rank >= 1 and v.shape[-1] >= 2)
        v = self.v(x)
        axis = self.randint(max(0, v.rank - 2), v.rank - 1) if v.rank > 1 else 0
        axes = list(range(axis, v.rank))
        near = self.choice(["exact", "exact", "exact", "d_reader", "mean_reader", "var_reader", "d_output", "axes", "eps_vec", "gamma_value"])
        if near == "axes" and v.rank >= 2:
            axes = [0] if v.rank > 1 else axes
        m = self.reduce("ReduceMean", x, axes, 1)
        d = self.node("Sub", [x, m], pool=False)
        sq = self.node("Pow", [d, self.scalar(2.0)], pool=False) if self.p(0.5) else self.node("Mul", [d, d], pool=False)
        var = self.reduce("ReduceMean", sq, axes, 1)
        # eps at least 1e-5: on a constant input (variance 0) the rounding noise of the mean is
        # amplified by 1 / sqrt(eps), and 1e-6 already takes it to the tolerance.
        eps = self.scalar_like(self.choice([1e-5, 1e-3]), v.rank) if near != "eps_vec" else self.const(np.full([v.shape[-1]], 1e-5, F32))
        s = self.node("Sqrt", [self.node("Add", [var, eps], pool=False)], pool=False)
        if self.p(0.5):
            n = self.node("Div", [d, s], pool=False)
        else:
            n = self.node("Mul", [d, self.node("Reciprocal", [s], pool=False)], pool=False)
        norm = list(v.shape[axes[0]:]) if near != "axes" else list(v.shape[-1:])
        if self.p(0.7):
            g = self.const(self.uniform(0.5, 1.5, norm[-self.randint(1, len(norm)):]))
            if near == "gamma_value":
                g = self.node("Abs", [self.pick(lambda u: bcast(u.shape, norm) == tuple(norm), lambda: self.new_input(norm))], pool=False)
            n = self.node("Mul", [n, g] if self.p(0.7) else [g, n], pool=False)
        if self.p(0.7):
            b = self.const(self.uniform(-1, 1, norm))
            n = self.node("Add", [n, b] if self.p(0.7) else [b, n])
        else:
            self.pool.append(n)
        if near == "d_reader":
            self.node(self.choice(["Abs", "Relu", "Neg"]), [d])
        elif near == "mean_reader":
            self.forced_outputs.append(m)
        elif near == "var_reader":
            self.node("Sqrt", [self.node("Add", [var, self.scalar(0.1)], pool=False)])
        elif near == "d_output":
            self.forced_outputs.append(d)

    def t_gelu(self):
        """Decomposed GELU, erf form in its three associations (fuse-gelu), and near misses."""
        x = self.pick()
        near = self.choice(["exact", "exact", "exact", "t_reader", "e_reader", "a_reader", "const", "tanh", "output"])
        r = self.v(x).rank
        if self.p(0.5):
            t = self.node("Div", [x, self.scalar_like(math.sqrt(2.0), r + 1)], pool=False)
        else:
            c = self.scalar_like(1.0 / math.sqrt(2.0), r + 1)
            t = self.node("Mul", [c, x] if self.p(0.3) else [x, c], pool=False)
        if near == "tanh":
            x3 = self.node("Pow", [self.bounded(x, 6.0), self.scalar(3.0)], pool=False)
            inner = self.node("Add", [x, self.node("Mul", [x3, self.scalar(0.044715)], pool=False)], pool=False)
            e = self.node("Tanh", [self.node("Mul", [inner, self.scalar(math.sqrt(2.0 / math.pi))], pool=False)], pool=False)
        else:
            e = self.node("Erf", [t], pool=False)
        one = self.scalar_like(1.0 if near != "const" else 1.001, r + 1)
        a = self.node("Add", [e, one] if self.p(0.7) else [one, e], pool=False)
        half = self.scalar_like(0.5, r + 1)
        form = self.choice(["xa_half", "xhalf_a", "x_ahalf"])
        if form == "xa_half":
            y = self.node("Mul", [self.node("Mul", [x, a], pool=False), half])
        elif form == "xhalf_a":
            y = self.node("Mul", [self.node("Mul", [x, half], pool=False), a])
        else:
            y = self.node("Mul", [x, self.node("Mul", [a, half], pool=False)])
        if near == "t_reader":
            self.node("Relu", [t])
        elif near == "e_reader":
            self.node("Neg", [e])
        elif near == "a_reader":
            self.forced_outputs.append(a)
        elif near == "output":
            self.forced_outputs.append(y)
        if self.opset >= 20 and self.p(0.3):
            self.node("Gelu", [x], {"approximate": self.choice([None, "tanh"])})

    def t_act_fusion(self):
        """Conv/ConvTranspose/Gemm/MatMul/Add followed by an activation (fuse-activation)."""
        kind = self.choice(["Conv", "Gemm", "MatMul", "Add", "Add"])
        if kind == "Conv":
            y = self.conv(self.image(self.choice([4, 3])))
        elif kind == "Gemm":
            x = self.matrix()
            k = self.v(x).shape[1]
            y = self.node("Gemm", [x, self.weight([k, self.randint(1, 8)], 1.0 / math.sqrt(k))])
        elif kind == "MatMul":
            x = self.pick(lambda v: v.rank >= 2)
            k = self.v(x).shape[-1]
            y = self.node("MatMul", [x, self.weight([k, self.randint(1, 8)], 1.0 / math.sqrt(k))])
        else:
            x = self.pick()
            y = self.node("Add", [x, self.operand(x)])
        near = self.choice(["exact", "exact", "exact", "fanout", "output", "double"])
        if near == "fanout":
            self.node("Neg", [y])
        elif near == "output":
            self.forced_outputs.append(y)
        z = self.activation(y)
        if near == "double":
            self.activation(z)

    def t_identity(self):
        """Identity and Dropout chains (remove-identity), including graph inputs and outputs."""
        x = self.pick() if self.p(0.7) else self.choice(self.inputs) if self.inputs else self.pick()
        v = self.v(x)
        y = x
        for _ in range(self.randint(1, 3)):
            y = self.node(self.choice(["Identity", "Identity", "Dropout"]), [y], exact=v.exact, lo=v.lo, hi=v.hi)
            if self.p(0.3):
                self.forced_outputs.append(y)

    def t_const_subgraph(self):
        """Constants combined by ops (const-fold), used as a weight or an operand."""
        x = self.pick()
        v = self.v(x)
        shape = self.bshape_for(v.shape)
        a = self.const(self.uniform(-1, 1, shape), node=self.p(0.5))
        b = self.const(self.uniform(-1, 1, shape), node=self.p(0.5))
        c = self.node(self.choice(["Add", "Mul", "Sub", "Max"]), [a, b], pool=False)
        if self.p(0.5):
            c = self.node(self.choice(["Sigmoid", "Neg", "Tanh", "Relu"]), [c], pool=False)
        if len(shape) >= 2 and self.p(0.4):
            c = self.node("Transpose", [c], {"perm": list(range(len(shape)))}, pool=False)
        self.node(self.choice(["Add", "Mul", "Sub"]), [x, c])
        if v.rank == 2 and self.p(0.5):
            w = self.node("Transpose", [self.weight([self.randint(1, 6), v.shape[1]], 0.7)], pool=False)
            self.node("MatMul", [x, w])

    def t_dead(self):
        """Nodes nobody reads (dead-code)."""
        x = self.pick()
        y = self.node(self.choice(["Relu", "Sigmoid", "Neg"]), [x], pool=False)
        self.node("Add", [y, self.scalar(1.0)], pool=False)
        self.dead.append(self.nodes[-1].output[0])

    TEMPLATES = [
        # (method, weight, rough node count)
        ("t_unary", 6, 1), ("t_guarded_unary", 4, 3), ("t_binary", 7, 1), ("t_compare", 2, 3),
        ("t_cast", 1, 2), ("t_special", 1, 3), ("t_conv", 4, 2), ("t_conv_transpose", 2, 2),
        ("t_matmul", 3, 2), ("t_gemm", 2, 2), ("t_pool", 3, 1), ("t_norm", 4, 1), ("t_reduce", 3, 1),
        ("t_movement", 12, 1), ("t_shape_chain", 1, 4), ("t_qdq", 1, 3),
        ("t_conv_bn", 4, 4), ("t_bn_after", 3, 2), ("t_residual", 2, 9), ("t_transpose_pair", 3, 4),
        ("t_transpose_gemm", 2, 3), ("t_matmul_add", 4, 3), ("t_pad_conv", 4, 3), ("t_layernorm", 4, 11),
        ("t_gelu", 4, 7), ("t_act_fusion", 3, 3), ("t_identity", 1, 2), ("t_const_subgraph", 1, 4),
        ("t_dead", 1, 2),
    ]


# ---------------------------------------------------------------------------------------------
# Whole graphs.


def ort_session(model_bytes):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


REFERENCE_OPS = {"Resize"}


def run_reference(model_bytes, feeds):
    from onnx.reference import ReferenceEvaluator  # noqa: PLC0415

    return ReferenceEvaluator(onnx.load_from_string(model_bytes)).run(None, feeds)


def run_ort(model_bytes, feeds):
    try:
        return ort_session(model_bytes).run(None, feeds)
    except Exception as e:  # noqa: BLE001
        raise Reject(f"onnxruntime: {str(e).splitlines()[0][:100]}") from None


def isolated(fn, *args):
    """`fn(*args)` in a forked child: onnxruntime crashes on a few valid graphs, and a crash
    must cost one draft, not the generator."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        try:
            data = pickle.dumps(("ok", fn(*args)))
        except Reject as e:
            data = pickle.dumps(("reject", str(e)))
        except BaseException as e:  # noqa: BLE001
            data = pickle.dumps(("reject", f"{type(e).__name__}: {e}"[:100]))
        with os.fdopen(w, "wb") as f:
            f.write(data)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    if not data:
        raise Reject("onnxruntime crashed")
    kind, value = pickle.loads(data)
    if kind != "ok":
        raise Reject(value)
    return value


def value_info(val):
    return helper.make_tensor_value_info(val.name, ONNX_TYPE[val.dtype], list(val.shape))


def make_model(b, outputs):
    g = helper.make_graph(
        b.nodes, "differential",
        [value_info(b.vals[i]) for i in b.inputs],
        [value_info(b.vals[o]) for o in outputs],
        initializer=b.inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", b.opset)], producer_name="kiln-differential")
    m.ir_version = IR_VERSION
    return m


def build_graph(rng, stats):
    opset = OPSETS[int(rng.choice(len(OPSETS), p=[w for _, w in OPSETS]))][0]
    b = Gen(rng, opset)
    target = int(rng.integers(MIN_NODES, MAX_NODES + 1))
    # Start from one input of a random kind.
    kind = b.choice(["image", "image", "seq", "mat", "vec", "image1d"])
    if kind == "image":
        b.new_input([b.choice([1, 1, 2]), b.randint(1, 6), b.randint(2, 9), b.randint(2, 9)])
    elif kind == "seq":
        b.new_input([b.randint(1, 2), b.randint(1, 8), b.randint(2, 12)])
    elif kind == "mat":
        b.new_input([b.randint(1, 8), b.randint(2, 12)])
    elif kind == "vec":
        b.new_input([b.randint(2, 16)])
    else:
        b.new_input([1, b.randint(1, 6), b.randint(3, 12)])
    names = [t[0] for t in Gen.TEMPLATES]
    weights = np.array([t[1] for t in Gen.TEMPLATES], dtype=np.float64)
    costs = {t[0]: t[2] for t in Gen.TEMPLATES}
    failures = 0
    while len(b.nodes) < target and failures < 200:
        left = target - len(b.nodes)
        ok = np.array([costs[n] <= max(left, 1) + 1 for n in names])
        w = weights * ok
        t = names[int(rng.choice(len(names), p=w / w.sum()))]
        snap = b.snapshot()
        try:
            getattr(b, t)()
            b.templates.append(t)
        except Reject as e:
            stats["template:" + str(e).split(":")[0][:40]] += 1
            b.restore(snap)
            failures += 1
    if len(b.nodes) < MIN_NODES:
        raise Reject("too few nodes")
    # Outputs: every value nothing reads (except deliberate dead ends), plus some intermediates.
    read = {i for n in b.nodes for i in n.input}
    produced = [o for n in b.nodes for o in n.output if o]
    leaves = [o for o in produced if o not in read and o not in b.dead]
    outputs = []
    for o in leaves + b.forced_outputs:
        if o not in outputs and o in b.vals:
            outputs.append(o)
    # Rarely, a graph input or a constant is itself an output (the backends copy it out).
    if b.p(0.04) and b.inputs:
        outputs.append(b.choice(b.inputs))
    consts = [t.name for t in b.inits if t.name in read]
    if b.p(0.04) and consts:
        outputs.append(b.choice(consts))
    inter = [o for o in produced if o not in outputs and o in read and o in b.vals]
    for o in inter:
        if b.p(0.12):
            outputs.append(o)
    if len(outputs) > 10:
        keep = set(b.forced_outputs)
        rest = [o for o in outputs if o not in keep]
        b.rng.shuffle(rest)
        outputs = [o for o in outputs if o in keep or o in rest[:10 - len(keep)]]
    if not outputs:
        raise Reject("no outputs")
    return b, outputs


def finish(b, outputs):
    """Checks the graph and runs it through onnxruntime; returns (model, feeds, results, meta)."""
    model = make_model(b, outputs)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # noqa: BLE001
        raise Reject(f"checker: {str(e).splitlines()[0][:80]}") from None
    # Every float value as an extra output, to check magnitudes and find each output's scale.
    extra = [o for n in b.nodes for o in n.output if o and o not in outputs and b.vals[o].dtype == "f32"]
    probe = make_model(b, outputs + extra)
    feeds = {i: b.feeds[i] for i in b.inputs}
    res = isolated(run_ort, probe.SerializeToString(), feeds)
    values = dict(zip(outputs + extra, res))
    values.update(feeds)
    for name, arr in values.items():
        val = b.vals[name]
        if tuple(arr.shape) != val.shape:
            raise Reject(f"onnxruntime shape differs from onnx's: {val.node}")
        if val.dtype != "f32":
            continue
        if val.special:
            continue  # infinities, or the float range a bound-less Clip clamps them to
        if not np.all(np.isfinite(arr)):
            raise Reject("non-finite value")
        if arr.size and np.max(np.abs(arr)) > MAX_MAGNITUDE:
            raise Reject("large value")
    # Per output: the largest magnitude among the values it depends on (node outputs and inputs).
    producer = {o: n for n in b.nodes for o in n.output}
    mag = {}

    def magnitude(name):
        if name in mag:
            return mag[name]
        arr = values.get(name)
        own = 0.0
        if arr is not None and arr.dtype == np.float32:
            finite = arr[np.isfinite(arr)]
            own = float(np.max(np.abs(finite))) if finite.size else 0.0
        n = producer.get(name)
        deps = [magnitude(i) for i in n.input if i] if n is not None else []
        mag[name] = max([own] + deps)
        return mag[name]

    sys.setrecursionlimit(10000)
    meta_outputs = [{"name": o, "dtype": b.vals[o].dtype, "shape": list(b.vals[o].shape),
                     "max_abs": float(np.max(np.abs(values[o][np.isfinite(values[o])]))) if b.vals[o].dtype == "f32" and np.isfinite(values[o]).any() else 0.0,
                     "scale": magnitude(o)} for o in outputs]
    # Where onnxruntime is known to depart from the onnx reference (Resize), keep the
    # reference's outputs too, so a mismatch can say whom kiln agrees with.
    reference = None
    if any(n.op_type in REFERENCE_OPS for n in b.nodes):
        try:
            reference = isolated(run_reference, model.SerializeToString(), feeds)
        except Reject:
            reference = None
    meta = {
        "opset": b.opset,
        "nodes": len(b.nodes),
        "ops": dict(sorted(Counter(n.op_type for n in b.nodes).items())),
        "templates": b.templates,
        "outputs": meta_outputs,
    }
    if reference is not None:
        meta["reference"] = [np.asarray(r) for r in reference]
    return model, [b.feeds[i] for i in b.inputs], [values[o] for o in outputs], meta


def write_case(d, model, inputs, outputs, meta):
    d.mkdir(parents=True, exist_ok=True)
    for f in d.glob("*.npy"):
        f.unlink()
    (d / "model.onnx").write_bytes(model.SerializeToString())
    for k, a in enumerate(inputs):
        np.save(d / f"input_{k}.npy", np.require(a, requirements="C"))
    for k, a in enumerate(outputs):
        np.save(d / f"output_{k}.npy", np.require(a, requirements="C"))
    for k, a in enumerate(meta.pop("reference", None) or []):
        np.save(d / f"reference_{k}.npy", np.require(a, requirements="C"))
    (d / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def generate_one(seed, index, stats):
    for attempt in range(1000):
        rng = np.random.default_rng([seed, index, attempt])
        b = outputs = None
        try:
            b, outputs = build_graph(rng, stats)
            model, inputs, results, meta = finish(b, outputs)
        except Reject as e:
            stats["graph:" + str(e)[:60]] += 1
            if os.environ.get("KILN_DIFF_KEEP_REJECTS"):
                keep = Path(os.environ["KILN_DIFF_KEEP_REJECTS"]) / f"s{seed}-i{index}-a{attempt}"
                keep.mkdir(parents=True, exist_ok=True)
                (keep / "reason.txt").write_text(str(e) + "\n")
                try:
                    if b is not None and outputs:
                        onnx.save(make_model(b, outputs), str(keep / "model.onnx"))
                except Exception:  # noqa: BLE001
                    pass
            continue
        meta.update({"seed": seed, "index": index, "attempt": attempt})
        return model, inputs, results, meta
    raise RuntimeError(f"no valid graph for seed {seed} index {index}")


def generator_hash():
    h = hashlib.sha256()
    for f in sorted(HERE.glob("*.py")):
        h.update(f.read_bytes())
    h.update(f"{onnx.__version__} {ort.__version__} {np.__version__}".encode())
    return h.hexdigest()[:16]


def cmd_generate(args):
    out = Path(args.out)
    stamp = out / "STAMP"
    want = f"{generator_hash()} seed={args.seed} count={args.count}\n"
    if stamp.exists() and stamp.read_text() == want:
        print(f"{out}: up to date", file=sys.stderr)
        return 0
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    stats = Counter()
    start = time.time()
    jobs = max(1, args.jobs)
    indices = list(range(args.count))
    if jobs > 1 and args.count > 8:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(jobs) as pool:
            for st in pool.imap_unordered(_worker, [(args.seed, i, str(out)) for i in indices], chunksize=4):
                stats.update(st)
    else:
        for i in indices:
            stats.update(_worker((args.seed, i, str(out))))
    stamp.write_text(want)
    rejected = sum(v for k, v in stats.items() if k.startswith("graph:"))
    print(f"generated {args.count} graphs (seed {args.seed}) in {time.time() - start:.1f}s; "
          f"{rejected} drafts rejected", file=sys.stderr)
    if args.verbose:
        for k, v in stats.most_common():
            print(f"  {v:6d} {k}", file=sys.stderr)
    return 0


def _worker(job):
    seed, i, out = job
    stats = Counter()
    model, inputs, results, meta = generate_one(seed, i, stats)
    write_case(Path(out) / f"g{i:04d}", model, inputs, results, meta)
    return stats


# ---------------------------------------------------------------------------------------------
# Regressions: hand-written graphs from regressions.py, checked like generated ones.


def finite_max(a):
    """The largest finite |value| of a float array (0 for other types)."""
    a = np.asarray(a)
    if a.dtype != np.float32:
        return 0.0
    f = a[np.isfinite(a)]
    return float(np.max(np.abs(f))) if f.size else 0.0


def cmd_regressions(args):
    sys.path.insert(0, str(HERE))
    sys.dont_write_bytecode = True  # no __pycache__ beside the sources
    import regressions  # noqa: PLC0415

    cases = regressions.CASES
    out = Path(args.out)
    stamp = out / "STAMP"
    want = f"{generator_hash()} regressions\n"
    if stamp.exists() and stamp.read_text() == want:
        print(f"{out}: up to date", file=sys.stderr)
        return 0
    if out.exists():
        shutil.rmtree(out)
    for name, fn in cases.items():
        model, feeds, *extra = fn()
        extra = extra[0] if extra else {}
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model, full_check=True)
        sess = ort_session(model.SerializeToString())
        names = [i.name for i in model.graph.input]
        res = sess.run(None, dict(zip(names, feeds)))
        try:
            reference = run_reference(model.SerializeToString(), dict(zip(names, feeds)))
        except Exception:  # noqa: BLE001
            reference = None
        meta = {"regression": name, "doc": (fn.__doc__ or "").strip(), "opset": model.opset_import[0].version,
                "nodes": len(model.graph.node),
                "ops": dict(sorted(Counter(n.op_type for n in model.graph.node).items())),
                "outputs": [{"name": o.name, "scale": max([finite_max(r)] + [finite_max(f) for f in feeds])}
                            for o, r in zip(model.graph.output, res)]}
        if "expected" in extra:
            res = extra["expected"]
            for o, sc in zip(meta["outputs"], extra["scales"]):
                o["scale"] = sc
            meta["expected"] = "exact (f64), not onnxruntime"
        if reference is not None and any(n.op_type in REFERENCE_OPS for n in model.graph.node):
            meta["reference"] = reference
        write_case(out / name, model, feeds, res, meta)
    stamp.write_text(want)
    print(f"wrote {len(cases)} regression cases to {out}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------
# Inspection and shrinking.


def describe(model):
    vals = {}
    for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        vals[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    lines = [f"opset {model.opset_import[0].version}"]
    for i in model.graph.input:
        lines.append(f"input  {i.name}: {vals[i.name]}")
    inferred = shape_inference.infer_shapes(model)
    for vi in inferred.graph.value_info:
        vals[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    for n in model.graph.node:
        attrs = []
        for a in n.attribute:
            v = helper.get_attribute_value(a)
            if isinstance(v, bytes):
                v = v.decode()
            if isinstance(v, TensorProto):
                v = numpy_helper.to_array(v).tolist()
            attrs.append(f"{a.name}={v}")
        ins = []
        for i in n.input:
            if i in inits:
                arr = None
                for t in model.graph.initializer:
                    if t.name == i:
                        arr = numpy_helper.to_array(t)
                ins.append(f"{i}{list(arr.shape)}" + (f"={arr.tolist()}" if arr.size <= 8 else ""))
            else:
                ins.append(f"{i}{vals.get(i, '')}")
        outs = [f"{o}{vals.get(o, '')}" for o in n.output]
        lines.append(f"{', '.join(outs)} = {n.op_type}({', '.join(ins)}) {' '.join(attrs)}")
    lines.append("outputs " + ", ".join(o.name for o in model.graph.output))
    return "\n".join(lines)


def cmd_show(args):
    model = onnx.load(str(Path(args.show) / "model.onnx"))
    print(describe(model))
    return 0


def find_kiln(explicit):
    if explicit:
        return explicit
    root = HERE.parent.parent
    for p in ["target/release/kiln", "target/debug/kiln"]:
        if (root / p).exists():
            return str(root / p)
    sys.exit("no kiln binary: build with cargo build, or pass --kiln")


def kiln_failure(kiln, model, feeds, backend, level, rtol):
    """How `kiln run` fails on `model` against onnxruntime: None when it passes, else a class
    ("crash", "error", "mismatch f32", "mismatch bool", "mismatch shape", ...) that the
    shrinker keeps constant, so a reduction cannot drift to a different bug."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "m.onnx").write_bytes(model.SerializeToString())
        args = [kiln, "run", str(tmp / "m.onnx"), "--backend", backend, "-O", str(level),
                "--output-dir", str(tmp / "out")]
        for k, (i, a) in enumerate(zip(model.graph.input, feeds)):
            np.save(tmp / f"in{k}.npy", a)
            args += ["--input", f"{i.name}={tmp / f'in{k}.npy'}"]
        try:
            values, _ = all_values(model, feeds)
        except Exception:  # noqa: BLE001
            return None
        want = [values[o.name] for o in model.graph.output]
        # The tolerance's scale, as the test computes it: per output, the largest magnitude
        # among the values it depends on.
        for i, f in zip(model.graph.input, feeds):
            values.setdefault(i.name, f)
        scales = ancestor_scales(model, values)
        r = subprocess.run(args, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            text = r.stderr.strip()
            return "crash" if "panicked" in text or r.returncode < 0 or r.returncode == 101 else "error"
        for o, w in zip(model.graph.output, want):
            safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in o.name)
            g = np.load(tmp / "out" / f"{safe}.npy")
            if g.shape != w.shape:
                return "mismatch shape"
            if w.dtype != np.float32:
                if not np.array_equal(g, w):
                    return f"mismatch {w.dtype}"
                continue
            both_nan = np.isnan(g) & np.isnan(w)
            inf = ~np.isfinite(w) | ~np.isfinite(g)
            if np.any(inf & ~both_nan & (g != w)):
                return "mismatch inf"
            diff = np.abs(g[~inf].astype(np.float64) - w[~inf].astype(np.float64))
            if diff.size and diff.max() > rtol * max(1.0, scales[o.name]):
                return "mismatch float32"
        return None


def ancestor_scales(model, values):
    """Per graph output, the largest finite magnitude among the values it depends on."""
    producer = {o: n for n in model.graph.node for o in n.output}
    memo = {}

    def scale(name):
        if name not in memo:
            n = producer.get(name)
            deps = [scale(i) for i in n.input if i] if n is not None else []
            memo[name] = max([finite_max(values[name]) if name in values else 0.0] + deps)
        return memo[name]

    return {o.name: scale(o.name) for o in model.graph.output}


def cmd_shrink(args):
    case = Path(args.shrink)
    kiln = find_kiln(args.kiln)
    model = onnx.load(str(case / "model.onnx"))
    feeds = [np.load(case / f"input_{k}.npy") for k in range(len(model.graph.input))]
    target = kiln_failure(kiln, model, feeds, args.backend, args.level, args.rtol)
    if target is None or (args.kind != "any" and not target.startswith(args.kind)):
        sys.exit(f"{case}: kiln --backend {args.backend} -O {args.level} does not fail"
                 f" ({args.kind}; got {target}); nothing to shrink")
    print(f"shrinking a '{target}' failure", file=sys.stderr)

    def fails(m, f):
        try:
            onnx.checker.check_model(m, full_check=True)
        except Exception:  # noqa: BLE001
            return False
        return kiln_failure(kiln, m, f, args.backend, args.level, args.rtol) == target

    model = shape_inference.infer_shapes(model)
    changed = True
    while changed:
        changed = False
        # 1. Drop outputs one at a time.
        for o in list(model.graph.output):
            if len(model.graph.output) == 1:
                break
            m = onnx.ModelProto()
            m.CopyFrom(model)
            keep = [x for x in m.graph.output if x.name != o.name]
            del m.graph.output[:]
            m.graph.output.extend(keep)
            m, f = prune_inputs(prune(m), feeds)
            if m is not None and fails(m, f):
                model, feeds, changed = m, f, True
        # 2. Replace a node's inputs by new graph inputs holding onnxruntime's values (cut the
        #    graph above it), or bypass a node (its output replaced by a same-typed input).
        for idx in reversed(range(len(model.graph.node))):
            if idx >= len(model.graph.node):
                continue
            for variant in (retarget, cut, bypass):
                m, f = variant(model, feeds, idx)
                if m is not None and fails(m, f):
                    model, feeds, changed = m, f, True
                    break
    out = case.parent / (case.name + "-min")
    sess = ort_session(model.SerializeToString())
    res = sess.run(None, {i.name: f for i, f in zip(model.graph.input, feeds)})
    write_case(out, model, feeds, res, {"shrunk_from": str(case), "backend": args.backend, "level": args.level,
                                        "failure": target, "nodes": len(model.graph.node),
                                        "outputs": [{"name": o.name, "scale": max([finite_max(r)] + [finite_max(f) for f in feeds])}
                                                    for o, r in zip(model.graph.output, res)]})
    print(describe(model))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def prune(m):
    """Removes nodes, initializers and inputs nothing needed reads."""
    needed = {o.name for o in m.graph.output}
    keep = []
    for n in reversed(m.graph.node):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
    keep.reverse()
    del m.graph.node[:]
    m.graph.node.extend(keep)
    inits = [t for t in m.graph.initializer if t.name in needed]
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)
    return m


def prune_inputs(m, feeds):
    used = {i for n in m.graph.node for i in n.input} | {o.name for o in m.graph.output}
    pairs = [(i, f) for i, f in zip(m.graph.input, feeds) if i.name in used]
    if not pairs:
        return None, None
    del m.graph.input[:]
    m.graph.input.extend([p[0] for p in pairs])
    return m, [p[1] for p in pairs]


def all_values(model, feeds):
    """onnxruntime's value of every node output."""
    m = shape_inference.infer_shapes(model)
    types = {vi.name: vi for vi in list(m.graph.value_info) + list(m.graph.output)}
    known = {o.name for o in m.graph.output}
    for n in m.graph.node:
        for o in n.output:
            if o and o not in known and o in types:
                m.graph.output.append(types[o])
                known.add(o)
    sess = ort_session(m.SerializeToString())
    res = sess.run(None, {i.name: f for i, f in zip(m.graph.input, feeds)})
    return {o.name: r for o, r in zip(m.graph.output, res)}, types


def retarget(model, feeds, idx):
    """When node idx computes a graph output, that output becomes one of the node's inputs
    (computed by another node) instead: the graph loses its last step."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    node = m.graph.node[idx]
    outs = [k for k, o in enumerate(m.graph.output) if o.name in node.output]
    if not outs:
        return None, None
    types = {vi.name: vi for vi in list(m.graph.value_info) + list(m.graph.output)}
    produced = {o for n in m.graph.node for o in n.output}
    names = {o.name for o in m.graph.output}
    src = next((i for i in node.input if i in produced and i in types and i not in names), None)
    if src is None:
        return None, None
    new = [o for o in m.graph.output if o.name not in node.output]
    new.insert(outs[0], types[src])
    del m.graph.output[:]
    m.graph.output.extend(new)
    return prune_inputs(prune(m), list(feeds))


def cut(model, feeds, idx):
    """Node idx's non-constant inputs become graph inputs fed with their values."""
    node = model.graph.node[idx]
    inits = {t.name for t in model.graph.initializer}
    inputs = {i.name for i in model.graph.input}
    produced = {o for n in model.graph.node for o in n.output}
    targets = [i for i in node.input if i and i not in inits and i not in inputs and i in produced]
    if not targets:
        return None, None
    try:
        values, types = all_values(model, feeds)
    except Exception:  # noqa: BLE001
        return None, None
    m = onnx.ModelProto()
    m.CopyFrom(model)
    new_feeds = list(feeds)
    for t in targets:
        if t not in types or t not in values:
            return None, None
        if values[t].dtype != np.float32:
            return None, None
        m.graph.input.append(types[t])
        new_feeds.append(values[t])
        # The producer's other outputs stay; the producer goes if nothing else needs it.
        for n in m.graph.node:
            if t in n.output:
                outs = [o if o != t else "" for o in n.output]
                del n.output[:]
                n.output.extend(outs)
    m = prune(m)
    m, new_feeds = prune_inputs(m, new_feeds)
    if m is None:
        return None, None
    return m, new_feeds


def bypass(model, feeds, idx):
    """Node idx's result replaced by one of its inputs with the same type and shape."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    node = m.graph.node[idx]
    if len(node.output) != 1:
        return None, None
    types = {vi.name: vi.type for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input)}
    for t in m.graph.initializer:
        types[t.name] = helper.make_tensor_type_proto(t.data_type, list(t.dims))
    out = node.output[0]
    src = next((i for i in node.input if i and i in types and out in types and types[i] == types[out]), None)
    if src is None:
        return None, None
    if any(o.name == out for o in m.graph.output):
        if any(o.name == src for o in m.graph.output) or src in {i.name for i in m.graph.input} or src in {t.name for t in m.graph.initializer}:
            return None, None
        # Rename the source to the output's name.
        for n in m.graph.node:
            for k, o in enumerate(n.output):
                if o == src:
                    n.output[k] = out
            for k, i in enumerate(n.input):
                if i == src:
                    n.input[k] = out
        del m.graph.node[idx]
    else:
        for n in m.graph.node:
            for k, i in enumerate(n.input):
                if i == out:
                    n.input[k] = src
        del m.graph.node[idx]
    m = prune(m)
    m, f = prune_inputs(m, list(feeds))
    return m, f


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--out", default="target/differential/seed-1")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--regressions", action="store_true", help="write the cases of regressions.py")
    ap.add_argument("--show", metavar="CASE", help="print a case's graph")
    ap.add_argument("--shrink", metavar="CASE", help="shrink a failing case")
    ap.add_argument("--backend", default="c", choices=["interp", "c", "cranelift"])
    ap.add_argument("--level", type=int, default=2, choices=[0, 1, 2])
    ap.add_argument("--kind", default="any", choices=["any", "mismatch", "error", "crash"])
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--kiln", help="the kiln binary (default: target/release/kiln, else target/debug/kiln)")
    args = ap.parse_args()
    if args.show:
        return cmd_show(args)
    if args.shrink:
        return cmd_shrink(args)
    if args.regressions:
        return cmd_regressions(args)
    return cmd_generate(args)


if __name__ == "__main__":
    sys.exit(main())
