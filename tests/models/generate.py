#!/usr/bin/env python3
"""Generate the small ONNX test models used by kiln's test suite.

Usage (from the repository root):

    .venv/bin/python tests/models/generate.py                 # (re)generate everything committed
    .venv/bin/python tests/models/generate.py --only resnet8_cifar
    .venv/bin/python tests/models/generate.py --mobilenetv2 /tmp/mnv2   # large, NOT committed

Everything is built with ``onnx.helper`` + numpy (scikit-learn only provides the
bundled 8x8 digits data set).  All randomness is seeded and all computations run
single-threaded, so running the script twice produces byte-identical files.

For every model ``tests/models/<name>/`` contains

* ``model.onnx``     - the model (static shapes, batch 1, float32, weights as initializers)
* ``input_0.npy``    - a seeded float32 input with the model's input shape
* ``output_0.npy``   - onnxruntime (CPUExecutionProvider) output for ``input_0``
* ``info.json``      - name, description, I/O names and shapes, opset, param count, ...
"""

import os

# Deterministic, single-threaded numeric libraries (must be set before numpy import).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

HERE = Path(__file__).resolve().parent
IR_VERSION = 8  # what torch.onnx exports for opset 13..17; supported by every onnxruntime
PRODUCER = "kiln-tests-generate"
F32 = np.float32


# --------------------------------------------------------------------------------------
# Graph building helpers
# --------------------------------------------------------------------------------------


class GraphBuilder:
    """Tiny helper that mimics the naming scheme of torch.onnx exports.

    Node names look like ``/layer1/conv/Conv``; their outputs ``/layer1/conv/Conv_output_0``;
    parameters ``layer1.conv.weight``.
    """

    def __init__(self):
        self.nodes = []
        self.inits = []
        self._init_names = set()
        self._node_names = Counter()

    # parameters -----------------------------------------------------------------------
    def param(self, name, arr):
        assert name not in self._init_names, name
        self._init_names.add(name)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    # nodes ----------------------------------------------------------------------------
    def op(self, op_type, inputs, module, outputs=None, n_out=1, **attrs):
        """Add a node. ``module`` is a dotted module path (``layer1.conv``) or ''."""
        base = "/" + "/".join(p for p in module.split(".") if p) if module else ""
        name = f"{base}/{op_type}"
        k = self._node_names[name]
        self._node_names[name] += 1
        if k:
            name = f"{name}_{k}"
        if outputs is None:
            outputs = [f"{name}_output_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=name, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def const(self, module, arr):
        """A ``Constant`` node (how torch.onnx exports scalars / shape constants)."""
        arr = np.asarray(arr)
        return self.op("Constant", [], module, value=numpy_helper.from_array(arr))

    # common layers ----------------------------------------------------------------------
    def conv(self, x, module, w, b=None, stride=1, pad=0, group=1, outputs=None):
        ins = [x, self.param(f"{module}.weight", w.astype(F32))]
        if b is not None:
            ins.append(self.param(f"{module}.bias", b.astype(F32)))
        kh, kw = w.shape[2:]
        ph, pw = (pad, pad) if np.isscalar(pad) else pad
        sh, sw = (stride, stride) if np.isscalar(stride) else stride
        return self.op(
            "Conv", ins, module, outputs=outputs,
            dilations=[1, 1], group=group, kernel_shape=[kh, kw],
            pads=[ph, pw, ph, pw], strides=[sh, sw],
        )

    def bn(self, x, module, p, eps=1e-5, momentum=0.9):
        gamma, beta, mean, var = p
        ins = [
            x,
            self.param(f"{module}.weight", gamma.astype(F32)),
            self.param(f"{module}.bias", beta.astype(F32)),
            self.param(f"{module}.running_mean", mean.astype(F32)),
            self.param(f"{module}.running_var", var.astype(F32)),
        ]
        return self.op("BatchNormalization", ins, module, epsilon=eps, momentum=momentum)

    def gemm(self, x, module, w_out_in, b, outputs=None):
        """torch.nn.Linear export: Gemm(x, W[out,in], b, transB=1)."""
        ins = [x, self.param(f"{module}.weight", w_out_in.astype(F32)), self.param(f"{module}.bias", b.astype(F32))]
        return self.op("Gemm", ins, module, outputs=outputs, alpha=1.0, beta=1.0, transB=1)

    def linear_matmul(self, x, module, w_in_out, b, outputs=None):
        """torch.nn.Linear export on N-D input: MatMul(x, W^T initializer) + Add(bias)."""
        wname = self.param(f"onnx::MatMul_{module}.weight_t", w_in_out.astype(F32))
        y = self.op("MatMul", [x, wname], module)
        return self.op("Add", [self.param(f"{module}.bias", b.astype(F32)), y], module, outputs=outputs)

    def relu(self, x, module, outputs=None):
        return self.op("Relu", [x], module, outputs=outputs)

    def relu6(self, x, module, lo, hi):
        return self.op("Clip", [x, lo, hi], module)

    # model -------------------------------------------------------------------------------
    def model(self, graph_name, inputs, outputs, opset, doc=""):
        g = helper.make_graph(
            self.nodes,
            graph_name,
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
            initializer=self.inits,
        )
        m = helper.make_model(
            g, opset_imports=[helper.make_opsetid("", opset)],
            producer_name=PRODUCER, producer_version="1", doc_string=doc,
        )
        m.ir_version = IR_VERSION
        return m


def he(rng, shape, fan_in, gain=2.0):
    return rng.normal(0.0, math.sqrt(gain / fan_in), size=shape).astype(F32)


def bn_init(rng, c):
    """gamma, beta, placeholder mean/var (mean/var are replaced by calibrate_bn)."""
    gamma = (1.0 + 0.15 * rng.standard_normal(c)).astype(F32)
    beta = (0.1 * rng.standard_normal(c)).astype(F32)
    return gamma, beta, np.zeros(c, F32), np.ones(c, F32)


# --------------------------------------------------------------------------------------
# onnxruntime helpers
# --------------------------------------------------------------------------------------


def make_session(model, quiet=False):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    if quiet:
        so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])


