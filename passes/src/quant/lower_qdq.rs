//! `lower-qdq`: turns QDQ subgraphs into kiln's integer ops.
//!
//! Matches, at every QuantizeLinear `Q` (per tensor, to i8 or u8, constant parameters), the
//! float op that computes its input from DequantizeLinear results `DQ`:
//! - Conv, MatMul (+ Add of a constant bias) and Gemm with constant weights (per tensor or per
//!   output channel), a following Relu or Clip absorbed into the output range: QConv/QMatMul,
//!   with the weights' zero point subtracted, every weight-only zero-point term folded into
//!   the i32 bias, per-channel fixed-point multipliers, and the accumulator proven not to
//!   overflow (the layer is refused otherwise);
//! - Add and Mul of two dequantized operands: QAdd/QMul (TFLite's int8 arithmetic);
//! - AveragePool, GlobalAveragePool: QAveragePool; Softmax: QSoftmax;
//! - any other element-wise function of one operand: a 256-entry QTable computed from the
//!   float op itself;
//! - Concat: Concat of the integer operands, each rescaled to the output's quantization where
//!   it differs; `DQ -> Q` alone: rescaled;
//! - data movement (Reshape, Transpose, MaxPool, Slice, Pad, ...): the same op on the integer
//!   tensor, then rescaled if the output quantization differs.
//!
//! Rescaling between 8-bit types is a QTable of the float `Q(DQ(x))` (bit for bit what
//! onnxruntime computes); wider types get a fixed-point Requantize.
//!
//! Every float intermediate must have no other reader. Sound because each integer op is
//! defined as its float pattern's result rounded to the output's quantization (within one
//! step, from the fixed-point rounding; tables are exact). Anything else stays in float
//! between its DQ and Q nodes (the fallback `kiln compile` reports).

use std::sync::Arc;

use kiln_ir::fixed_point::{FixedPoint, Rounding};
use kiln_ir::op::{OpFamily, PadMode, QOut, ResizeMode};
use kiln_ir::{Activation, DType, Graph, IrError, NodeId, Op, OpError, Tensor, ValueId};

use super::integer::{
    centered_weights, check_accumulator, i32_const, is_absorbable_activation, max_abs_input,
    multiplier_consts, output_range, round_i64, softmax_table, unary_table,
};
use super::params::{constant_source, dequantized, quantize_params, Dequantized, QParams};
use crate::pipeline::Pass;
use crate::util;

#[derive(Debug)]
pub struct LowerQdq;

impl Pass for LowerQdq {
    fn name(&self) -> &'static str {
        "lower-qdq"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, IrError> {
        annotate_dequantized(g);
        let mut changed = false;
        for id in g.topo_order()? {
            if g.contains_node(id) && matches!(g.node(id).op, Op::QuantizeLinear { .. }) {
                changed |= lower_at(g, id)?;
            }
        }
        Ok(changed)
    }
}

/// Records the quantization of every integer value a DequantizeLinear reads (graph inputs and
/// activations), for reports, `--io int8` and the header.
fn annotate_dequantized(g: &mut Graph) {
    for id in g.node_ids() {
        if !matches!(g.node(id).op, Op::DequantizeLinear { .. }) {
            continue;
        }
        let v = g.node(id).outputs[0];
        if let Some(d) = dequantized(g, v) {
            if g.value(d.source).quant.is_none() && !g.value(d.source).is_const() {
                g.value_mut(d.source).quant = Some(d.params.to_value_quant());
            }
        }
    }
}

/// A QuantizeLinear and the float computation feeding it.
struct Site {
    q: NodeId,
    out: QParams,
    /// The op computing the quantized value.
    anchor: NodeId,
    /// A Relu or Clip between the anchor and Q, absorbed into the output range.
    act: Option<(NodeId, Op)>,
    /// The integer op's name.
    name: String,
}

impl Site {
    fn range(&self) -> QOut {
        output_range(&self.out, self.act.as_ref().map(|(_, op)| op))
    }
}

