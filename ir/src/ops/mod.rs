//! Per-op semantics: shape inference and reference evaluation, one file per op family.
//!
//! Each family file exposes `infer(op, input_types)` and `eval(op, inputs)`; this module only
//! dispatches on [`OpFamily`]. `eval` must agree with `infer`: the interpreter checks that every
//! result has the inferred type.

pub mod binary;
pub mod conv;
pub mod matmul;
pub mod movement;
pub mod norm;
pub mod pool;
pub mod quant;
pub mod reduce;
pub mod unary;
pub mod util;

use crate::dtype::DType;
use crate::error::OpError;
use crate::op::{Op, OpFamily};
use crate::tensor::{Tensor, TensorType};

/// Output types of `op` applied to inputs of these types, or why the combination is invalid.
pub fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, OpError> {
    let types = infer_plain(op, inputs)?;
    if !op.activation().is_none() && types.first().is_some_and(|t| t.dtype != DType::F32) {
        return Err(OpError::Invalid(format!(
            "a fused activation needs an f32 result, {} gives {}",
            op.name(),
            types[0].dtype
        )));
    }
    Ok(types)
}

fn infer_plain(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, OpError> {
    match op.family() {
        OpFamily::Unary => unary::infer(op, inputs),
        OpFamily::Binary => binary::infer(op, inputs),
        OpFamily::Conv => conv::infer(op, inputs),
        OpFamily::MatMul => matmul::infer(op, inputs),
        OpFamily::Pool => pool::infer(op, inputs),
        OpFamily::Norm => norm::infer(op, inputs),
        OpFamily::Reduce => reduce::infer(op, inputs),
        OpFamily::Movement => movement::infer(op, inputs),
        OpFamily::Quant => quant::infer(op, inputs),
    }
}

/// Reference semantics: computes the outputs of `op` on concrete inputs.
/// A fused activation (see [`crate::op::Activation`]) is applied to the first result by the
/// unary op it stands for, so fused and unfused graphs compute the same values.
pub fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
    let mut results = eval_plain(op, inputs)?;
    if let (Some(act), Some(first)) = (op.activation().as_op(), results.first_mut()) {
        let activated = unary::eval(&act, &[first])?;
        if let Some(y) = activated.into_iter().next() {
            *first = y;
        }
    }
    Ok(results)
}

fn eval_plain(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
    match op.family() {
        OpFamily::Unary => unary::eval(op, inputs),
        OpFamily::Binary => binary::eval(op, inputs),
        OpFamily::Conv => conv::eval(op, inputs),
        OpFamily::MatMul => matmul::eval(op, inputs),
        OpFamily::Pool => pool::eval(op, inputs),
        OpFamily::Norm => norm::eval(op, inputs),
        OpFamily::Reduce => reduce::eval(op, inputs),
        OpFamily::Movement => movement::eval(op, inputs),
        OpFamily::Quant => quant::eval(op, inputs),
    }
}

/// Multiply-accumulate count of one evaluation, for reports. Ops that do not multiply count 0.
pub fn macs(op: &Op, inputs: &[&TensorType], outputs: &[TensorType]) -> u64 {
    let out_numel = outputs.first().map_or(0, |t| t.numel()) as u64;
    match op {
        Op::Conv {
            kernel_shape,
            group,
            ..
        }
        | Op::QConv {
            kernel_shape,
            group,
            ..
        } => {
            let in_ch = inputs
                .first()
                .and_then(|t| t.shape.get(1))
                .copied()
                .unwrap_or(0) as u64;
            let k: u64 = kernel_shape.iter().map(|&k| k as u64).product();
            out_numel * k * (in_ch / (*group).max(1) as u64)
        }
        Op::ConvTranspose {
            kernel_shape,
            group,
            ..
        } => {
            // Every input element is scattered through a kernel into out_ch / group channels.
            let in_numel = inputs.first().map_or(0, |t| t.numel()) as u64;
            let out_ch = outputs
                .first()
                .and_then(|t| t.shape.get(1))
                .copied()
                .unwrap_or(0) as u64;
            let k: u64 = kernel_shape.iter().map(|&k| k as u64).product();
            in_numel * k * (out_ch / (*group).max(1) as u64)
        }
        Op::MatMul { .. } | Op::QMatMul { .. } => {
            // K is the last axis of A as the op reads it (through its permutation).
            let a = inputs.first().map(|t| t.shape.as_slice()).unwrap_or(&[]);
            let k = match op {
                Op::MatMul { a_perm, .. } if !a_perm.is_empty() => {
                    a_perm.last().and_then(|&p| a.get(p))
                }
                _ => a.last(),
            };
            out_numel * k.copied().unwrap_or(0) as u64
        }
        Op::Gemm { trans_a, .. } => {
            let a = inputs.first().map(|t| t.shape.as_slice()).unwrap_or(&[]);
            let k = if *trans_a { a.first() } else { a.get(1) }
                .copied()
                .unwrap_or(0) as u64;
            out_numel * k
        }
        _ => 0,
    }
}
