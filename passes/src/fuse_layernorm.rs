//! `fuse-layernorm`: fuses a decomposed layer normalization into one LayerNormalization.
//!
//! Matches what PyTorch and TF exporters emit for LayerNorm over the trailing axes `[a, rank)`:
//! `m = ReduceMean(x)`, `d = Sub(x, m)`, `v = ReduceMean(Pow(d, 2) | Mul(d, d))`,
//! `s = Sqrt(Add(v, eps))`, `n = Div(d, s) | Mul(d, Reciprocal(s))`, then optionally
//! `Mul(n, gamma)` and `Add(_, beta)` with constant gamma and beta that broadcast over the
//! normalized axes only. Every intermediate must have no other reader (except `d`, read twice).
//! Also matches the form TensorFlow's converters write (Keras LayerNormalization through
//! `tf.nn.batch_normalization`, with `Rsqrt` as `Reciprocal(Sqrt)`): the same `m` and `v` (the
//! square as `Mul(d, d)` or `Pow(d, 2)`), `inv = Reciprocal(Sqrt(Add(v, eps))) [* gamma]`, and
//! `y = Add(Mul(x, inv), Sub(beta, Mul(m, inv)))` (or `Sub(Mul(x, inv), Mul(m, inv))` without
//! beta), which is `(x - m) * inv + beta` rearranged.
//! Produces `LayerNormalization {axis: a, epsilon: eps}(x, gamma, beta)`. Sound because that is
//! the ONNX definition of LayerNormalization with a biased variance (the reference computes the
//! statistics in f64, so the fused op is at least as accurate as the chain it replaces).

use std::sync::Arc;

use kiln_ir::{Graph, IrError, NodeId, Op, Tensor, ValueId};

use crate::pipeline::Pass;
use crate::util;

#[derive(Debug)]
pub struct FuseLayerNorm;

impl Pass for FuseLayerNorm {
    fn name(&self) -> &'static str {
        "fuse-layernorm"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        for id in g.topo_order()? {
            if !g.contains_node(id) {
                continue;
            }
            if let Some(m) = match_layernorm(g, id).or_else(|| match_scale_shift_form(g, id)) {
                rewrite(g, m)?;
                changed = true;
            }
        }
        Ok(changed)
    }
}

struct LayerNormMatch {
    x: ValueId,
    axis: usize,
    epsilon: f32,
    gamma: Option<Arc<Tensor>>,
    beta: Option<Arc<Tensor>>,
    /// The node whose result the fused op replaces.
    last: NodeId,
    /// Every node of the chain (removed after the rewrite).
    nodes: Vec<NodeId>,
}

/// The single node reading `v` (and `v` is not a graph output).
fn sole_consumer(g: &Graph, v: ValueId) -> Option<NodeId> {
    if !util::single_use(g, v) {
        return None;
    }
    g.consumers(v).first().map(|&(n, _)| n)
}

/// The other operand of binary node `n` when one operand is `v`.
fn other_operand(g: &Graph, n: NodeId, v: ValueId) -> Option<ValueId> {
    match g.node(n).inputs.as_slice() {
        [a, b] if *a == v => Some(*b),
        [a, b] if *b == v => Some(*a),
        _ => None,
    }
}

fn out(g: &Graph, n: NodeId) -> ValueId {
    g.node(n).outputs[0]
}

/// `(x, axis)` when `mean` is a keepdims ReduceMean of an f32 `x` over its trailing axes
/// `[axis, rank)`: the first node of both forms.
fn trailing_mean(g: &Graph, mean: NodeId) -> Option<(ValueId, usize)> {
    let Op::ReduceMean {
        axes,
        keepdims: true,
    } = &g.node(mean).op
    else {
        return None;
    };
    let x = *g.node(mean).inputs.first()?;
    let rank = g.value(x).ty.rank();
    let axis = *axes.first()?;
    let trailing = *axes == (axis..rank).collect::<Vec<_>>();
    (trailing && g.value(x).ty.dtype == kiln_ir::DType::F32).then_some((x, axis))
}

