//! `transpose-cleanup`: removes, merges and moves Transposes so layout changes cancel.
//!
//! Rewrites, each sound because it only reorders where a permutation is applied:
//! - `Transpose(Transpose(x, p), q)` becomes `Transpose(x, r)` with `r[i] = p[q[i]]` (the
//!   composition), and a Transpose with the identity permutation is removed, so inverse pairs
//!   cancel;
//! - a Transpose read only by an element-wise unary op (or a binary op whose other operand is a
//!   constant) is sunk below it: `f(Transpose(x, p))` becomes `Transpose(f(x), p)`, with the
//!   constant operand broadcast to full rank and permuted by the inverse of `p`, because
//!   element-wise ops commute with any permutation of their (equally permuted) operands. This
//!   walks the Transposes TF converters put around every op down until they meet their inverse;
//! - a 2-D Transpose feeding a Gemm operand toggles `trans_a`/`trans_b`, and one feeding a 2-D
//!   MatMul turns it into a Gemm with the flag set, because Gemm defines exactly that;
//! - a Transpose feeding a batched MatMul becomes (part of) that operand's permutation
//!   (`MatMul::a_perm`/`b_perm`), because the MatMul is defined as reading its operands through
//!   those permutations.

use std::sync::Arc;

use kiln_ir::op::OpFamily;
use kiln_ir::{DType, Graph, IrError, NodeId, Op, Tensor};

use crate::pipeline::Pass;
use crate::util;

#[derive(Debug)]
pub struct TransposeCleanup;

impl Pass for TransposeCleanup {
    fn name(&self) -> &'static str {
        "transpose-cleanup"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        // Each rewrite either removes a Transpose or moves one strictly downstream, so this ends;
        // the bound only guards against a bug turning it into a loop.
        for _ in 0..64 {
            let mut round = false;
            for id in g.topo_order()? {
                if g.contains_node(id) && matches!(g.node(id).op, Op::Transpose { .. }) {
                    round |= compose(g, id)? || remove_identity(g, id)? || sink(g, id)?;
                }
            }
            for id in g.topo_order()? {
                round |= fold_into_gemm(g, id)? || fold_into_matmul(g, id)?;
            }
            changed |= round;
            if !round {
                break;
            }
        }
        Ok(changed)
    }
}

fn perm_of(g: &Graph, id: NodeId) -> Option<Vec<usize>> {
    match &g.node(id).op {
        Op::Transpose { perm } => Some(perm.clone()),
        _ => None,
    }
}

fn node_err(g: &Graph, id: NodeId, source: kiln_ir::OpError) -> IrError {
    IrError::Node {
        node: g.node(id).name.clone(),
        op: g.node(id).op.name().to_string(),
        source,
    }
}

/// `Transpose(Transpose(x, p), q)` -> `Transpose(x, p o q)`.
fn compose(g: &mut Graph, id: NodeId) -> Result<bool, IrError> {
    let q = perm_of(g, id).unwrap_or_default();
    let inner_v = g.node(id).inputs[0];
    let Some(inner) = util::producer(g, inner_v) else {
        return Ok(false);
    };
    let Some(p) = perm_of(g, inner) else {
        return Ok(false);
    };
    let x = g.node(inner).inputs[0];
    let r: Vec<usize> = q.iter().map(|&i| p[i]).collect();
    g.set_node_input(id, 0, x);
    g.set_node_op(id, Op::Transpose { perm: r })
        .map_err(|e| node_err(g, id, e))?;
    remove_if_unused(g, inner)?;
    Ok(true)
}

fn remove_identity(g: &mut Graph, id: NodeId) -> Result<bool, IrError> {
    let p = perm_of(g, id).unwrap_or_default();
    if p.iter().enumerate().any(|(i, &a)| i != a) {
        return Ok(false);
    }
    let (x, y) = (g.node(id).inputs[0], g.node(id).outputs[0]);
    if !util::redirect(g, y, x) {
        return Ok(false);
    }
    g.remove_node(id)?;
    Ok(true)
}

