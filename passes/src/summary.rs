//! The size and cost of a graph in one line: node count, MACs, weight bytes and arena bytes.
//! `kiln compile` reports it before and after optimization.

use std::collections::BTreeSet;

use kiln_ir::{Graph, IrError, TensorType};

use crate::memory_plan::plan_memory;

/// Figures of a graph as it would be compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GraphSummary {
    pub nodes: usize,
    pub macs: u64,
    /// Bytes of the constants the nodes read.
    pub weight_bytes: usize,
    /// The part of `weight_bytes` only read as quantization parameters (multipliers, shifts,
    /// scales, zero points, lookup tables): the rest are the model's weights and biases.
    pub quantization_bytes: usize,
    /// Arena the memory planner needs (16-byte alignment).
    pub arena_bytes: usize,
}

pub fn summarize(graph: &Graph) -> Result<GraphSummary, IrError> {
    let order = graph.topo_order()?;
    let mut macs = 0u64;
    let mut weights = BTreeSet::new();
    // Constants read at least once as a model parameter (a weight or bias).
    let mut parameters = BTreeSet::new();
    for &id in &order {
        let node = graph.node(id);
        let ins: Vec<&TensorType> = node.inputs.iter().map(|&v| &graph.value(v).ty).collect();
        let outs: Vec<TensorType> = node
            .outputs
            .iter()
            .map(|&v| graph.value(v).ty.clone())
            .collect();
        macs += kiln_ir::ops::macs(&node.op, &ins, &outs);
        for (index, &v) in node.inputs.iter().enumerate() {
            if graph.value(v).is_const() {
                weights.insert(v);
                if !node.op.is_quantization_input(index) {
                    parameters.insert(v);
                }
            }
        }
    }
    let bytes = |v: &kiln_ir::ValueId| graph.value(*v).ty.size_bytes();
    Ok(GraphSummary {
        nodes: order.len(),
        macs,
        weight_bytes: weights.iter().map(bytes).sum(),
        quantization_bytes: weights.difference(&parameters).map(bytes).sum(),
        arena_bytes: plan_memory(graph, 16)?.arena_bytes,
    })
}
