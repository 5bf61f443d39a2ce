//! Kernel lowering of element-wise ops (unary and broadcasting binary families).
//! (Partial: Relu and Add; the rest arrive with the full lowering.)

use kiln_ir::Op;

use super::Lowering;
use crate::error::BackendError;
use crate::kernel::{flat_index, loop_nest, Expr, Stmt};

/// The index into an input of `in_shape` broadcast to the output multi-index `idx`.
pub fn broadcast_index(idx: &[Expr], in_shape: &[usize], out_rank: usize) -> Expr {
    let offset = out_rank - in_shape.len();
    let sub: Vec<Expr> = in_shape
        .iter()
        .enumerate()
        .map(|(d, &n)| {
            if n == 1 {
                Expr::Int(0)
            } else {
                idx[d + offset].clone()
            }
        })
        .collect();
    flat_index(&sub, in_shape)
}

pub fn lower(op: &Op, cx: &mut Lowering) -> Result<Vec<Stmt>, BackendError> {
    let out_shape = cx.outputs[0].shape.clone();
    let vars = cx.counters(out_shape.len());
    let idx: Vec<Expr> = vars.iter().map(|&v| Expr::Var(v)).collect();
    let loads: Vec<Expr> = (0..cx.inputs.len())
        .map(|i| {
            Expr::load(
                cx.input(i),
                broadcast_index(&idx, &cx.inputs[i].shape, out_shape.len()),
            )
        })
        .collect();
    let value = match (op, loads.as_slice()) {
        (Op::Relu, [x]) => x.clone().max(Expr::Const(0.0, cx.inputs[0].dtype)),
        (Op::Add, [a, b]) => a.clone().add(b.clone()),
        _ => return crate::cannot!("{} has no kernel lowering yet", op.name()),
    };
    let store = Stmt::Store {
        param: cx.output(0),
        index: flat_index(&idx, &out_shape),
        value,
    };
    Ok(loop_nest(&vars, &out_shape, vec![store]))
}
