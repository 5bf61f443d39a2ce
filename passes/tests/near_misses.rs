//! Near misses of every rewrite: graphs that almost match a pass's pattern (an intermediate
//! value with an extra reader, an intermediate that is also a graph output, another op in one
//! slot). Each is run through its pass and through the whole pipeline at -O1 and -O2; the graph
//! must verify and give the interpreter's outputs before and after, and the assertions say what
//! must (not) have been rewritten. The two regressions of issue 16 (BatchNormalization after a
//! one-input op; fuse-layernorm deleting a Sub that is still read) are here.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use common::*;

use kiln_ir::op::PadMode;
use kiln_ir::{Activation, Graph, Op, Tensor, ValueId};
use kiln_passes::{optimize, OptLevel, Pass, PassOptions};

fn conv3x3(group: usize) -> Op {
    Op::Conv {
        kernel_shape: vec![3, 3],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        group,
        activation: Activation::None,
    }
}

/// Inputs for `g`: deterministic ramps, shifted by `offset` (so statistics can be badly
/// conditioned where a test wants it).
fn inputs_of(g: &Graph) -> Vec<Tensor> {
    g.inputs()
        .iter()
        .enumerate()
        .map(|(i, &v)| ramp(&g.value(v).ty.shape, 100 + i as u32))
        .collect()
}

fn assert_same(got: &[Tensor], want: &[Tensor], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: output count");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert_eq!(a.ty(), b.ty(), "{what}: output {i} type");
        for (x, y) in a.as_f32().unwrap().iter().zip(b.as_f32().unwrap()) {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "{what}: output {i}: {x} vs {y}"
            );
        }
    }
}

/// Runs `pass` alone to a fixed point, then the whole pipeline at -O1 and -O2, each on a fresh
/// copy of `g`: every result verifies and computes what `g` computes. Returns the graph after
/// `pass` and after -O2.
fn check(pass: &dyn Pass, g: &Graph) -> (Graph, Graph) {
    kiln_ir::verify::verify(g).unwrap();
    let inputs = inputs_of(g);
    let want = kiln_ir::interp::run(g, &inputs).unwrap();
    let mut alone = g.clone();
    for _ in 0..8 {
        let changed = pass.run(&mut alone).unwrap();
        kiln_ir::verify::verify(&alone)
            .unwrap_or_else(|e| panic!("{} broke the graph: {e}", pass.name()));
        if !changed {
            break;
        }
    }
    let got = kiln_ir::interp::run(&alone, &inputs).unwrap();
    assert_same(&got, &want, pass.name());
    let mut at_o2 = g.clone();
    for level in [OptLevel::O1, OptLevel::O2] {
        let mut opt = g.clone();
        let options = PassOptions {
            level,
            ..Default::default()
        };
        optimize(&mut opt, &options).unwrap_or_else(|e| panic!("{level:?}: {e}"));
        let got = kiln_ir::interp::run(&opt, &inputs).unwrap();
        assert_same(&got, &want, &format!("{level:?}"));
        at_o2 = opt;
    }
    (alone, at_o2)
}

fn bn_params(g: &mut Graph, name: &str, c: usize, seed: u32) -> Vec<ValueId> {
    let scale = konst(g, &format!("{name}.scale"), &[c], seed);
    let bias = konst(g, &format!("{name}.bias"), &[c], seed + 1);
    let mean = konst(g, &format!("{name}.mean"), &[c], seed + 2);
    let var: Vec<f32> = (0..c).map(|i| 0.5 + i as f32).collect();
    let var = g.add_const(
        format!("{name}.var"),
        Tensor::from_f32(vec![c], var).unwrap(),
    );
    vec![scale, bias, mean, var]
}

fn batchnorm(g: &mut Graph, name: &str, x: ValueId, c: usize) -> ValueId {
    let mut inputs = vec![x];
    inputs.extend(bn_params(g, name, c, 7));
    node(g, name, Op::BatchNormalization { epsilon: 1e-5 }, inputs)
}

