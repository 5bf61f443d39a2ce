//! Each pass on small hand-built graphs: the IR text dump before and after as an `insta`
//! snapshot, plus semantic assertions in code (the interpreter gives the same outputs before and
//! after, and the rewrite happened), so a wrongly blessed snapshot cannot hide a regression.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use common::*;

use kiln_ir::op::PadMode;
use kiln_ir::{Activation, DType, Graph, Op, Tensor, ValueId};
use kiln_passes::{optimize, pass_names, OptLevel, Pass, PassError, PassOptions};

/// Runs `pass` (to a fixed point), checks the verifier and that outputs are unchanged on
/// deterministic inputs, and returns the graph after with the before/after dump.
fn run_pass(pass: &dyn Pass, mut g: Graph) -> (Graph, String) {
    kiln_ir::verify::verify(&g).unwrap();
    let inputs: Vec<Tensor> = g
        .inputs()
        .iter()
        .enumerate()
        .map(|(i, &v)| ramp(&g.value(v).ty.shape, 100 + i as u32))
        .collect();
    let before_out = kiln_ir::interp::run(&g, &inputs).unwrap();
    let before = kiln_ir::dump::to_text(&g);
    let mut changed = false;
    while pass.run(&mut g).unwrap() {
        changed = true;
        kiln_ir::verify::verify(&g).unwrap();
    }
    assert!(changed, "{} changed nothing", pass.name());
    let after_out = kiln_ir::interp::run(&g, &inputs).unwrap();
    for (a, b) in after_out.iter().zip(&before_out) {
        assert_eq!(a.ty(), b.ty());
        let (a, b) = (a.as_f32().unwrap(), b.as_f32().unwrap());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }
    let after = kiln_ir::dump::to_text(&g);
    (g, format!("{before}--- after {} ---\n{after}", pass.name()))
}

#[test]
fn dead_code() {
    let mut g = Graph::new("dead_code");
    let x = g.add_input("x", f32_ty(&[4]));
    let c = konst(&mut g, "unused_weight", &[4], 1);
    let dead = node(&mut g, "dead_relu", Op::Relu, vec![x]);
    let _dead2 = node(&mut g, "dead_add", ADD, vec![dead, c]);
    let y = node(&mut g, "neg", Op::Neg, vec![x]);
    g.set_outputs(vec![y]);
    let (g, dump) = run_pass(&kiln_passes::dead_code::DeadCode, g);
    assert_eq!(g.node_count(), 1);
    assert_eq!(g.value(c).const_tensor().unwrap().numel(), 0);
    insta::assert_snapshot!(dump);
}

#[test]
fn remove_identity() {
    let mut g = Graph::new("remove_identity");
    let x = g.add_input("x", f32_ty(&[4]));
    let a = node(&mut g, "relu", Op::Relu, vec![x]);
    let b = node(&mut g, "identity", Op::Identity, vec![a]);
    let c = node(&mut g, "dropout", Op::Dropout { mask: false }, vec![b]);
    let y = node(&mut g, "identity_out", Op::Identity, vec![c]);
    g.set_outputs(vec![y]);
    let (g, dump) = run_pass(&kiln_passes::remove_identity::RemoveIdentity, g);
    assert_eq!(count(&g, "Identity") + count(&g, "Dropout"), 0);
    assert_eq!(g.value(g.outputs()[0]).name, "identity_out");
    insta::assert_snapshot!(dump);
}