fn inverse(p: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; p.len()];
    for (i, &a) in p.iter().enumerate() {
        inv[a] = i;
    }
    inv
}

/// Whether `op` is element-wise and commutes with a permutation of all its operands.
fn elementwise(op: &Op) -> bool {
    match op.family() {
        OpFamily::Unary => !matches!(op, Op::Dropout { .. }),
        OpFamily::Binary => !matches!(op, Op::Where),
        _ => false,
    }
}

/// `f(Transpose(x, p), c..)` -> `Transpose(f(x, c'..), p)` for an element-wise `f`.
fn sink(g: &mut Graph, id: NodeId) -> Result<bool, IrError> {
    let t = g.node(id).outputs[0];
    let p = perm_of(g, id).unwrap_or_default();
    if !util::single_use(g, t) {
        return Ok(false);
    }
    let Some(&(f, _)) = g.consumers(t).first() else {
        return Ok(false);
    };
    let fnode = g.node(f).clone();
    if !elementwise(&fnode.op) || fnode.outputs.len() != 1 {
        return Ok(false);
    }
    let rank = p.len();
    let y = fnode.outputs[0];
    if g.value(y).ty.shape != g.value(t).ty.shape || !util::can_redirect(g, y, t) {
        return Ok(false);
    }
    // Every other operand must be a constant of rank <= rank (it is permuted at compile time).
    let inv = inverse(&p);
    let mut new_inputs = Vec::with_capacity(fnode.inputs.len());
    for &v in &fnode.inputs {
        if v == t {
            new_inputs.push(g.node(id).inputs[0]);
            continue;
        }
        let Some(c) = util::const_of(g, v) else {
            return Ok(false);
        };
        if c.shape().len() > rank {
            return Ok(false);
        }
        let mut shape = vec![1; rank - c.shape().len()];
        shape.extend_from_slice(c.shape());
        let full = Tensor::new(shape, c.data().clone())?;
        let permuted = kiln_ir::ops::eval(&Op::Transpose { perm: inv.clone() }, &[&full])
            .map_err(|e| node_err(g, f, e))?;
        let Some(permuted) = permuted.into_iter().next() else {
            return Ok(false);
        };
        let name = g.value(v).name.clone();
        new_inputs.push(g.add_const(name, Arc::new(permuted)));
    }
    // f now reads x directly; the Transpose reads f's result and takes over f's uses.
    let old_inputs = fnode.inputs.clone();
    g.set_node_inputs(f, new_inputs);
    if g.refresh_types(f).is_err() {
        g.set_node_inputs(f, old_inputs);
        g.refresh_types(f).map_err(|e| node_err(g, f, e))?;
        return Ok(false);
    }
    let fy = g.node(f).outputs[0];
    // Fresh Transpose after f, then retire the old one.
    let name = g.node(id).name.clone();
    let nt = g.add_node(name, Op::Transpose { perm: p }, vec![fy], vec![])?;
    let ny = g.node(nt).outputs[0];
    for (n, slot) in g.consumers(fy) {
        if n != nt {
            g.set_node_input(n, slot, ny);
        }
    }
    if g.is_output(fy) {
        util::redirect(g, fy, ny);
        // redirect also repointed the new Transpose's own input; point it back.
        g.set_node_input(nt, 0, fy);
    }
    g.remove_node(id)?;
    Ok(true)
}