/// Issue 16, bug 1: a BatchNormalization after a one-input op (the Keras pattern of BN after
/// the activation) made fold-batchnorm index the producer's missing weights input.
#[test]
fn batchnorm_after_one_input_ops() {
    let producers: Vec<(&str, Op)> = vec![
        ("relu", Op::Relu),
        (
            "softmax",
            Op::Softmax {
                axis: 1,
                coerce_2d: false,
            },
        ),
        (
            "avgpool",
            Op::AveragePool {
                kernel_shape: vec![3, 3],
                strides: vec![1, 1],
                dilations: vec![1, 1],
                pads: vec![1, 1, 1, 1],
                ceil_mode: false,
                count_include_pad: false,
            },
        ),
        (
            "reshape",
            Op::Reshape {
                shape: vec![1, 3, 4, 4],
            },
        ),
    ];
    for (name, op) in producers {
        let mut g = Graph::new(format!("bn_after_{name}"));
        let x = g.add_input("x", f32_ty(&[1, 3, 4, 4]));
        let p = node(&mut g, name, op, vec![x]);
        let y = batchnorm(&mut g, "bn", p, 3);
        g.set_outputs(vec![y]);
        let (alone, _) = check(&kiln_passes::fold_batchnorm::FoldBatchNorm, &g);
        // Nothing to fold into: the BN became a per-channel Mul + Add.
        assert_eq!(count(&alone, "BatchNormalization"), 0, "{name}");
        assert_eq!(count(&alone, "Mul"), 1, "{name}");
    }
    // Flatten then a BN over the features (rank 2).
    let mut g = Graph::new("bn_after_flatten");
    let x = g.add_input("x", f32_ty(&[2, 3, 2, 2]));
    let f = node(
        &mut g,
        "flatten",
        Op::Reshape { shape: vec![2, 12] },
        vec![x],
    );
    let y = batchnorm(&mut g, "bn", f, 12);
    g.set_outputs(vec![y]);
    check(&kiln_passes::fold_batchnorm::FoldBatchNorm, &g);
}

/// A Conv whose result is read by the BN and by something else, or is a graph output, keeps
/// its weights: the BN becomes Mul + Add instead of rescaling what the other reader sees.
#[test]
fn batchnorm_near_misses() {
    for as_output in [false, true] {
        let mut g = Graph::new("bn_conv_fanout");
        let x = g.add_input("x", f32_ty(&[1, 2, 5, 5]));
        let w = konst(&mut g, "w", &[3, 2, 3, 3], 4);
        let c = node(&mut g, "conv", conv3x3(1), vec![x, w]);
        let y = batchnorm(&mut g, "bn", c, 3);
        if as_output {
            g.set_outputs(vec![y, c]);
        } else {
            let r = node(&mut g, "other", Op::Neg, vec![c]);
            g.set_outputs(vec![y, r]);
        }
        let (alone, _) = check(&kiln_passes::fold_batchnorm::FoldBatchNorm, &g);
        assert_eq!(count(&alone, "Mul"), 1, "as_output={as_output}");
    }
}

/// The decomposed LayerNorm with `d = Sub(x, mean)` and `mean = ReduceMean(x)`.
struct LayerNormChain {
    g: Graph,
    mean: ValueId,
    d: ValueId,
    s: ValueId,
    n: ValueId,
    y: ValueId,
}

