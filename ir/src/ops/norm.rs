//! Normalizations and softmax (BatchNormalization, InstanceNormalization, LayerNormalization,
//! Softmax, LogSoftmax): shape inference and reference evaluation.
//!
//! Statistics (means, variances, softmax sums) are accumulated in f64 so the reference is at
//! least as accurate as any backend it judges.

use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::op::Op;
use crate::ops::util::{
    broadcast_index_map, broadcast_shapes, check_arity, expect_dtype, f32_input, int_input,
    int_tensor, make, out_type, require_f32, wrong_family,
};
use crate::tensor::{Tensor, TensorType};

pub fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, OpError> {
    if let Op::QSoftmax { .. } = op {
        return infer_qsoftmax(op, inputs).map(|t| vec![t]);
    }
    require_f32(op, inputs)?;
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape.as_slice()).collect();
    check_shapes(op, &shapes)?;
    let x = shapes[0].to_vec();
    match op {
        Op::LayerNormalization { axis, outputs, .. } => {
            let mut types = vec![out_type(DType::F32, x.clone())?];
            for _ in 1..*outputs {
                types.push(out_type(DType::F32, stats_shape(&x, *axis))?);
            }
            Ok(types)
        }
        _ => Ok(vec![out_type(DType::F32, x)?]),
    }
}

pub fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
    if let Op::QSoftmax { .. } = op {
        return eval_qsoftmax(op, inputs).map(|t| vec![t]);
    }
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
    check_shapes(op, &shapes)?;
    let x_shape = shapes[0];
    let x = f32_input(op.name(), inputs, 0)?;
    let y = |v: Vec<f32>| make(Tensor::from_f32(x_shape.to_vec(), v));
    match op {
        Op::BatchNormalization { epsilon } => {
            let p = BatchNormParams {
                scale: f32_input(op.name(), inputs, 1)?,
                bias: f32_input(op.name(), inputs, 2)?,
                mean: f32_input(op.name(), inputs, 3)?,
                var: f32_input(op.name(), inputs, 4)?,
                epsilon: *epsilon,
            };
            Ok(vec![y(batch_norm(x_shape, x, &p))?])
        }
        Op::InstanceNormalization { epsilon } => {
            let scale = f32_input(op.name(), inputs, 1)?;
            let bias = f32_input(op.name(), inputs, 2)?;
            Ok(vec![y(instance_norm(x_shape, x, scale, bias, *epsilon))?])
        }
        Op::LayerNormalization {
            axis,
            epsilon,
            outputs,
        } => {
            let scale = (f32_input(op.name(), inputs, 1)?, shapes[1]);
            let bias = match inputs.get(2) {
                Some(_) => Some((f32_input(op.name(), inputs, 2)?, shapes[2])),
                None => None,
            };
            let r = layer_norm(x_shape, x, *axis, scale, bias, *epsilon);
            let stats = stats_shape(x_shape, *axis);
            let mut out = vec![y(r.y)?];
            if *outputs > 1 {
                out.push(make(Tensor::from_f32(stats.clone(), r.mean))?);
            }
            if *outputs > 2 {
                out.push(make(Tensor::from_f32(stats, r.inv_std_dev))?);
            }
            Ok(out)
        }
        Op::Softmax { axis, coerce_2d } => {
            Ok(vec![y(softmax(x_shape, x, *axis, *coerce_2d, false))?])
        }
        Op::LogSoftmax { axis, coerce_2d } => {
            Ok(vec![y(softmax(x_shape, x, *axis, *coerce_2d, true))?])
        }
        _ => Err(wrong_family(op)),
    }
}

/// Validates arity, ranks and parameter shapes against X (`shapes[0]`).
fn check_shapes(op: &Op, shapes: &[&[usize]]) -> Result<(), OpError> {
    let name = op.name();
    match op {
        Op::BatchNormalization { .. } => check_arity(name, shapes.len(), 5, 5)?,
        Op::InstanceNormalization { .. } => check_arity(name, shapes.len(), 3, 3)?,
        Op::LayerNormalization { .. } => check_arity(name, shapes.len(), 2, 3)?,
        Op::Softmax { .. } | Op::LogSoftmax { .. } => check_arity(name, shapes.len(), 1, 1)?,
        _ => return Err(wrong_family(op)),
    }
    let x = shapes[0];
    match op {
        Op::BatchNormalization { .. } | Op::InstanceNormalization { .. } => {
            let Some(&c) = x.get(1) else {
                return invalid!("input must have rank 2 or more (N, C, ..), got shape {x:?}");
            };
            for (i, s) in shapes.iter().enumerate().skip(1) {
                if *s != [c] {
                    return invalid!(
                        "input {i} has shape {s:?}, expected [{c}] (one value per channel)"
                    );
                }
            }
        }
        Op::LayerNormalization { axis, outputs, .. } => {
            if *axis >= x.len() {
                return invalid!("axis {axis} is out of range for input {x:?}");
            }
            if !(1..=3).contains(outputs) {
                return invalid!("LayerNormalization has 1 to 3 outputs, not {outputs}");
            }
            let normalized = &x[*axis..];
            for (i, s) in shapes.iter().enumerate().skip(1) {
                match broadcast_shapes(s, normalized) {
                    Ok(b) if b == normalized => {}
                    _ => {
                        return invalid!(
                            "input {i} of shape {s:?} does not broadcast to {normalized:?}"
                        )
                    }
                }
            }
        }
        Op::Softmax { axis, .. } | Op::LogSoftmax { axis, .. } => {
            if *axis >= x.len() {
                return invalid!("axis {axis} is out of range for input {x:?}");
            }
        }
        _ => return Err(wrong_family(op)),
    }
    Ok(())
}