fn lower_at(g: &mut Graph, q: NodeId) -> Result<bool, IrError> {
    let Some(out) = quantize_params(g, q).filter(|p| p.is_8bit() && p.per_tensor().is_some())
    else {
        return Ok(false);
    };
    let q_in = g.node(q).inputs[0];
    let Some(p) = util::producer(g, q_in) else {
        return Ok(false);
    };
    if !util::single_use(g, q_in) {
        return Ok(false);
    }
    let name = g.node(p).name.clone();
    let mut site = Site {
        q,
        out,
        anchor: p,
        act: None,
        name,
    };
    // Relu/Clip after an op that absorbs it into its output range.
    if is_absorbable_activation(&g.node(p).op) {
        let x = g.node(p).inputs[0];
        if let Some(a) = util::producer(g, x) {
            if absorbs_activation(&g.node(a).op) && util::single_use(g, x) {
                site.act = Some((p, g.node(p).op.clone()));
                site.anchor = a;
                site.name = g.node(a).name.clone();
            }
        }
    }
    // An activation the optimizer already fused into the anchor.
    let fused = g.node(site.anchor).op.activation();
    if !fused.is_none() {
        if site.act.is_some() {
            return Ok(false);
        }
        match fused.as_op() {
            Some(op) if is_absorbable_activation(&op) => site.act = Some((site.anchor, op)),
            _ => return Ok(false),
        }
    }
    let Some((y, extra)) = lower_anchor(g, &site)? else {
        return Ok(false);
    };
    let q_out = g.node(q).outputs[0];
    if !util::redirect(g, q_out, y) {
        return Ok(false);
    }
    g.value_mut(y).quant = Some(site.out.to_value_quant());
    let mut dead = vec![q, site.anchor];
    if let Some((a, _)) = site.act {
        if a != site.anchor {
            dead.push(a);
        }
    }
    dead.extend(extra);
    g.remove_nodes(&dead)?;
    Ok(true)
}

/// Ops whose quantized form clamps its output, so a following Relu or Clip is free.
fn absorbs_activation(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv { .. } | Op::MatMul { .. } | Op::Gemm { .. } | Op::Add { .. } | Op::Mul
    )
}

/// The integer value replacing Q's output, and further float nodes that become dead.
type Lowered = Option<(ValueId, Vec<NodeId>)>;

fn lower_anchor(g: &mut Graph, site: &Site) -> Result<Lowered, IrError> {
    let op = g.node(site.anchor).op.clone();
    match op {
        Op::Conv { .. } => lower_conv(g, site),
        Op::MatMul { .. } => lower_matmul(g, site, site.anchor, None),
        Op::Add { .. } => match matmul_with_bias(g, site.anchor) {
            Some((mm, bias)) => lower_matmul(g, site, mm, Some(bias)),
            None => lower_add_mul(g, site, true),
        },
        Op::Mul => lower_add_mul(g, site, false),
        Op::Gemm { .. } => lower_gemm(g, site),
        Op::AveragePool { .. } | Op::GlobalAveragePool => lower_average_pool(g, site),
        Op::Softmax { .. } => lower_softmax(g, site),
        Op::DequantizeLinear { .. } => lower_requantize(g, site),
        Op::Concat { axis } => lower_concat(g, site, axis),
        _ if is_copy(&op) => lower_copy(g, site),
        _ if is_table_function(&op) => lower_table(g, site),
        _ => Ok(None),
    }
}

/// A dequantized activation: per tensor, 8-bit.
fn activation_input(g: &Graph, v: ValueId) -> Option<Dequantized> {
    dequantized(g, v).filter(|d| d.params.is_8bit() && d.params.per_tensor().is_some())
}

fn node_err(site: &Site, op: &str, source: OpError) -> IrError {
    IrError::Node {
        node: site.name.clone(),
        op: op.to_string(),
        source,
    }
}