fn layernorm_chain() -> LayerNormChain {
    let mut g = Graph::new("layernorm");
    let x = g.add_input("x", f32_ty(&[2, 3, 8]));
    let reduce = Op::ReduceMean {
        axes: vec![2],
        keepdims: true,
    };
    let mean = node(&mut g, "mean", reduce.clone(), vec![x]);
    let d = node(&mut g, "sub", Op::Sub, vec![x, mean]);
    let two = scalar(&mut g, "two", 2.0);
    let sq = node(&mut g, "pow", Op::Pow, vec![d, two]);
    let v = node(&mut g, "var", reduce, vec![sq]);
    let eps = scalar(&mut g, "eps", 1e-5);
    let ve = node(&mut g, "add_eps", ADD, vec![v, eps]);
    let s = node(&mut g, "sqrt", Op::Sqrt, vec![ve]);
    let n = node(&mut g, "div", Op::Div, vec![d, s]);
    let gamma = konst(&mut g, "gamma", &[8], 1);
    let beta = konst(&mut g, "beta", &[8], 2);
    let y0 = node(&mut g, "mul_gamma", Op::Mul, vec![n, gamma]);
    let y = node(&mut g, "add_beta", ADD, vec![y0, beta]);
    LayerNormChain {
        g,
        mean,
        d,
        s,
        n,
        y,
    }
}

/// Issue 16, bug 2: `d` read by one more node (`Neg(d)` added to the LayerNorm's output). The
/// pass removed the Sub anyway, leaving `Neg` reading an undefined value.
#[test]
fn layernorm_with_extra_reader_of_d() {
    let LayerNormChain { mut g, d, y, .. } = layernorm_chain();
    let neg = node(&mut g, "neg", Op::Neg, vec![d]);
    let out = node(&mut g, "sum", ADD, vec![y, neg]);
    g.set_outputs(vec![out]);
    let (alone, o2) = check(&kiln_passes::fuse_layernorm::FuseLayerNorm, &g);
    assert_eq!(count(&alone, "LayerNormalization"), 0);
    assert_eq!(count(&o2, "Sub"), 1);
}

/// Every other intermediate of the chain, read once more or made a graph output: never fused,
/// always correct.
#[test]
fn layernorm_near_misses() {
    for pick in 0..3 {
        for as_output in [false, true] {
            let chain = layernorm_chain();
            let mut g = chain.g;
            let inner = [chain.mean, chain.s, chain.n][pick];
            if as_output {
                g.set_outputs(vec![chain.y, inner]);
            } else {
                let extra = node(&mut g, "extra", Op::Neg, vec![inner]);
                g.set_outputs(vec![chain.y, extra]);
            }
            let what = format!("value {pick}, as_output={as_output}");
            let (alone, _) = check(&kiln_passes::fuse_layernorm::FuseLayerNorm, &g);
            if pick == 2 {
                // `n` read again: the chain up to `n` fuses, gamma and beta stay outside.
                assert_eq!(count(&alone, "LayerNormalization"), 1, "{what}");
                assert_eq!(count(&alone, "Mul"), 1, "{what}");
            } else {
                assert_eq!(count(&alone, "LayerNormalization"), 0, "{what}");
            }
        }
    }
    // `Mul(d, d)` as the square reads `d` twice and still matches.
    let mut g = Graph::new("layernorm_mul_square");
    let x = g.add_input("x", f32_ty(&[4, 6]));
    let reduce = Op::ReduceMean {
        axes: vec![1],
        keepdims: true,
    };
    let mean = node(&mut g, "mean", reduce.clone(), vec![x]);
    let d = node(&mut g, "sub", Op::Sub, vec![x, mean]);
    let sq = node(&mut g, "square", Op::Mul, vec![d, d]);
    let v = node(&mut g, "var", reduce, vec![sq]);
    let eps = scalar(&mut g, "eps", 1e-5);
    let ve = node(&mut g, "add_eps", ADD, vec![v, eps]);
    let s = node(&mut g, "sqrt", Op::Sqrt, vec![ve]);
    let y = node(&mut g, "div", Op::Div, vec![d, s]);
    g.set_outputs(vec![y]);
    let (alone, _) = check(&kiln_passes::fuse_layernorm::FuseLayerNorm, &g);
    assert_eq!(alone.node_count(), 1);
}

