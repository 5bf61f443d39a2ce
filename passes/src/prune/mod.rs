//! Structured pruning: removing whole channels from a float graph.
//!
//! - `groups.rs`: the channel dependency analysis (which channels go together, which cannot go);
//! - `exact.rs`: the `prune-exact` pass (-O2): channels that provably contribute nothing, or a
//!   constant folded into the next layer's bias;
//! - `magnitude.rs`: `--prune channels=RATIO`: the lowest-scoring classes of each group;
//! - `repair.rs`: least-squares refit of the layers that read pruned channels, on calibration
//!   samples run by the caller's engine;
//! - `report.rs`: parameters, weight bytes, MACs and arena before and after, per layer.
//!
//! Every removal goes through [`apply`], which rewrites the graph from the analysis: weights
//! and biases sliced, depthwise groups, Reshape shapes and Split sizes updated, types
//! re-inferred. Node ids survive, so before/after graphs can be compared layer by layer.

pub mod exact;
pub mod groups;
pub mod magnitude;
pub mod repair;
pub mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kiln_ir::{Graph, IrError, NodeId, Op, OpError, Tensor, ValueId};

pub use groups::{analyze, ChannelGroups, ClassId, Role};

use groups::{kept_indices, slice_axis};

/// What a removal did to each layer: the original indices it kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Output channels kept by each layer that lost some (original indices).
    pub kept_out: BTreeMap<NodeId, Vec<usize>>,
    /// Input indices (channels, or features after a Flatten) kept by each Conv/Gemm/MatMul
    /// that lost some.
    pub kept_in: BTreeMap<NodeId, Vec<usize>>,
}

impl Applied {
    /// The Conv (group 1), Gemm and MatMul layers that read fewer inputs than before: the
    /// layers repair refits.
    pub fn consumers(&self) -> Vec<NodeId> {
        self.kept_in.keys().copied().collect()
    }
}

fn node_err(g: &Graph, id: NodeId, source: OpError) -> IrError {
    let node = g.node(id);
    IrError::Node {
        node: node.name.clone(),
        op: node.op.name().to_string(),
        source,
    }
}

/// A layer's constant weights in one canonical form: `[out][in][taps]`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightMatrix {
    pub data: Vec<f32>,
    pub outs: usize,
    pub ins: usize,
    pub taps: usize,
}

impl WeightMatrix {
    /// The weights of output channel `o` (all inputs and taps).
    pub fn out_row(&self, o: usize) -> &[f32] {
        let n = self.ins * self.taps;
        &self.data[o * n..(o + 1) * n]
    }

    /// The weights of input `i` for every output and tap.
    pub fn in_column(&self, i: usize) -> Vec<f32> {
        let mut v = Vec::with_capacity(self.outs * self.taps);
        for o in 0..self.outs {
            let base = (o * self.ins + i) * self.taps;
            v.extend_from_slice(&self.data[base..base + self.taps]);
        }
        v
    }

    pub fn get(&self, o: usize, i: usize, t: usize) -> f32 {
        self.data[(o * self.ins + i) * self.taps + t]
    }
}

/// The weights of a Conv, Gemm or MatMul with a role in `groups` (constant weights), as a
/// [`WeightMatrix`]. A depthwise Conv has one input per output.
pub fn weight_matrix(g: &Graph, id: NodeId) -> Option<WeightMatrix> {
    let node = g.node(id);
    let w = g.value(*node.inputs.get(1)?).const_tensor()?;
    let data = w.as_f32()?;
    let shape = w.shape();
    match &node.op {
        Op::Conv { .. } => {
            let outs = *shape.first()?;
            let ins = *shape.get(1)?;
            let taps: usize = shape.get(2..)?.iter().product();
            Some(WeightMatrix {
                data: data.to_vec(),
                outs,
                ins,
                taps,
            })
        }
        Op::Gemm { .. } | Op::MatMul { .. } if shape.len() == 2 => {
            // Gemm with trans_b stores [N, K]; otherwise B is [K, N].
            let nk = matches!(node.op, Op::Gemm { trans_b: true, .. });
            let (outs, ins) = if nk {
                (shape[0], shape[1])
            } else {
                (shape[1], shape[0])
            };
            let mut m = vec![0.0; outs * ins];
            for o in 0..outs {
                for i in 0..ins {
                    m[o * ins + i] = if nk {
                        data[o * ins + i]
                    } else {
                        data[i * outs + o]
                    };
                }
            }
            Some(WeightMatrix {
                data: m,
                outs,
                ins,
                taps: 1,
            })
        }
        _ => None,
    }
}

