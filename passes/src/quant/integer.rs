//! The compile-time arithmetic of integer ops: fixed-point multipliers, weights with their zero
//! point subtracted, biases with the weight-only zero-point terms folded in, the proof that an
//! accumulator cannot overflow, output ranges with an absorbed activation, and lookup tables.

use std::sync::Arc;

use kiln_ir::fixed_point::FixedPoint;
use kiln_ir::op::QOut;
use kiln_ir::{DType, Graph, IrError, Op, OpError, Tensor, TensorData, ValueId};

use super::params::QParams;

/// Multiplier and shift constants for the real multipliers `reals` (one per channel, or one).
pub fn multiplier_consts(
    g: &mut Graph,
    name: &str,
    reals: &[f64],
) -> Result<(ValueId, ValueId, Vec<FixedPoint>), IrError> {
    let fps = shared_shift(reals.iter().map(|&r| FixedPoint::from_real(r)).collect());
    let n = fps.len();
    let m = i32_const(
        g,
        format!("{name}/multiplier"),
        vec![n],
        fps.iter().map(|f| f.multiplier).collect(),
    )?;
    let shifts: Vec<i32> = fps.iter().map(|f| f.shift).collect();
    let shared = shifts.windows(2).all(|w| w[0] == w[1]);
    let s = if shared {
        i32_const(g, format!("{name}/shift"), vec![1], shifts[..1].to_vec())?
    } else {
        i32_const(g, format!("{name}/shift"), vec![n], shifts)?
    };
    Ok((m, s, fps))
}

/// The largest spread of shifts a layer's channels share one shift over: their multipliers
/// keep at least 27 significant bits, more than the 24 of the f32 scales they come from.
const MAX_SHARED_SHIFT_SPREAD: i32 = 4;

/// Per-channel multipliers moved to the largest shift of the layer when the shifts differ by
/// at most [`MAX_SHARED_SHIFT_SPREAD`], so one shift serves every channel (4 bytes of flash
/// per channel instead of 8).
fn shared_shift(fps: Vec<FixedPoint>) -> Vec<FixedPoint> {
    let live = || fps.iter().filter(|f| f.multiplier != 0);
    let (Some(lo), Some(hi)) = (live().map(|f| f.shift).min(), live().map(|f| f.shift).max())
    else {
        return fps;
    };
    if lo == hi || hi - lo > MAX_SHARED_SHIFT_SPREAD {
        return fps;
    }
    fps.iter()
        .map(|f| FixedPoint {
            multiplier: ((i64::from(f.multiplier) + ((1i64 << (hi - f.shift)) >> 1))
                >> (hi - f.shift)) as i32,
            shift: hi,
        })
        .collect()
}

/// Integer weights with their zero point subtracted, channel by channel along `axis`: i8 when
/// every value fits, else i16. Returns the tensor and its values.
pub fn centered_weights(
    q: &Tensor,
    params: &QParams,
    axis: usize,
) -> Result<(Tensor, Vec<i32>), OpError> {
    let raw = q
        .to_i64_vec()
        .ok_or_else(|| OpError::Unsupported(format!("{} weights", q.dtype())))?;
    let shape = q.shape().to_vec();
    let inner: usize = shape.iter().skip(axis + 1).product();
    let channels = shape.get(axis).copied().unwrap_or(1);
    let values: Vec<i32> = raw
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = (i / inner.max(1)) % channels.max(1);
            v as i32 - params.zero_point_at(if params.axis.is_some() { c } else { 0 })
        })
        .collect();
    let fits_i8 = values.iter().all(|&v| (-128..=127).contains(&v));
    let data = if fits_i8 {
        TensorData::I8(values.iter().map(|&v| v as i8).collect())
    } else {
        TensorData::I16(values.iter().map(|&v| v as i16).collect())
    };
    let t = Tensor::new(shape, data).map_err(|e| OpError::Invalid(e.to_string()))?;
    Ok((t, values))
}

/// The largest magnitude an 8-bit input value can have.
pub fn max_abs_input(dtype: DType) -> i64 {
    match dtype {
        DType::U8 => 255,
        _ => 128,
    }
}