/// Folds a 2-D Transpose operand of a Gemm or 2-D MatMul into Gemm's `trans_a`/`trans_b`.
fn fold_into_gemm(g: &mut Graph, id: NodeId) -> Result<bool, IrError> {
    if !g.contains_node(id) {
        return Ok(false);
    }
    let node = g.node(id).clone();
    let (alpha, beta, mut ta, mut tb, activation) = match node.op {
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
            activation,
        } => (alpha, beta, trans_a, trans_b, activation),
        Op::MatMul {
            activation,
            a_perm,
            b_perm,
        } if a_perm.is_empty()
            && b_perm.is_empty()
            && node.inputs.iter().all(|&v| g.value(v).ty.rank() == 2)
            && g.value(node.outputs[0]).ty.dtype == DType::F32 =>
        {
            (1.0, 1.0, false, false, activation)
        }
        _ => return Ok(false),
    };
    let mut inputs = node.inputs.clone();
    let mut changed = false;
    let mut folded = Vec::new();
    for (slot, flag) in [(0, &mut ta), (1, &mut tb)] {
        let v = inputs[slot];
        let Some(t) = util::producer(g, v) else {
            continue;
        };
        if perm_of(g, t).as_deref() == Some(&[1, 0]) && util::single_use(g, v) {
            inputs[slot] = g.node(t).inputs[0];
            *flag = !*flag;
            changed = true;
            folded.push(t);
        }
    }
    if !changed {
        return Ok(false);
    }
    let op = Op::Gemm {
        alpha,
        beta,
        trans_a: ta,
        trans_b: tb,
        activation,
    };
    g.set_node_inputs(id, inputs);
    g.set_node_op(id, op).map_err(|e| node_err(g, id, e))?;
    for t in folded {
        remove_if_unused(g, t)?;
    }
    Ok(true)
}

/// Folds a Transpose operand of a batched MatMul (one that is not a plain 2-D product, which
/// [`fold_into_gemm`] takes) into the MatMul's operand permutation: the MatMul then reads the
/// Transpose's input through the composed permutation, with no copy.
fn fold_into_matmul(g: &mut Graph, id: NodeId) -> Result<bool, IrError> {
    if !g.contains_node(id) {
        return Ok(false);
    }
    let node = g.node(id).clone();
    let Op::MatMul {
        activation,
        a_perm,
        b_perm,
    } = node.op
    else {
        return Ok(false);
    };
    let plain_2d = a_perm.is_empty()
        && b_perm.is_empty()
        && node.inputs.iter().all(|&v| g.value(v).ty.rank() == 2);
    if plain_2d {
        return Ok(false);
    }
    let mut inputs = node.inputs.clone();
    let mut perms = [a_perm, b_perm];
    let mut folded = Vec::new();
    for slot in 0..2 {
        let v = inputs[slot];
        let Some(t) = util::producer(g, v) else {
            continue;
        };
        let Some(q) = perm_of(g, t) else { continue };
        if q.len() < 2 || !util::single_use(g, v) {
            continue;
        }
        // The MatMul reads Transpose(Transpose(x, q), p) = Transpose(x, r), r[i] = q[p[i]].
        let r: Vec<usize> = if perms[slot].is_empty() {
            q
        } else {
            perms[slot].iter().map(|&i| q[i]).collect()
        };
        let identity = r.iter().enumerate().all(|(i, &a)| i == a);
        perms[slot] = if identity { Vec::new() } else { r };
        inputs[slot] = g.node(t).inputs[0];
        folded.push(t);
    }
    if folded.is_empty() {
        return Ok(false);
    }
    let [a_perm, b_perm] = perms;
    let op = Op::MatMul {
        activation,
        a_perm,
        b_perm,
    };
    g.set_node_inputs(id, inputs);
    g.set_node_op(id, op).map_err(|e| node_err(g, id, e))?;
    for t in folded {
        remove_if_unused(g, t)?;
    }
    Ok(true)
}

/// Removes a node whose single result nothing reads any more.
fn remove_if_unused(g: &mut Graph, id: NodeId) -> Result<(), IrError> {
    if g.contains_node(id) && g.node(id).outputs.iter().all(|&v| !util::is_used(g, v)) {
        g.remove_node(id)?;
    }
    Ok(())
}