#[test]
fn const_fold() {
    let mut g = Graph::new("const_fold");
    let x = g.add_input("x", f32_ty(&[2, 3]));
    // Shape -> Gather -> Cast: a known dim, as PyTorch exports compute reshape targets.
    let s = node(&mut g, "shape", Op::Shape { start: 0, end: 2 }, vec![x]);
    let idx = g.add_const("idx", Tensor::from_i64(vec![1], vec![1]).unwrap());
    let d = node(&mut g, "gather", Op::Gather { axis: 0 }, vec![s, idx]);
    let df = node(&mut g, "cast", Op::Cast { to: DType::F32 }, vec![d]);
    let y0 = node(&mut g, "scale", Op::Mul, vec![x, df]);
    // A transposed weight and two equal constants.
    let w = konst(&mut g, "w", &[3, 2], 2);
    let wt = node(&mut g, "w_t", Op::Transpose { perm: vec![1, 0] }, vec![w]);
    let y1 = node(&mut g, "add_w", ADD, vec![y0, wt]);
    let b1 = konst(&mut g, "b1", &[3], 3);
    let b2 = konst(&mut g, "b2", &[3], 3);
    let y2 = node(&mut g, "sub_b1", Op::Sub, vec![y1, b1]);
    let y3 = node(&mut g, "sub_b2", Op::Sub, vec![y2, b2]);
    // Too big to fold: a 64x64 tensor made from nothing.
    let big = node(
        &mut g,
        "big",
        Op::ConstantOfShape {
            shape: vec![64, 64],
            value: 1.0,
            dtype: DType::F32,
        },
        vec![],
    );
    let big_sum = node(
        &mut g,
        "big_sum",
        Op::ReduceSum {
            axes: vec![0, 1],
            keepdims: false,
        },
        vec![big],
    );
    let y = node(&mut g, "out", ADD, vec![y3, big_sum]);
    g.set_outputs(vec![y]);
    let (g, dump) = run_pass(&kiln_passes::const_fold::ConstFold, g);
    assert_eq!(
        count(&g, "Shape") + count(&g, "Gather") + count(&g, "Transpose"),
        0
    );
    assert_eq!(count(&g, "ConstantOfShape"), 1, "big results stay unfolded");
    let sub = g
        .node_ids()
        .into_iter()
        .find(|&n| g.node(n).name == "sub_b2");
    assert_eq!(g.node(sub.unwrap()).inputs[1], b1, "equal constants merged");
    insta::assert_snapshot!(dump);
}

#[test]
fn fold_batchnorm() {
    let mut g = Graph::new("fold_batchnorm");
    let x = g.add_input("x", f32_ty(&[1, 2, 5, 5]));
    let w = konst(&mut g, "w", &[3, 2, 3, 3], 4);
    let b = konst(&mut g, "b", &[3], 5);
    let c = node(&mut g, "conv", conv([1, 1, 1, 1], 1), vec![x, w, b]);
    let bn = |g: &mut Graph, name: &str, seed: u32, c: usize| -> Vec<ValueId> {
        let scale = konst(g, &format!("{name}.scale"), &[c], seed);
        let bias = konst(g, &format!("{name}.bias"), &[c], seed + 1);
        let mean = konst(g, &format!("{name}.mean"), &[c], seed + 2);
        let var: Vec<f32> = (0..c).map(|i| 0.5 + i as f32).collect();
        let var = g.add_const(
            format!("{name}.var"),
            Tensor::from_f32(vec![c], var).unwrap(),
        );
        vec![scale, bias, mean, var]
    };
    let mut inputs = vec![c];
    inputs.extend(bn(&mut g, "bn1", 10, 3));
    let y0 = node(
        &mut g,
        "bn1",
        Op::BatchNormalization { epsilon: 1e-5 },
        inputs,
    );
    // A BN reading a graph input has no producer to fold into: it becomes Mul + Add.
    let mut inputs = vec![x];
    inputs.extend(bn(&mut g, "bn2", 20, 2));
    let y1 = node(
        &mut g,
        "bn2",
        Op::BatchNormalization { epsilon: 1e-3 },
        inputs,
    );
    g.set_outputs(vec![y0, y1]);
    let (g, dump) = run_pass(&kiln_passes::fold_batchnorm::FoldBatchNorm, g);
    assert_eq!(count(&g, "BatchNormalization"), 0);
    assert_eq!(count(&g, "Conv"), 1);
    insta::assert_snapshot!(dump);
}

