//! The stable text dump of a graph (the currency of every snapshot test) and a Graphviz export.
//!
//! Format, one line per item, in topological order:
//! ```text
//! graph "name" {
//!   %0 = input "x": f32[1,3,8,8]
//!   @1 = const "w": f32[16,3,3,3]
//!   @2 = const "shape": i64[2] = [1,-1]
//!   %3:f32[1,16,8,8] = conv(%0, @1) {kernel_shape=[3,3], pads=[1,1,1,1]}  # "/conv1/Conv"
//!   return %3 "y"
//! }
//! ```
//! Constants with at most 8 elements print their values. Node names print as comments.

use std::fmt::Write;

use crate::graph::{Graph, ValueDef, ValueId};
use crate::tensor::TensorData;

const INLINE_CONST_ELEMENTS: usize = 8;

fn value_ref(graph: &Graph, v: ValueId) -> String {
    match graph.value(v).def {
        ValueDef::Const(_) => format!("@{}", v.index()),
        _ => format!("%{}", v.index()),
    }
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

fn inline_values(data: &TensorData) -> String {
    let items: Vec<String> = match data {
        TensorData::F32(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        TensorData::I8(v) => v.iter().map(|x| x.to_string()).collect(),
        TensorData::U8(v) => v.iter().map(|x| x.to_string()).collect(),
        TensorData::I16(v) => v.iter().map(|x| x.to_string()).collect(),
        TensorData::I32(v) => v.iter().map(|x| x.to_string()).collect(),
        TensorData::I64(v) => v.iter().map(|x| x.to_string()).collect(),
        TensorData::Bool(v) => v.iter().map(|x| x.to_string()).collect(),
    };
    format!("[{}]", items.join(","))
}

/// The text dump. Output is deterministic for a given graph.
pub fn to_text(graph: &Graph) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "graph {} {{", quoted(graph.name()));
    for &v in graph.inputs() {
        let val = graph.value(v);
        let _ = writeln!(
            s,
            "  %{} = input {}: {}",
            v.index(),
            quoted(&val.name),
            val.ty
        );
    }
    let order = graph.topo_order().unwrap_or_else(|_| graph.node_ids());
    // Constants first, in id order, limited to those something uses.
    let mut used_consts: Vec<ValueId> = order
        .iter()
        .flat_map(|&n| graph.node(n).inputs.iter().copied())
        .chain(graph.outputs().iter().copied())
        .filter(|&v| graph.value(v).is_const())
        .collect();
    used_consts.sort();
    used_consts.dedup();
    for v in used_consts {
        let val = graph.value(v);
        let _ = write!(
            s,
            "  @{} = const {}: {}",
            v.index(),
            quoted(&val.name),
            val.ty
        );
        if let Some(t) = val.const_tensor() {
            if t.numel() <= INLINE_CONST_ELEMENTS {
                let _ = write!(s, " = {}", inline_values(t.data()));
            }
        }
        s.push('\n');
    }
    for n in order {
        let node = graph.node(n);
        let outs: Vec<String> = node
            .outputs
            .iter()
            .map(|&v| format!("%{}:{}", v.index(), graph.value(v).ty))
            .collect();
        let args: Vec<String> = node.inputs.iter().map(|&v| value_ref(graph, v)).collect();
        let _ = write!(
            s,
            "  {} = {}({})",
            outs.join(", "),
            node.op.dump_name(),
            args.join(", ")
        );
        let attrs = node.op.attrs();
        if !attrs.is_empty() {
            let items: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = write!(s, " {{{}}}", items.join(", "));
        }
        let _ = writeln!(s, "  # {}", quoted(&node.name));
    }
    let rets: Vec<String> = graph
        .outputs()
        .iter()
        .map(|&v| format!("{} {}", value_ref(graph, v), quoted(&graph.value(v).name)))
        .collect();
    let _ = writeln!(s, "  return {}", rets.join(", "));
    s.push_str("}\n");
    s
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A Graphviz DOT rendering: one box per node, one ellipse per graph input and output, edges
/// labelled with the tensor type. Constants are folded into the node label to keep it readable.
pub fn to_dot(graph: &Graph) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "digraph \"{}\" {{", dot_escape(graph.name()));
    s.push_str("  rankdir=TB;\n  node [fontname=\"monospace\", fontsize=10];\n");
    for &v in graph.inputs() {
        let val = graph.value(v);
        let _ = writeln!(
            s,
            "  v{} [shape=ellipse, label=\"{}\\n{}\"];",
            v.index(),
            dot_escape(&val.name),
            val.ty
        );
    }
    let order = graph.topo_order().unwrap_or_else(|_| graph.node_ids());
    for &n in &order {
        let node = graph.node(n);
        let consts: Vec<String> = node
            .inputs
            .iter()
            .filter(|&&v| graph.value(v).is_const())
            .map(|&v| graph.value(v).ty.to_string())
            .collect();
        let mut label = format!(
            "{}\\n{}",
            dot_escape(node.op.name()),
            dot_escape(&node.name)
        );
        if !consts.is_empty() {
            let _ = write!(label, "\\nconst {}", consts.join(", "));
        }
        let _ = writeln!(s, "  n{} [shape=box, label=\"{}\"];", n.index(), label);
    }
    let source = |v: ValueId| -> Option<String> {
        match graph.value(v).def {
            ValueDef::Input(_) => Some(format!("v{}", v.index())),
            ValueDef::Node { node, .. } => Some(format!("n{}", node.index())),
            ValueDef::Const(_) => None,
        }
    };
    for &n in &order {
        for &v in &graph.node(n).inputs {
            if let Some(src) = source(v) {
                let _ = writeln!(
                    s,
                    "  {src} -> n{} [label=\"{}\"];",
                    n.index(),
                    graph.value(v).ty
                );
            }
        }
    }
    for (i, &v) in graph.outputs().iter().enumerate() {
        let val = graph.value(v);
        let _ = writeln!(
            s,
            "  out{i} [shape=ellipse, label=\"{}\\n{}\"];",
            dot_escape(&val.name),
            val.ty
        );
        if let Some(src) = source(v) {
            let _ = writeln!(s, "  {src} -> out{i};");
        }
    }
    s.push_str("}\n");
    s
}