/// Writes a canonical weight matrix back into `node`'s weight layout as a new constant.
pub fn matrix_to_weights(g: &Graph, id: NodeId, m: &WeightMatrix) -> Result<Tensor, IrError> {
    let node = g.node(id);
    let old = node
        .inputs
        .get(1)
        .and_then(|&w| g.value(w).const_tensor())
        .map(|t| t.shape().to_vec())
        .unwrap_or_default();
    match &node.op {
        Op::Conv { .. } => {
            let mut shape = old;
            if shape.len() < 2 {
                shape = vec![m.outs, m.ins, m.taps];
            }
            shape[0] = m.outs;
            shape[1] = m.ins;
            Tensor::from_f32(shape, m.data.clone())
        }
        Op::Gemm { trans_b: true, .. } => Tensor::from_f32(vec![m.outs, m.ins], m.data.clone()),
        _ => {
            let mut t = vec![0.0; m.outs * m.ins];
            for o in 0..m.outs {
                for i in 0..m.ins {
                    t[i * m.outs + o] = m.data[o * m.ins + i];
                }
            }
            Tensor::from_f32(vec![m.ins, m.outs], t)
        }
    }
}

/// The bias of a Conv or Gemm as one value per output channel (`None` if it has none, or a
/// Gemm's C is not one row, or a MatMul).
pub fn bias_vector(g: &Graph, id: NodeId, outs: usize) -> Option<Vec<f32>> {
    let node = g.node(id);
    let b = g.value(*node.inputs.get(2)?).const_tensor()?;
    let d = b.as_f32()?;
    match &node.op {
        Op::Conv { .. } if d.len() == outs => Some(d.to_vec()),
        Op::Gemm { beta, .. } => {
            let s: Vec<f32> = if d.len() == outs && b.shape().last() == Some(&outs) {
                d.to_vec()
            } else if d.len() == 1 {
                vec![d[0]; outs]
            } else {
                return None;
            };
            Some(s.iter().map(|&x| x * beta).collect())
        }
        _ => None,
    }
}