/// Matches starting from the first ReduceMean.
fn match_layernorm(g: &Graph, mean: NodeId) -> Option<LayerNormMatch> {
    let (x, axis) = trailing_mean(g, mean)?;
    let sub = sole_consumer(g, out(g, mean))?;
    if g.node(sub).op != Op::Sub || g.node(sub).inputs != [x, out(g, mean)] {
        return None;
    }
    let d = out(g, sub);
    // `d` feeds the square and the division, and nothing else (`Mul(d, d)` reads it twice).
    let mut uses = g.consumers(d);
    uses.dedup_by_key(|&mut (n, _)| n);
    if g.is_output(d) || uses.len() != 2 {
        return None;
    }
    // The square: Pow(d, 2) or Mul(d, d) (which reads d twice).
    let sq = uses
        .iter()
        .map(|&(n, _)| n)
        .find(|&n| match &g.node(n).op {
            Op::Pow => {
                g.node(n).inputs[0] == d && util::const_scalar(g, g.node(n).inputs[1]) == Some(2.0)
            }
            Op::Mul => g.node(n).inputs == [d, d],
            _ => false,
        })?;
    let div = uses.iter().map(|&(n, _)| n).find(|&n| n != sq)?;
    let var = sole_consumer(g, out(g, sq))?;
    if g.node(var).op != g.node(mean).op {
        return None;
    }
    let add_eps = sole_consumer(g, out(g, var))?;
    if !matches!(g.node(add_eps).op, Op::Add { activation } if activation.is_none()) {
        return None;
    }
    let epsilon = util::const_scalar(g, other_operand(g, add_eps, out(g, var))?)?;
    let sqrt = sole_consumer(g, out(g, add_eps))?;
    if g.node(sqrt).op != Op::Sqrt {
        return None;
    }
    let mut nodes = vec![mean, sub, sq, var, add_eps, sqrt];
    let s = out(g, sqrt);
    let normed = match g.node(div).op {
        Op::Div if g.node(div).inputs == [d, s] && util::single_use(g, s) => div,
        Op::Mul => {
            let r = other_operand(g, div, d)?;
            let recip = util::producer(g, r)?;
            if g.node(recip).op != Op::Reciprocal
                || g.node(recip).inputs != [s]
                || !util::single_use(g, s)
                || !util::single_use(g, r)
            {
                return None;
            }
            nodes.push(recip);
            div
        }
        _ => return None,
    };
    nodes.push(normed);
    let normalized = g.value(x).ty.shape[axis..].to_vec();
    let mut last = normed;
    let mut gamma = None;
    let mut beta = None;
    if let Some(mul) = sole_consumer(g, out(g, last)) {
        if matches!(g.node(mul).op, Op::Mul) {
            let c = other_operand(g, mul, out(g, last))?;
            if let Some(t) = util::const_of(g, c).and_then(|t| param(&t, &normalized)) {
                gamma = Some(t);
                last = mul;
                nodes.push(mul);
            }
        }
    }
    if let Some(add) = sole_consumer(g, out(g, last)) {
        if matches!(g.node(add).op, Op::Add { activation } if activation.is_none()) {
            let c = other_operand(g, add, out(g, last))?;
            if let Some(t) = util::const_of(g, c).and_then(|t| param(&t, &normalized)) {
                beta = Some(t);
                last = add;
                nodes.push(add);
            }
        }
    }
    if g.value(out(g, last)).ty != g.value(x).ty
        || !util::pattern_is_closed(g, &nodes, out(g, last))
    {
        return None;
    }
    Some(LayerNormMatch {
        x,
        axis,
        epsilon,
        gamma,
        beta,
        last,
        nodes,
    })
}