#[test]
fn fold_batchnorm_into_gemm_and_conv_transpose() {
    let mut g = Graph::new("fold_batchnorm_gemm");
    let x = g.add_input("x", f32_ty(&[2, 4]));
    let w = konst(&mut g, "w", &[3, 4], 1);
    let c = konst(&mut g, "c", &[3], 2);
    let gemm = Op::Gemm {
        alpha: 0.5,
        beta: 2.0,
        trans_a: false,
        trans_b: true,
        activation: Activation::None,
    };
    let y0 = node(&mut g, "gemm", gemm, vec![x, w, c]);
    let p: Vec<ValueId> = (0..4).map(|i| konst(&mut g, "p", &[3], 30 + i)).collect();
    let var = g.add_const(
        "var",
        Tensor::from_f32(vec![3], vec![1.0, 0.3, 2.0]).unwrap(),
    );
    let y = node(
        &mut g,
        "bn",
        Op::BatchNormalization { epsilon: 1e-5 },
        vec![y0, p[0], p[1], p[2], var],
    );
    g.set_outputs(vec![y]);
    let (g2, _) = run_pass(&kiln_passes::fold_batchnorm::FoldBatchNorm, g);
    assert_eq!(g2.node_count(), 1);

    let mut g = Graph::new("fold_batchnorm_convt");
    let x = g.add_input("x", f32_ty(&[1, 4, 3, 3]));
    let w = konst(&mut g, "w", &[4, 3, 2, 2], 3);
    let ct = Op::ConvTranspose {
        kernel_shape: vec![2, 2],
        strides: vec![2, 2],
        dilations: vec![1, 1],
        pads: vec![0, 0, 0, 0],
        output_padding: vec![0, 0],
        group: 2,
        activation: Activation::None,
    };
    let y0 = node(&mut g, "convt", ct, vec![x, w]);
    let p: Vec<ValueId> = (0..3).map(|i| konst(&mut g, "p", &[6], 40 + i)).collect();
    let var = g.add_const("var", Tensor::from_f32(vec![6], vec![1.0; 6]).unwrap());
    let y = node(
        &mut g,
        "bn",
        Op::BatchNormalization { epsilon: 1e-5 },
        vec![y0, p[0], p[1], p[2], var],
    );
    g.set_outputs(vec![y]);
    let (g2, _) = run_pass(&kiln_passes::fold_batchnorm::FoldBatchNorm, g);
    assert_eq!(g2.node_count(), 1);
}

#[test]
fn matmul_add_to_gemm() {
    let mut g = Graph::new("matmul_add");
    let x = g.add_input("x", f32_ty(&[2, 4]));
    let w = konst(&mut g, "w", &[4, 3], 1);
    let b = konst(&mut g, "b", &[3], 2);
    let m = node(&mut g, "matmul", MATMUL, vec![x, w]);
    let y = node(&mut g, "add", ADD, vec![b, m]);
    g.set_outputs(vec![y]);
    let (g, dump) = run_pass(&kiln_passes::matmul_add::MatMulAddToGemm, g);
    assert_eq!(count(&g, "Gemm"), 1);
    assert_eq!(g.node_count(), 1);
    insta::assert_snapshot!(dump);
}