/// A bias scaled to the accumulator's scale `acc_scales[c]` (one per channel): a dequantized
/// int32 constant whose scale already is the accumulator's (as TFLite and onnxruntime write
/// them) is taken as is; any other (float, or another scale) is rounded to it.
fn bias_values(g: &Graph, b: ValueId, acc_scales: &[f64]) -> Option<Vec<i64>> {
    let n = acc_scales.len();
    let (reals, exact): (Vec<f64>, Option<Vec<i64>>) = if let Some(d) = dequantized(g, b) {
        let src = constant_source(g, &d)?.to_i64_vec()?;
        let reals: Vec<f64> = (0..src.len())
            .map(|i| {
                (src[i] - i64::from(d.params.zero_point_at(i))) as f64
                    * f64::from(d.params.scale_at(i))
            })
            .collect();
        let same_scale = d.params.zero_point.iter().all(|&z| z == 0)
            && (0..n).all(|c| {
                let s = f64::from(d.params.scale_at(c));
                (s - acc_scales[c]).abs() <= 1e-6 * acc_scales[c]
            });
        (reals, (same_scale && src.len() == n).then_some(src))
    } else {
        let v = util::const_f32(g, b)?;
        (v.iter().map(|&x| f64::from(x)).collect(), None)
    };
    if let Some(exact) = exact {
        return Some(exact);
    }
    match reals.len() {
        1 => Some(
            (0..n)
                .map(|c| round_i64(reals[0] / acc_scales[c]))
                .collect(),
        ),
        len if len == n => Some(
            (0..n)
                .map(|c| round_i64(reals[c] / acc_scales[c]))
                .collect(),
        ),
        _ => None,
    }
}

/// Integer weights behind a DequantizeLinear, per tensor or per slice along `axis`.
struct Weights {
    values: Vec<i32>,
    tensor: Tensor,
    scales: Vec<f32>,
}

fn weights(g: &Graph, v: ValueId, axis: usize) -> Option<Weights> {
    let d = dequantized(g, v)?;
    if !d.params.is_8bit() || d.params.axis.is_some_and(|a| a != axis) {
        return None;
    }
    let q = constant_source(g, &d)?;
    let (tensor, values) = centered_weights(&q, &d.params, axis).ok()?;
    Some(Weights {
        values,
        tensor,
        scales: d.params.scale.clone(),
    })
}

/// Conv(DQ(x), DQ(w), bias) -> QConv.
fn lower_conv(g: &mut Graph, site: &Site) -> Result<Lowered, IrError> {
    let node = g.node(site.anchor).clone();
    let Op::Conv {
        kernel_shape,
        strides,
        dilations,
        pads,
        group,
        ..
    } = node.op
    else {
        return Ok(None);
    };
    let Some(x) = activation_input(g, node.inputs[0]) else {
        return Ok(None);
    };
    let Some(w) = weights(g, node.inputs[1], 0) else {
        return Ok(None);
    };
    let channels = w.tensor.shape()[0];
    let per = w.values.len() / channels.max(1);
    let (s_x, z_x) = x.params.per_tensor().unwrap_or((1.0, 0));
    let (s_y, _) = site.out.per_tensor().unwrap_or((1.0, 0));
    let acc_scales: Vec<f64> = (0..channels)
        .map(|c| {
            f64::from(s_x) * f64::from(w.scales.get(c).or(w.scales.first()).copied().unwrap_or(1.0))
        })
        .collect();
    let bias = match node.inputs.get(2) {
        Some(&b) => match bias_values(g, b, &acc_scales) {
            Some(v) => v,
            None => return Ok(None),
        },
        None => vec![0; channels],
    };
    let sums: Vec<i64> = w
        .values
        .chunks(per.max(1))
        .map(|c| c.iter().map(|&v| i64::from(v)).sum())
        .collect();
    let abs_sums: Vec<i64> = w
        .values
        .chunks(per.max(1))
        .map(|c| c.iter().map(|&v| i64::from(v.abs())).sum())
        .collect();
    let folded: Vec<i64> = (0..channels)
        .map(|c| bias[c] - i64::from(z_x) * sums[c])
        .collect();
    let reals = per_channel_reals(&acc_scales, f64::from(s_y));
    let (m, s, fps) = multiplier_consts(g, &site.name, &reals)?;
    check_accumulator(
        &site.name,
        "Conv",
        &folded,
        &abs_sums,
        max_abs_input(x.params.dtype),
        &fps,
    )?;
    let wv = g.add_const(format!("{}/weights", site.name), Arc::new(w.tensor));
    let bv = i32_const(
        g,
        format!("{}/bias", site.name),
        vec![channels],
        folded.iter().map(|&b| b as i32).collect(),
    )?;
    let op = Op::QConv {
        kernel_shape,
        strides,
        dilations,
        pads,
        group,
        x_zero_point: z_x,
        output: Some(site.range()),
        rounding: g.rounding(),
    };
    let id = g.add_node(site.name.clone(), op, vec![x.source, wv, bv, m, s], vec![])?;
    Ok(Some((g.node(id).outputs[0], vec![])))
}