/// Matches the scale-and-shift form starting from the first ReduceMean (see the module doc).
fn match_scale_shift_form(g: &Graph, mean: NodeId) -> Option<LayerNormMatch> {
    let (x, axis) = trailing_mean(g, mean)?;
    let m = out(g, mean);
    // m feeds the Sub of the variance branch and Mul(m, inv).
    let m_readers: Vec<NodeId> = g.consumers(m).iter().map(|&(n, _)| n).collect();
    let sub = *m_readers
        .iter()
        .find(|&&n| g.node(n).op == Op::Sub && g.node(n).inputs == [x, m])?;
    let d = out(g, sub);
    let sq = sole_consumer(g, d).or_else(|| {
        // Mul(d, d) reads d twice.
        let uses = g.consumers(d);
        match uses.as_slice() {
            [(a, _), (b, _)] if a == b && !g.is_output(d) => Some(*a),
            _ => None,
        }
    })?;
    let is_square = match g.node(sq).op {
        Op::Pow => util::const_scalar(g, g.node(sq).inputs[1]) == Some(2.0),
        Op::Mul => g.node(sq).inputs == [d, d],
        _ => false,
    };
    if !is_square {
        return None;
    }
    let var = sole_consumer(g, out(g, sq))?;
    if g.node(var).op != g.node(mean).op || g.node(var).inputs != [out(g, sq)] {
        return None;
    }
    let add_eps = sole_consumer(g, out(g, var))?;
    if !matches!(g.node(add_eps).op, Op::Add { activation } if activation.is_none()) {
        return None;
    }
    let epsilon = util::const_scalar(g, other_operand(g, add_eps, out(g, var))?)?;
    let sqrt = sole_consumer(g, out(g, add_eps))?;
    let recip = sole_consumer(g, out(g, sqrt))?;
    if g.node(sqrt).op != Op::Sqrt || g.node(recip).op != Op::Reciprocal {
        return None;
    }
    let normalized = g.value(x).ty.shape[axis..].to_vec();
    let mut nodes = vec![mean, sub, sq, var, add_eps, sqrt, recip];
    // inv = r, or Mul(r, gamma) with gamma a constant over the normalized axes.
    let r = out(g, recip);
    let mut gamma = None;
    let mut inv = r;
    if let Some(mg) = sole_consumer(g, r).filter(|&n| g.node(n).op == Op::Mul) {
        let c = other_operand(g, mg, r)?;
        gamma = Some(util::const_of(g, c).and_then(|t| param(&t, &normalized))?);
        inv = out(g, mg);
        nodes.push(mg);
    }
    // inv feeds exactly Mul(x, inv) and Mul(m, inv).
    let readers: Vec<NodeId> = g.consumers(inv).iter().map(|&(n, _)| n).collect();
    let [p, q] = readers.as_slice() else {
        return None;
    };
    let is_product_with =
        |n: NodeId, v: ValueId| g.node(n).op == Op::Mul && other_operand(g, n, inv) == Some(v);
    let (xs, ms) = if is_product_with(*p, x) && is_product_with(*q, m) {
        (*p, *q)
    } else if is_product_with(*q, x) && is_product_with(*p, m) {
        (*q, *p)
    } else {
        return None;
    };
    nodes.extend([xs, ms]);
    let (xs_v, ms_v) = (out(g, xs), out(g, ms));
    let shift = sole_consumer(g, ms_v)?;
    let (last, beta) = match g.node(shift).op {
        // Sub(xs, ms): no beta.
        Op::Sub if g.node(shift).inputs == [xs_v, ms_v] => (shift, None),
        // Sub(beta, ms), then Add with xs.
        Op::Sub if g.node(shift).inputs.get(1) == Some(&ms_v) => {
            let b = g.node(shift).inputs[0];
            let beta = util::const_of(g, b).and_then(|t| param(&t, &normalized))?;
            let add = sole_consumer(g, out(g, shift))?;
            let plain = matches!(g.node(add).op, Op::Add { activation } if activation.is_none());
            if !plain || other_operand(g, add, out(g, shift)) != Some(xs_v) {
                return None;
            }
            nodes.push(shift);
            (add, Some(beta))
        }
        _ => return None,
    };
    nodes.push(last);
    if g.value(out(g, last)).ty != g.value(x).ty
        || !util::pattern_is_closed(g, &nodes, out(g, last))
    {
        return None;
    }
    Some(LayerNormMatch {
        x,
        axis,
        epsilon,
        gamma,
        beta,
        last,
        nodes,
    })
}

/// A scale or bias constant as a LayerNormalization parameter: f32, broadcasting to the
/// normalized shape without spreading over other axes (leading unit dims are dropped).
fn param(t: &Tensor, normalized: &[usize]) -> Option<Arc<Tensor>> {
    t.as_f32()?;
    let mut shape = t.shape().to_vec();
    while shape.len() > normalized.len() {
        if shape[0] != 1 {
            return None;
        }
        shape.remove(0);
    }
    let offset = normalized.len() - shape.len();
    let fits = shape
        .iter()
        .enumerate()
        .all(|(i, &s)| s == 1 || s == normalized[offset + i]);
    if !fits {
        return None;
    }
    Tensor::new(shape, t.data().clone()).ok().map(Arc::new)
}

fn rewrite(g: &mut Graph, m: LayerNormMatch) -> Result<(), IrError> {
    let name = g.node(m.last).name.clone();
    let normalized = g.value(m.x).ty.shape[m.axis..].to_vec();
    let ones = || Tensor::from_f32(normalized.clone(), vec![1.0; normalized.iter().product()]);
    let gamma = match m.gamma {
        Some(t) => t,
        None => Arc::new(ones()?),
    };
    let scale = g.add_const(util::derived_name(&name, "scale"), gamma);
    let mut inputs = vec![m.x, scale];
    if let Some(b) = m.beta {
        inputs.push(g.add_const(util::derived_name(&name, "bias"), b));
    }
    let op = Op::LayerNormalization {
        axis: m.axis,
        epsilon: m.epsilon,
        outputs: 1,
    };
    let ln = g.add_node(util::derived_name(&name, "fused"), op, inputs, vec![])?;
    let y = out(g, ln);
    let old = out(g, m.last);
    if !util::redirect(g, old, y) {
        g.remove_node(ln)?;
        return Ok(());
    }
    g.remove_nodes(&m.nodes)
}
