//! `dead-code`: removes nodes whose results nothing uses, and releases unused constants.
//!
//! Matches every node none of whose outputs is read by another node or returned by the graph,
//! visiting nodes in reverse topological order so whole dead chains go in one sweep; then every
//! constant no remaining node or graph output reads has its data dropped (its id stays valid, as
//! an empty tensor). Sound because kiln's ops have no side effects: a result nobody observes
//! cannot change the graph's outputs. Graph inputs are the model's interface and always stay.

use kiln_ir::{Graph, IrError, ValueId};

use crate::pipeline::Pass;

#[derive(Debug)]
pub struct DeadCode;

impl Pass for DeadCode {
    fn name(&self) -> &'static str {
        "dead-code"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        let order = g.topo_order()?;
        let mut uses = vec![0usize; g.value_ids().count()];
        for &v in g.outputs() {
            uses[v.index()] += 1;
        }
        for &id in &order {
            for &v in &g.node(id).inputs {
                uses[v.index()] += 1;
            }
        }
        for &id in order.iter().rev() {
            let node = g.node(id);
            if node.outputs.iter().any(|v| uses[v.index()] > 0) {
                continue;
            }
            for &v in &node.inputs {
                uses[v.index()] -= 1;
            }
            g.remove_node(id)?;
            changed = true;
        }
        let unused_consts: Vec<ValueId> = g
            .value_ids()
            .filter(|&v| {
                uses[v.index()] == 0 && g.value(v).const_tensor().is_some_and(|t| t.numel() > 0)
            })
            .collect();
        for v in unused_consts {
            g.release_const(v);
            changed = true;
        }
        Ok(changed)
    }
}
