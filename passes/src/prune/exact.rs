//! `prune-exact` (-O2): removes channels that provably contribute nothing.
//!
//! Matches every unpinned class of the channel analysis (see `groups.rs`) whose channels reach
//! the layers that read them (Conv with group 1, Gemm, MatMul: the class's *exits*) only as
//! - inputs those layers weigh by exact zeros (the layer ignores the channel), or
//! - channels whose value is provably the same constant `v` at every position: `v = 0`
//!   contributes nothing; `v != 0` contributes `v * sum(weights)` to every output, which is
//!   folded into the reader's bias when that is exact: a Gemm, or a Conv without padding (with
//!   padding the border taps read zeros, not `v`).
//!
//! Constant channels come from layers whose weights for that output are all zero (the value
//! is the fused activation of the bias: a channel zeroed by sparsity-aware training, with
//! BatchNormalization folded into it), carried through element-wise ops (a residual channel
//! is constant when every branch is), pools, depthwise convs (a zero input with any weights,
//! or any constant without padding), BatchNormalization and data movement.
//!
//! Produces the graph without those channels: every coupled layer loses them together (the
//! producers' weights and biases, depthwise groups, the readers' input weights), with the
//! folded constants in the readers' biases. Sound because the removed channels' only effect
//! on anything outside the class was through its exits, which add exactly what was folded
//! (zero or the folded constant); every layer keeps at least one channel. Outputs agree up to
//! float rounding of the folded sums.

use std::collections::{BTreeMap, BTreeSet};

use kiln_ir::{Activation, Graph, IrError, NodeId, Op, Tensor, ValueId};

use super::groups::{ChannelGroups, ClassId, Layout, Role};
use crate::pipeline::Pass;

#[derive(Debug)]
pub struct ExactPrune;

impl Pass for ExactPrune {
    fn name(&self) -> &'static str {
        "prune-exact"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, IrError> {
        let groups = super::analyze(g)?;
        let plan = exact_plan(g, &groups);
        if plan.removed.is_empty() {
            return Ok(false);
        }
        super::apply(g, &groups, &plan.removed, &plan.bias_deltas)?;
        Ok(true)
    }
}

/// The classes exact pruning removes and the bias corrections that go with them.
#[derive(Clone, Debug, Default)]
pub struct ExactPlan {
    pub removed: BTreeSet<ClassId>,
    pub bias_deltas: BTreeMap<NodeId, Vec<f64>>,
}

/// Which classes of `groups` can go without changing what `g` computes.
pub fn exact_plan(g: &Graph, groups: &ChannelGroups) -> ExactPlan {
    let known = known_constants(g, groups);
    let mut removable: BTreeSet<ClassId> = (0..groups.classes.len())
        .filter(|&c| !groups.classes[c].is_pinned())
        .collect();
    let mut deltas: BTreeMap<ClassId, BTreeMap<NodeId, Vec<f64>>> = BTreeMap::new();
    for (&id, role) in &groups.roles {
        if !matches!(role, Role::Conv | Role::Gemm | Role::MatMul) {
            continue;
        }
        let node = g.node(id);
        let Some(&x) = node.inputs.first() else {
            continue;
        };
        let Some(l) = groups.layouts.get(&x) else {
            continue;
        };
        let Some(m) = super::weight_matrix(g, id) else {
            // Weights kiln cannot read: every class reaching it stays.
            for &e in &l.slots {
                removable.remove(&groups.class_of(e));
            }
            continue;
        };
        let values = known.get(&x);
        for (s, &e) in l.slots.iter().enumerate() {
            let c = groups.class_of(e);
            if !removable.contains(&c) {
                continue;
            }
            let cols: Vec<usize> = (s * l.block..(s + 1) * l.block).collect();
            let weighs = cols
                .iter()
                .any(|&i| m.in_column(i).iter().any(|&w| w != 0.0));
            if !weighs {
                continue;
            }
            match values.and_then(|v| v[s]) {
                Some(0.0) => {}
                Some(v) => match fold_delta(g, id, &m, &cols, v) {
                    Some(d) => {
                        let acc = deltas
                            .entry(c)
                            .or_default()
                            .entry(id)
                            .or_insert_with(|| vec![0.0; m.outs]);
                        for (a, x) in acc.iter_mut().zip(d) {
                            *a += x;
                        }
                    }
                    None => {
                        removable.remove(&c);
                    }
                },
                None => {
                    removable.remove(&c);
                }
            }
        }
    }
    super::keep_one_per_layout(groups, &mut removable, &|c| -(c as f64));
    let mut bias_deltas: BTreeMap<NodeId, Vec<f64>> = BTreeMap::new();
    for c in &removable {
        for (&id, d) in deltas.get(c).into_iter().flatten() {
            let acc = bias_deltas.entry(id).or_insert_with(|| vec![0.0; d.len()]);
            for (a, x) in acc.iter_mut().zip(d) {
                *a += x;
            }
        }
    }
    ExactPlan {
        removed: removable,
        bias_deltas,
    }
}