/// Proves that no accumulator of channel `c` can overflow i32, in any summation order: the
/// bias plus the sum of |w| times the largest input magnitude, scaled by a positive shift, must
/// stay below 2^31. The error names the layer and the worst channel.
pub fn check_accumulator(
    node: &str,
    op: &str,
    bias: &[i64],
    abs_weight_sums: &[i64],
    x_max_abs: i64,
    fps: &[FixedPoint],
) -> Result<(), IrError> {
    for (c, (&b, &w)) in bias.iter().zip(abs_weight_sums).enumerate() {
        let fp = fps.get(c).or(fps.first());
        let left = fp.map_or(0, |f| f.shift.max(0));
        let bound = (b.unsigned_abs() as u128 + w as u128 * x_max_abs as u128) << left;
        if bound > i32::MAX as u128 {
            return Err(IrError::Node {
                node: node.to_string(),
                op: op.to_string(),
                source: OpError::Unsupported(format!(
                    "the int32 accumulator of output channel {c} could overflow: |bias| {} + sum|w| {w} x {x_max_abs}{} = {bound} > 2^31 - 1, so kiln cannot prove that this layer's int32 arithmetic is exact",
                    b.unsigned_abs(),
                    if left > 0 { format!(" (x 2^{left} for the multiplier)") } else { String::new() }
                )),
            });
        }
    }
    Ok(())
}

/// The stored range of an output quantized with `out`, narrowed by an absorbed Relu or Clip.
pub fn output_range(out: &QParams, act: Option<&Op>) -> QOut {
    let (_, zp) = out.per_tensor().unwrap_or((1.0, 0));
    let mut range = QOut::full(out.dtype, zp);
    match act {
        Some(Op::Relu) => range.min = range.min.max(out.quantize(0.0)),
        Some(Op::Clip { min, max }) => {
            let (lo, hi) = kiln_ir::ops::unary::clip_bounds(*min, *max);
            range.min = range.min.max(out.quantize(lo as f32));
            range.max = range.max.min(out.quantize(hi as f32));
        }
        _ => {}
    }
    range
}

/// Whether `op` is an activation a quantized op absorbs into its output range.
pub fn is_absorbable_activation(op: &Op) -> bool {
    matches!(op, Op::Relu | Op::Clip { .. })
}

/// The 256-entry table of `f` from `input` to `output` quantization, computed exactly as the
/// float graph `QuantizeLinear(f(DequantizeLinear(x)))` computes it, so the lookup is the
/// fake-quantized reference bit for bit.
pub fn unary_table(f: &Op, input: &QParams, output: &QParams) -> Result<Tensor, OpError> {
    let (lo, _) = kiln_ir::fixed_point::qrange(input.dtype)
        .ok_or_else(|| OpError::Unsupported(format!("a table over {}", input.dtype)))?;
    let xs: Vec<i32> = (0..256).map(|i| lo + i).collect();
    let x = kiln_ir::ops::util::int_tensor(input.dtype, vec![256], xs)?;
    let (s_in, z_in) = input.per_tensor().unwrap_or((1.0, 0));
    let (s_out, z_out) = output.per_tensor().unwrap_or((1.0, 0));
    let scalar = |v: f32| Tensor::scalar_f32(v);
    let zp = |dtype: DType, z: i32| kiln_ir::ops::util::int_tensor(dtype, vec![], vec![z]);
    let dq = Op::DequantizeLinear {
        axis: None,
        block_size: 0,
    };
    let real = first(kiln_ir::ops::eval(
        &dq,
        &[&x, &scalar(s_in), &zp(input.dtype, z_in)?],
    )?)?;
    let y = first(kiln_ir::ops::eval(f, &[&real])?)?;
    let q = Op::QuantizeLinear {
        axis: None,
        dtype: output.dtype,
        block_size: 0,
    };
    first(kiln_ir::ops::eval(
        &q,
        &[&y, &scalar(s_out), &zp(output.dtype, z_out)?],
    )?)
}

fn first(v: Vec<Tensor>) -> Result<Tensor, OpError> {
    v.into_iter()
        .next()
        .ok_or_else(|| OpError::Invalid("an op gave no result".into()))
}

/// QSoftmax's exponential table for an input of scale `scale`: `round(2^30 * exp(-d * scale))`.
pub fn softmax_table(scale: f32) -> Result<Tensor, OpError> {
    let v: Vec<i32> = (0..256)
        .map(|d| ((1u64 << 30) as f64 * (-(d as f64) * f64::from(scale)).exp()).round() as i32)
        .collect();
    Tensor::new(vec![256], TensorData::I32(v)).map_err(|e| OpError::Invalid(e.to_string()))
}

/// An i32 constant of shape `shape`.
pub fn i32_const(
    g: &mut Graph,
    name: String,
    shape: Vec<usize>,
    v: Vec<i32>,
) -> Result<ValueId, IrError> {
    let t = Tensor::new(shape, TensorData::I32(v))?;
    Ok(g.add_const(name, Arc::new(t)))
}

/// `round(x)` saturated to i32 (biases scaled to the accumulator's scale).
pub fn round_i64(x: f64) -> i64 {
    x.round().clamp(-(2f64.powi(62)), 2f64.powi(62)) as i64
}