/// GELU (erf form) with an inner value read again or made a graph output.
#[test]
fn gelu_near_misses() {
    for pick in 0..3 {
        for as_output in [false, true] {
            let mut g = Graph::new("gelu");
            let x = g.add_input("x", f32_ty(&[2, 8]));
            let sqrt2 = scalar(&mut g, "sqrt2", std::f32::consts::SQRT_2);
            let t = node(&mut g, "div", Op::Div, vec![x, sqrt2]);
            let e = node(&mut g, "erf", Op::Erf, vec![t]);
            let one = scalar(&mut g, "one", 1.0);
            let a = node(&mut g, "add_one", ADD, vec![e, one]);
            let m = node(&mut g, "mul_x", Op::Mul, vec![x, a]);
            let half = scalar(&mut g, "half", 0.5);
            let y = node(&mut g, "mul_half", Op::Mul, vec![m, half]);
            let inner = [t, e, m][pick];
            if as_output {
                g.set_outputs(vec![y, inner]);
            } else {
                let extra = node(&mut g, "extra", Op::Neg, vec![inner]);
                g.set_outputs(vec![y, extra]);
            }
            let what = format!("value {pick}, as_output={as_output}");
            let pass = kiln_passes::fuse_gelu::FuseGelu;
            let (alone, _) = check(&pass, &g);
            assert_eq!(count(&alone, "Gelu"), 0, "{what}");
        }
    }
}

/// MatMul + Add where the MatMul's result is read again or is a graph output.
#[test]
fn matmul_add_near_misses() {
    for as_output in [false, true] {
        let mut g = Graph::new("matmul_add");
        let x = g.add_input("x", f32_ty(&[2, 4]));
        let w = konst(&mut g, "w", &[4, 3], 1);
        let b = konst(&mut g, "b", &[3], 2);
        let m = node(&mut g, "matmul", MATMUL, vec![x, w]);
        let y = node(&mut g, "add", ADD, vec![m, b]);
        if as_output {
            g.set_outputs(vec![y, m]);
        } else {
            let extra = node(&mut g, "extra", Op::Neg, vec![m]);
            g.set_outputs(vec![y, extra]);
        }
        let (alone, _) = check(&kiln_passes::matmul_add::MatMulAddToGemm, &g);
        assert_eq!(count(&alone, "Gemm"), 0, "as_output={as_output}");
    }
    // Add(m, m): one node reading the MatMul twice is not a bias add.
    let mut g = Graph::new("matmul_add_self");
    let x = g.add_input("x", f32_ty(&[2, 4]));
    let w = konst(&mut g, "w", &[4, 3], 1);
    let m = node(&mut g, "matmul", MATMUL, vec![x, w]);
    let y = node(&mut g, "add", ADD, vec![m, m]);
    g.set_outputs(vec![y]);
    let (alone, _) = check(&kiln_passes::matmul_add::MatMulAddToGemm, &g);
    assert_eq!(count(&alone, "Gemm"), 0);
}

/// A zero Pad before a Conv whose padded result is read again or is a graph output, and a Pad
/// with a non-zero value.
#[test]
fn fold_pad_near_misses() {
    let pad = |value: f64| Op::Pad {
        pads: vec![0, 0, 1, 1, 0, 0, 1, 1],
        mode: PadMode::Constant,
        value,
    };
    for case in 0..3 {
        let mut g = Graph::new("fold_pad");
        let x = g.add_input("x", f32_ty(&[1, 2, 4, 4]));
        let p = node(
            &mut g,
            "pad",
            pad(if case == 2 { 0.5 } else { 0.0 }),
            vec![x],
        );
        let w = konst(&mut g, "w", &[2, 2, 3, 3], 1);
        let valid = Op::Conv {
            kernel_shape: vec![3, 3],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![0, 0, 0, 0],
            group: 1,
            activation: Activation::None,
        };
        let y = node(&mut g, "conv", valid, vec![p, w]);
        match case {
            0 => g.set_outputs(vec![y, p]),
            1 => {
                let extra = node(&mut g, "extra", Op::Neg, vec![p]);
                g.set_outputs(vec![y, extra]);
            }
            _ => g.set_outputs(vec![y]),
        }
        let (alone, _) = check(&kiln_passes::fold_pad::FoldPad, &g);
        assert_eq!(count(&alone, "Pad"), 1, "case {case}");
    }
}

