//! `--io int8`: the quantized graph's float inputs and outputs become its integer values, so the
//! generated code takes and returns raw int8 buffers (their scale and zero point are recorded
//! on the values, and the C header prints them).

use kiln_ir::{Graph, IrError, Op};

use super::params::{dequantized, quantize_params};
use crate::util;

/// Turns every float graph input read only by one QuantizeLinear into that integer input, and
/// every graph output computed by a DequantizeLinear into its integer operand. Returns how many
/// inputs and outputs changed.
pub fn int8_io(g: &mut Graph) -> Result<usize, IrError> {
    let mut changed = 0;
    for &x in &g.inputs().to_vec() {
        let readers = g.consumers(x);
        let [(q, 0)] = readers.as_slice() else {
            continue;
        };
        let q = *q;
        if g.is_output(x) || !matches!(g.node(q).op, Op::QuantizeLinear { .. }) {
            continue;
        }
        let Some(params) = quantize_params(g, q).filter(|p| p.per_tensor().is_some()) else {
            continue;
        };
        let qv = g.node(q).outputs[0];
        if g.is_output(qv) {
            continue;
        }
        let ty = g.value(qv).ty.clone();
        for (n, slot) in g.consumers(qv) {
            g.set_node_input(n, slot, x);
        }
        g.remove_node(q)?;
        let value = g.value_mut(x);
        value.ty = ty;
        value.quant = Some(params.to_value_quant());
        changed += 1;
    }
    let outputs = g.outputs().to_vec();
    let mut new_outputs = outputs.clone();
    for (i, &y) in outputs.iter().enumerate() {
        let Some(d) = dequantized(g, y).filter(|d| d.params.per_tensor().is_some()) else {
            continue;
        };
        let source_is_node = util::producer(g, d.source).is_some();
        if !source_is_node || g.is_output(d.source) || new_outputs.contains(&d.source) {
            continue;
        }
        let name = g.value(y).name.clone();
        g.value_mut(y).name = format!("{name}/float");
        let value = g.value_mut(d.source);
        value.name = name;
        value.quant = Some(d.params.to_value_quant());
        new_outputs[i] = d.source;
        changed += 1;
    }
    g.set_outputs(new_outputs);
    // Dequantizations nobody reads any more.
    crate::pipeline::Pass::run(&crate::dead_code::DeadCode, g)?;
    Ok(changed)
}