def with_batch(model, batch):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in list(m.graph.input) + list(m.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = batch
    return m


def calibrate_bn(model, calib_x, var_jitter_rng=None):
    """Give every BatchNormalization realistic running statistics (in place).

    BN layers are visited in topological order; for each one the graph is truncated
    just before it, run on ``calib_x`` (a batch, different from the test input), and
    the per-channel mean/var of the BN input become its running_mean/running_var.
    An optional small multiplicative jitter on the variance mimics train/test mismatch.
    """
    cal = with_batch(model, calib_x.shape[0])
    in_name = cal.graph.input[0].name
    idx = {t.name: i for i, t in enumerate(model.graph.initializer)}
    nodes = list(cal.graph.node)
    for k, n in enumerate(nodes):
        if n.op_type != "BatchNormalization":
            continue
        m = onnx.ModelProto()
        m.CopyFrom(cal)
        del m.graph.node[k:]
        del m.graph.output[:]
        m.graph.output.append(helper.make_tensor_value_info(n.input[0], TensorProto.FLOAT, None))
        used = {i for nd in m.graph.node for i in nd.input}
        keep = [t for t in m.graph.initializer if t.name in used]
        del m.graph.initializer[:]
        m.graph.initializer.extend(keep)
        x = make_session(m, quiet=True).run(None, {in_name: calib_x})[0].astype(np.float64)
        axes = (0,) + tuple(range(2, x.ndim))
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)
        if var_jitter_rng is not None:
            var = var * np.exp(0.1 * var_jitter_rng.standard_normal(var.shape))
        var = np.maximum(var, 1e-4)
        for name, val in ((n.input[3], mean), (n.input[4], var)):
            t = numpy_helper.from_array(val.astype(F32), name)
            cal.graph.initializer[idx[name]].CopyFrom(t)
            model.graph.initializer[idx[name]].CopyFrom(t)
    return model


def param_count(model):
    n = 0
    for t in model.graph.initializer:
        if t.data_type == TensorProto.FLOAT:
            n += int(np.prod(t.dims)) if len(t.dims) else 1
    return n


def dims(vi):
    return [d.dim_value for d in vi.type.tensor_type.shape.dim]


def unresolved_tensors(model):
    """Node outputs for which onnx shape inference cannot find a fully static shape."""
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    bad = []
    for n in inferred.graph.node:
        for o in n.output:
            vi = known.get(o)
            if vi is None or not vi.type.tensor_type.HasField("shape") or not all(
                d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim
            ):
                bad.append(o)
    return bad


def add_missing_value_info(model):
    """Record shapes that onnx shape inference cannot derive (e.g. Reshape fed by a
    Shape/Gather/Concat chain) as graph value_info, like torch.onnx.export does.
    The shapes come from actually running the model with onnxruntime."""
    bad = unresolved_tensors(model)
    if not bad:
        return model
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for o in bad:
        m.graph.output.append(helper.make_tensor_value_info(o, TensorProto.FLOAT, None))
    feeds = {vi.name: np.zeros(dims(vi), F32) for vi in model.graph.input}
    vals = make_session(m, quiet=True).run(bad, feeds)
    elem = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64}
    for o, v in zip(bad, vals):
        model.graph.value_info.append(helper.make_tensor_value_info(o, elem[v.dtype], list(v.shape)))
    return model


def check_model(model):
    onnx.checker.check_model(model, full_check=True)
    # every node output must get a fully static shape from onnx shape inference
    bad = unresolved_tensors(model)
    assert not bad, f"shape inference left non-static shapes: {bad}"


def write_model(out_dir, name, model, inputs, description, extra=None, log=print):
    """Check, save model + input/outputs + info.json. Returns the outputs."""
    t0 = time.time()
    add_missing_value_info(model)
    check_model(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(out_dir / "model.onnx"))

    feeds = {}
    for i, (vi, arr) in enumerate(zip(model.graph.input, inputs)):
        arr = np.ascontiguousarray(arr, dtype=F32)
        assert list(arr.shape) == dims(vi), (arr.shape, dims(vi))
        feeds[vi.name] = arr
        np.save(out_dir / f"input_{i}.npy", arr)

    sess = make_session(model)
    outs = sess.run(None, feeds)
    for i, (vi, o) in enumerate(zip(model.graph.output, outs)):
        assert o.dtype == F32 and list(o.shape) == dims(vi), (o.dtype, o.shape)
        assert np.all(np.isfinite(o)), f"{name}: non-finite output"
        assert np.ptp(o) > 1e-3, f"{name}: degenerate output (all ~equal)"
        np.save(out_dir / f"output_{i}.npy", o)

    info = {
        "name": name,
        "description": description,
        "opset": model.opset_import[0].version,
        "ir_version": model.ir_version,
        "inputs": [{"name": vi.name, "shape": dims(vi), "dtype": "float32"} for vi in model.graph.input],
        "outputs": [{"name": vi.name, "shape": dims(vi), "dtype": "float32"} for vi in model.graph.output],
        "param_count": param_count(model),
        "num_nodes": len(model.graph.node),
        "op_counts": dict(sorted(Counter(n.op_type for n in model.graph.node).items())),
        "reference": "onnxruntime %s CPUExecutionProvider, intra_op_num_threads=1, default graph optimizations"
        % ort.__version__,
    }
    if extra:
        info.update(extra)
    (out_dir / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    summary = ", ".join(f"{o.shape} [{o.min():.4g}, {o.max():.4g}]" for o in outs)
    log(f"  {name}: {info['param_count']} params, {len(model.graph.node)} nodes, out {summary} ({time.time() - t0:.1f}s)")
    return outs


# --------------------------------------------------------------------------------------
# Digits data + training (numpy, hand-written backprop)
# --------------------------------------------------------------------------------------


def digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(F32)  # pixel values 0..16 -> [0, 1]
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    rng = np.random.default_rng(2024)
    calib = xtr[np.sort(rng.choice(len(xtr), size=100, replace=False))]
    return xtr, ytr, xte, yte, calib


class Adam:
    def __init__(self, params, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, wd=0.0):
        self.p, self.lr, self.b1, self.b2, self.eps, self.wd = params, lr, b1, b2, eps, wd
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads, lr=None):
        lr = self.lr if lr is None else lr
        self.t += 1
        for p, g, m, v in zip(self.p, grads, self.m, self.v):
            if self.wd and p.ndim > 1:
                g = g + self.wd * p
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            mh = m / (1 - self.b1 ** self.t)
            vh = v / (1 - self.b2 ** self.t)
            p -= lr * mh / (np.sqrt(vh) + self.eps)


def softmax_xent_grad(logits, y):
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(len(y)), y] + 1e-12).mean()
    p[np.arange(len(y)), y] -= 1.0
    return loss, p / len(y)


def cosine_lr(base, epoch, epochs):
    return base * 0.5 * (1 + math.cos(math.pi * epoch / epochs))