#[test]
fn fuse_activation() {
    let mut g = Graph::new("fuse_activation");
    let x = g.add_input("x", f32_ty(&[1, 2, 4, 4]));
    let w = konst(&mut g, "w", &[2, 2, 3, 3], 1);
    let c = node(&mut g, "conv", conv([1, 1, 1, 1], 1), vec![x, w]);
    let r = node(
        &mut g,
        "relu6",
        Op::Clip {
            min: Some(0.0),
            max: Some(6.0),
        },
        vec![c],
    );
    let s = node(&mut g, "residual", ADD, vec![r, x]);
    let y = node(&mut g, "relu", Op::Relu, vec![s]);
    let w2 = konst(&mut g, "w2", &[2, 2, 3, 3], 2);
    let c2 = node(&mut g, "conv2", conv([1, 1, 1, 1], 1), vec![y, w2]);
    let y2 = node(&mut g, "leaky", Op::LeakyRelu { alpha: 0.1 }, vec![c2]);
    // Not fused: the conv result has a second reader.
    let w3 = konst(&mut g, "w3", &[2, 2, 3, 3], 3);
    let c3 = node(&mut g, "conv3", conv([1, 1, 1, 1], 1), vec![y2, w3]);
    let y3 = node(&mut g, "tanh", Op::Tanh, vec![c3]);
    let y4 = node(&mut g, "sum", ADD, vec![y3, c3]);
    g.set_outputs(vec![y4]);
    let (g, dump) = run_pass(&kiln_passes::fuse_activation::FuseActivation, g);
    assert_eq!(
        count(&g, "Clip") + count(&g, "Relu") + count(&g, "LeakyRelu"),
        0
    );
    assert_eq!(count(&g, "Tanh"), 1);
    insta::assert_snapshot!(dump);
}

#[test]
fn transpose_cleanup() {
    let mut g = Graph::new("transpose_cleanup");
    let x = g.add_input("x", f32_ty(&[1, 3, 4, 5]));
    // NCHW -> NHWC, element-wise ops in NHWC, back to NCHW: the pair cancels.
    let t = node(
        &mut g,
        "to_nhwc",
        Op::Transpose {
            perm: vec![0, 2, 3, 1],
        },
        vec![x],
    );
    let r = node(&mut g, "relu", Op::Relu, vec![t]);
    let bias = konst(&mut g, "bias", &[3], 1);
    let a = node(&mut g, "add_bias", ADD, vec![r, bias]);
    let y0 = node(
        &mut g,
        "to_nchw",
        Op::Transpose {
            perm: vec![0, 3, 1, 2],
        },
        vec![a],
    );
    // A transposed operand of a 2-D MatMul becomes Gemm's trans_a.
    let m = g.add_input("m", f32_ty(&[4, 2]));
    let w = konst(&mut g, "w", &[4, 3], 2);
    let mt = node(&mut g, "m_t", Op::Transpose { perm: vec![1, 0] }, vec![m]);
    let y1 = node(&mut g, "matmul", MATMUL, vec![mt, w]);
    g.set_outputs(vec![y0, y1]);
    let (g, dump) = run_pass(&kiln_passes::transpose::TransposeCleanup, g);
    assert_eq!(count(&g, "Transpose"), 0);
    assert_eq!(count(&g, "Gemm"), 1);
    insta::assert_snapshot!(dump);
}

#[test]
fn fold_pad() {
    let mut g = Graph::new("fold_pad");
    let x = g.add_input("x", f32_ty(&[1, 2, 5, 5]));
    let pad = |a: i64, b: i64| Op::Pad {
        pads: vec![0, 0, a, b, 0, 0, b, a],
        mode: PadMode::Constant,
        value: 0.0,
    };
    let p = node(&mut g, "pad", pad(1, 2), vec![x]);
    let w = konst(&mut g, "w", &[2, 1, 3, 3], 1);
    let c = node(&mut g, "dwconv", conv([0, 0, 0, 0], 2), vec![p, w]);
    let p2 = node(&mut g, "pad2", pad(1, 1), vec![c]);
    let avg = Op::AveragePool {
        kernel_shape: vec![2, 2],
        strides: vec![2, 2],
        dilations: vec![1, 1],
        pads: vec![0, 0, 0, 0],
        ceil_mode: false,
        count_include_pad: false,
    };
    let y0 = node(&mut g, "avgpool", avg, vec![p2]);
    // Not folded: MaxPool ignores its padding instead of reading zeros.
    let p3 = node(&mut g, "pad3", pad(1, 1), vec![x]);
    let max = Op::MaxPool {
        kernel_shape: vec![2, 2],
        strides: vec![2, 2],
        dilations: vec![1, 1],
        pads: vec![0, 0, 0, 0],
        ceil_mode: false,
        indices: false,
        column_major_indices: false,
    };
    let y1 = node(&mut g, "maxpool", max, vec![p3]);
    g.set_outputs(vec![y0, y1]);
    let (g, dump) = run_pass(&kiln_passes::fold_pad::FoldPad, g);
    assert_eq!(count(&g, "Pad"), 1);
    insta::assert_snapshot!(dump);
}

