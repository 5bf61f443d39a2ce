//! Post-training quantization of a float graph: QuantizeLinear/DequantizeLinear pairs on every
//! calibrated activation, and weights replaced by integer constants behind a
//! DequantizeLinear. The result is an ordinary QDQ graph, which `lower-qdq` then turns into
//! integer ops, exactly as it does for models quantized elsewhere.
//!
//! The scheme is the TFLite int8 one: activations asymmetric int8 per tensor (0 exact), the
//! outputs of Softmax and Sigmoid at the fixed scale 1/256 (zero point -128) and of Tanh at
//! 1/128; Conv, MatMul and Gemm weights symmetric int8 per output channel; their biases int32
//! at the accumulator's scale (input scale x weight scale). Constant operands of Add, Mul and
//! Concat are quantized per tensor from their own range.

use std::sync::Arc;

use kiln_ir::{DType, Graph, IrError, NodeId, Op, Tensor, TensorData, ValueId};

use super::calibrate::Ranges;
use crate::util;

/// What quantization did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuantizeReport {
    /// Activations given a QuantizeLinear/DequantizeLinear pair.
    pub activations: usize,
    /// Weight tensors stored as int8 (and biases as int32).
    pub weights: usize,
    pub biases: usize,
}

/// int8 parameters (scale, zero point) covering `[lo, hi]` (0 inside): ONNX's and TFLite's
/// asymmetric formula, `scale = (hi - lo) / 255`, `zp = round(-128 - lo / scale)`.
pub fn activation_params(lo: f32, hi: f32) -> (f32, i32) {
    let (lo, hi) = (f64::from(lo.min(0.0)), f64::from(hi.max(0.0)));
    let scale = (hi - lo) / 255.0;
    if scale <= 0.0 || !scale.is_finite() {
        return (1.0, 0);
    }
    let zp = (-128.0 - lo / scale).round().clamp(-128.0, 127.0) as i32;
    (scale as f32, zp)
}

/// The fixed quantization of an op's output whose range is known in advance.
fn fixed_params(op: &Op) -> Option<(f32, i32)> {
    match op {
        Op::Softmax { .. } | Op::Sigmoid => Some((1.0 / 256.0, -128)),
        Op::Tanh => Some((1.0 / 128.0, 0)),
        _ => None,
    }
}

/// Quantizes `g` in place with the activation ranges of calibration.
pub fn quantize(g: &mut Graph, ranges: &Ranges) -> Result<QuantizeReport, IrError> {
    let mut report = QuantizeReport::default();
    let mut params = std::collections::BTreeMap::new();
    for (&v, &(lo, hi)) in ranges {
        if !util::is_used(g, v) || g.value(v).ty.dtype != DType::F32 || inside_pattern(g, v) {
            continue;
        }
        let fixed = util::producer(g, v).and_then(|p| fixed_params(&g.node(p).op));
        let (scale, zp) = fixed.unwrap_or_else(|| activation_params(lo, hi));
        insert_qdq(g, v, scale, zp)?;
        params.insert(v, scale);
        report.activations += 1;
    }
    for id in g.topo_order()? {
        quantize_weights(g, id, &mut report)?;
    }
    Ok(report)
}

/// Values the integer lowering matches inside one pattern, which must stay float: a Conv,
/// MatMul, Gemm, Add or Mul result read only by a Relu or Clip (absorbed into the output
/// range), and a MatMul result read only by the Add of a constant bias.
fn inside_pattern(g: &Graph, v: ValueId) -> bool {
    let (Some(p), true) = (util::producer(g, v), util::single_use(g, v)) else {
        return false;
    };
    let Some(&(c, _)) = g.consumers(v).first() else {
        return false;
    };
    let (producer, consumer) = (&g.node(p).op, &g.node(c).op);
    let absorbs = matches!(
        producer,
        Op::Conv { .. } | Op::MatMul { .. } | Op::Gemm { .. } | Op::Add { .. } | Op::Mul
    );
    let bias_add = matches!(producer, Op::MatMul { .. })
        && matches!(consumer, Op::Add { .. })
        && g.node(c)
            .inputs
            .iter()
            .any(|&i| i != v && util::const_of(g, i).is_some());
    (absorbs && matches!(consumer, Op::Relu | Op::Clip { .. })) || bias_add
}

fn scalar_i8(v: i32) -> Result<Tensor, IrError> {
    Tensor::new(vec![], TensorData::I8(vec![v as i8]))
}

