//! `const-fold`: evaluates nodes whose inputs are all known, and deduplicates constants.
//!
//! Matches every node whose inputs are all constants (including input-less ConstantOfShape and
//! Range), and every Shape node (shapes are static, so its result is known whatever its input
//! holds); this folds the Shape -> Gather -> Concat -> Reshape chains PyTorch exports emit,
//! link by link. The node's results become constants computed by the reference interpreter's
//! `eval`, so the folded value is by definition what the node would have computed. Folding is
//! skipped when a result is much larger than the node's constant inputs (Expand, Tile,
//! ConstantOfShape making big tensors would only grow the weights), for quantize/dequantize nodes
//! (backends match those patterns on the weights), and for graph outputs. Finally constants with
//! the same dtype, shape, bytes and quantization are merged into one value.

use std::collections::BTreeMap;
use std::sync::Arc;

use kiln_ir::op::OpFamily;
use kiln_ir::{DType, Graph, IrError, Op, Tensor, TensorData, ValueDef, ValueId};

use crate::pipeline::Pass;

/// Results up to this many bytes are always folded.
const ALWAYS_FOLD_BYTES: usize = 4096;
/// Larger results are folded only when at most this many times the size of the inputs.
const MAX_GROWTH: usize = 2;

#[derive(Debug)]
pub struct ConstFold;

impl Pass for ConstFold {
    fn name(&self) -> &'static str {
        "const-fold"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        for id in g.topo_order()? {
            let node = g.node(id);
            if node.op.family() == OpFamily::Quant || node.outputs.iter().any(|&v| g.is_output(v)) {
                continue;
            }
            let results = if let Op::Shape { start, end } = node.op {
                let dims = &g.value(node.inputs[0]).ty.shape;
                let Some(dims) = dims.get(start..end) else {
                    continue;
                };
                let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
                vec![Tensor::from_i64(vec![dims.len()], dims)?]
            } else {
                let consts: Option<Vec<Arc<Tensor>>> = node
                    .inputs
                    .iter()
                    .map(|&v| g.value(v).const_tensor().cloned())
                    .collect();
                let Some(consts) = consts else {
                    continue;
                };
                let in_bytes: usize = consts.iter().map(|t| t.size_bytes()).sum();
                let out_bytes: usize = node
                    .outputs
                    .iter()
                    .map(|&v| g.value(v).ty.size_bytes())
                    .sum();
                if out_bytes > ALWAYS_FOLD_BYTES && out_bytes > MAX_GROWTH * in_bytes {
                    continue;
                }
                let refs: Vec<&Tensor> = consts.iter().map(|t| t.as_ref()).collect();
                match kiln_ir::ops::eval(&node.op, &refs) {
                    Ok(r) => r,
                    Err(_) => continue,
                }
            };
            let outs = node.outputs.clone();
            if results.len() != outs.len()
                || results
                    .iter()
                    .zip(&outs)
                    .any(|(t, &v)| t.ty() != g.value(v).ty)
            {
                continue;
            }
            for (v, t) in outs.into_iter().zip(results) {
                g.value_mut(v).def = ValueDef::Const(Arc::new(t));
            }
            g.remove_node(id)?;
            changed = true;
        }
        changed |= dedup_consts(g);
        Ok(changed)
    }
}

/// Merges used constants with equal dtype, shape, bytes and quantization into the lowest id.
fn dedup_consts(g: &mut Graph) -> bool {
    let mut used: Vec<ValueId> = g
        .node_ids()
        .into_iter()
        .flat_map(|n| g.node(n).inputs.clone())
        .filter(|&v| g.value(v).is_const())
        .collect();
    used.sort();
    used.dedup();
    let mut seen: BTreeMap<(DType, Vec<usize>, Vec<u8>), Vec<ValueId>> = BTreeMap::new();
    let mut changed = false;
    for v in used {
        if g.is_output(v) {
            continue;
        }
        let Some(t) = g.value(v).const_tensor().cloned() else {
            continue;
        };
        let key = (t.dtype(), t.shape().to_vec(), key_bytes(t.data()));
        let bucket = seen.entry(key).or_default();
        let quant = g.value(v).quant.clone();
        if let Some(&first) = bucket.iter().find(|&&f| g.value(f).quant == quant) {
            g.replace_uses(v, first);
            changed = true;
        } else {
            bucket.push(v);
        }
    }
    changed
}

/// The bytes that identify a tensor's data; f32 by bit pattern (so -0.0 and NaNs stay distinct).
fn key_bytes(data: &TensorData) -> Vec<u8> {
    data.to_le_bytes()
}
