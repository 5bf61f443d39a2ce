//! `remove-identity`: removes Identity and inference-mode Dropout nodes.
//!
//! Matches `Identity(x)` and `Dropout(x)` (kiln's Dropout is the inference form: output 0 is `x`
//! and the optional mask output is all true). Every use of the output is pointed at `x`; a used
//! mask becomes an all-true boolean constant. Sound because both ops are the identity on their
//! first output by definition. When the output is a graph output and `x` cannot take its place
//! (`x` is a graph input, a constant, or another graph output), the node stays.

use std::sync::Arc;

use kiln_ir::{DType, Graph, IrError, Op, Tensor, TensorData};

use crate::pipeline::Pass;
use crate::util;

#[derive(Debug)]
pub struct RemoveIdentity;

impl Pass for RemoveIdentity {
    fn name(&self) -> &'static str {
        "remove-identity"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        for id in g.topo_order()? {
            let node = g.node(id);
            if !matches!(node.op, Op::Identity | Op::Dropout { .. }) {
                continue;
            }
            let x = node.inputs[0];
            let y = node.outputs[0];
            let mask = node.outputs.get(1).copied();
            if !util::can_redirect(g, y, x) {
                continue;
            }
            if let Some(m) = mask {
                if g.is_output(m) {
                    continue;
                }
                if util::is_used(g, m) {
                    let ty = g.value(m).ty.clone();
                    if ty.dtype != DType::Bool {
                        continue;
                    }
                    let ones =
                        Tensor::new(ty.shape.clone(), TensorData::Bool(vec![true; ty.numel()]))?;
                    let name = g.value(m).name.clone();
                    let c = g.add_const(name, Arc::new(ones));
                    g.replace_uses(m, c);
                }
            }
            util::redirect(g, y, x);
            g.remove_node(id)?;
            changed = true;
        }
        Ok(changed)
    }
}