/// Puts `DequantizeLinear(QuantizeLinear(v))` between `v` and every reader of it (graph
/// outputs included: the dequantized value takes the output's name).
fn insert_qdq(g: &mut Graph, v: ValueId, scale: f32, zp: i32) -> Result<(), IrError> {
    let name = g.value(v).name.clone();
    let s = g.add_const(format!("{name}/scale"), Arc::new(Tensor::scalar_f32(scale)));
    let z = g.add_const(format!("{name}/zero_point"), Arc::new(scalar_i8(zp)?));
    let readers = g.consumers(v);
    let q = g.add_node(
        util::derived_name(&name, "quantize"),
        Op::QuantizeLinear {
            axis: None,
            dtype: DType::I8,
            block_size: 0,
        },
        vec![v, s, z],
        vec![format!("{name}/q")],
    )?;
    let qv = g.node(q).outputs[0];
    let dq = g.add_node(
        util::derived_name(&name, "dequantize"),
        Op::DequantizeLinear {
            axis: None,
            block_size: 0,
        },
        vec![qv, s, z],
        vec![],
    )?;
    let dqv = g.node(dq).outputs[0];
    for (n, slot) in readers {
        g.set_node_input(n, slot, dqv);
    }
    if g.is_output(v) {
        let outputs: Vec<ValueId> = g
            .outputs()
            .iter()
            .map(|&o| if o == v { dqv } else { o })
            .collect();
        g.set_outputs(outputs);
        g.value_mut(v).name = format!("{name}/float");
        g.value_mut(dqv).name = name;
    }
    Ok(())
}

/// The scale of a value that a DequantizeLinear with a constant scalar scale computes.
fn dequantized_scale(g: &Graph, v: ValueId) -> Option<f32> {
    let p = util::producer(g, v)?;
    if !matches!(g.node(p).op, Op::DequantizeLinear { axis: None, .. }) {
        return None;
    }
    util::const_scalar(g, *g.node(p).inputs.get(1)?)
}

/// Replaces the float weights (and bias) of a Conv, MatMul or Gemm whose activation input is
/// quantized, and the float constant operands of Add, Mul and Concat.
fn quantize_weights(g: &mut Graph, id: NodeId, report: &mut QuantizeReport) -> Result<(), IrError> {
    let node = g.node(id).clone();
    let (weight_axis, bias_slot) = match &node.op {
        Op::Conv { .. } => (Some(0), Some(2)),
        Op::Gemm {
            trans_a: false,
            trans_b,
            ..
        } => (Some(if *trans_b { 0 } else { 1 }), Some(2)),
        Op::MatMul { .. }
            if node
                .inputs
                .get(1)
                .is_some_and(|&b| g.value(b).ty.rank() == 2) =>
        {
            (Some(1), None)
        }
        Op::Add { .. } | Op::Mul | Op::Concat { .. } => {
            for (slot, &v) in node.inputs.iter().enumerate() {
                if util::const_f32(g, v).is_some() && g.value(v).ty.dtype == DType::F32 {
                    let dq = per_tensor_constant(g, v)?;
                    g.set_node_input(id, slot, dq);
                    report.weights += 1;
                }
            }
            return Ok(());
        }
        _ => (None, None),
    };
    let (Some(axis), Some(s_x)) = (
        weight_axis,
        node.inputs.first().and_then(|&x| dequantized_scale(g, x)),
    ) else {
        return Ok(());
    };
    let Some(&w) = node.inputs.get(1) else {
        return Ok(());
    };
    let Some(wt) = util::const_of(g, w).filter(|t| t.as_f32().is_some()) else {
        return Ok(());
    };
    let (dq, scales) = per_channel_weights(g, w, &wt, axis)?;
    g.set_node_input(id, 1, dq);
    report.weights += 1;
    let Some(slot) = bias_slot else {
        return Ok(());
    };
    if let Some(&b) = node.inputs.get(slot) {
        if let Some(bias) = util::const_f32(g, b) {
            if bias.len() == scales.len() && g.value(b).ty.numel() == scales.len() {
                let dq = int32_bias(g, b, &bias, &scales, s_x)?;
                g.set_node_input(id, slot, dq);
                report.biases += 1;
            }
        }
    }
    Ok(())
}