/// Shape of LayerNormalization's Mean and InvStdDev: X with the normalized dimensions set to 1.
fn stats_shape(x: &[usize], axis: usize) -> Vec<usize> {
    x.iter()
        .enumerate()
        .map(|(d, &n)| if d < axis { n } else { 1 })
        .collect()
}

/// Splits `x` into (channels, planes of one channel): element `i` belongs to channel
/// `(i / plane) % channels`.
fn channel_plane(x: &[usize]) -> (usize, usize) {
    (x.get(1).copied().unwrap_or(1), x.iter().skip(2).product())
}

#[derive(Debug)]
struct BatchNormParams<'a> {
    scale: &'a [f32],
    bias: &'a [f32],
    mean: &'a [f32],
    var: &'a [f32],
    epsilon: f32,
}

/// BatchNormalization (inference): `(x - mean) / sqrt(var + epsilon) * scale + bias` per channel.
fn batch_norm(shape: &[usize], x: &[f32], p: &BatchNormParams) -> Vec<f32> {
    let (channels, plane) = channel_plane(shape);
    let mut out = x.to_vec();
    if plane == 0 {
        return out;
    }
    for (i, chunk) in out.chunks_exact_mut(plane).enumerate() {
        let c = i % channels;
        let (Some(&s), Some(&b), Some(&m), Some(&v)) =
            (p.scale.get(c), p.bias.get(c), p.mean.get(c), p.var.get(c))
        else {
            continue;
        };
        let k = s / (v + p.epsilon).sqrt();
        for e in chunk {
            *e = (*e - m) * k + b;
        }
    }
    out
}

/// Mean and biased variance.
fn moments(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&e| f64::from(e)).sum::<f64>() / n;
    let var = v
        .iter()
        .map(|&e| (f64::from(e) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var)
}

/// InstanceNormalization: normalizes every (N, C) plane by its own mean and variance.
fn instance_norm(
    shape: &[usize],
    x: &[f32],
    scale: &[f32],
    bias: &[f32],
    epsilon: f32,
) -> Vec<f32> {
    let (channels, plane) = channel_plane(shape);
    let mut out = x.to_vec();
    if plane == 0 {
        return out;
    }
    for (i, chunk) in out.chunks_exact_mut(plane).enumerate() {
        let c = i % channels;
        let (Some(&s), Some(&b)) = (scale.get(c), bias.get(c)) else {
            continue;
        };
        let (mean, var) = moments(chunk);
        let inv_std = 1.0 / (var + f64::from(epsilon)).sqrt();
        for e in chunk {
            *e = ((f64::from(*e) - mean) * inv_std * f64::from(s) + f64::from(b)) as f32;
        }
    }
    out
}

#[derive(Debug)]
struct LayerNormResult {
    y: Vec<f32>,
    mean: Vec<f32>,
    inv_std_dev: Vec<f32>,
}