/// One multiplier per channel, or one when every channel has the same.
fn per_channel_reals(acc_scales: &[f64], s_y: f64) -> Vec<f64> {
    let reals: Vec<f64> = acc_scales.iter().map(|a| a / s_y).collect();
    if reals.windows(2).all(|w| w[0] == w[1]) {
        reals.into_iter().take(1).collect()
    } else {
        reals
    }
}

/// `Add(MatMul(a, b), bias)` with a constant bias, as (MatMul node, bias value).
fn matmul_with_bias(g: &Graph, add: NodeId) -> Option<(NodeId, ValueId)> {
    let ins = g.node(add).inputs.clone();
    (0..2).find_map(|i| {
        let mm = util::producer(g, ins[i])?;
        let is_mm = matches!(&g.node(mm).op, Op::MatMul { activation, a_perm, b_perm }
            if activation.is_none() && a_perm.is_empty() && b_perm.is_empty());
        let bias_const = util::const_of(g, ins[1 - i]).is_some()
            || dequantized(g, ins[1 - i]).is_some_and(|d| constant_source(g, &d).is_some());
        (is_mm && bias_const && util::single_use(g, ins[i])).then_some((mm, ins[1 - i]))
    })
}

/// MatMul(DQ(a), DQ(b)) (+ bias) -> QMatMul, B a 2-D constant.
fn lower_matmul(
    g: &mut Graph,
    site: &Site,
    mm: NodeId,
    bias: Option<ValueId>,
) -> Result<Lowered, IrError> {
    let ins = g.node(mm).inputs.clone();
    if matches!(&g.node(mm).op, Op::MatMul { a_perm, b_perm, .. } if !a_perm.is_empty() || !b_perm.is_empty())
    {
        return Ok(None);
    }
    let Some(a) = activation_input(g, ins[0]) else {
        return Ok(None);
    };
    if g.value(ins[1]).ty.rank() != 2 || g.value(ins[0]).ty.rank() < 2 {
        return Ok(None);
    }
    let Some(b) = weights(g, ins[1], 1) else {
        return Ok(None);
    };
    let extra = if mm == site.anchor { vec![] } else { vec![mm] };
    let anchor_out = g.node(site.anchor).outputs[0];
    if g.value(anchor_out).ty.shape != g.value(g.node(mm).outputs[0]).ty.shape {
        return Ok(None);
    }
    let y = finish_matmul(g, site, &a, b, bias, 1.0, 1.0)?;
    Ok(y.map(|y| (y, extra)))
}

/// Gemm(DQ(a), DQ(b), c) -> QMatMul, with B transposed at compile time if needed and alpha
/// and beta folded into the multipliers and the bias.
fn lower_gemm(g: &mut Graph, site: &Site) -> Result<Lowered, IrError> {
    let node = g.node(site.anchor).clone();
    let Op::Gemm {
        alpha,
        beta,
        trans_a: false,
        trans_b,
        ..
    } = node.op
    else {
        return Ok(None);
    };
    let Some(a) = activation_input(g, node.inputs[0]) else {
        return Ok(None);
    };
    let b = if trans_b {
        weights(g, node.inputs[1], 0).and_then(transposed)
    } else {
        weights(g, node.inputs[1], 1)
    };
    let Some(b) = b else {
        return Ok(None);
    };
    let y = finish_matmul(
        g,
        site,
        &a,
        b,
        node.inputs.get(2).copied(),
        f64::from(alpha),
        f64::from(beta),
    )?;
    Ok(y.map(|y| (y, vec![])))
}