/// The decomposed LayerNorm PyTorch exports (`tests/models/transformer_encoder_2l` has it).
#[test]
fn fuse_layernorm() {
    let mut g = Graph::new("fuse_layernorm");
    let x = g.add_input("x", f32_ty(&[2, 3, 8]));
    let mean = Op::ReduceMean {
        axes: vec![2],
        keepdims: true,
    };
    let m = node(&mut g, "mean", mean.clone(), vec![x]);
    let d = node(&mut g, "sub", Op::Sub, vec![x, m]);
    let two = g.add_const("two", Tensor::scalar_f32(2.0));
    let sq = node(&mut g, "pow", Op::Pow, vec![d, two]);
    let v = node(&mut g, "var", mean, vec![sq]);
    let eps = g.add_const("eps", Tensor::scalar_f32(1e-5));
    let ve = node(&mut g, "add_eps", ADD, vec![v, eps]);
    let s = node(&mut g, "sqrt", Op::Sqrt, vec![ve]);
    let n = node(&mut g, "div", Op::Div, vec![d, s]);
    let gamma = konst(&mut g, "gamma", &[8], 1);
    let beta = konst(&mut g, "beta", &[8], 2);
    let y0 = node(&mut g, "mul_gamma", Op::Mul, vec![n, gamma]);
    let y = node(&mut g, "add_beta", ADD, vec![y0, beta]);
    g.set_outputs(vec![y]);
    let (g, dump) = run_pass(&kiln_passes::fuse_layernorm::FuseLayerNorm, g);
    assert_eq!(g.node_count(), 1);
    assert_eq!(count(&g, "LayerNormalization"), 1);
    assert_eq!(g.value(g.outputs()[0]).name, "add_beta");
    insta::assert_snapshot!(dump);
}

#[test]
fn fuse_gelu() {
    let mut g = Graph::new("fuse_gelu");
    let x = g.add_input("x", f32_ty(&[2, 8]));
    let sqrt2 = g.add_const("sqrt2", Tensor::scalar_f32(std::f32::consts::SQRT_2));
    let t = node(&mut g, "div", Op::Div, vec![x, sqrt2]);
    let e = node(&mut g, "erf", Op::Erf, vec![t]);
    let one = g.add_const("one", Tensor::scalar_f32(1.0));
    let a = node(&mut g, "add_one", ADD, vec![e, one]);
    let m = node(&mut g, "mul_x", Op::Mul, vec![x, a]);
    let half = g.add_const("half", Tensor::scalar_f32(0.5));
    let y = node(&mut g, "mul_half", Op::Mul, vec![m, half]);
    g.set_outputs(vec![y]);
    let (g, dump) = run_pass(&kiln_passes::fuse_gelu::FuseGelu, g);
    assert_eq!(g.node_count(), 1);
    assert_eq!(count(&g, "Gelu"), 1);
    insta::assert_snapshot!(dump);
}