def train_mlp(xtr, ytr, seed=0, epochs=120, batch=32, lr=3e-3, log=print):
    rng = np.random.default_rng(seed)
    sizes = [64, 64, 32, 10]
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        params += [rng.normal(0, math.sqrt(2.0 / a), (a, b)), np.zeros(b)]
    opt = Adam(params, lr=lr, wd=1e-4)
    x_all = xtr.astype(np.float64)
    for ep in range(epochs):
        perm = rng.permutation(len(x_all))
        lr_ep = cosine_lr(lr, ep, epochs)
        for s in range(0, len(perm), batch):
            idx = perm[s:s + batch]
            x, y = x_all[idx], ytr[idx]
            w1, b1, w2, b2, w3, b3 = params
            z1 = x @ w1 + b1
            h1 = np.maximum(z1, 0)
            z2 = h1 @ w2 + b2
            h2 = np.maximum(z2, 0)
            logits = h2 @ w3 + b3
            _, d = softmax_xent_grad(logits, y)
            gw3, gb3 = h2.T @ d, d.sum(0)
            d = (d @ w3.T) * (z2 > 0)
            gw2, gb2 = h1.T @ d, d.sum(0)
            d = (d @ w2.T) * (z1 > 0)
            gw1, gb1 = x.T @ d, d.sum(0)
            opt.step([gw1, gb1, gw2, gb2, gw3, gb3], lr=lr_ep)
    return [p.astype(F32) for p in params]


def mlp_forward(params, x):
    w1, b1, w2, b2, w3, b3 = [p.astype(np.float64) for p in params]
    h = np.maximum(x @ w1 + b1, 0)
    h = np.maximum(h @ w2 + b2, 0)
    return h @ w3 + b3


# --- CNN -------------------------------------------------------------------------------


def im2col3(x):
    """3x3, pad 1, stride 1. x [B,C,H,W] -> [B, C*9, H*W] (ordering c, kh, kw = ONNX weight order)."""
    b, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.empty((b, c, 3, 3, h, w), x.dtype)
    for i in range(3):
        for j in range(3):
            cols[:, :, i, j] = xp[:, :, i:i + h, j:j + w]
    return cols.reshape(b, c * 9, h * w)


def col2im3(dcols, shape):
    b, c, h, w = shape
    dcols = dcols.reshape(b, c, 3, 3, h, w)
    dxp = np.zeros((b, c, h + 2, w + 2), dcols.dtype)
    for i in range(3):
        for j in range(3):
            dxp[:, :, i:i + h, j:j + w] += dcols[:, :, i, j]
    return dxp[:, :, 1:-1, 1:-1]


def conv3_fwd(x, w, b=None):
    cols = im2col3(x)
    out = w.reshape(w.shape[0], -1) @ cols  # [B,O,HW]
    if b is not None:
        out = out + b[None, :, None]
    return out.reshape(x.shape[0], w.shape[0], x.shape[2], x.shape[3]), cols


def conv3_bwd(dout, cols, w, xshape):
    bsz, o = dout.shape[:2]
    d = dout.reshape(bsz, o, -1)
    dw = np.einsum("bon,bkn->ok", d, cols).reshape(w.shape)
    db = d.sum(axis=(0, 2))
    dx = col2im3(w.reshape(o, -1).T @ d, xshape)
    return dx, dw, db


CNN_C1, CNN_C2, BN_EPS = 8, 16, 1e-5


def train_cnn(xtr, ytr, seed=0, epochs=80, batch=32, lr=4e-3, log=print):
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, math.sqrt(2.0 / 9), (CNN_C1, 1, 3, 3))
    gamma, beta = np.ones(CNN_C1), np.zeros(CNN_C1)
    w2 = rng.normal(0, math.sqrt(2.0 / (9 * CNN_C1)), (CNN_C2, CNN_C1, 3, 3))
    b2 = np.zeros(CNN_C2)
    wf = rng.normal(0, math.sqrt(1.0 / CNN_C2), (10, CNN_C2))
    bf = np.zeros(10)
    params = [w1, gamma, beta, w2, b2, wf, bf]
    run_mean, run_var = np.zeros(CNN_C1), np.ones(CNN_C1)
    opt = Adam(params, lr=lr, wd=1e-4)
    x_all = xtr.astype(np.float64).reshape(-1, 1, 8, 8)
    for ep in range(epochs):
        perm = rng.permutation(len(x_all))
        lr_ep = cosine_lr(lr, ep, epochs)
        for s in range(0, len(perm), batch):
            idx = perm[s:s + batch]
            x, y = x_all[idx], ytr[idx]
            bsz = len(idx)
            # forward
            z1, cols1 = conv3_fwd(x, w1)
            mu = z1.mean(axis=(0, 2, 3))
            var = z1.var(axis=(0, 2, 3))
            std = np.sqrt(var + BN_EPS)
            xhat = (z1 - mu[None, :, None, None]) / std[None, :, None, None]
            ybn = gamma[None, :, None, None] * xhat + beta[None, :, None, None]
            a1 = np.maximum(ybn, 0)
            r = a1.reshape(bsz, CNN_C1, 4, 2, 4, 2)
            p1 = r.max(axis=(3, 5))
            z2, cols2 = conv3_fwd(p1, w2, b2)
            a2 = np.maximum(z2, 0)
            g = a2.mean(axis=(2, 3))
            logits = g @ wf.T + bf
            _, d = softmax_xent_grad(logits, y)
            # running stats (PyTorch convention: unbiased var, momentum 0.1)
            m = bsz * 64
            run_mean = 0.9 * run_mean + 0.1 * mu
            run_var = 0.9 * run_var + 0.1 * var * m / (m - 1)
            # backward
            gwf, gbf = d.T @ g, d.sum(0)
            dg = d @ wf
            da2 = np.broadcast_to(dg[:, :, None, None] / 16.0, a2.shape)
            dz2 = da2 * (z2 > 0)
            dp1, gw2, gb2 = conv3_bwd(dz2, cols2, w2, p1.shape)
            mask = r == p1[:, :, :, None, :, None]
            da1 = (mask * dp1[:, :, :, None, :, None]).reshape(a1.shape)
            dy = da1 * (ybn > 0)
            ggamma = (dy * xhat).sum(axis=(0, 2, 3))
            gbeta = dy.sum(axis=(0, 2, 3))
            dxhat = dy * gamma[None, :, None, None]
            dz1 = (
                m * dxhat
                - dxhat.sum(axis=(0, 2, 3), keepdims=True)
                - xhat * (dxhat * xhat).sum(axis=(0, 2, 3), keepdims=True)
            ) / (m * std[None, :, None, None])
            _, gw1, _ = conv3_bwd(dz1, cols1, w1, x.shape)
            opt.step([gw1, ggamma, gbeta, gw2, gb2, gwf, gbf], lr=lr_ep)
    return {
        "conv1.weight": w1, "bn1.weight": gamma, "bn1.bias": beta,
        "bn1.running_mean": run_mean, "bn1.running_var": run_var,
        "conv2.weight": w2, "conv2.bias": b2, "fc.weight": wf, "fc.bias": bf,
    }