/// An activation after a Conv whose result is also a graph output; a Relu after a one-input
/// op (nothing to fuse into).
#[test]
fn fuse_activation_near_misses() {
    let mut g = Graph::new("fuse_activation");
    let x = g.add_input("x", f32_ty(&[1, 2, 4, 4]));
    let w = konst(&mut g, "w", &[2, 2, 3, 3], 1);
    let c = node(&mut g, "conv", conv3x3(1), vec![x, w]);
    let r = node(&mut g, "relu", Op::Relu, vec![c]);
    let s = node(&mut g, "sigmoid", Op::Sigmoid, vec![x]);
    let t = node(&mut g, "tanh", Op::Tanh, vec![s]);
    g.set_outputs(vec![r, c, t]);
    let (alone, _) = check(&kiln_passes::fuse_activation::FuseActivation, &g);
    assert_eq!(count(&alone, "Relu") + count(&alone, "Tanh"), 2);
}

/// Transposes whose result is read twice or is a graph output are not sunk or merged away,
/// and an inverse pair whose inner result is a graph output keeps that output.
#[test]
fn transpose_near_misses() {
    let to_nhwc = || Op::Transpose {
        perm: vec![0, 2, 3, 1],
    };
    let to_nchw = || Op::Transpose {
        perm: vec![0, 3, 1, 2],
    };
    for case in 0..3 {
        let mut g = Graph::new("transpose");
        let x = g.add_input("x", f32_ty(&[1, 3, 4, 5]));
        let t = node(&mut g, "to_nhwc", to_nhwc(), vec![x]);
        let r = node(&mut g, "relu", Op::Relu, vec![t]);
        let y = node(&mut g, "to_nchw", to_nchw(), vec![r]);
        match case {
            0 => g.set_outputs(vec![y, t]),
            1 => {
                let extra = node(&mut g, "extra", Op::Neg, vec![t]);
                g.set_outputs(vec![y, extra]);
            }
            _ => g.set_outputs(vec![y, r]),
        }
        check(&kiln_passes::transpose::TransposeCleanup, &g);
    }
}

/// Identity whose input is a graph input and whose output is a graph output cannot go; one in
/// the middle of a chain whose output is also a graph output can.
#[test]
fn identity_near_misses() {
    let mut g = Graph::new("identity");
    let x = g.add_input("x", f32_ty(&[4]));
    let i0 = node(&mut g, "id_of_input", Op::Identity, vec![x]);
    let r = node(&mut g, "relu", Op::Relu, vec![x]);
    let i1 = node(&mut g, "id_mid", Op::Identity, vec![r]);
    let n = node(&mut g, "neg", Op::Neg, vec![i1]);
    g.set_outputs(vec![i0, i1, n]);
    let (alone, _) = check(&kiln_passes::remove_identity::RemoveIdentity, &g);
    assert_eq!(count(&alone, "Identity"), 1);
}

/// The shared removal check: a node whose result is still read cannot be removed, and nothing
/// changes when it refuses.
#[test]
fn removal_refuses_values_still_read() {
    let LayerNormChain { mut g, d, y, .. } = layernorm_chain();
    let neg = node(&mut g, "neg", Op::Neg, vec![d]);
    g.set_outputs(vec![y, neg]);
    let sub = g
        .node_ids()
        .into_iter()
        .find(|&n| g.node(n).name == "sub")
        .unwrap();
    let before = kiln_ir::dump::to_text(&g);
    let err = g.remove_node(sub).unwrap_err().to_string();
    assert!(err.contains("node 'sub' (Sub)"), "{err}");
    assert!(err.contains("still read by node 'pow'"), "{err}");
    assert_eq!(kiln_ir::dump::to_text(&g), before);
}

