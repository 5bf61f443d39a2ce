//! Empirical bias correction: quantizing weights shifts the mean of each output channel of a
//! Conv, MatMul or Gemm. Running the float graph and its QDQ version on the calibration
//! samples measures that shift per channel, and subtracting it from the channel's int32 bias
//! removes it (Nagel et al., "Data-Free Quantization", 2019, sec. 4.2, in its empirical form).
//!
//! The QDQ graph comes from `quantize`, which keeps every float op's result value, so one
//! value id names the same layer output in both graphs.

use std::sync::Arc;

use kiln_ir::{Graph, IrError, NodeId, Op, Tensor, TensorData, ValueId};

use super::params::{constant_source, dequantized};

/// One layer whose output mean is measured: the node, its output, the channel axis of that
/// output and the running sums of the difference per channel.
#[derive(Debug)]
struct Layer {
    node: NodeId,
    output: ValueId,
    axis: usize,
    sums: Vec<f64>,
    count: u64,
}

/// Collects the per-channel output shift of every quantized layer with an int32 bias.
#[derive(Debug)]
pub struct BiasCorrection {
    layers: Vec<Layer>,
}

impl BiasCorrection {
    /// The layers of the QDQ graph `q` whose bias is a dequantized int32 constant.
    pub fn new(q: &Graph) -> Self {
        let mut layers = Vec::new();
        for node in q.topo_order().unwrap_or_default() {
            let n = q.node(node);
            let bias = match n.op {
                Op::Conv { .. } | Op::Gemm { .. } => n.inputs.get(2),
                _ => None,
            };
            let Some(&bias) = bias else { continue };
            if dequantized(q, bias).is_none() {
                continue;
            }
            let output = n.outputs[0];
            let rank = q.value(output).ty.rank();
            let axis = if matches!(n.op, Op::Conv { .. }) {
                1
            } else {
                rank.saturating_sub(1)
            };
            let channels = q.value(output).ty.shape.get(axis).copied().unwrap_or(0);
            layers.push(Layer {
                node,
                output,
                axis,
                sums: vec![0.0; channels],
                count: 0,
            });
        }
        BiasCorrection { layers }
    }

    /// The values both graphs must report per sample, in order.
    pub fn observed(&self) -> Vec<ValueId> {
        self.layers.iter().map(|l| l.output).collect()
    }

    /// Takes one sample's results of the float graph and of the QDQ graph.
    pub fn observe(&mut self, float: &[Tensor], quantized: &[Tensor]) {
        for (layer, (f, q)) in self.layers.iter_mut().zip(float.iter().zip(quantized)) {
            let (Some(f), Some(qv)) = (f.as_f32(), q.as_f32()) else {
                continue;
            };
            let shape = q.shape();
            let channels = layer.sums.len().max(1);
            let inner: usize = shape.iter().skip(layer.axis + 1).product();
            for (i, (a, b)) in qv.iter().zip(f).enumerate() {
                let c = (i / inner.max(1)) % channels;
                layer.sums[c] += f64::from(a - b);
            }
            layer.count += (qv.len() / channels) as u64;
        }
    }

    /// Subtracts each channel's mean shift from its bias in `q`; returns how many layers
    /// changed.
    pub fn apply(&self, q: &mut Graph) -> Result<usize, IrError> {
        let mut changed = 0;
        for layer in &self.layers {
            if layer.count == 0 {
                continue;
            }
            let Some(&bias) = q.node(layer.node).inputs.get(2) else {
                continue;
            };
            let Some(d) = dequantized(q, bias) else {
                continue;
            };
            let Some(values) = constant_source(q, &d).and_then(|t| t.to_i64_vec()) else {
                continue;
            };
            if values.len() != layer.sums.len() {
                continue;
            }
            let corrected: Vec<i32> = values
                .iter()
                .enumerate()
                .map(|(c, &b)| {
                    let mean = layer.sums[c] / layer.count as f64;
                    let step = f64::from(d.params.scale_at(c));
                    (b as f64 - mean / step)
                        .round()
                        .clamp(-2_147_483_647.0, 2_147_483_647.0) as i32
                })
                .collect();
            let name = format!("{}/corrected", q.value(d.source).name);
            let t = Tensor::new(vec![corrected.len()], TensorData::I32(corrected))?;
            let v = q.add_const(name, Arc::new(t));
            q.set_node_input(d.node, 0, v);
            changed += 1;
        }
        Ok(changed)
    }
}