/// `[N, K]` weights as `[K, N]`.
fn transposed(w: Weights) -> Option<Weights> {
    let (n, k) = match w.tensor.shape() {
        [n, k] => (*n, *k),
        _ => return None,
    };
    let values: Vec<i32> = (0..k * n).map(|i| w.values[(i % n) * k + i / n]).collect();
    let tensor =
        kiln_ir::ops::util::int_tensor(w.tensor.dtype(), vec![k, n], values.clone()).ok()?;
    Some(Weights {
        values,
        tensor,
        scales: w.scales,
    })
}

/// The QMatMul of activation `a` and `[K, N]` weights `b`, with an optional bias (scaled by
/// `beta`) and `alpha` folded into the multipliers.
fn finish_matmul(
    g: &mut Graph,
    site: &Site,
    a: &Dequantized,
    b: Weights,
    bias: Option<ValueId>,
    alpha: f64,
    beta: f64,
) -> Result<Option<ValueId>, IrError> {
    let (k, n) = match b.tensor.shape() {
        [k, n] => (*k, *n),
        _ => return Ok(None),
    };
    let (s_a, z_a) = a.params.per_tensor().unwrap_or((1.0, 0));
    let (s_y, _) = site.out.per_tensor().unwrap_or((1.0, 0));
    let acc_scales: Vec<f64> = (0..n)
        .map(|c| {
            f64::from(s_a) * f64::from(b.scales.get(c).or(b.scales.first()).copied().unwrap_or(1.0))
        })
        .collect();
    let bias = match bias {
        Some(v) => {
            let Some(t) = g.value(v).ty.shape.last().copied() else {
                return Ok(None);
            };
            if g.value(v).ty.numel() != n && g.value(v).ty.numel() != 1 || (t != n && t != 1) {
                return Ok(None);
            }
            let scaled: Vec<f64> = acc_scales.iter().map(|s| s / beta).collect();
            match bias_values(g, v, &scaled) {
                Some(b) => b,
                None => return Ok(None),
            }
        }
        None => vec![0; n],
    };
    let col = |c: usize| (0..k).map(move |r| r * n + c);
    let sums: Vec<i64> = (0..n)
        .map(|c| col(c).map(|i| i64::from(b.values[i])).sum())
        .collect();
    let abs_sums: Vec<i64> = (0..n)
        .map(|c| col(c).map(|i| i64::from(b.values[i].abs())).sum())
        .collect();
    let folded: Vec<i64> = (0..n).map(|c| bias[c] - i64::from(z_a) * sums[c]).collect();
    let scaled: Vec<f64> = acc_scales.iter().map(|s| s * alpha).collect();
    let reals = per_channel_reals(&scaled, f64::from(s_y));
    let (m, s, fps) = multiplier_consts(g, &site.name, &reals)?;
    check_accumulator(
        &site.name,
        "MatMul",
        &folded,
        &abs_sums,
        max_abs_input(a.params.dtype),
        &fps,
    )?;
    let bv_name = format!("{}/weights", site.name);
    let wv = g.add_const(bv_name, Arc::new(b.tensor));
    let bv = i32_const(
        g,
        format!("{}/bias", site.name),
        vec![n],
        folded.iter().map(|&b| b as i32).collect(),
    )?;
    let op = Op::QMatMul {
        output: Some(site.range()),
        rounding: g.rounding(),
    };
    let id = g.add_node(site.name.clone(), op, vec![a.source, wv, bv, m, s], vec![])?;
    Ok(Some(g.node(id).outputs[0]))
}

