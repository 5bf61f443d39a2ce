//! Lowering of graph ops to kernels, one file per op family. This is the only place an op's
//! computation is written for code generation; every emitter consumes the resulting kernels.
//!
//! Each family file exposes `lower(op, &mut Lowering) -> Result<Vec<Stmt>, BackendError>`.
//! [`Lowering`] has already declared one buffer parameter per node input (params `0..n_in`)
//! and per output (params `n_in..`), named as the ONNX spec names the operands.

pub mod conv;
pub mod elementwise;
pub mod integer;
pub mod matmul;
pub mod movement;
pub mod norm;
pub mod pool;
pub mod quant;
pub mod reduce;

use kiln_ir::op::OpFamily;
use kiln_ir::{Op, TensorType};

use crate::error::BackendError;
use crate::kernel::{Kernel, KernelBuilder, ScalarType, Schedule, Stmt, Var};

/// The context a family lowering works in.
#[derive(Debug)]
pub struct Lowering<'a> {
    pub kb: KernelBuilder,
    pub inputs: Vec<&'a TensorType>,
    pub outputs: Vec<&'a TensorType>,
    /// Schedule knobs a lowering honours where they apply (output-channel tiling, loop order).
    pub schedule: Schedule,
}

impl Lowering<'_> {
    /// Parameter index of input `i`.
    pub fn input(&self, i: usize) -> usize {
        i
    }

    /// Parameter index of output `i`.
    pub fn output(&self, i: usize) -> usize {
        self.inputs.len() + i
    }

    pub fn var(&mut self, ty: ScalarType) -> Var {
        self.kb.var(ty)
    }

    /// Fresh loop counters, one per extent.
    pub fn counters(&mut self, n: usize) -> Vec<Var> {
        (0..n).map(|_| self.kb.counter()).collect()
    }
}

/// ONNX operand names for an op's inputs and outputs, used as C parameter names.
fn operand_names(op: &Op, n_in: usize, n_out: usize) -> (Vec<String>, Vec<String>) {
    let fixed: &[&str] = match op {
        Op::Conv { .. } | Op::ConvTranspose { .. } => &["X", "W", "B"],
        Op::Gemm { .. } => &["A", "B", "C"],
        Op::MatMul { .. } => &["A", "B"],
        Op::BatchNormalization { .. } => &["X", "scale", "B", "mean", "var"],
        Op::InstanceNormalization { .. } => &["input", "scale", "B"],
        Op::LayerNormalization { .. } => &["X", "Scale", "B"],
        Op::Where => &["condition", "X", "Y"],
        Op::PRelu => &["X", "slope"],
        Op::Gather { .. } => &["data", "indices"],
        Op::QConv { .. } => &["X", "W", "B", "multiplier", "shift"],
        Op::QMatMul { .. } => &["A", "B", "bias", "multiplier", "shift"],
        Op::QAveragePool { .. } => &["X", "multiplier", "shift"],
        Op::QSoftmax { .. } => &["X", "exp_table"],
        Op::QTable => &["X", "table"],
        Op::QAdd { .. } | Op::QMul { .. } => &["A", "B"],
        Op::QuantizeLinear { .. } => &["x", "y_scale", "y_zero_point"],
        Op::DequantizeLinear { .. } => &["x", "x_scale", "x_zero_point"],
        _ if op.family() == OpFamily::Binary => &["A", "B"],
        _ => &["X"],
    };
    let ins: Vec<String> = (0..n_in)
        .map(|i| {
            fixed
                .get(i)
                .map_or_else(|| format!("X{i}"), |s| s.to_string())
        })
        .collect();
    // Where's inputs are (condition, X, Y): an output never takes an input's name.
    let outs = (0..n_out)
        .map(|i| {
            if n_out == 1 {
                "Y".to_string()
            } else {
                format!("Y{i}")
            }
        })
        .map(|o| {
            if ins.contains(&o) {
                format!("{o}_out")
            } else {
                o
            }
        })
        .collect();
    (ins, outs)
}