/// Symmetric int8 weights per slice along `axis`: `DequantizeLinear(w_q, s, 0)`. Returns the
/// dequantized value and the scales.
fn per_channel_weights(
    g: &mut Graph,
    w: ValueId,
    t: &Tensor,
    axis: usize,
) -> Result<(ValueId, Vec<f32>), IrError> {
    let data = t.as_f32().unwrap_or(&[]);
    let shape = t.shape().to_vec();
    let channels = shape.get(axis).copied().unwrap_or(1);
    let inner: usize = shape.iter().skip(axis + 1).product();
    let channel_of = |i: usize| (i / inner.max(1)) % channels.max(1);
    let mut max_abs = vec![0f32; channels];
    for (i, &v) in data.iter().enumerate() {
        let c = channel_of(i);
        max_abs[c] = max_abs[c].max(v.abs());
    }
    let scales: Vec<f32> = max_abs
        .iter()
        .map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 })
        .collect();
    let q: Vec<i8> = data
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            (v / scales[channel_of(i)])
                .round_ties_even()
                .clamp(-127.0, 127.0) as i8
        })
        .collect();
    let name = g.value(w).name.clone();
    let wq = g.add_const(
        format!("{name}/int8"),
        Arc::new(Tensor::new(shape, TensorData::I8(q))?),
    );
    let dq = dequantize_const(g, &name, wq, scales.clone(), DType::I8, Some(axis))?;
    Ok((dq, scales))
}

/// An int32 bias at the accumulator's scale `s_x * s_w[c]`, zero point 0.
fn int32_bias(
    g: &mut Graph,
    b: ValueId,
    bias: &[f32],
    w_scales: &[f32],
    s_x: f32,
) -> Result<ValueId, IrError> {
    let scales: Vec<f32> = w_scales.iter().map(|&s| s_x * s).collect();
    let q: Vec<i32> = bias
        .iter()
        .zip(&scales)
        .map(|(&v, &s)| {
            (f64::from(v) / f64::from(s))
                .round()
                .clamp(-2_147_483_647.0, 2_147_483_647.0) as i32
        })
        .collect();
    let name = g.value(b).name.clone();
    let n = q.len();
    let bq = g.add_const(
        format!("{name}/int32"),
        Arc::new(Tensor::new(vec![n], TensorData::I32(q))?),
    );
    dequantize_const(g, &name, bq, scales, DType::I32, Some(0))
}

/// A float constant as `DequantizeLinear` of int8 per tensor, from its own range.
fn per_tensor_constant(g: &mut Graph, v: ValueId) -> Result<ValueId, IrError> {
    let t = util::const_of(g, v).map(|t| (*t).clone());
    let Some(t) = t else { return Ok(v) };
    let data = t.as_f32().unwrap_or(&[]);
    let lo = data.iter().copied().fold(0f32, f32::min);
    let hi = data.iter().copied().fold(0f32, f32::max);
    let (scale, zp) = activation_params(lo, hi);
    let q: Vec<i8> = data
        .iter()
        .map(|&x| ((x / scale).round_ties_even() + zp as f32).clamp(-128.0, 127.0) as i8)
        .collect();
    let name = g.value(v).name.clone();
    let qv = g.add_const(
        format!("{name}/int8"),
        Arc::new(Tensor::new(t.shape().to_vec(), TensorData::I8(q))?),
    );
    let s = g.add_const(format!("{name}/scale"), Arc::new(Tensor::scalar_f32(scale)));
    let z = g.add_const(format!("{name}/zero_point"), Arc::new(scalar_i8(zp)?));
    let dq = g.add_node(
        util::derived_name(&name, "dequantize"),
        Op::DequantizeLinear {
            axis: None,
            block_size: 0,
        },
        vec![qv, s, z],
        vec![],
    )?;
    Ok(g.node(dq).outputs[0])
}

/// `DequantizeLinear(q, scales, 0)` along `axis` (per tensor when there is one scale).
fn dequantize_const(
    g: &mut Graph,
    name: &str,
    q: ValueId,
    scales: Vec<f32>,
    dtype: DType,
    axis: Option<usize>,
) -> Result<ValueId, IrError> {
    let n = scales.len();
    let zeros = match dtype {
        DType::I32 => TensorData::I32(vec![0; n]),
        _ => TensorData::I8(vec![0; n]),
    };
    let s = g.add_const(
        format!("{name}/scale"),
        Arc::new(Tensor::from_f32(vec![n], scales)?),
    );
    let z = g.add_const(
        format!("{name}/zero_point"),
        Arc::new(Tensor::new(vec![n], zeros)?),
    );
    let dq = g.add_node(
        util::derived_name(name, "dequantize"),
        Op::DequantizeLinear {
            axis: if n > 1 { axis } else { None },
            block_size: 0,
        },
        vec![q, s, z],
        vec![],
    )?;
    Ok(g.node(dq).outputs[0])
}