/// Add or Mul of two dequantized operands -> QAdd / QMul.
fn lower_add_mul(g: &mut Graph, site: &Site, add: bool) -> Result<Lowered, IrError> {
    let ins = g.node(site.anchor).inputs.clone();
    let (Some(a), Some(b)) = (activation_input(g, ins[0]), activation_input(g, ins[1])) else {
        return Ok(None);
    };
    if a.params.dtype != b.params.dtype {
        return Ok(None);
    }
    let (s_a, z_a) = a.params.per_tensor().unwrap_or((1.0, 0));
    let (s_b, z_b) = b.params.per_tensor().unwrap_or((1.0, 0));
    let (s_y, _) = site.out.per_tensor().unwrap_or((1.0, 0));
    let (s_a, s_b, s_y) = (f64::from(s_a), f64::from(s_b), f64::from(s_y));
    let op = if add {
        // TFLite's int8 Add: 20 bits of headroom, both operands at twice the larger scale.
        let left_shift = 20;
        let twice_max = 2.0 * s_a.max(s_b);
        Op::QAdd {
            a_zero_point: z_a,
            b_zero_point: z_b,
            left_shift,
            a_scale: FixedPoint::from_real(s_a / twice_max),
            b_scale: FixedPoint::from_real(s_b / twice_max),
            output_scale: FixedPoint::from_real(twice_max / (f64::from(1 << left_shift) * s_y)),
            output: site.range(),
            rounding: g.rounding(),
        }
    } else {
        Op::QMul {
            a_zero_point: z_a,
            b_zero_point: z_b,
            scale: FixedPoint::from_real(s_a * s_b / s_y),
            output: site.range(),
            rounding: g.rounding(),
        }
    };
    let id = g.add_node(site.name.clone(), op, vec![a.source, b.source], vec![])?;
    Ok(Some((g.node(id).outputs[0], vec![])))
}

/// AveragePool / GlobalAveragePool -> QAveragePool.
fn lower_average_pool(g: &mut Graph, site: &Site) -> Result<Lowered, IrError> {
    let node = g.node(site.anchor).clone();
    let Some(x) = activation_input(g, node.inputs[0]) else {
        return Ok(None);
    };
    let shape = g.value(node.inputs[0]).ty.shape.clone();
    if shape.len() < 3 {
        return Ok(None);
    }
    let spatial = shape.len() - 2;
    let (kernel_shape, strides, dilations, pads, ceil_mode, count_include_pad) = match node.op {
        Op::AveragePool {
            kernel_shape,
            strides,
            dilations,
            pads,
            ceil_mode,
            count_include_pad,
        } => (
            kernel_shape,
            strides,
            dilations,
            pads,
            ceil_mode,
            count_include_pad,
        ),
        Op::GlobalAveragePool => (
            shape[2..].to_vec(),
            vec![1; spatial],
            vec![1; spatial],
            vec![0; 2 * spatial],
            false,
            false,
        ),
        _ => return Ok(None),
    };
    let (s_x, z_x) = x.params.per_tensor().unwrap_or((1.0, 0));
    let (s_y, z_y) = site.out.per_tensor().unwrap_or((1.0, 0));
    // TFLite's rounding division of the raw sum needs one quantization in and out; anything
    // else rescales the centered sum by the count's multiplier.
    let same = s_x == s_y
        && z_x == z_y
        && x.params.dtype == site.out.dtype
        && g.rounding() == Rounding::TfLite;
    let mut inputs = vec![x.source];
    let taps: usize = kernel_shape.iter().product();
    let uniform = pads.iter().all(|&p| p == 0) && !ceil_mode;
    if !same {
        // One multiplier per window count, or one for all when every window counts every tap.
        let real = |n: usize| {
            if n == 0 {
                0.0
            } else {
                f64::from(s_x) / (f64::from(s_y) * n as f64)
            }
        };
        let reals: Vec<f64> = if uniform {
            vec![real(taps)]
        } else {
            (0..=taps).map(real).collect()
        };
        let (m, s, _) = multiplier_consts(g, &site.name, &reals)?;
        inputs.extend([m, s]);
    }
    let op = Op::QAveragePool {
        kernel_shape,
        strides,
        dilations,
        pads,
        ceil_mode,
        count_include_pad,
        x_zero_point: z_x,
        output: site.range(),
        rescale: !same,
        rounding: g.rounding(),
    };
    let id = g.add_node(site.name.clone(), op, inputs, vec![])?;
    Ok(Some((g.node(id).outputs[0], vec![])))
}