/// The scale-and-shift LayerNorm with `inv` read once more, or `mean * inv` a graph output:
/// not fused, still correct.
#[test]
fn scale_shift_layernorm_near_misses() {
    for case in 0..2 {
        let mut g = Graph::new("layernorm_tf");
        let x = g.add_input("x", f32_ty(&[2, 8]));
        let reduce = Op::ReduceMean {
            axes: vec![1],
            keepdims: true,
        };
        let m = node(&mut g, "mean", reduce.clone(), vec![x]);
        let d = node(&mut g, "sub", Op::Sub, vec![x, m]);
        let sq = node(&mut g, "square", Op::Mul, vec![d, d]);
        let v = node(&mut g, "variance", reduce, vec![sq]);
        let eps = scalar(&mut g, "eps", 1e-3);
        let ve = node(&mut g, "add_eps", ADD, vec![v, eps]);
        let s = node(&mut g, "sqrt", Op::Sqrt, vec![ve]);
        let inv = node(&mut g, "rsqrt", Op::Reciprocal, vec![s]);
        let xs = node(&mut g, "mul_x", Op::Mul, vec![x, inv]);
        let ms = node(&mut g, "mul_mean", Op::Mul, vec![m, inv]);
        let y = node(&mut g, "sub_mean", Op::Sub, vec![xs, ms]);
        if case == 0 {
            let extra = node(&mut g, "extra", Op::Neg, vec![inv]);
            g.set_outputs(vec![y, extra]);
        } else {
            g.set_outputs(vec![y, ms]);
        }
        let (alone, _) = check(&kiln_passes::fuse_layernorm::FuseLayerNorm, &g);
        assert_eq!(count(&alone, "LayerNormalization"), 0, "case {case}");
    }
}

/// A batched MatMul whose result is read again, or whose bias varies along M: no Gemm.
#[test]
fn batched_matmul_add_near_misses() {
    for case in 0..2 {
        let mut g = Graph::new("batched_matmul_add");
        let x = g.add_input("x", f32_ty(&[2, 5, 4]));
        let w = konst(&mut g, "w", &[4, 3], 1);
        let m = node(&mut g, "matmul", MATMUL, vec![x, w]);
        let b = if case == 0 {
            konst(&mut g, "b", &[3], 2)
        } else {
            konst(&mut g, "b", &[5, 3], 2)
        };
        let y = node(&mut g, "add", ADD, vec![m, b]);
        if case == 0 {
            g.set_outputs(vec![y, m]);
        } else {
            g.set_outputs(vec![y]);
        }
        let (alone, _) = check(&kiln_passes::matmul_add::MatMulAddToGemm, &g);
        assert_eq!(count(&alone, "Gemm"), 0, "case {case}");
    }
}

/// A Transpose read by a batched MatMul and by another node stays (the MatMul still reads it
/// directly).
#[test]
fn batched_matmul_transpose_near_miss() {
    let mut g = Graph::new("transpose_fanout");
    let q = g.add_input("q", f32_ty(&[1, 6, 2, 4]));
    let k = g.add_input("k", f32_ty(&[1, 2, 4, 6]));
    let qt = node(
        &mut g,
        "q_t",
        Op::Transpose {
            perm: vec![0, 2, 1, 3],
        },
        vec![q],
    );
    let s = node(&mut g, "scores", MATMUL, vec![qt, k]);
    let extra = node(&mut g, "extra", Op::Neg, vec![qt]);
    g.set_outputs(vec![s, extra]);
    check(&kiln_passes::transpose::TransposeCleanup, &g);
}
