//! Small graph queries and rewrites shared by the passes.

use std::sync::Arc;

use kiln_ir::{Graph, NodeId, Tensor, ValueDef, ValueId};

/// The node that computes `v`, if a node does.
pub fn producer(g: &Graph, v: ValueId) -> Option<NodeId> {
    match g.value(v).def {
        ValueDef::Node { node, .. } if g.contains_node(node) => Some(node),
        _ => None,
    }
}

/// The constant data of `v`, if it is a constant.
pub fn const_of(g: &Graph, v: ValueId) -> Option<Arc<Tensor>> {
    g.value(v).const_tensor().cloned()
}

/// Whether `v` has exactly one use: one node input slot, and it is not a graph output.
pub fn single_use(g: &Graph, v: ValueId) -> bool {
    !g.is_output(v) && g.consumers(v).len() == 1
}

/// Whether `v` is used at all (a node input or a graph output).
pub fn is_used(g: &Graph, v: ValueId) -> bool {
    g.is_output(v) || !g.consumers(v).is_empty()
}

/// Whether a matched pattern can be replaced as a whole: every result of `nodes`, except
/// `replaced` (the value the rewrite's new node takes over), is read only by nodes of the
/// pattern and is not a graph output. Matchers call this before rewriting, so a near miss (an
/// intermediate with an extra reader) is left alone; `Graph::remove_nodes` checks again.
pub fn pattern_is_closed(g: &Graph, nodes: &[NodeId], replaced: ValueId) -> bool {
    nodes.iter().all(|&n| {
        g.node(n).outputs.iter().all(|&v| {
            v == replaced
                || (!g.is_output(v) && g.consumers(v).iter().all(|(c, _)| nodes.contains(c)))
        })
    })
}

/// Makes every use of `from` read `to` instead, so that the node computing `from` can go.
/// When `from` is a graph output, `to` takes its name; that is only possible when `to` is a node
/// result that is not already a graph output. Returns false (and changes nothing) otherwise.
pub fn redirect(g: &mut Graph, from: ValueId, to: ValueId) -> bool {
    if from == to {
        return true;
    }
    if g.is_output(from) {
        let to_is_node = matches!(g.value(to).def, ValueDef::Node { .. });
        if !to_is_node || g.is_output(to) {
            return false;
        }
        let name = g.value(from).name.clone();
        g.value_mut(to).name = name;
    }
    g.replace_uses(from, to);
    true
}

/// Whether `redirect(g, from, to)` would succeed.
pub fn can_redirect(g: &Graph, from: ValueId, to: ValueId) -> bool {
    !g.is_output(from) || (matches!(g.value(to).def, ValueDef::Node { .. }) && !g.is_output(to))
}

/// The f32 data of a constant value.
pub fn const_f32(g: &Graph, v: ValueId) -> Option<Vec<f32>> {
    const_of(g, v).and_then(|t| t.as_f32().map(<[f32]>::to_vec))
}

/// If `v` is a constant holding one distinct f32 value (any shape), that value.
pub fn const_scalar(g: &Graph, v: ValueId) -> Option<f32> {
    let data = const_f32(g, v)?;
    let first = *data.first()?;
    data.iter()
        .all(|&x| x.to_bits() == first.to_bits())
        .then_some(first)
}

/// A node name derived from `base` for a node a pass creates.
pub fn derived_name(base: &str, suffix: &str) -> String {
    format!("{base}/{suffix}")
}