/// What input indices `cols` holding the constant `v` add to each output of layer `id`
/// (before its activation), if that can be folded into its bias exactly.
fn fold_delta(
    g: &Graph,
    id: NodeId,
    m: &super::WeightMatrix,
    cols: &[usize],
    v: f32,
) -> Option<Vec<f64>> {
    let node = g.node(id);
    let scale = match &node.op {
        Op::Conv { pads, .. } if pads.iter().all(|&p| p == 0) => 1.0,
        Op::Gemm { alpha, beta, .. } => {
            // The bias must be representable as one value per output (see `bias_vector`).
            if node.inputs.len() > 2
                && (*beta == 0.0 || super::bias_vector(g, id, m.outs).is_none())
            {
                return None;
            }
            f64::from(*alpha)
        }
        _ => return None,
    };
    Some(
        (0..m.outs)
            .map(|o| {
                let sum: f64 = cols
                    .iter()
                    .flat_map(|&i| (0..m.taps).map(move |t| (i, t)))
                    .map(|(i, t)| f64::from(m.get(o, i, t)))
                    .sum();
                scale * f64::from(v) * sum
            })
            .collect(),
    )
}

/// Applies `op` (unary, binary or a fused activation's op) to scalars.
fn eval_scalar(op: &Op, args: &[f32]) -> Option<f32> {
    let ts: Vec<Tensor> = args.iter().map(|&a| Tensor::scalar_f32(a)).collect();
    let refs: Vec<&Tensor> = ts.iter().collect();
    let out = kiln_ir::ops::eval(op, &refs).ok()?;
    out.first()?.as_f32()?.first().copied()
}

fn activate(act: Activation, v: f32) -> Option<f32> {
    match act.as_op() {
        None => Some(v),
        Some(op) => eval_scalar(&op, &[v]),
    }
}