/// LayerNormalization: normalizes over dimensions `axis..`, then applies Scale and B
/// (broadcast to those dimensions).
fn layer_norm(
    shape: &[usize],
    x: &[f32],
    axis: usize,
    (scale, scale_shape): (&[f32], &[usize]),
    bias: Option<(&[f32], &[usize])>,
    epsilon: f32,
) -> LayerNormResult {
    let normalized = &shape[axis.min(shape.len())..];
    let inner: usize = normalized.iter().product();
    let outer: usize = shape[..axis.min(shape.len())].iter().product();
    let scale_map = broadcast_index_map(scale_shape, normalized);
    let bias_map = bias.map(|(_, s)| broadcast_index_map(s, normalized));
    let mut r = LayerNormResult {
        y: x.to_vec(),
        mean: Vec::with_capacity(outer),
        inv_std_dev: Vec::with_capacity(outer),
    };
    if inner == 0 {
        r.mean.resize(outer, f32::NAN);
        r.inv_std_dev.resize(outer, f32::NAN);
        return r;
    }
    for row in r.y.chunks_exact_mut(inner) {
        let (mean, var) = moments(row);
        let inv_std = 1.0 / (var + f64::from(epsilon)).sqrt();
        for (j, e) in row.iter_mut().enumerate() {
            let s = scale_map
                .get(j)
                .and_then(|&i| scale.get(i))
                .copied()
                .unwrap_or(1.0);
            let b = match (&bias, &bias_map) {
                (Some((bv, _)), Some(map)) => {
                    map.get(j).and_then(|&i| bv.get(i)).copied().unwrap_or(0.0)
                }
                _ => 0.0,
            };
            *e = ((f64::from(*e) - mean) * inv_std) as f32 * s + b;
        }
        r.mean.push(mean as f32);
        r.inv_std_dev.push(inv_std as f32);
    }
    r
}

/// Softmax or LogSoftmax along `axis`, or over the whole block of dimensions `axis..` when
/// `coerce_2d` (opset < 13). The max is subtracted first so large inputs do not overflow.
/// The largest Q16 inverse output scale QSoftmax takes: `e * inv_scale` must stay far from
/// i64's range (`e` < 2^31).
pub const QSOFTMAX_MAX_INV_SCALE: i64 = 1 << 30;

/// QSoftmax: X i8/u8, the i32 exponential table of 256 entries; rows of at most 2^16.
fn infer_qsoftmax(op: &Op, inputs: &[&TensorType]) -> Result<TensorType, OpError> {
    let Op::QSoftmax {
        axis,
        inv_scale,
        output,
    } = op
    else {
        return Err(wrong_family(op));
    };
    let name = op.name();
    check_arity(name, inputs.len(), 2, 2)?;
    expect_dtype(name, inputs, 0, "X", &[DType::I8, DType::U8])?;
    expect_dtype(name, inputs, 1, "exponential table", &[DType::I32])?;
    if inputs[1].shape != [256] {
        return invalid!(
            "{name}: the exponential table has shape {:?}, expected [256]",
            inputs[1].shape
        );
    }
    let x = &inputs[0].shape;
    let Some(&len) = x.get(*axis) else {
        return invalid!("{name}: axis {axis} is out of range for shape {x:?}");
    };
    if len > 1 << 16 {
        return invalid!("{name}: rows of {len} elements are longer than 65536");
    }
    if !(1..=QSOFTMAX_MAX_INV_SCALE).contains(inv_scale) {
        return invalid!("{name}: inverse output scale {inv_scale} (Q16) is out of range");
    }
    output.check()?;
    out_type(output.dtype, x.clone())
}

/// QSoftmax: per row, `e = table[max - x]`, `S = sum(e)`, and
/// `floor((e * inv_scale + S * 2^15) / (S * 2^16))` stored with the output's zero point.
fn eval_qsoftmax(op: &Op, inputs: &[&Tensor]) -> Result<Tensor, OpError> {
    let Op::QSoftmax {
        axis,
        inv_scale,
        output,
    } = op
    else {
        return Err(wrong_family(op));
    };
    let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    let out_ty = infer_qsoftmax(op, &refs)?;
    let x = int_input(op.name(), inputs, 0)?;
    let table = int_input(op.name(), inputs, 1)?;
    let shape = &out_ty.shape;
    let outer: usize = shape[..*axis].iter().product();
    let len = shape[*axis];
    let stride: usize = shape[axis + 1..].iter().product();
    let mut out = vec![0i32; x.len()];
    for o in 0..outer {
        for i in 0..stride {
            let at = |j: usize| (o * len + j) * stride + i;
            let max = (0..len).map(|j| x[at(j)]).max().unwrap_or(0);
            let e = |j: usize| {
                let d = (max - x[at(j)]).clamp(0, 255) as usize;
                i64::from(table[d])
            };
            let sum: i64 = (0..len).map(e).sum::<i64>().max(1);
            for j in 0..len {
                let q = (e(j) * inv_scale + (sum << 15)) / (sum << 16);
                out[at(j)] = output.store(q as i32);
            }
        }
    }
    int_tensor(out_ty.dtype, out_ty.shape, out)
}

