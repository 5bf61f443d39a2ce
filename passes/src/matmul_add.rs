//! `matmul-add-to-gemm`: turns `Add(MatMul(A, B), C)` into `Gemm(A, B, C)`.
//!
//! Matches a 2-D f32 MatMul (`A: [M, K]`, `B: [K, N]`) whose result only feeds one Add, whose
//! other operand `C` broadcasts to `[M, N]` (`[]`, `[1]`, `[N]`, `[1, N]`, `[M, 1]`, `[M, N]`),
//! in either operand order. Produces `Gemm {alpha: 1, beta: 1}` with inputs `A, B, C`. Sound
//! because Gemm computes `alpha * A B + beta * C` with C broadcast unidirectionally to `[M, N]`,
//! which is exactly the Add of the MatMul's result and C when the Add's result is `[M, N]`.
//!
//! A batched MatMul of `A: [.., M, K]` by a 2-D `B: [K, N]` plus a bias `C` that varies along
//! `N` only (`[N]`, `[1, .., 1, N]`, or one value) becomes `Reshape(Gemm(Reshape(A, [P, K]), B,
//! C'), [.., M, N])` with `P` the product of A's leading axes and `C'` the bias as `[N]`:
//! the rows of every batch are independent rows of one 2-D product, and the Reshapes cost no
//! copy (they alias their input).

use std::sync::Arc;

use kiln_ir::{DType, Graph, IrError, NodeId, Op, Tensor, ValueId};

use crate::pipeline::Pass;
use crate::util;

#[derive(Debug)]
pub struct MatMulAddToGemm;

impl Pass for MatMulAddToGemm {
    fn name(&self) -> &'static str {
        "matmul-add-to-gemm"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        for add in g.topo_order()? {
            if !g.contains_node(add) {
                continue;
            }
            let node = g.node(add);
            if !is_plain_add(&node.op) || node.inputs.len() != 2 {
                continue;
            }
            let (ins, y) = (node.inputs.clone(), node.outputs[0]);
            let found = (0..2).find_map(|i| {
                let mm = util::producer(g, ins[i])?;
                let m = g.node(mm);
                let ok = is_plain_matmul(&m.op)
                    && util::single_use(g, ins[i])
                    && ins[1 - i] != ins[i]
                    && m.inputs.iter().all(|&v| g.value(v).ty.rank() == 2);
                ok.then_some((mm, ins[i], ins[1 - i]))
            });
            let Some((mm, mm_out, c)) = found else {
                changed |= batched_to_gemm(g, add)?;
                continue;
            };
            let out_shape = &g.value(mm_out).ty.shape;
            let c_ty = &g.value(c).ty;
            let (m, n) = (out_shape[0], out_shape[1]);
            let broadcastable = match c_ty.shape.as_slice() {
                [] => true,
                [a] => *a == 1 || *a == n,
                [a, b] => (*a == 1 || *a == m) && (*b == 1 || *b == n),
                _ => false,
            };
            if !broadcastable
                || c_ty.dtype != DType::F32
                || g.value(y).ty.shape != *out_shape
                || !util::can_redirect(g, y, mm_out)
            {
                continue;
            }
            let mut inputs = g.node(mm).inputs.clone();
            inputs.push(c);
            g.set_node_inputs(mm, inputs);
            let gemm = Op::Gemm {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b: false,
                activation: Default::default(),
            };
            if g.set_node_op(mm, gemm).is_err() {
                // Undo: shape inference refused (cannot happen for the shapes matched above).
                let mut inputs = g.node(mm).inputs.clone();
                inputs.pop();
                g.set_node_inputs(mm, inputs);
                g.set_node_op(
                    mm,
                    Op::MatMul {
                        activation: Default::default(),
                        a_perm: Vec::new(),
                        b_perm: Vec::new(),
                    },
                )
                .map_err(|source| IrError::Node {
                    node: g.node(mm).name.clone(),
                    op: "MatMul".into(),
                    source,
                })?;
                continue;
            }
            util::redirect(g, y, mm_out);
            g.remove_node(add)?;
            changed = true;
        }
        Ok(changed)
    }
}