/// Softmax -> QSoftmax with the input scale's exponential table.
fn lower_softmax(g: &mut Graph, site: &Site) -> Result<Lowered, IrError> {
    let node = g.node(site.anchor).clone();
    let Op::Softmax { axis, coerce_2d } = node.op else {
        return Ok(None);
    };
    let rank = g.value(node.inputs[0]).ty.rank();
    if coerce_2d && axis + 1 != rank {
        return Ok(None);
    }
    let Some(x) = activation_input(g, node.inputs[0]) else {
        return Ok(None);
    };
    let (s_x, _) = x.params.per_tensor().unwrap_or((1.0, 0));
    let (s_y, _) = site.out.per_tensor().unwrap_or((1.0, 0));
    let inv_scale = (65536.0 / f64::from(s_y)).round();
    if !(1.0..=kiln_ir::ops::norm::QSOFTMAX_MAX_INV_SCALE as f64).contains(&inv_scale) {
        return Ok(None);
    }
    let table = softmax_table(s_x).map_err(|e| node_err(site, "Softmax", e))?;
    let tv = g.add_const(format!("{}/exp_table", site.name), Arc::new(table));
    let op = Op::QSoftmax {
        axis,
        inv_scale: inv_scale as i64,
        output: site.range(),
    };
    let id = g.add_node(site.name.clone(), op, vec![x.source, tv], vec![])?;
    Ok(Some((g.node(id).outputs[0], vec![])))
}

/// `DQ -> Q` with other parameters -> Requantize (with equal ones, the integer value itself).
fn lower_requantize(g: &mut Graph, site: &Site) -> Result<Lowered, IrError> {
    let q_in = g.node(site.q).inputs[0];
    let Some(x) = activation_input(g, q_in) else {
        return Ok(None);
    };
    if x.node != site.anchor {
        return Ok(None);
    }
    let y = rescaled(g, &site.name, x.source, &x.params, &site.out)?;
    Ok(Some((y, vec![])))
}

/// `v` (quantized with `from`) in the quantization `to`: `v` itself when they agree; between
/// 8-bit types a QTable of `Q(DQ(x))` computed in f32 as the float graph computes it (a
/// fixed-point Requantize rounds the exact ratio instead, which differs by one step where the
/// f32 quotient lands on the other side of a tie: -21 * 0.05 / 0.1 is -10.5 exactly but
/// -10.500001 in f32, and onnxruntime gives -11); else a Requantize node.
fn rescaled(
    g: &mut Graph,
    name: &str,
    v: ValueId,
    from: &QParams,
    to: &QParams,
) -> Result<ValueId, IrError> {
    if from == to {
        return Ok(v);
    }
    let is_byte = |t: DType| matches!(t, DType::I8 | DType::U8);
    if is_byte(g.value(v).ty.dtype) && is_byte(from.dtype) && is_byte(to.dtype) {
        let table = unary_table(&Op::Identity, from, to).map_err(|e| IrError::Node {
            node: name.to_string(),
            op: "DequantizeLinear -> QuantizeLinear".into(),
            source: e,
        })?;
        let tv = g.add_const(format!("{name}/requantize_table"), Arc::new(table));
        let id = g.add_node(
            util::derived_name(name, "requantize"),
            Op::QTable,
            vec![v, tv],
            vec![],
        )?;
        let y = g.node(id).outputs[0];
        g.value_mut(y).quant = Some(to.to_value_quant());
        return Ok(y);
    }
    let (s_x, z_x) = from.per_tensor().unwrap_or((1.0, 0));
    let (s_y, z_y) = to.per_tensor().unwrap_or((1.0, 0));
    let op = Op::Requantize {
        x_zero_point: z_x,
        scale: FixedPoint::from_real(f64::from(s_x) / f64::from(s_y)),
        output: QOut::full(to.dtype, z_y),
        rounding: g.rounding(),
    };
    let id = g.add_node(util::derived_name(name, "requantize"), op, vec![v], vec![])?;
    let y = g.node(id).outputs[0];
    g.value_mut(y).quant = Some(to.to_value_quant());
    Ok(y)
}