fn softmax(shape: &[usize], x: &[f32], axis: usize, coerce_2d: bool, log: bool) -> Vec<f32> {
    let axis = axis.min(shape.len());
    let outer: usize = shape[..axis].iter().product();
    // Elements of one softmax are `len` apart by `stride`.
    let (len, stride) = if coerce_2d {
        (shape[axis..].iter().product(), 1)
    } else {
        (
            shape.get(axis).copied().unwrap_or(1),
            shape.get(axis + 1..).unwrap_or(&[]).iter().product(),
        )
    };
    let mut out = x.to_vec();
    let mut idx = Vec::with_capacity(len);
    for o in 0..outer {
        for i in 0..stride {
            idx.clear();
            idx.extend((0..len).map(|j| (o * len + j) * stride + i));
            let vals = idx.iter().filter_map(|&k| x.get(k).copied());
            let max = vals.clone().fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = vals.map(|v| f64::from(v - max).exp()).sum();
            for &k in &idx {
                if let Some(e) = out.get_mut(k) {
                    let shifted = f64::from(*e - max);
                    *e = if log {
                        (shifted - sum.ln()) as f32
                    } else {
                        (shifted.exp() / sum) as f32
                    };
                }
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn f(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v).unwrap()
    }

    fn run(op: &Op, inputs: &[&Tensor]) -> Vec<Tensor> {
        let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
        let refs: Vec<&TensorType> = types.iter().collect();
        let tys = infer(op, &refs).unwrap();
        let out = eval(op, inputs).unwrap();
        assert_eq!(out.iter().map(Tensor::ty).collect::<Vec<_>>(), tys);
        out
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn batch_norm_per_channel() {
        let x = f(&[1, 2, 2], vec![1.0, 3.0, 10.0, 20.0]);
        let scale = f(&[2], vec![2.0, 1.0]);
        let bias = f(&[2], vec![0.0, 1.0]);
        let mean = f(&[2], vec![2.0, 10.0]);
        let var = f(&[2], vec![4.0, 100.0]);
        let y = run(
            &Op::BatchNormalization { epsilon: 0.0 },
            &[&x, &scale, &bias, &mean, &var],
        );
        close(y[0].as_f32().unwrap(), &[-1.0, 1.0, 1.0, 2.0]);
    }

    #[test]
    fn instance_norm_per_plane() {
        let x = f(&[1, 1, 4], vec![1.0, 2.0, 3.0, 4.0]);
        let y = run(
            &Op::InstanceNormalization { epsilon: 0.0 },
            &[&x, &f(&[1], vec![1.0]), &f(&[1], vec![0.0])],
        );
        let s = 1.0 / 1.25f32.sqrt();
        close(
            y[0].as_f32().unwrap(),
            &[-1.5 * s, -0.5 * s, 0.5 * s, 1.5 * s],
        );
    }

    #[test]
    fn layer_norm_with_stats() {
        let op = Op::LayerNormalization {
            axis: 1,
            epsilon: 0.0,
            outputs: 3,
        };
        let x = f(&[2, 2], vec![1.0, 3.0, 4.0, 6.0]);
        let y = run(&op, &[&x, &f(&[2], vec![1.0, 2.0]), &f(&[], vec![0.5])]);
        assert_eq!(y[1].shape(), &[2, 1]);
        close(y[0].as_f32().unwrap(), &[-0.5, 2.5, -0.5, 2.5]);
        close(y[1].as_f32().unwrap(), &[2.0, 5.0]);
        close(y[2].as_f32().unwrap(), &[1.0, 1.0]);
    }

    #[test]
    fn softmax_axis_and_coerced() {
        let x = f(&[2, 2], vec![0.0, 0.0, 1000.0, 1000.0]);
        let y = run(
            &Op::Softmax {
                axis: 0,
                coerce_2d: false,
            },
            &[&x],
        );
        close(y[0].as_f32().unwrap(), &[0.0, 0.0, 1.0, 1.0]);
        // Coerced at axis 0: one softmax over all four elements.
        let y = run(
            &Op::Softmax {
                axis: 0,
                coerce_2d: true,
            },
            &[&x],
        );
        close(y[0].as_f32().unwrap(), &[0.0, 0.0, 0.5, 0.5]);
        let y = run(
            &Op::LogSoftmax {
                axis: 1,
                coerce_2d: false,
            },
            &[&f(&[1, 2], vec![1.0, 1.0])],
        );
        close(y[0].as_f32().unwrap(), &[-std::f32::consts::LN_2; 2]);
    }

    #[test]
    fn bad_parameter_shapes_are_invalid() {
        let x = TensorType::new(DType::F32, vec![1, 3, 2]);
        let p = TensorType::new(DType::F32, vec![2]);
        assert!(matches!(
            infer(&Op::InstanceNormalization { epsilon: 0.0 }, &[&x, &p, &p]),
            Err(OpError::Invalid(_))
        ));
        assert!(infer(
            &Op::Softmax {
                axis: 3,
                coerce_2d: false
            },
            &[&x]
        )
        .is_err());
    }
}