def cnn_forward(p, x):
    """Eval-mode numpy reference of the exported CNN (float64)."""
    p = {k: v.astype(np.float64) for k, v in p.items()}
    x = x.astype(np.float64).reshape(-1, 1, 8, 8)
    z1, _ = conv3_fwd(x, p["conv1.weight"])
    c = lambda v: v[None, :, None, None]  # noqa: E731
    y = c(p["bn1.weight"]) * (z1 - c(p["bn1.running_mean"])) / np.sqrt(c(p["bn1.running_var"]) + BN_EPS) + c(p["bn1.bias"])
    a1 = np.maximum(y, 0)
    p1 = a1.reshape(len(x), CNN_C1, 4, 2, 4, 2).max(axis=(3, 5))
    z2, _ = conv3_fwd(p1, p["conv2.weight"], p["conv2.bias"])
    g = np.maximum(z2, 0).mean(axis=(2, 3))
    return g @ p["fc.weight"].T + p["fc.bias"]


def ort_accuracy(model, x, y, shape):
    sess = make_session(model)
    name = model.graph.input[0].name
    pred = np.array([sess.run(None, {name: xi.reshape(shape)})[0].argmax() for xi in x])
    return float((pred == y).mean())


# --------------------------------------------------------------------------------------
# Model builders
# --------------------------------------------------------------------------------------


def build_digits_mlp(params):
    w1, b1, w2, b2, w3, b3 = params
    g = GraphBuilder()
    h = g.relu(g.gemm("input", "fc1", w1.T, b1), "act1")
    h = g.relu(g.gemm(h, "fc2", w2.T, b2), "act2")
    g.gemm(h, "fc3", w3.T, b3, outputs=["output"])
    return g.model("digits_mlp", [("input", [1, 64])], [("output", [1, 10])], 13)


def build_digits_cnn(p):
    g = GraphBuilder()
    x = g.conv("input", "conv1", p["conv1.weight"], None, pad=1)
    x = g.bn(x, "bn1", (p["bn1.weight"], p["bn1.bias"], p["bn1.running_mean"], p["bn1.running_var"]), eps=BN_EPS)
    x = g.relu(x, "relu1")
    x = g.op("MaxPool", [x], "pool1", kernel_shape=[2, 2], pads=[0, 0, 0, 0], strides=[2, 2], ceil_mode=0)
    x = g.conv(x, "conv2", p["conv2.weight"], p["conv2.bias"], pad=1)
    x = g.relu(x, "relu2")
    x = g.op("GlobalAveragePool", [x], "gap")
    x = g.op("Flatten", [x], "", axis=1)
    g.gemm(x, "fc", p["fc.weight"], p["fc.bias"], outputs=["output"])
    return g.model("digits_cnn", [("input", [1, 1, 8, 8])], [("output", [1, 10])], 13)


def build_kws_dscnn(rng):
    """MLPerf Tiny keyword spotting DS-CNN (49x10 MFCC input, 12 classes)."""
    g = GraphBuilder()
    c = 64
    x = g.conv("input", "conv1", he(rng, (c, 1, 10, 4), 40), 0.05 * rng.standard_normal(c), stride=2, pad=(5, 1))
    x = g.bn(x, "bn1", bn_init(rng, c), eps=1e-3)
    x = g.relu(x, "relu1")
    for i in range(1, 5):
        m = f"block{i}"
        x = g.conv(x, f"{m}.dw", he(rng, (c, 1, 3, 3), 9), 0.05 * rng.standard_normal(c), pad=1, group=c)
        x = g.bn(x, f"{m}.dw_bn", bn_init(rng, c), eps=1e-3)
        x = g.relu(x, f"{m}.dw_relu")
        x = g.conv(x, f"{m}.pw", he(rng, (c, c, 1, 1), c), 0.05 * rng.standard_normal(c))
        x = g.bn(x, f"{m}.pw_bn", bn_init(rng, c), eps=1e-3)
        x = g.relu(x, f"{m}.pw_relu")
    x = g.op("AveragePool", [x], "avgpool", kernel_shape=[25, 5], pads=[0, 0, 0, 0], strides=[25, 5], ceil_mode=0)
    x = g.op("Flatten", [x], "", axis=1)
    x = g.gemm(x, "fc", he(rng, (12, c), c, gain=1.0), 0.1 * rng.standard_normal(12))
    g.op("Softmax", [x], "", outputs=["output"], axis=1)
    return g.model("kws_dscnn", [("input", [1, 1, 49, 10])], [("output", [1, 12])], 13)


def build_mobilenet_v1(rng, alpha=0.25, res=96, classes=2):
    g = GraphBuilder()
    lo = g.param("clip_min", np.array(0.0, F32))
    hi = g.param("clip_max", np.array(6.0, F32))

    def ch(n):
        return int(n * alpha)

    c = ch(32)
    x = g.conv("input", "features.0.conv", he(rng, (c, 3, 3, 3), 27), None, stride=2, pad=1)
    x = g.bn(x, "features.0.bn", bn_init(rng, c))
    x = g.relu6(x, "features.0.relu6", lo, hi)
    cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    for i, (out, s) in enumerate(cfg, start=1):
        m, o = f"features.{i}", ch(out)
        x = g.conv(x, f"{m}.dw", he(rng, (c, 1, 3, 3), 9), None, stride=s, pad=1, group=c)
        x = g.bn(x, f"{m}.dw_bn", bn_init(rng, c))
        x = g.relu6(x, f"{m}.dw_relu6", lo, hi)
        x = g.conv(x, f"{m}.pw", he(rng, (o, c, 1, 1), c), None)
        x = g.bn(x, f"{m}.pw_bn", bn_init(rng, o))
        x = g.relu6(x, f"{m}.pw_relu6", lo, hi)
        c = o
    x = g.op("GlobalAveragePool", [x], "avgpool")
    x = g.op("Flatten", [x], "", axis=1)
    x = g.gemm(x, "classifier", he(rng, (classes, c), c, gain=1.0), 0.1 * rng.standard_normal(classes))
    g.op("Softmax", [x], "", outputs=["output"], axis=1)
    return g.model("vww_mobilenet_v1_025", [("input", [1, 3, res, res])], [("output", [1, classes])], 13)