/// Concat of dequantized operands -> Concat of the integer operands, each in the output's
/// quantization.
fn lower_concat(g: &mut Graph, site: &Site, axis: usize) -> Result<Lowered, IrError> {
    let ins = g.node(site.anchor).inputs.clone();
    let sources: Option<Vec<Dequantized>> = ins.iter().map(|&v| activation_input(g, v)).collect();
    let Some(sources) = sources else {
        return Ok(None);
    };
    if sources.iter().any(|d| d.params.dtype != site.out.dtype) {
        return Ok(None);
    }
    let mut inputs = Vec::with_capacity(sources.len());
    for (i, d) in sources.iter().enumerate() {
        let name = format!("{}/{i}", site.name);
        inputs.push(rescaled(g, &name, d.source, &d.params, &site.out)?);
    }
    let id = g.add_node(site.name.clone(), Op::Concat { axis }, inputs, vec![])?;
    Ok(Some((g.node(id).outputs[0], vec![])))
}

/// Ops that only move (or select among) their first input's elements, so they commute with
/// a per-tensor quantization.
fn is_copy(op: &Op) -> bool {
    match op {
        Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Slice { .. }
        | Op::DepthToSpace { .. }
        | Op::SpaceToDepth { .. }
        | Op::Expand { .. }
        | Op::Tile { .. }
        | Op::Gather { .. }
        | Op::Identity => true,
        Op::MaxPool { indices, .. } => !indices,
        Op::Pad { mode, .. } => *mode == PadMode::Constant || *mode == PadMode::Edge,
        Op::Resize { mode, .. } => *mode == ResizeMode::Nearest,
        _ => false,
    }
}

/// A data-movement op on the dequantized input -> the same op on the integer input.
fn lower_copy(g: &mut Graph, site: &Site) -> Result<Lowered, IrError> {
    let node = g.node(site.anchor).clone();
    let Some(x) = activation_input(g, node.inputs[0]) else {
        return Ok(None);
    };
    let mut op = node.op.clone();
    if let Op::Pad { value, .. } = &mut op {
        // The pad value must be exactly representable in the input's quantization.
        let (s_x, z_x) = x.params.per_tensor().unwrap_or((1.0, 0));
        let q = *value / f64::from(s_x);
        if q.fract() != 0.0 {
            return Ok(None);
        }
        let (lo, hi) = kiln_ir::fixed_point::qrange(x.params.dtype).unwrap_or((0, 0));
        let v = q + f64::from(z_x);
        if v < f64::from(lo) || v > f64::from(hi) {
            return Ok(None);
        }
        *value = v;
    }
    let mut inputs = node.inputs.clone();
    inputs[0] = x.source;
    let id = match g.add_node(site.name.clone(), op, inputs, vec![]) {
        Ok(id) => id,
        // The op does not take this integer type: leave the float pattern.
        Err(_) => return Ok(None),
    };
    let y = g.node(id).outputs[0];
    g.value_mut(y).quant = Some(x.params.to_value_quant());
    let y = rescaled(g, &site.name, y, &x.params, &site.out)?;
    Ok(Some((y, vec![])))
}

/// Element-wise functions of one operand that a table can hold.
fn is_table_function(op: &Op) -> bool {
    op.family() == OpFamily::Unary
        && !matches!(
            op,
            Op::Cast { .. } | Op::Identity | Op::Dropout { .. } | Op::Not
        )
        && op.activation() == Activation::None
}

/// A function of one dequantized operand -> QTable.
fn lower_table(g: &mut Graph, site: &Site) -> Result<Lowered, IrError> {
    let node = g.node(site.anchor).clone();
    let Some(x) = activation_input(g, node.inputs[0]) else {
        return Ok(None);
    };
    if g.value(node.inputs[0]).ty.dtype != DType::F32 {
        return Ok(None);
    }
    let table = unary_table(&node.op, &x.params, &site.out)
        .map_err(|e| node_err(site, node.op.name(), e))?;
    let tv = g.add_const(format!("{}/table", site.name), Arc::new(table));
    let id = g.add_node(site.name.clone(), Op::QTable, vec![x.source, tv], vec![])?;
    Ok(Some((g.node(id).outputs[0], vec![])))
}