/// Removes the classes `removed` (none pinned) from `g`, adding `bias_deltas` (per node, one
/// value per original output channel) to the biases of the layers that read a channel whose
/// constant value is folded (see `exact.rs`). Every layer keeps at least one channel: callers
/// choose removals that leave one (see [`keep_one_per_layout`]).
pub fn apply(
    g: &mut Graph,
    groups: &ChannelGroups,
    removed: &BTreeSet<ClassId>,
    bias_deltas: &BTreeMap<NodeId, Vec<f64>>,
) -> Result<Applied, IrError> {
    let mut kept: BTreeMap<ValueId, Vec<usize>> = BTreeMap::new();
    for (&v, l) in &groups.layouts {
        let k = kept_indices(groups, l, removed);
        if k.len() != l.slots.len() * l.block {
            kept.insert(v, k);
        }
    }
    let mut applied = Applied::default();
    for id in g.topo_order()? {
        let node = g.node(id).clone();
        let role = groups.roles.get(&id);
        let kin = node.inputs.first().and_then(|v| kept.get(v));
        let kout = node.outputs.first().and_then(|v| kept.get(v));
        let delta = bias_deltas.get(&id);
        let mut op = node.op.clone();
        match role {
            Some(Role::Conv | Role::Gemm | Role::MatMul | Role::Depthwise) => {
                let depthwise = role == Some(&Role::Depthwise);
                rewrite_layer(g, id, &mut op, kin, kout, delta, depthwise, &mut applied)?;
            }
            Some(Role::Elementwise { consts }) => {
                if let Some(k) = kout {
                    for &(slot, axis) in consts {
                        let v = node.inputs[slot];
                        if let Some(t) = g.value(v).const_tensor().cloned() {
                            let name = g.value(v).name.clone();
                            let s = g.add_const(name, Arc::new(slice_axis(&t, axis, k)?));
                            g.set_node_input(id, slot, s);
                        }
                    }
                }
            }
            Some(Role::ChannelParams { params }) => {
                if let Some(k) = kin {
                    for &slot in params {
                        let v = node.inputs[slot];
                        if let Some(t) = g.value(v).const_tensor().cloned() {
                            let name = g.value(v).name.clone();
                            let s = g.add_const(name, Arc::new(slice_axis(&t, 0, k)?));
                            g.set_node_input(id, slot, s);
                        }
                    }
                }
            }
            Some(Role::Reshape) => {
                if let (Some(k), Some(l), Op::Reshape { shape }) = (
                    kout,
                    node.outputs.first().and_then(|v| groups.layouts.get(v)),
                    &mut op,
                ) {
                    shape[l.axis] = k.len();
                }
            }
            Some(Role::Split) => {
                if let Op::Split { sizes, .. } = &mut op {
                    for (o, s) in node.outputs.iter().zip(sizes.iter_mut()) {
                        if let Some(k) = kept.get(o) {
                            *s = k.len();
                        }
                    }
                }
            }
            Some(Role::Slice) => {
                if let (Some(l), Op::Slice { ends, .. }) = (
                    node.inputs.first().and_then(|v| groups.layouts.get(v)),
                    &mut op,
                ) {
                    let dim = g.value(node.inputs[0]).ty.shape[l.axis] as i64;
                    ends[l.axis] = dim;
                }
            }
            Some(Role::Resize) => {
                if let (Some(l), Op::Resize { out_shape, .. }) = (
                    node.inputs.first().and_then(|v| groups.layouts.get(v)),
                    &mut op,
                ) {
                    out_shape[l.axis] = g.value(node.inputs[0]).ty.shape[l.axis];
                }
            }
            Some(Role::Follow) | None => {}
        }
        if op != node.op {
            g.set_node_op(id, op).map_err(|e| node_err(g, id, e))?;
        } else {
            g.refresh_types(id).map_err(|e| node_err(g, id, e))?;
        }
    }
    Ok(applied)
}

/// Slices a layer's weights (and bias) to the kept outputs and inputs, after adding `delta`
/// to its bias.
#[allow(clippy::too_many_arguments)] // one call site; the pieces are the rewrite's state
fn rewrite_layer(
    g: &mut Graph,
    id: NodeId,
    op: &mut Op,
    kin: Option<&Vec<usize>>,
    kout: Option<&Vec<usize>>,
    delta: Option<&Vec<f64>>,
    depthwise: bool,
    applied: &mut Applied,
) -> Result<(), IrError> {
    if kin.is_none() && kout.is_none() && delta.is_none() {
        return Ok(());
    }
    let node = g.node(id).clone();
    let Some(mut m) = weight_matrix(g, id) else {
        return Ok(());
    };
    let outs_before = m.outs;
    let has_c = node.inputs.len() > 2;
    let mut bias = bias_vector(g, id, outs_before);
    if let Some(d) = delta {
        let b = bias.get_or_insert_with(|| vec![0.0; outs_before]);
        for (x, &dx) in b.iter_mut().zip(d) {
            *x = (f64::from(*x) + dx) as f32;
        }
    }
    if let Some(k) = kout {
        m = select_rows(&m, k);
        bias = bias.map(|b| k.iter().map(|&o| b[o]).collect());
        applied.kept_out.insert(id, k.clone());
        if has_c && bias.is_none() {
            // A C that is not one row (a Gemm over several rows): sliced as it is.
            let c = node.inputs[2];
            if let Some(t) = g.value(c).const_tensor().cloned() {
                let axis = t.shape().len().saturating_sub(1);
                if t.shape().last() == Some(&outs_before) {
                    let name = g.value(c).name.clone();
                    let s = g.add_const(name, Arc::new(slice_axis(&t, axis, k)?));
                    g.set_node_input(id, 2, s);
                }
            }
        }
    }
    if let (Some(k), false) = (kin, depthwise) {
        m = select_columns(&m, k);
        applied.kept_in.insert(id, k.clone());
    }
    let w = matrix_to_weights(g, id, &m)?;
    let wname = g.value(node.inputs[1]).name.clone();
    let wv = g.add_const(wname, Arc::new(w));
    g.set_node_input(id, 1, wv);
    if let Some(b) = bias {
        set_bias(g, id, op, b)?;
    }
    if depthwise {
        if let Op::Conv { group, .. } = op {
            *group = g.value(node.inputs[0]).ty.shape[1];
        }
    }
    Ok(())
}