def build_resnet8(rng):
    """MLPerf Tiny image classification ResNet-8 (CIFAR-10), PyTorch-style padding."""
    g = GraphBuilder()

    def cbias(n):
        return 0.05 * rng.standard_normal(n)

    x = g.conv("input", "conv1", he(rng, (16, 3, 3, 3), 27), cbias(16), pad=1)
    x = g.bn(x, "bn1", bn_init(rng, 16))
    x = g.relu(x, "relu")
    cin = 16
    for i, (cout, s) in enumerate([(16, 1), (32, 2), (64, 2)], start=1):
        m = f"stack{i}"
        y = g.conv(x, f"{m}.conv1", he(rng, (cout, cin, 3, 3), 9 * cin), cbias(cout), stride=s, pad=1)
        y = g.bn(y, f"{m}.bn1", bn_init(rng, cout))
        y = g.relu(y, f"{m}.relu1")
        y = g.conv(y, f"{m}.conv2", he(rng, (cout, cout, 3, 3), 9 * cout), cbias(cout), pad=1)
        y = g.bn(y, f"{m}.bn2", bn_init(rng, cout))
        if s != 1 or cin != cout:
            x = g.conv(x, f"{m}.shortcut", he(rng, (cout, cin, 1, 1), cin, gain=1.0), cbias(cout), stride=s)
        x = g.op("Add", [x, y], m)
        x = g.relu(x, f"{m}.relu2")
        cin = cout
    x = g.op("AveragePool", [x], "avgpool", kernel_shape=[8, 8], pads=[0, 0, 0, 0], strides=[8, 8], ceil_mode=0)
    # x.view(x.size(0), -1) as torch.onnx exports it
    shape = g.op("Shape", [x], "")
    idx0 = g.const("", np.array(0, np.int64))
    n = g.op("Gather", [shape, idx0], "", axis=0)
    ax0 = g.const("", np.array([0], np.int64))
    n1 = g.op("Unsqueeze", [n, ax0], "")
    minus1 = g.const("", np.array([-1], np.int64))
    target = g.op("Concat", [n1, minus1], "", axis=0)
    x = g.op("Reshape", [x, target], "")
    x = g.gemm(x, "fc", he(rng, (10, 64), 64, gain=1.0), 0.1 * rng.standard_normal(10))
    g.op("Softmax", [x], "", outputs=["output"], axis=1)
    return g.model("resnet8_cifar", [("input", [1, 3, 32, 32])], [("output", [1, 10])], 13)


# Channels zeroed in resnet_zeroed, by layer: {channel: BatchNormalization beta}. A zeroed
# channel's convolution weights are all 0, so after BN it is the constant beta (its running mean
# is 0, measured by calibrate_bn), and after a Relu max(beta, 0). The comments say why each one
# can go exactly; ZEROED_KEPT lists the one that must stay.
ZEROED = {
    "stem": {2: -0.4, 11: -0.3},  # 0 after Relu; coupled with block1.conv2 through the Add
    "block1.conv1": {5: -0.5},  # 0 after Relu, read by a padded 3x3 conv (zero padding agrees)
    "block1.conv2": {2: -0.3, 11: 0.2},  # Add + Relu: channel 11 is the constant 0.2, read by 1x1 convs
    "block2.expand": {7: -0.2},  # 0 into a padded depthwise conv: its output is the dw BN's beta
    "block2.dw": {7: 0.1, 19: 0.4},  # constant after Relu, read by the 1x1 projection (bias folded)
    "block2.project": {4: 0.25},  # linear: the constant 0.25 goes through the Concat
    "side": {6: -0.1},  # 0 after Relu, the Concat's second input
    "block3.conv1": {13: -0.6},  # 0 after Relu
    "block3.conv2": {4: 0.15, 30: -0.2},  # coupled with the Concat's channels 4 and 24 + 6
}
# Zeroed but not removable: a constant 0.5 read by a padded 3x3 conv (its border taps read 0).
ZEROED_KEPT = {"block1.conv1": {8: 0.5}}