#[test]
fn pipeline_levels_dumps_and_errors() {
    assert!(pass_names(OptLevel::O0).is_empty());
    let o1 = pass_names(OptLevel::O1);
    let o2 = pass_names(OptLevel::O2);
    assert!(o1.contains(&"const-fold") && o1.contains(&"fold-batchnorm"));
    assert!(!o1.contains(&"fuse-activation") && o2.contains(&"fuse-activation"));
    assert_eq!(PassOptions::default().level, OptLevel::O2);

    let mut g = Graph::new("pipeline");
    let x = g.add_input("x", f32_ty(&[4]));
    let i = node(&mut g, "identity", Op::Identity, vec![x]);
    let y = node(&mut g, "relu", Op::Relu, vec![i]);
    g.set_outputs(vec![y]);

    let mut g0 = g.clone();
    let o0 = PassOptions {
        level: OptLevel::O0,
        ..Default::default()
    };
    let report = optimize(&mut g0, &o0).unwrap();
    assert!(report.runs.is_empty());
    assert_eq!(g0.node_count(), 2);

    let options = PassOptions {
        dump_after: Some("remove-identity".into()),
        time_passes: true,
        ..Default::default()
    };
    let report = optimize(&mut g, &options).unwrap();
    assert_eq!(g.node_count(), 1);
    let first = &report.runs[0];
    assert_eq!((first.name, first.changed), ("remove-identity", true));
    assert_eq!((first.nodes_before, first.nodes_after), (2, 1));
    assert!(!report.dumps.is_empty());
    assert!(report
        .dumps
        .iter()
        .all(|(p, d)| p == "remove-identity" && !d.contains("identity(")));

    let bad = PassOptions {
        dump_after: Some("no-such-pass".into()),
        ..Default::default()
    };
    let err = optimize(&mut g, &bad).unwrap_err();
    assert!(matches!(err, PassError::UnknownPass { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("no-such-pass") && msg.contains("const-fold"),
        "{msg}"
    );
}

/// GELU's tanh approximation as PyTorch exports it (`approximate="tanh"`): fused into one
/// `Gelu {tanh_approx: true}`.
#[test]
fn fuse_gelu_tanh_form() {
    let mut g = Graph::new("fuse_gelu_tanh");
    let x = g.add_input("x", f32_ty(&[2, 8]));
    let three = g.add_const("three", Tensor::scalar_f32(3.0));
    let cube = node(&mut g, "pow", Op::Pow, vec![x, three]);
    let c = g.add_const("c", Tensor::scalar_f32(0.044715));
    let t = node(&mut g, "mul_c", Op::Mul, vec![cube, c]);
    let u = node(&mut g, "add_x", ADD, vec![x, t]);
    let k = g.add_const(
        "k",
        Tensor::scalar_f32((2.0f32 / std::f32::consts::PI).sqrt()),
    );
    let s = node(&mut g, "mul_k", Op::Mul, vec![u, k]);
    let th = node(&mut g, "tanh", Op::Tanh, vec![s]);
    let one = g.add_const("one", Tensor::scalar_f32(1.0));
    let a = node(&mut g, "add_one", ADD, vec![th, one]);
    let half = g.add_const("half", Tensor::scalar_f32(0.5));
    let h = node(&mut g, "mul_half", Op::Mul, vec![x, half]);
    let y = node(&mut g, "mul", Op::Mul, vec![h, a]);
    g.set_outputs(vec![y]);
    let (g, dump) = run_pass(&kiln_passes::fuse_gelu::FuseGelu, g);
    assert_eq!(g.node_count(), 1);
    let only = g.node_ids()[0];
    assert_eq!(g.node(only).op, Op::Gelu { tanh_approx: true });
    insta::assert_snapshot!(dump);
}

/// The LayerNorm TensorFlow's converters write (Keras through `tf.nn.batch_normalization`,
/// `Rsqrt` as `Reciprocal(Sqrt)`): `x * inv + (beta - mean * inv)`.
#[test]
fn fuse_layernorm_scale_shift_form() {
    let mut g = Graph::new("fuse_layernorm_tf");
    let x = g.add_input("x", f32_ty(&[2, 3, 8]));
    let reduce = Op::ReduceMean {
        axes: vec![2],
        keepdims: true,
    };
    let m = node(&mut g, "mean", reduce.clone(), vec![x]);
    let d = node(&mut g, "sub", Op::Sub, vec![x, m]);
    let sq = node(&mut g, "square", Op::Mul, vec![d, d]);
    let v = node(&mut g, "variance", reduce, vec![sq]);
    let eps = g.add_const("eps", Tensor::scalar_f32(1e-3));
    let ve = node(&mut g, "add_eps", ADD, vec![v, eps]);
    let s = node(&mut g, "sqrt", Op::Sqrt, vec![ve]);
    let r = node(&mut g, "rsqrt", Op::Reciprocal, vec![s]);
    let gamma = konst(&mut g, "gamma", &[8], 1);
    let inv = node(&mut g, "mul_gamma", Op::Mul, vec![r, gamma]);
    let xs = node(&mut g, "mul_x", Op::Mul, vec![x, inv]);
    let ms = node(&mut g, "mul_mean", Op::Mul, vec![m, inv]);
    let beta = konst(&mut g, "beta", &[8], 2);
    let shift = node(&mut g, "sub_beta", Op::Sub, vec![beta, ms]);
    let y = node(&mut g, "add", ADD, vec![xs, shift]);
    g.set_outputs(vec![y]);
    let (g, dump) = run_pass(&kiln_passes::fuse_layernorm::FuseLayerNorm, g);
    assert_eq!(g.node_count(), 1);
    assert_eq!(count(&g, "LayerNormalization"), 1);
    insta::assert_snapshot!(dump);
}

/// A batched MatMul by a 2-D weight plus a bias along N becomes a 2-D Gemm with the bias
/// between Reshapes (which alias, so no copy).
#[test]
fn batched_matmul_add_to_gemm() {
    let mut g = Graph::new("batched_matmul_add");
    let x = g.add_input("x", f32_ty(&[2, 5, 4]));
    let w = konst(&mut g, "w", &[4, 3], 1);
    let b = konst(&mut g, "b", &[3], 2);
    let m = node(&mut g, "matmul", MATMUL, vec![x, w]);
    let y = node(&mut g, "add", ADD, vec![b, m]);
    g.set_outputs(vec![y]);
    let (g, dump) = run_pass(&kiln_passes::matmul_add::MatMulAddToGemm, g);
    assert_eq!(count(&g, "Gemm"), 1);
    assert_eq!(count(&g, "MatMul") + count(&g, "Add"), 0);
    assert_eq!(g.value(g.outputs()[0]).name, "add");
    insta::assert_snapshot!(dump);
}

/// Attention's Transposes (`[B, S, H, D] -> [B, H, S, D]` for Q and V, `-> [B, H, D, S]` for
/// K) fold into the batched MatMuls' operand permutations: no Transpose left on the inputs.
#[test]
fn transposes_fold_into_batched_matmul() {
    let mut g = Graph::new("attention_transposes");
    let q = g.add_input("q", f32_ty(&[1, 6, 2, 4]));
    let k = g.add_input("k", f32_ty(&[1, 6, 2, 4]));
    let v = g.add_input("v", f32_ty(&[1, 6, 2, 4]));
    let qt = node(
        &mut g,
        "q_t",
        Op::Transpose {
            perm: vec![0, 2, 1, 3],
        },
        vec![q],
    );
    let kt = node(
        &mut g,
        "k_t",
        Op::Transpose {
            perm: vec![0, 2, 3, 1],
        },
        vec![k],
    );
    let vt = node(
        &mut g,
        "v_t",
        Op::Transpose {
            perm: vec![0, 2, 1, 3],
        },
        vec![v],
    );
    let scores = node(&mut g, "scores", MATMUL, vec![qt, kt]);
    let y = node(&mut g, "context", MATMUL, vec![scores, vt]);
    g.set_outputs(vec![y]);
    let (g, dump) = run_pass(&kiln_passes::transpose::TransposeCleanup, g);
    assert_eq!(count(&g, "Transpose"), 0);
    insta::assert_snapshot!(dump);
}