fn is_plain_add(op: &Op) -> bool {
    matches!(op, Op::Add { activation } if activation.is_none())
}

fn is_plain_matmul(op: &Op) -> bool {
    matches!(op, Op::MatMul { activation, a_perm, b_perm }
        if activation.is_none() && a_perm.is_empty() && b_perm.is_empty())
}

/// `Add(MatMul(A [.., M, K], B [K, N]), C)` with C along N only, as a 2-D Gemm between
/// Reshapes (see the module doc). Returns whether it rewrote.
fn batched_to_gemm(g: &mut Graph, add: NodeId) -> Result<bool, IrError> {
    let node = g.node(add).clone();
    let y = node.outputs[0];
    let found = (0..2).find_map(|i| {
        let mm = util::producer(g, node.inputs[i])?;
        let m = g.node(mm);
        // The op kind first: only then are inputs 0 and 1 the operands.
        if !is_plain_matmul(&m.op) {
            return None;
        }
        let (a, b) = (*m.inputs.first()?, *m.inputs.get(1)?);
        let ok = util::single_use(g, node.inputs[i])
            && g.value(a).ty.rank() >= 3
            && g.value(b).ty.rank() == 2
            && g.value(a).ty.dtype == DType::F32;
        ok.then_some((mm, a, b, node.inputs[1 - i]))
    });
    let Some((mm, a, b, c)) = found else {
        return Ok(false);
    };
    let out_shape = g.value(y).ty.shape.clone();
    let mm_shape = &g.value(g.node(mm).outputs[0]).ty.shape;
    let n = g.value(b).ty.shape[1];
    let c_ty = g.value(c).ty.clone();
    let along_n = c_ty.dtype == DType::F32
        && (c_ty.numel() == 1 || (c_ty.shape.last() == Some(&n) && c_ty.numel() == n));
    if *mm_shape != out_shape || !along_n || !util::can_redirect(g, y, g.node(mm).outputs[0]) {
        return Ok(false);
    }
    // The bias as `[N]` (or one value): a constant is reshaped at compile time, a computed
    // value through a Reshape.
    let bias: ValueId = match util::const_of(g, c) {
        Some(t) if t.shape().len() > 1 => {
            let flat = Tensor::new(vec![t.numel()], t.data().clone())?;
            g.add_const(g.value(c).name.clone(), Arc::new(flat))
        }
        Some(_) => c,
        None if c_ty.rank() <= 1 => c,
        None => {
            let r = g.add_node(
                util::derived_name(&node.name, "bias"),
                Op::Reshape {
                    shape: vec![c_ty.numel()],
                },
                vec![c],
                vec![],
            )?;
            g.node(r).outputs[0]
        }
    };
    let k = g.value(a).ty.shape.last().copied().unwrap_or(0);
    let rows = g.value(a).ty.numel() / k.max(1);
    let name = g.node(mm).name.clone();
    let flat = g.add_node(
        util::derived_name(&name, "rows"),
        Op::Reshape {
            shape: vec![rows, k],
        },
        vec![a],
        vec![],
    )?;
    let a2 = g.node(flat).outputs[0];
    let gemm = g.add_node(
        util::derived_name(&name, "gemm"),
        Op::Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: false,
            activation: Default::default(),
        },
        vec![a2, b, bias],
        vec![],
    )?;
    let g2 = g.node(gemm).outputs[0];
    let back = g.add_node(
        node.name.clone(),
        Op::Reshape { shape: out_shape },
        vec![g2],
        vec![],
    )?;
    let y2 = g.node(back).outputs[0];
    if !util::redirect(g, y, y2) {
        return Ok(false);
    }
    g.remove_nodes(&[add, mm])?;
    Ok(true)
}
