//! The IR verifier. It collects every problem it finds rather than stopping at the first.
//!
//! Invariants checked:
//! - every graph input is a value defined as that input, at that position;
//! - every node input refers to an existing value that is an input, a constant, or an output of
//!   a node still in the graph;
//! - every node output is defined as that node's output at that slot;
//! - every node's output types are what shape inference gives for its current inputs;
//! - constants' types match their data;
//! - every graph output refers to a defined value;
//! - quantization parameters on values: positive finite scales, zero points in the quantized
//!   type's range, one pair per tensor or per slice along an axis that exists;
//! - the graph is acyclic.

use crate::dtype::DType;
use crate::error::IrError;
use crate::graph::{Graph, QuantParams, ValueDef, ValueId};
use crate::tensor::TensorType;

pub fn verify(graph: &Graph) -> Result<(), IrError> {
    let mut problems = Vec::new();
    let n_values = graph.value_ids().count();
    let defined = |v: ValueId| -> bool {
        if v.index() >= n_values {
            return false;
        }
        match &graph.value(v).def {
            ValueDef::Input(_) | ValueDef::Const(_) => true,
            ValueDef::Node { node, .. } => graph.contains_node(*node),
        }
    };
    for (pos, &v) in graph.inputs().iter().enumerate() {
        if v.index() >= n_values || graph.value(v).def != ValueDef::Input(pos) {
            problems.push(format!(
                "graph input {pos} (%{}) is not defined as that input",
                v.index()
            ));
        }
    }
    for v in graph.value_ids() {
        let value = graph.value(v);
        if let ValueDef::Const(t) = &value.def {
            if t.ty() != value.ty {
                problems.push(format!(
                    "constant @{} has type {} but data {}",
                    v.index(),
                    value.ty,
                    t.ty()
                ));
            }
        }
    }
    for id in graph.node_ids() {
        let node = graph.node(id);
        let here = format!("node '{}' ({})", node.name, node.op.name());
        let mut inputs_ok = true;
        for (slot, &v) in node.inputs.iter().enumerate() {
            if !defined(v) {
                problems.push(format!(
                    "{here}: input {slot} (%{}) is not defined",
                    v.index()
                ));
                inputs_ok = false;
            }
        }
        for (slot, &v) in node.outputs.iter().enumerate() {
            let ok =
                v.index() < n_values && graph.value(v).def == ValueDef::Node { node: id, slot };
            if !ok {
                problems.push(format!(
                    "{here}: output {slot} (%{}) is not defined by this node",
                    v.index()
                ));
            }
        }
        if !inputs_ok {
            continue;
        }
        match graph.infer_node(id) {
            Ok(types) => {
                if types.len() != node.outputs.len() {
                    problems.push(format!(
                        "{here}: has {} outputs, shape inference gives {}",
                        node.outputs.len(),
                        types.len()
                    ));
                }
                for (slot, (ty, &v)) in types.iter().zip(&node.outputs).enumerate() {
                    if v.index() < n_values && graph.value(v).ty != *ty {
                        problems.push(format!(
                            "{here}: output {slot} is typed {} but inference gives {ty}",
                            graph.value(v).ty
                        ));
                    }
                }
            }
            Err(e) => problems.push(format!("{here}: {e}")),
        }
    }
    for v in graph.value_ids() {
        if let Some(q) = &graph.value(v).quant {
            let value = graph.value(v);
            for p in check_quant(q, &value.ty) {
                problems.push(format!("value '{}' (%{}): {p}", value.name, v.index()));
            }
        }
    }
    for (i, &v) in graph.outputs().iter().enumerate() {
        if !defined(v) {
            problems.push(format!("graph output {i} (%{}) is not defined", v.index()));
        }
    }
    if let Err(e) = graph.topo_order() {
        problems.push(e.to_string());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(IrError::Verify(problems))
    }
}

/// Problems with the quantization parameters of a value of type `ty`: scales positive and
/// finite, zero points within the quantized type's range, per-axis lengths matching the axis.
fn check_quant(q: &QuantParams, ty: &TensorType) -> Vec<String> {
    let mut problems = Vec::new();
    let expected = match q.axis {
        None => 1,
        Some(axis) => match ty.shape.get(axis) {
            Some(&n) => n,
            None => {
                problems.push(format!("quantization axis {axis} is out of range for {ty}"));
                return problems;
            }
        },
    };
    if q.scale.len() != expected || q.zero_point.len() != expected {
        problems.push(format!(
            "{} scales and {} zero points, expected {expected}",
            q.scale.len(),
            q.zero_point.len()
        ));
    }
    if let Some(s) = q.scale.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        problems.push(format!("scale {s} is not positive and finite"));
    }
    let range = match ty.dtype {
        DType::I32 => Some((i32::MIN, i32::MAX)),
        other => crate::fixed_point::qrange(other),
    };
    match range {
        Some((lo, hi)) => {
            if let Some(z) = q.zero_point.iter().find(|z| !(lo..=hi).contains(*z)) {
                problems.push(format!(
                    "zero point {z} is outside {}'s range {lo}..={hi}",
                    ty.dtype
                ));
            }
        }
        None => problems.push(format!("a {} value cannot be quantized", ty.dtype)),
    }
    problems
}
