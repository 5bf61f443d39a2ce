//! `matmul-add-to-gemm`: turns `Add(MatMul(A, B), C)` into `Gemm(A, B, C)`.
//!
//! Matches a 2-D f32 MatMul (`A: [M, K]`, `B: [K, N]`) whose result only feeds one Add, whose
//! other operand `C` broadcasts to `[M, N]` (`[]`, `[1]`, `[N]`, `[1, N]`, `[M, 1]`, `[M, N]`),
//! in either operand order. Produces `Gemm {alpha: 1, beta: 1}` with inputs `A, B, C`. Sound
//! because Gemm computes `alpha * A B + beta * C` with C broadcast unidirectionally to `[M, N]`,
//! which is exactly the Add of the MatMul's result and C when the Add's result is `[M, N]`.

use kiln_ir::{DType, Graph, IrError, Op};

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
    matches!(op, Op::MatMul { activation } if activation.is_none())
}