def build_resnet_zeroed(rng):
    """A small ResNet-style float model with whole output channels zeroed (ZEROED), as
    sparsity-aware training leaves them: residual Adds (one into a Concat's channels), a
    depthwise-separable block and a Concat; logits out. For exact (lossless) channel pruning."""
    g = GraphBuilder()

    def cbr(x, m, cin, cout, k, s=1, group=1, act=True):
        fan = (cin // group) * k * k
        w = he(rng, (cout, cin // group, k, k), fan, gain=2.0 if act else 1.0)
        gamma, beta, mean, var = bn_init(rng, cout)
        for table in (ZEROED, ZEROED_KEPT):
            for ch, b in table.get(m, {}).items():
                w[ch] = 0.0
                beta[ch] = b
        x = g.conv(x, f"{m}.conv", w, None, stride=s, pad=k // 2, group=group)
        x = g.bn(x, f"{m}.bn", (gamma, beta, mean, var))
        return g.relu(x, f"{m}.relu") if act else x

    x0 = cbr("input", "stem", 3, 16, 3)
    y = cbr(x0, "block1.conv1", 16, 16, 3)
    y = cbr(y, "block1.conv2", 16, 16, 3, act=False)
    x1 = g.relu(g.op("Add", [x0, y], "block1"), "block1.relu")
    y = cbr(x1, "block2.expand", 16, 32, 1)
    y = cbr(y, "block2.dw", 32, 32, 3, s=2, group=32)
    y = cbr(y, "block2.project", 32, 24, 1, act=False)
    side = cbr(x1, "side", 16, 8, 1, s=2)
    x2 = g.op("Concat", [y, side], "", axis=1)
    y = cbr(x2, "block3.conv1", 32, 32, 1)
    y = cbr(y, "block3.conv2", 32, 32, 1, act=False)
    x3 = g.relu(g.op("Add", [x2, y], "block3"), "block3.relu")
    x = g.op("GlobalAveragePool", [x3], "")
    x = g.op("Flatten", [x], "", axis=1)
    g.gemm(x, "fc", he(rng, (10, 32), 32, gain=1.0), 0.1 * rng.standard_normal(10), outputs=["output"])
    return g.model("resnet_zeroed", [("input", [1, 3, 16, 16])], [("output", [1, 10])], 13)


def build_ad_autoencoder(rng):
    """MLPerf Tiny anomaly detection (ToyADMOS) dense autoencoder."""
    g = GraphBuilder()
    sizes = [640, 128, 128, 128, 128, 8, 128, 128, 128, 128]
    x = "input"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        x = g.linear_matmul(x, f"fc{i}", he(rng, (a, b), a), 0.05 * rng.standard_normal(b))
        x = g.bn(x, f"bn{i}", bn_init(rng, b), eps=1e-3)
        x = g.relu(x, f"relu{i}")
    g.linear_matmul(x, "fc10", he(rng, (128, 640), 128, gain=1.0), 0.05 * rng.standard_normal(640), outputs=["output"])
    return g.model("ad_autoencoder", [("input", [1, 640])], [("output", [1, 640])], 13)


def build_transformer(rng, seq=16, d=32, heads=4, ffn=64, layers=2):
    """Post-norm transformer encoder (torch.nn.TransformerEncoderLayer-like, no dropout)."""
    g = GraphBuilder()
    dh = d // heads
    x = "input"

    def w(a, b):  # Xavier-ish, small variance
        return rng.normal(0, 1.0 / math.sqrt(a), (a, b)).astype(F32)

    def b(n):
        return (0.02 * rng.standard_normal(n)).astype(F32)

    def ln_params(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(F32), (0.05 * rng.standard_normal(n)).astype(F32)

    def layer_norm(x, m, fused):
        gamma, beta = ln_params(d)
        gn, bn = g.param(f"{m}.weight", gamma), g.param(f"{m}.bias", beta)
        if fused:
            return g.op("LayerNormalization", [x, gn, bn], m, axis=-1, epsilon=1e-5)
        mean = g.op("ReduceMean", [x], m, axes=[-1], keepdims=1)
        xc = g.op("Sub", [x, mean], m)
        sq = g.op("Pow", [xc, g.const(m, np.array(2.0, F32))], m)
        var = g.op("ReduceMean", [sq], m, axes=[-1], keepdims=1)
        ve = g.op("Add", [var, g.const(m, np.array(1e-5, F32))], m)
        std = g.op("Sqrt", [ve], m)
        y = g.op("Div", [xc, std], m)
        y = g.op("Mul", [y, gn], m)
        return g.op("Add", [y, bn], m)

    for li in range(layers):
        m = f"encoder.layers.{li}"
        a = f"{m}.self_attn"
        split_shape = g.const(a, np.array([1, seq, heads, dh], np.int64))
        q = g.op("Reshape", [g.linear_matmul(x, f"{a}.q_proj", w(d, d), b(d)), split_shape], f"{a}.q")
        k = g.op("Reshape", [g.linear_matmul(x, f"{a}.k_proj", w(d, d), b(d)), split_shape], f"{a}.k")
        v = g.op("Reshape", [g.linear_matmul(x, f"{a}.v_proj", w(d, d), b(d)), split_shape], f"{a}.v")
        q = g.op("Transpose", [q], f"{a}.q", perm=[0, 2, 1, 3])  # [1,H,S,dh]
        k = g.op("Transpose", [k], f"{a}.k", perm=[0, 2, 3, 1])  # [1,H,dh,S]
        v = g.op("Transpose", [v], f"{a}.v", perm=[0, 2, 1, 3])  # [1,H,S,dh]
        s = g.op("MatMul", [q, k], a)
        s = g.op("Div", [s, g.const(a, np.array(math.sqrt(dh), F32))], a)
        p = g.op("Softmax", [s], a, axis=-1)
        o = g.op("MatMul", [p, v], a)  # [1,H,S,dh]
        o = g.op("Transpose", [o], a, perm=[0, 2, 1, 3])
        o = g.op("Reshape", [o, g.const(a, np.array([1, seq, d], np.int64))], a)
        o = g.linear_matmul(o, f"{a}.out_proj", w(d, d), b(d))
        x = g.op("Add", [x, o], m)
        x = layer_norm(x, f"{m}.norm1", fused=(li == 0))
        h = g.linear_matmul(x, f"{m}.linear1", w(d, ffn), b(ffn))
        # GELU (exact), as torch.onnx exports it for opset < 20
        ge = f"{m}.activation"
        t = g.op("Div", [h, g.const(ge, np.array(math.sqrt(2.0), F32))], ge)
        t = g.op("Erf", [t], ge)
        t = g.op("Add", [t, g.const(ge, np.array(1.0, F32))], ge)
        t = g.op("Mul", [h, t], ge)
        h = g.op("Mul", [t, g.const(ge, np.array(0.5, F32))], ge)
        h = g.linear_matmul(h, f"{m}.linear2", w(ffn, d), b(d))
        x = g.op("Add", [x, h], m)
        x = layer_norm(x, f"{m}.norm2", fused=(li == 0))
    # the graph output is the last node's output, renamed to "output"
    assert g.nodes[-1].output[0] == x
    g.nodes[-1].output[0] = "output"
    return g.model("transformer_encoder_2l", [("input", [1, seq, d])], [("output", [1, seq, d])], 17)


def build_mobilenet_v2(rng, res=224, classes=1000):
    """torchvision mobilenet_v2 (width 1.0) structure with seeded random weights."""
    g = GraphBuilder()
    lo = g.param("clip_min", np.array(0.0, F32))
    hi = g.param("clip_max", np.array(6.0, F32))

    def cbr(x, m, cin, cout, k, s, group=1, act=True):
        fan = (cin // group) * k * k
        x = g.conv(x, f"{m}.0", he(rng, (cout, cin // group, k, k), fan), None, stride=s, pad=k // 2, group=group)
        x = g.bn(x, f"{m}.1", bn_init(rng, cout))
        return g.relu6(x, f"{m}.2", lo, hi) if act else x

    x = cbr("input", "features.0", 3, 32, 3, 2)
    cin, fi = 32, 1
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            stride = s if i == 0 else 1
            m = f"features.{fi}.conv"
            hidden = cin * t
            y = x
            j = 0
            if t != 1:
                y = cbr(y, f"{m}.{j}", cin, hidden, 1, 1)
                j += 1
            y = cbr(y, f"{m}.{j}", hidden, hidden, 3, stride, group=hidden)
            j += 1
            y = g.conv(y, f"{m}.{j}", he(rng, (c, hidden, 1, 1), hidden, gain=1.0), None)
            y = g.bn(y, f"{m}.{j + 1}", bn_init(rng, c))
            if stride == 1 and cin == c:
                y = g.op("Add", [x, y], f"features.{fi}")
            x, cin, fi = y, c, fi + 1
    x = cbr(x, f"features.{fi}", cin, 1280, 1, 1)
    x = g.op("GlobalAveragePool", [x], "")
    x = g.op("Flatten", [x], "", axis=1)
    g.gemm(x, "classifier.1", he(rng, (classes, 1280), 1280, gain=1.0), np.zeros(classes, F32), outputs=["output"])
    return g.model("mobilenet_v2", [("input", [1, 3, res, res])], [("output", [1, classes])], 13)


# --------------------------------------------------------------------------------------
# Drivers
# --------------------------------------------------------------------------------------


def gen_digits(root, log):
    xtr, ytr, xte, yte, calib = digits_split()
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    np.save(data / "digits_test_x.npy", np.ascontiguousarray(xte, F32))
    np.save(data / "digits_test_y.npy", np.ascontiguousarray(yte, np.int64))
    np.save(data / "digits_calib_x.npy", np.ascontiguousarray(calib, F32))
    split = {
        "dataset": "sklearn.datasets.load_digits (8x8 grayscale digits), pixels / 16 -> [0, 1]",
        "split": "train_test_split(test_size=0.25, random_state=0, stratify=y)",
        "train_samples": int(len(xtr)),
        "test_samples": int(len(xte)),
        "data_files": {
            "tests/models/data/digits_test_x.npy": "float32 [N,64] row-major 8x8 (reshape to [N,1,8,8] for digits_cnn)",
            "tests/models/data/digits_test_y.npy": "int64 [N] labels 0..9",
            "tests/models/data/digits_calib_x.npy": "float32 [100,64], 100 samples of the TRAIN split (calibration)",
        },
    }
    res = {}

    t0 = time.time()
    p = train_mlp(xtr, ytr, seed=0)
    model = build_digits_mlp(p)
    acc = ort_accuracy(model, xte, yte, (1, 64))
    np_acc = float((mlp_forward(p, xte).argmax(1) == yte).mean())
    tr_acc = float((mlp_forward(p, xtr).argmax(1) == ytr).mean())
    log(f"  digits_mlp trained in {time.time() - t0:.1f}s: test acc {acc:.4f} (numpy {np_acc:.4f}), train {tr_acc:.4f}")
    assert acc > 0.9
    write_model(
        root / "digits_mlp", "digits_mlp", model, [xte[:1].reshape(1, 64)],
        "MLP 64-64-32-10 (Gemm+Relu) trained with numpy Adam on sklearn 8x8 digits; outputs logits.",
        dict(split, test_accuracy=round(acc, 4), train_accuracy=round(tr_acc, 4),
             input_0="first sample of digits_test_x (label %d)" % int(yte[0])),
        log,
    )
    res["digits_mlp"] = acc

    t0 = time.time()
    p = train_cnn(xtr, ytr, seed=0)
    p = {k: v.astype(F32) for k, v in p.items()}
    model = build_digits_cnn(p)
    acc = ort_accuracy(model, xte, yte, (1, 1, 8, 8))
    ref = cnn_forward(p, xte)
    np_acc = float((ref.argmax(1) == yte).mean())
    tr_acc = float((cnn_forward(p, xtr).argmax(1) == ytr).mean())
    log(f"  digits_cnn trained in {time.time() - t0:.1f}s: test acc {acc:.4f} (numpy {np_acc:.4f}), train {tr_acc:.4f}")
    assert acc > 0.9
    outs = write_model(
        root / "digits_cnn", "digits_cnn", model, [xte[:1].reshape(1, 1, 8, 8)],
        "Small CNN trained with numpy on sklearn 8x8 digits: Conv3x3(8, no bias)-BatchNormalization-Relu-MaxPool2x2-"
        "Conv3x3(16)-Relu-GlobalAveragePool-Flatten-Gemm(10); outputs logits. BN left unfused "
        "(running stats from training).",
        dict(split, test_accuracy=round(acc, 4), train_accuracy=round(tr_acc, 4),
             input_0="first sample of digits_test_x reshaped to [1,1,8,8] (label %d)" % int(yte[0])),
        log,
    )
    diff = float(np.abs(outs[0] - ref[:1]).max())
    log(f"  digits_cnn: |onnxruntime - numpy reference| max = {diff:.2e}")
    assert diff < 1e-3
    res["digits_cnn"] = acc
    return res


def gen_random_models(root, log, only=None):
    specs = [
        ("kws_dscnn", 101, build_kws_dscnn, (1, 1, 49, 10), 4,
         "MLPerf Tiny keyword spotting DS-CNN: Conv 10x4 stride 2 pads (5,1) -> 64x25x5, + BN + Relu, 4x [depthwise 3x3 + BN + Relu, "
         "pointwise 1x1 + BN + Relu], AveragePool 25x5, Flatten, Gemm 12, Softmax. Seeded random weights, BN stats "
         "calibrated on a different random input."),
        ("vww_mobilenet_v1_025", 102, build_mobilenet_v1, (1, 3, 96, 96), 2,
         "MobileNetV1 alpha=0.25 (visual wake words), 96x96 RGB, 2 classes, Softmax. Seeded random weights, "
         "convs without bias, BN unfused, ReLU6 as Clip(x, clip_min=0, clip_max=6) with initializer inputs."),
        ("resnet8_cifar", 103, build_resnet8, (1, 3, 32, 32), 4,
         "MLPerf Tiny ResNet-8 (CIFAR-10): Conv3x3(16)+BN+Relu, 3 residual stacks (16/32/64, 1x1 conv shortcut "
         "when shape changes), AveragePool 8x8, PyTorch-style flatten (Shape/Gather/Unsqueeze/Concat/Reshape with "
         "Constant nodes), Gemm 10, Softmax. Seeded random weights."),
        ("ad_autoencoder", 104, build_ad_autoencoder, (1, 640), 64,
         "MLPerf Tiny anomaly detection dense autoencoder 640-128x4-8-128x4-640: MatMul+Add+BatchNormalization "
         "(on 2-D [N,C] tensors)+Relu, final MatMul+Add without activation. Seeded random weights."),
        ("transformer_encoder_2l", 105, build_transformer, (1, 16, 32), 0,
         "2-layer post-norm transformer encoder (seq 16, d_model 32, 4 heads, FFN 64, exact GELU via Erf). "
         "Attention written out with MatMul/Reshape/Transpose/Div/Softmax. Layer 0 uses the opset-17 "
         "LayerNormalization op, layer 1 the decomposed form (ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add). "
         "Scalars and reshape targets are Constant nodes."),
    ]
    for name, seed, builder, shape, calib_batch, desc in specs:
        if only and name not in only:
            continue
        rng = np.random.default_rng(seed)
        model = builder(rng)
        extra = {"weights": f"seeded random (numpy default_rng({seed}))"}
        if calib_batch:
            calib = np.random.default_rng(seed + 1000).standard_normal((calib_batch,) + shape[1:]).astype(F32)
            calibrate_bn(model, calib, np.random.default_rng(seed + 2000))
            extra["bn_stats"] = f"calibrated on default_rng({seed + 1000}).standard_normal batch of {calib_batch}"
        x = np.random.default_rng(seed + 3000).standard_normal(shape).astype(F32)
        extra["input_0"] = f"default_rng({seed + 3000}).standard_normal({list(shape)}) as float32"
        write_model(root / name, name, model, [x], desc, extra, log)


def gen_resnet_zeroed(root, log):
    """pruning/resnet_zeroed: outside the float-model directory walk (like quantized/), for the
    pruning tests."""
    seed = 106
    rng = np.random.default_rng(seed)
    model = build_resnet_zeroed(rng)
    calib = np.random.default_rng(seed + 1000).standard_normal((4, 3, 16, 16)).astype(F32)
    calibrate_bn(model, calib, np.random.default_rng(seed + 2000))
    x = np.random.default_rng(seed + 3000).standard_normal((1, 3, 16, 16)).astype(F32)
    zeroed = {m: sorted(c) for m, c in ZEROED.items()}
    kept = {m: sorted(c) for m, c in ZEROED_KEPT.items()}
    write_model(
        root / "pruning" / "resnet_zeroed", "resnet_zeroed", model, [x],
        "ResNet-style model with zeroed output channels (all conv weights of the channel 0, BN beta "
        "making it 0 or a constant): stem Conv3x3(16)+BN+Relu, a basic residual block (Add), a "
        "depthwise-separable block (1x1 expand 32, depthwise 3x3 stride 2, 1x1 project 24) "
        "concatenated with a 1x1 stride-2 side branch (8), a 1x1 residual block over the Concat, "
        "GlobalAveragePool, Flatten, Gemm 10 (logits). Seeded random weights.",
        {"weights": f"seeded random (numpy default_rng({seed}))",
         "bn_stats": f"calibrated on default_rng({seed + 1000}).standard_normal batch of 4",
         "zeroed_channels": zeroed,
         "zeroed_channels_kept": kept,
         "zeroed_channels_kept_why": "a constant 0.5 read by a padded 3x3 conv: the border taps read 0, not 0.5",
         "input_0": f"default_rng({seed + 3000}).standard_normal([1, 3, 16, 16]) as float32"},
        log,
    )


def gen_mobilenet_v2(out_dir, log):
    t0 = time.time()
    seed = 200
    model = build_mobilenet_v2(np.random.default_rng(seed))
    calib = np.random.default_rng(seed + 1000).standard_normal((1, 3, 224, 224)).astype(F32)
    calibrate_bn(model, calib, np.random.default_rng(seed + 2000))
    x = np.random.default_rng(seed + 3000).standard_normal((1, 3, 224, 224)).astype(F32)
    write_model(
        out_dir, "mobilenet_v2", model, [x],
        "torchvision-style MobileNetV2 1.0 224x224, 1000 classes (logits), seeded random weights, BN unfused, "
        "ReLU6 as Clip, residual Adds. Generated on demand, not committed.",
        {"weights": f"seeded random (numpy default_rng({seed}))",
         "input_0": f"default_rng({seed + 3000}).standard_normal([1, 3, 224, 224]) as float32"},
        log,
    )
    log(f"  mobilenet_v2 total {time.time() - t0:.1f}s")


def gen_digits_cnn_qdq(root, log):
    """digits_cnn quantized by onnxruntime.quantization.quantize_static (QDQ, int8, per-channel
    weights, MinMax on the calibration split), in quantized/ so the float-model tests skip it."""
    from onnxruntime.quantization import (
        CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static,
    )

    xtr, ytr, xte, yte, calib = digits_split()

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": c.reshape(1, 1, 8, 8).astype(F32)} for c in calib])

        def get_next(self):
            return next(self.it, None)

    src = root / "digits_cnn" / "model.onnx"
    out_dir = root / "quantized" / "digits_cnn_qdq"
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "model.onnx"
    # onnxruntime's recommended pre-processing first: shape inference and graph optimization
    # (BatchNormalization folded into the convolution).
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out_dir / "pre.onnx"
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    quantize_static(
        str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    pre.unlink()
    model = onnx.load(str(tmp))
    acc = ort_accuracy(model, xte, yte, (1, 1, 8, 8))
    log(f"  digits_cnn_qdq: onnxruntime int8 test acc {acc:.4f}")
    write_model(
        out_dir, "digits_cnn_qdq", model, [xte[:1].reshape(1, 1, 8, 8)],
        "digits_cnn quantized by onnxruntime.quantization.quantize_static: QDQ format, int8 activations "
        "(asymmetric, MinMax over digits_calib_x), int8 weights per output channel, int32 biases.",
        {"test_accuracy": round(acc, 4), "quantized_from": "tests/models/digits_cnn/model.onnx",
         "input_0": "first sample of digits_test_x reshaped to [1,1,8,8] (label %d)" % int(yte[0])},
        log,
    )
    return acc


ALL = ["digits_mlp", "digits_cnn", "kws_dscnn", "vww_mobilenet_v1_025", "resnet8_cifar", "ad_autoencoder",
       "transformer_encoder_2l", "digits_cnn_qdq", "resnet_zeroed"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE, help="output root (default: tests/models)")
    ap.add_argument("--only", nargs="+", choices=ALL, help="only (re)generate these models")
    ap.add_argument("--mobilenetv2", type=Path, metavar="OUT_DIR",
                    help="instead: write a MobileNetV2 (large, not committed) into OUT_DIR")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    log = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **k, flush=True))

    if args.mobilenetv2 is not None:
        gen_mobilenet_v2(args.mobilenetv2, log)
        return 0
    t0 = time.time()
    if not args.only or {"digits_mlp", "digits_cnn"} & set(args.only):
        gen_digits(args.out, log)
    gen_random_models(args.out, log, args.only)
    if not args.only or "digits_cnn_qdq" in args.only:
        gen_digits_cnn_qdq(args.out, log)
    if not args.only or "resnet_zeroed" in args.only:
        gen_resnet_zeroed(args.out, log)
    log(f"done in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
