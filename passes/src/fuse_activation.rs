//! `fuse-activation`: fuses an activation into the epilogue of the op that produces its input.
//!
//! Matches a Relu, Clip (Relu6 included), LeakyRelu, HardSwish, HardSigmoid, Sigmoid or Tanh
//! whose f32 input comes from a Conv, ConvTranspose, Gemm, MatMul or Add (a residual Add + Relu)
//! that has no fused activation yet and whose result nothing else reads. Produces the producer
//! with `activation` set (see `kiln_ir::Activation`); the activation node goes. Sound because the
//! fused activation is defined as the same unary op applied to each result before it is stored
//! (the interpreter evaluates it with that op's `eval`, the kernel lowerings with that op's
//! expression), and the intermediate value had no other reader.

use kiln_ir::{Activation, DType, Graph, IrError, Op};

use crate::pipeline::Pass;
use crate::util;

#[derive(Debug)]
pub struct FuseActivation;

impl Pass for FuseActivation {
    fn name(&self) -> &'static str {
        "fuse-activation"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        for id in g.topo_order()? {
            let node = g.node(id);
            let Some(act) = Activation::from_op(&node.op) else {
                continue;
            };
            let (x, y) = (node.inputs[0], node.outputs[0]);
            let Some(p) = util::producer(g, x) else {
                continue;
            };
            let pop = &g.node(p).op;
            let fusable = matches!(
                pop,
                Op::Conv { .. }
                    | Op::ConvTranspose { .. }
                    | Op::Gemm { .. }
                    | Op::MatMul { .. }
                    | Op::Add { .. }
            ) && pop.activation().is_none();
            if !fusable
                || g.value(x).ty.dtype != DType::F32
                || !util::single_use(g, x)
                || !util::can_redirect(g, y, x)
            {
                continue;
            }
            let Some(fused) = pop.with_activation(act) else {
                continue;
            };
            let name = g.node(p).name.clone();
            let op_name = pop.name().to_string();
            g.set_node_op(p, fused).map_err(|source| IrError::Node {
                node: name,
                op: op_name,
                source,
            })?;
            util::redirect(g, y, x);
            g.remove_node(id)?;
            changed = true;
        }
        Ok(changed)
    }
}
