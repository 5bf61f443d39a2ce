//! What pruning changed: parameters, weight bytes, MACs and arena bytes before and after, per
//! layer and in total, and each group of coupled layers with how many of its channel classes
//! went and why any were kept.

use std::collections::{BTreeMap, BTreeSet};

use kiln_ir::{Graph, IrError, NodeId, Op, TensorType};

use super::groups::{ChannelGroups, ClassId};

/// One layer's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerFigures {
    /// Output channels (axis 1 of a Conv, the last axis of a Gemm or MatMul).
    pub channels: Option<usize>,
    pub params: usize,
    pub weight_bytes: usize,
    pub macs: u64,
}

/// A layer before and after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerChange {
    pub node: String,
    pub op: &'static str,
    pub before: LayerFigures,
    pub after: LayerFigures,
}

/// Whole-graph figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub params: usize,
    pub weight_bytes: usize,
    pub macs: u64,
    pub arena_bytes: usize,
}

/// One group of coupled layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupChange {
    /// The layers whose output channels the group couples.
    pub layers: String,
    pub classes: usize,
    pub removed: usize,
    /// Why channels of the group were kept (pinned: kiln cannot prove removing them is sound,
    /// or they are graph outputs).
    pub pinned: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub layers: Vec<LayerChange>,
    pub before: Totals,
    pub after: Totals,
    pub groups: Vec<GroupChange>,
}

/// Figures of every node that reads constants or multiplies, by id.
pub fn layer_figures(g: &Graph) -> Result<BTreeMap<NodeId, LayerFigures>, IrError> {
    let mut out = BTreeMap::new();
    for id in g.topo_order()? {
        let node = g.node(id);
        let ins: Vec<&TensorType> = node.inputs.iter().map(|&v| &g.value(v).ty).collect();
        let outs: Vec<TensorType> = node
            .outputs
            .iter()
            .map(|&v| g.value(v).ty.clone())
            .collect();
        let macs = kiln_ir::ops::macs(&node.op, &ins, &outs);
        let consts: Vec<&TensorType> = node
            .inputs
            .iter()
            .filter(|&&v| g.value(v).is_const())
            .map(|&v| &g.value(v).ty)
            .collect();
        let params: usize = consts.iter().map(|t| t.numel()).sum();
        if macs == 0 && params == 0 {
            continue;
        }
        let channels = match &node.op {
            Op::Conv { .. } | Op::QConv { .. } | Op::ConvTranspose { .. } => {
                outs.first().and_then(|t| t.shape.get(1)).copied()
            }
            Op::Gemm { .. } | Op::MatMul { .. } | Op::QMatMul { .. } => {
                outs.first().and_then(|t| t.shape.last()).copied()
            }
            _ => None,
        };
        out.insert(
            id,
            LayerFigures {
                channels,
                params,
                weight_bytes: consts.iter().map(|t| t.size_bytes()).sum(),
                macs,
            },
        );
    }
    Ok(out)
}

/// Totals of a graph: parameters are the elements of every constant a node reads.
pub fn totals(g: &Graph) -> Result<Totals, IrError> {
    let summary = crate::summarize(g)?;
    let mut seen = BTreeSet::new();
    let mut params = 0;
    for id in g.node_ids() {
        for &v in &g.node(id).inputs {
            if g.value(v).is_const() && seen.insert(v) {
                params += g.value(v).ty.numel();
            }
        }
    }
    Ok(Totals {
        params,
        weight_bytes: summary.weight_bytes,
        macs: summary.macs,
        arena_bytes: summary.arena_bytes,
    })
}

/// The report of a pruning that turned `before` into `after` (same node ids), removing
/// `removed` of `groups` (the analysis of `before`).
pub fn report(
    before: &Graph,
    after: &Graph,
    groups: &ChannelGroups,
    removed: &BTreeSet<ClassId>,
) -> Result<PruneReport, IrError> {
    let fb = layer_figures(before)?;
    let fa = layer_figures(after)?;
    let mut layers = Vec::new();
    for id in before.topo_order()? {
        let Some(b) = fb.get(&id) else {
            continue;
        };
        let node = before.node(id);
        layers.push(LayerChange {
            node: node.name.clone(),
            op: node.op.name(),
            before: b.clone(),
            after: fa.get(&id).cloned().unwrap_or_default(),
        });
    }
    let groups_report = (0..groups.groups.len())
        .filter(|&gi| {
            groups.groups[gi]
                .spaces
                .iter()
                .any(|&s| groups.spaces[s].node.is_some())
        })
        .map(|gi| GroupChange {
            layers: groups.group_name(before, gi),
            classes: groups.groups[gi].classes.len(),
            removed: groups.groups[gi]
                .classes
                .iter()
                .filter(|c| removed.contains(c))
                .count(),
            pinned: groups.group_pins(gi),
        })
        .collect();
    Ok(PruneReport {
        layers,
        before: totals(before)?,
        after: totals(after)?,
        groups: groups_report,
    })
}