/// Lowers one node to a kernel named `name`.
pub fn lower_op(
    name: &str,
    op: &Op,
    inputs: &[&TensorType],
    outputs: &[&TensorType],
    schedule: &Schedule,
) -> Result<Kernel, BackendError> {
    let mut kb = KernelBuilder::new(name);
    let (in_names, out_names) = operand_names(op, inputs.len(), outputs.len());
    for (t, n) in inputs.iter().zip(&in_names) {
        kb.param(n, t.dtype, t.numel(), false);
    }
    for (t, n) in outputs.iter().zip(&out_names) {
        kb.param(n, t.dtype, t.numel(), true);
    }
    let mut cx = Lowering {
        kb,
        inputs: inputs.to_vec(),
        outputs: outputs.to_vec(),
        schedule: *schedule,
    };
    let body: Vec<Stmt> = match op.family() {
        OpFamily::Unary | OpFamily::Binary => elementwise::lower(op, &mut cx)?,
        OpFamily::Conv => conv::lower(op, &mut cx)?,
        OpFamily::MatMul => matmul::lower(op, &mut cx)?,
        OpFamily::Pool => pool::lower(op, &mut cx)?,
        OpFamily::Norm => norm::lower(op, &mut cx)?,
        OpFamily::Reduce => reduce::lower(op, &mut cx)?,
        OpFamily::Movement => movement::lower(op, &mut cx)?,
        OpFamily::Quant => quant::lower(op, &mut cx)?,
    };
    let body = match op.activation().as_op() {
        Some(act) => {
            let out = cx.output(0);
            epilogue(body, out, &act, &mut cx)?
        }
        None => body,
    };
    Ok(cx.kb.finish(body))
}

/// Applies a fused activation (`act`, a unary op) to every value stored into param `out`.
/// Conv, ConvTranspose, MatMul, Gemm and Add (the ops that carry one) store each output element
/// exactly once, with its final value, so this is the activation of the result.
fn epilogue(
    stmts: Vec<Stmt>,
    out: usize,
    act: &Op,
    cx: &mut Lowering,
) -> Result<Vec<Stmt>, BackendError> {
    let mut result = Vec::with_capacity(stmts.len());
    for stmt in stmts {
        match stmt {
            Stmt::Store {
                param,
                index,
                value,
            } if param == out => {
                let ty = kiln_ir::DType::F32;
                let v = cx.var(ty);
                result.push(Stmt::Let {
                    var: v,
                    ty,
                    init: value,
                });
                let value =
                    elementwise::unary(act, crate::kernel::Expr::Var(v), ty, cx, &mut result)?;
                result.push(Stmt::Store {
                    param,
                    index,
                    value,
                });
            }
            Stmt::For {
                var,
                extent,
                unroll,
                body,
            } => result.push(Stmt::For {
                var,
                extent,
                unroll,
                body: epilogue(body, out, act, cx)?,
            }),
            Stmt::If {
                cond,
                then,
                otherwise,
            } => result.push(Stmt::If {
                cond,
                then: epilogue(then, out, act, cx)?,
                otherwise: epilogue(otherwise, out, act, cx)?,
            }),
            other => result.push(other),
        }
    }
    Ok(result)
}

/// A kernel that copies input 0 to output 0 element by element (for aliases that must
/// materialize: a Reshape or Identity whose result is a graph output).
pub fn copy_kernel(name: &str, ty: &TensorType) -> Kernel {
    use crate::kernel::{for_loop, Expr};
    let mut kb = KernelBuilder::new(name);
    let x = kb.param("X", ty.dtype, ty.numel(), false);
    let y = kb.param("Y", ty.dtype, ty.numel(), true);
    let i = kb.counter();
    let body = vec![for_loop(
        i,
        ty.numel(),
        vec![Stmt::Store {
            param: y,
            index: Expr::Var(i),
            value: Expr::load(x, Expr::Var(i)),
        }],
    )];
    kb.finish(body)
}