/// Sets a Conv's or Gemm's bias to `b` (one value per output channel), as a new constant.
fn set_bias(g: &mut Graph, id: NodeId, op: &mut Op, b: Vec<f32>) -> Result<(), IrError> {
    let node = g.node(id).clone();
    let n = b.len();
    let (name, shape) = match node.inputs.get(2) {
        Some(&c) => {
            let old = g.value(c);
            let shape = match &node.op {
                // A one-row C keeps its rank.
                Op::Gemm { .. } if old.ty.rank() == 2 => vec![1, n],
                _ => vec![n],
            };
            (old.name.clone(), shape)
        }
        None => (format!("{}/bias", node.name), vec![n]),
    };
    // Gemm adds beta * C: store C so that beta * C is the bias, with beta = 1.
    if let Op::Gemm { beta, .. } = op {
        *beta = 1.0;
    }
    let c = g.add_const(name, Arc::new(Tensor::from_f32(shape, b)?));
    if node.inputs.len() > 2 {
        g.set_node_input(id, 2, c);
    } else {
        let mut inputs = node.inputs.clone();
        inputs.push(c);
        g.set_node_inputs(id, inputs);
    }
    Ok(())
}

fn select_rows(m: &WeightMatrix, rows: &[usize]) -> WeightMatrix {
    let n = m.ins * m.taps;
    let mut data = Vec::with_capacity(rows.len() * n);
    for &o in rows {
        data.extend_from_slice(&m.data[o * n..(o + 1) * n]);
    }
    WeightMatrix {
        data,
        outs: rows.len(),
        ins: m.ins,
        taps: m.taps,
    }
}

fn select_columns(m: &WeightMatrix, cols: &[usize]) -> WeightMatrix {
    let mut data = Vec::with_capacity(m.outs * cols.len() * m.taps);
    for o in 0..m.outs {
        for &i in cols {
            let base = (o * m.ins + i) * m.taps;
            data.extend_from_slice(&m.data[base..base + m.taps]);
        }
    }
    WeightMatrix {
        data,
        outs: m.outs,
        ins: cols.len(),
        taps: m.taps,
    }
}

/// Takes classes back out of `removed` until every value keeps at least one channel (a layer
/// never loses all of its outputs): for each value that would lose all, the class `best`
/// ranks highest among its positions stays.
pub fn keep_one_per_layout(
    groups: &ChannelGroups,
    removed: &mut BTreeSet<ClassId>,
    best: &dyn Fn(ClassId) -> f64,
) {
    loop {
        let mut restored = false;
        for l in groups.layouts.values() {
            let classes: Vec<ClassId> = l.slots.iter().map(|&e| groups.class_of(e)).collect();
            if !classes.is_empty() && classes.iter().all(|c| removed.contains(c)) {
                let keep = classes
                    .iter()
                    .copied()
                    .max_by(|&a, &b| best(a).total_cmp(&best(b)).then(b.cmp(&a)));
                if let Some(c) = keep {
                    removed.remove(&c);
                    restored = true;
                }
            }
        }
        for s in &groups.spaces {
            let classes: Vec<ClassId> = s.elems().map(|e| groups.class_of(e)).collect();
            if !classes.is_empty() && classes.iter().all(|c| removed.contains(c)) {
                if let Some(&c) = classes.first() {
                    removed.remove(&c);
                    restored = true;
                }
            }
        }
        if !restored {
            break;
        }
    }
}