/// The value of each channel position that is provably one constant everywhere, per value
/// that carries channels.
pub fn known_constants(g: &Graph, groups: &ChannelGroups) -> BTreeMap<ValueId, Vec<Option<f32>>> {
    let mut known: BTreeMap<ValueId, Vec<Option<f32>>> = BTreeMap::new();
    let Ok(order) = g.topo_order() else {
        return known;
    };
    for id in order {
        let node = g.node(id);
        let Some(&y) = node.outputs.first() else {
            continue;
        };
        let Some(out_layout) = groups.layouts.get(&y) else {
            continue;
        };
        let n = out_layout.slots.len();
        let input_known = |slot: usize| -> Option<&Vec<Option<f32>>> {
            node.inputs.get(slot).and_then(|v| known.get(v))
        };
        let role = groups.roles.get(&id);
        let values: Vec<Option<f32>> = match (&node.op, role) {
            (Op::Conv { activation, .. }, Some(Role::Conv))
            | (Op::Gemm { activation, .. }, Some(Role::Gemm))
            | (Op::MatMul { activation, .. }, Some(Role::MatMul)) => {
                let m = super::weight_matrix(g, id);
                let bias = m.as_ref().and_then(|m| super::bias_vector(g, id, m.outs));
                let has_c = node.inputs.len() > 2;
                (0..n)
                    .map(|o| {
                        let m = m.as_ref()?;
                        if m.out_row(o).iter().any(|&w| w != 0.0) {
                            return None;
                        }
                        let b = match (&bias, has_c) {
                            (Some(b), _) => b[o],
                            (None, false) => 0.0,
                            (None, true) => return None,
                        };
                        activate(*activation, b)
                    })
                    .collect()
            }
            (
                Op::Conv {
                    activation, pads, ..
                },
                Some(Role::Depthwise),
            ) => {
                let m = super::weight_matrix(g, id);
                let bias = m.as_ref().and_then(|m| super::bias_vector(g, id, m.outs));
                let x = input_known(0);
                let c_in = g.value(node.inputs[0]).ty.shape[1].max(1);
                let mult = (n / c_in).max(1);
                let unpadded = pads.iter().all(|&p| p == 0);
                (0..n)
                    .map(|o| {
                        let m = m.as_ref()?;
                        let b = bias.as_ref().map_or(0.0, |b| b[o]);
                        let row = m.out_row(o);
                        if row.iter().all(|&w| w == 0.0) {
                            return activate(*activation, b);
                        }
                        let v = x.and_then(|x| x.get(o / mult).copied().flatten())?;
                        if v != 0.0 && !unpadded {
                            return None;
                        }
                        let sum: f32 = row.iter().sum();
                        activate(*activation, b + v * sum)
                    })
                    .collect()
            }
            (op, Some(Role::Follow)) if op.family() == kiln_ir::op::OpFamily::Unary => {
                match input_known(0) {
                    Some(x) => x
                        .iter()
                        .map(|v| v.and_then(|v| eval_scalar(op, &[v])))
                        .collect(),
                    None => vec![None; n],
                }
            }
            (op, Some(Role::Elementwise { .. })) => {
                elementwise_known(g, groups, &known, id, op, out_layout)
            }
            (Op::MaxPool { .. } | Op::GlobalAveragePool | Op::GlobalMaxPool, _) => {
                input_known(0).cloned().unwrap_or_else(|| vec![None; n])
            }
            (
                Op::AveragePool {
                    pads,
                    count_include_pad,
                    ..
                },
                _,
            ) => {
                let exact = !count_include_pad || pads.iter().all(|&p| p == 0);
                match input_known(0) {
                    Some(x) => x.iter().map(|v| v.filter(|&v| exact || v == 0.0)).collect(),
                    None => vec![None; n],
                }
            }
            (Op::BatchNormalization { epsilon }, Some(Role::ChannelParams { .. })) => {
                let params: Option<Vec<Vec<f32>>> = node.inputs[1..]
                    .iter()
                    .map(|&v| {
                        g.value(v)
                            .const_tensor()
                            .and_then(|t| t.as_f32().map(<[f32]>::to_vec))
                    })
                    .collect();
                match (input_known(0), params) {
                    (Some(x), Some(p)) if p.len() == 4 => x
                        .iter()
                        .enumerate()
                        .map(|(c, v)| {
                            let v = (*v)?;
                            Some((v - p[2][c]) / (p[3][c] + epsilon).sqrt() * p[0][c] + p[1][c])
                        })
                        .collect(),
                    _ => vec![None; n],
                }
            }
            (Op::Reshape { .. } | Op::Transpose { .. } | Op::Slice { .. } | Op::Tile { .. }, _) => {
                input_known(0).cloned().unwrap_or_else(|| vec![None; n])
            }
            (Op::Pad { mode, value, .. }, _) => match input_known(0) {
                Some(x) => x
                    .iter()
                    .map(|v| {
                        v.filter(|&v| {
                            *mode != kiln_ir::op::PadMode::Constant || f64::from(v) == *value
                        })
                    })
                    .collect(),
                None => vec![None; n],
            },
            (Op::ReduceMean { .. } | Op::ReduceMax { .. } | Op::ReduceMin { .. }, _) => {
                input_known(0).cloned().unwrap_or_else(|| vec![None; n])
            }
            (Op::Concat { .. }, _) => {
                let parts: Vec<Vec<Option<f32>>> = node
                    .inputs
                    .iter()
                    .map(|v| {
                        let len = groups.layouts.get(v).map_or(0, |l| l.slots.len());
                        known.get(v).cloned().unwrap_or_else(|| vec![None; len])
                    })
                    .collect();
                let total: usize = parts.iter().map(Vec::len).sum();
                if total == n {
                    parts.concat()
                } else {
                    // Joined along another axis: each position is constant if all agree.
                    (0..n)
                        .map(|s| {
                            let first = parts.first()?.get(s).copied().flatten()?;
                            parts
                                .iter()
                                .all(|p| p.get(s).copied().flatten() == Some(first))
                                .then_some(first)
                        })
                        .collect()
                }
            }
            (Op::Split { .. }, _) => {
                // Each output's positions are a run of the input's (or all of them).
                let mut split = Vec::new();
                if let (Some(x), Some(lx)) = (input_known(0), groups.layouts.get(&node.inputs[0])) {
                    for &o in &node.outputs {
                        if let Some(lo) = groups.layouts.get(&o) {
                            let vals: Vec<Option<f32>> = lo
                                .slots
                                .iter()
                                .map(|e| lx.slots.iter().position(|s| s == e).and_then(|i| x[i]))
                                .collect();
                            split.push((o, vals));
                        }
                    }
                }
                known.extend(split);
                continue;
            }
            _ => vec![None; n],
        };
        if values.len() == n {
            known.insert(y, values);
        }
    }
    known
}

