//! `fold-pad`: folds a zero Pad into the padding of the Conv or AveragePool that reads it.
//!
//! Matches a constant-mode Pad with value 0 and non-negative pads on the spatial axes only (none
//! on batch or channels) whose result is read only by a Conv (any group, dilation, stride) or by
//! an AveragePool with `ceil_mode` off and either `count_include_pad` already on or no pads of
//! its own. Produces the consumer reading the Pad's input, with the Pad's amounts added to its
//! `pads` (and `count_include_pad` set on the AveragePool). Sound because a Conv's implicit
//! padding is zeros, and an AveragePool that counts its padding averages the same zeros the Pad
//! would have written, over the same windows. MaxPool is left alone: its padding is ignored
//! rather than zero, which differs whenever a window holds only negative values.

use kiln_ir::op::PadMode;
use kiln_ir::{Graph, IrError, Op};

use crate::pipeline::Pass;
use crate::util;

#[derive(Debug)]
pub struct FoldPad;

impl Pass for FoldPad {
    fn name(&self) -> &'static str {
        "fold-pad"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        for id in g.topo_order()? {
            let node = g.node(id);
            let Op::Pad { pads, mode, value } = &node.op else {
                continue;
            };
            if *mode != PadMode::Constant || *value != 0.0 || node.inputs.len() != 1 {
                continue;
            }
            let (x, y) = (node.inputs[0], node.outputs[0]);
            let rank = g.value(x).ty.rank();
            if rank < 3 || pads.len() != 2 * rank || pads.iter().any(|&p| p < 0) {
                continue;
            }
            if pads[0] != 0 || pads[1] != 0 || pads[rank] != 0 || pads[rank + 1] != 0 {
                continue;
            }
            let spatial = rank - 2;
            let begin: Vec<usize> = pads[2..rank].iter().map(|&p| p as usize).collect();
            let end: Vec<usize> = pads[rank + 2..].iter().map(|&p| p as usize).collect();
            if !util::single_use(g, y) {
                continue;
            }
            let Some(&(c, slot)) = g.consumers(y).first() else {
                continue;
            };
            if slot != 0 {
                continue;
            }
            let add = |own: &[usize]| -> Option<Vec<usize>> {
                (own.len() == 2 * spatial).then(|| {
                    (0..spatial)
                        .map(|i| own[i] + begin[i])
                        .chain((0..spatial).map(|i| own[spatial + i] + end[i]))
                        .collect()
                })
            };
            let mut op = g.node(c).op.clone();
            let ok = match &mut op {
                Op::Conv { pads, .. } => add(pads).map(|p| *pads = p).is_some(),
                Op::AveragePool {
                    pads,
                    ceil_mode: false,
                    count_include_pad,
                    ..
                } if *count_include_pad || pads.iter().all(|&p| p == 0) => {
                    *count_include_pad = true;
                    add(pads).map(|p| *pads = p).is_some()
                }
                _ => false,
            };
            if !ok {
                continue;
            }
            let old_op = g.node(c).op.clone();
            g.set_node_input(c, 0, x);
            if g.set_node_op(c, op).is_err() {
                g.set_node_input(c, 0, y);
                g.set_node_op(c, old_op).map_err(|source| IrError::Node {
                    node: g.node(c).name.clone(),
                    op: g.node(c).op.name().to_string(),
                    source,
                })?;
                continue;
            }
            g.remove_node(id)?;
            changed = true;
        }
        Ok(changed)
    }
}