/// Per position of a broadcasting element-wise op's output: the op applied to the inputs'
/// constants, when every input is constant there.
fn elementwise_known(
    g: &Graph,
    groups: &ChannelGroups,
    known: &BTreeMap<ValueId, Vec<Option<f32>>>,
    id: NodeId,
    op: &Op,
    out: &Layout,
) -> Vec<Option<f32>> {
    let node = g.node(id);
    let n = out.slots.len();
    let r = g.value(node.outputs[0]).ty.rank();
    let per_input: Vec<Vec<Option<f32>>> = node
        .inputs
        .iter()
        .map(|&v| {
            if groups.layouts.contains_key(&v) {
                return known.get(&v).cloned().unwrap_or_else(|| vec![None; n]);
            }
            let value = g.value(v);
            let Some(t) = value.const_tensor() else {
                return vec![None; n];
            };
            let Some(d) = t.as_f32() else {
                return vec![None; n];
            };
            let shape = t.shape();
            let off = r - shape.len().min(r);
            let own = out.axis.checked_sub(off).filter(|&a| a < shape.len());
            // A constant per channel position: equal across every other axis and the block.
            let outer: usize = own.map_or(1, |a| shape[..a].iter().product());
            let dim = own.map_or(1, |a| shape[a]);
            let inner: usize = own.map_or(d.len(), |a| shape[a + 1..].iter().product());
            (0..n)
                .map(|s| {
                    let idxs: Vec<usize> = if dim == 1 {
                        (0..d.len()).collect()
                    } else {
                        let mut v = Vec::new();
                        for o in 0..outer {
                            for i in s * out.block..(s + 1) * out.block {
                                let base = (o * dim + i) * inner;
                                v.extend(base..base + inner);
                            }
                        }
                        v
                    };
                    let first = d[*idxs.first()?];
                    idxs.iter()
                        .all(|&i| d[i].to_bits() == first.to_bits())
                        .then_some(first)
                })
                .collect()
        })
        .collect();
    (0..n)
        .map(|s| {
            let args: Option<Vec<f32>> = per_input.iter().map(|p| p[s]).collect();
            let base = match op {
                Op::Add { .. } => Op::Add {
                    activation: Activation::None,
                },
                other => other.clone(),
            };
            let v = eval_scalar(&base, &args?)?;
            activate(op.activation(), v)
        })
        .collect()
}
