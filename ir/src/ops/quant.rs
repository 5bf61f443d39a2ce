//! Linear quantization (QuantizeLinear, DequantizeLinear), per tensor, per axis or blocked:
//! shape inference and reference evaluation.

use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::op::Op;
use crate::ops::util::{
    broadcast_index_map, broadcast_shapes, check_arity, expect_dtype, f32_input, int_input,
    int_tensor, make, out_type, wrong_family,
};
use crate::tensor::{Tensor, TensorData, TensorType};

pub fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, OpError> {
    if is_integer_op(op) {
        return infer_integer(op, inputs).map(|t| vec![t]);
    }
    check_arity(op.name(), inputs.len(), 2, 3)?;
    let x = inputs[0];
    let (axis, dtype, block_size) = match op {
        Op::QuantizeLinear {
            axis,
            dtype,
            block_size,
        } => {
            if x.dtype != DType::F32 {
                return Err(OpError::Unsupported(format!(
                    "QuantizeLinear of {} input",
                    x.dtype
                )));
            }
            if !matches!(dtype, DType::U8 | DType::I8 | DType::I16) {
                return Err(OpError::Unsupported(format!("QuantizeLinear to {dtype}")));
            }
            (*axis, *dtype, *block_size)
        }
        Op::DequantizeLinear { axis, block_size } => {
            if !matches!(x.dtype, DType::U8 | DType::I8 | DType::I16 | DType::I32) {
                return Err(OpError::Unsupported(format!(
                    "DequantizeLinear of {} input",
                    x.dtype
                )));
            }
            (*axis, DType::F32, *block_size)
        }
        _ => return Err(wrong_family(op)),
    };
    let quantized = if dtype == DType::F32 { x.dtype } else { dtype };
    if inputs[1].dtype != DType::F32 {
        return Err(OpError::Unsupported(format!(
            "{} with {} scale",
            op.name(),
            inputs[1].dtype
        )));
    }
    if let Some(zp) = inputs.get(2) {
        if zp.dtype != quantized {
            return invalid!(
                "zero point is {} but the quantized type is {quantized}",
                zp.dtype
            );
        }
    }
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape.as_slice()).collect();
    Granularity::new(&shapes, axis, block_size)?;
    Ok(vec![out_type(dtype, x.shape.clone())?])
}

pub fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
    if is_integer_op(op) {
        return eval_integer(op, inputs).map(|t| vec![t]);
    }
    let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    infer(op, &refs)?;
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
    let (axis, block_size, x) = match op {
        Op::QuantizeLinear {
            axis, block_size, ..
        }
        | Op::DequantizeLinear { axis, block_size } => (*axis, *block_size, inputs[0]),
        _ => return Err(wrong_family(op)),
    };
    let g = Granularity::new(&shapes, axis, block_size)?;
    let scale = f32_input(op.name(), inputs, 1)?;
    let zero_point = match inputs.get(2) {
        Some(t) => t.to_i64_vec().unwrap_or_default(),
        None => vec![0],
    };
    let params = QuantParams {
        g,
        scale,
        zero_point,
    };
    let data = match op {
        Op::QuantizeLinear { dtype, .. } => {
            quantize(f32_input(op.name(), inputs, 0)?, &params, *dtype)?
        }
        _ => TensorData::F32(dequantize(&x.to_i64_vec().unwrap_or_default(), &params)),
    };
    Ok(vec![make(Tensor::new(x.shape().to_vec(), data))?])
}

/// Which scale and zero point each element uses.
#[derive(Debug, Clone, Copy)]
enum Granularity {
    PerTensor,
    /// One parameter per index along the axis of length `len`, whose steps are `inner`
    /// elements apart.
    PerAxis {
        inner: usize,
        len: usize,
    },
    /// The parameters have x's shape except along the axis, where each covers `block`
    /// consecutive indices (the last block may be shorter).
    Blocked {
        inner: usize,
        len: usize,
        block: usize,
    },
}

impl Granularity {
    /// Checks the scale (`shapes[1]`) and zero point (`shapes[2]`) against x (`shapes[0]`).
    fn new(shapes: &[&[usize]], axis: Option<usize>, block: usize) -> Result<Self, OpError> {
        let (x, scale) = (shapes[0], shapes[1]);
        let g = match (axis, block) {
            (None, 0) => {
                if scale.len() > 1 || scale.iter().product::<usize>() != 1 {
                    return invalid!("per-tensor scale must have one element, got shape {scale:?}");
                }
                Granularity::PerTensor
            }
            (None, _) => return invalid!("blocked quantization needs an axis"),
            (Some(a), block) => {
                let Some(&len) = x.get(a) else {
                    return invalid!("axis {a} is out of range for input {x:?}");
                };
                let inner = x[a + 1..].iter().product();
                if block == 0 {
                    if scale != [len] {
                        return invalid!("per-axis scale must have shape [{len}], got {scale:?}");
                    }
                    Granularity::PerAxis { inner, len }
                } else {
                    let mut expected = x.to_vec();
                    expected[a] = len.div_ceil(block);
                    if scale != expected {
                        return invalid!(
                            "blocked scale must have shape {expected:?} (block size {block} along axis {a}), got {scale:?}"
                        );
                    }
                    Granularity::Blocked { inner, len, block }
                }
            }
        };
        if let Some(zp) = shapes.get(2) {
            let matches = match g {
                Granularity::PerTensor | Granularity::PerAxis { .. } => {
                    zp.len() <= 1 && zp.iter().product::<usize>() == scale.iter().product()
                }
                Granularity::Blocked { .. } => zp == &scale,
            };
            if !matches {
                return invalid!("zero point shape {zp:?} does not match scale shape {scale:?}");
            }
        }
        Ok(g)
    }

    /// The parameter index of element `i` (of x, in row-major order).
    fn param(&self, i: usize) -> usize {
        match *self {
            Granularity::PerTensor => 0,
            Granularity::PerAxis { inner, len } => i
                .checked_div(inner)
                .unwrap_or(0)
                .checked_rem(len)
                .unwrap_or(0),
            Granularity::Blocked { inner, len, block } => {
                let step = i.checked_div(inner).unwrap_or(0);
                let (outer, along) = (
                    step.checked_div(len).unwrap_or(0),
                    step.checked_rem(len).unwrap_or(0),
                );
                let blocks = len.div_ceil(block);
                let within = i.checked_rem(inner).unwrap_or(0);
                (outer * blocks + along / block) * inner + within
            }
        }
    }
}

/// The integer-only element-wise ops of this family (Requantize, QTable, QAdd, QMul).
fn is_integer_op(op: &Op) -> bool {
    matches!(
        op,
        Op::Requantize { .. } | Op::QTable | Op::QAdd { .. } | Op::QMul { .. }
    )
}

const Q8: &[DType] = &[DType::I8, DType::U8];

fn infer_integer(op: &Op, inputs: &[&TensorType]) -> Result<TensorType, OpError> {
    let name = op.name();
    match op {
        Op::Requantize { output, .. } => {
            check_arity(name, inputs.len(), 1, 1)?;
            expect_dtype(name, inputs, 0, "X", Q8)?;
            output.check()?;
            out_type(output.dtype, inputs[0].shape.clone())
        }
        Op::QTable => {
            check_arity(name, inputs.len(), 2, 2)?;
            expect_dtype(name, inputs, 0, "X", Q8)?;
            expect_dtype(name, inputs, 1, "table", Q8)?;
            if inputs[1].shape != [256] {
                return invalid!(
                    "{name}: the table has shape {:?}, expected [256]",
                    inputs[1].shape
                );
            }
            out_type(inputs[1].dtype, inputs[0].shape.clone())
        }
        Op::QAdd { output, .. } | Op::QMul { output, .. } => {
            check_arity(name, inputs.len(), 2, 2)?;
            expect_dtype(name, inputs, 0, "A", Q8)?;
            expect_dtype(name, inputs, 1, "B", Q8)?;
            let shape = broadcast_shapes(&inputs[0].shape, &inputs[1].shape)?;
            output.check()?;
            out_type(output.dtype, shape)
        }
        _ => Err(wrong_family(op)),
    }
}

fn eval_integer(op: &Op, inputs: &[&Tensor]) -> Result<Tensor, OpError> {
    let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    let out_ty = infer_integer(op, &refs)?;
    let name = op.name();
    let x = int_input(name, inputs, 0)?;
    let values: Vec<i32> = match op {
        Op::Requantize {
            x_zero_point,
            scale,
            output,
            rounding,
        } => x
            .iter()
            .map(|&v| output.store(rounding.apply(v - x_zero_point, *scale)))
            .collect(),
        Op::QTable => {
            let table = int_input(name, inputs, 1)?;
            let base = if inputs[0].dtype() == DType::I8 {
                128
            } else {
                0
            };
            x.iter()
                .map(|&v| table[(v + base).clamp(0, 255) as usize])
                .collect()
        }
        Op::QAdd {
            a_zero_point,
            b_zero_point,
            left_shift,
            a_scale,
            b_scale,
            output_scale,
            output,
            rounding,
        } => {
            let b = int_input(name, inputs, 1)?;
            let shifted = |v: i32, zp: i32| (v - zp).wrapping_shl(*left_shift as u32);
            broadcast_pairs(&x, &b, inputs[0].shape(), inputs[1].shape(), &out_ty.shape)
                .map(|(a, b)| {
                    let sum = rounding
                        .apply(shifted(a, *a_zero_point), *a_scale)
                        .wrapping_add(rounding.apply(shifted(b, *b_zero_point), *b_scale));
                    output.store(rounding.apply(sum, *output_scale))
                })
                .collect()
        }
        Op::QMul {
            a_zero_point,
            b_zero_point,
            scale,
            output,
            rounding,
        } => {
            let b = int_input(name, inputs, 1)?;
            broadcast_pairs(&x, &b, inputs[0].shape(), inputs[1].shape(), &out_ty.shape)
                .map(|(a, b)| {
                    output.store(rounding.apply((a - a_zero_point) * (b - b_zero_point), *scale))
                })
                .collect()
        }
        _ => return Err(wrong_family(op)),
    };
    int_tensor(out_ty.dtype, out_ty.shape, values)
}

/// The operand pairs of a broadcasting binary op, in row-major output order.
fn broadcast_pairs<'a>(
    a: &'a [i32],
    b: &'a [i32],
    a_shape: &[usize],
    b_shape: &[usize],
    out_shape: &[usize],
) -> impl Iterator<Item = (i32, i32)> + 'a {
    let a_map = broadcast_index_map(a_shape, out_shape);
    let b_map = broadcast_index_map(b_shape, out_shape);
    a_map.into_iter().zip(b_map).map(move |(i, j)| {
        (
            a.get(i).copied().unwrap_or(0),
            b.get(j).copied().unwrap_or(0),
        )
    })
}

#[derive(Debug)]
struct QuantParams<'a> {
    g: Granularity,
    scale: &'a [f32],
    zero_point: Vec<i64>,
}

impl QuantParams<'_> {
    fn at(&self, i: usize) -> (f32, i64) {
        let p = self.g.param(i);
        (
            self.scale.get(p).copied().unwrap_or(1.0),
            self.zero_point.get(p).copied().unwrap_or(0),
        )
    }
}

/// QuantizeLinear: `saturate(round_half_even(x / scale) + zero_point)`, computed in f32 as
/// onnxruntime does.
fn quantize(x: &[f32], p: &QuantParams, dtype: DType) -> Result<TensorData, OpError> {
    let (lo, hi) = match dtype {
        DType::U8 => (0.0, 255.0),
        DType::I8 => (-128.0, 127.0),
        DType::I16 => (-32768.0, 32767.0),
        _ => return Err(OpError::Unsupported(format!("QuantizeLinear to {dtype}"))),
    };
    let q = x.iter().enumerate().map(|(i, &v)| {
        let (scale, zp) = p.at(i);
        // NaN saturates to 0 through the `as` casts below.
        ((v / scale).round_ties_even() + zp as f32).clamp(lo, hi)
    });
    Ok(match dtype {
        DType::U8 => TensorData::U8(q.map(|v| v as u8).collect()),
        DType::I8 => TensorData::I8(q.map(|v| v as i8).collect()),
        _ => TensorData::I16(q.map(|v| v as i16).collect()),
    })
}

/// DequantizeLinear: `(x - zero_point) * scale`.
fn dequantize(x: &[i64], p: &QuantParams) -> Vec<f32> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let (scale, zp) = p.at(i);
            v.wrapping_sub(zp) as f32 * scale
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn run(op: &Op, inputs: &[&Tensor]) -> Tensor {
        let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
        let refs: Vec<&TensorType> = types.iter().collect();
        let ty = infer(op, &refs).unwrap().remove(0);
        let y = eval(op, inputs).unwrap().remove(0);
        assert_eq!(y.ty(), ty);
        y
    }

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        let x = Tensor::from_f32(vec![6], vec![0.0, 2.0, 3.0, 1000.0, -254.0, -1000.0]).unwrap();
        let scale = Tensor::scalar_f32(2.0);
        let zp = Tensor::new(vec![], TensorData::U8(vec![128])).unwrap();
        let op = Op::QuantizeLinear {
            axis: None,
            dtype: DType::U8,
            block_size: 0,
        };
        let y = run(&op, &[&x, &scale, &zp]);
        // 1.0 -> 129; 1.5 -> 2 -> 130; -127 -> 1.
        assert_eq!(y.data(), &TensorData::U8(vec![128, 129, 130, 255, 1, 0]));
        let x = Tensor::from_f32(vec![2], vec![2.5, -2.5]).unwrap();
        let op = Op::QuantizeLinear {
            axis: None,
            dtype: DType::I8,
            block_size: 0,
        };
        let y = run(&op, &[&x, &Tensor::scalar_f32(1.0)]);
        assert_eq!(y.data(), &TensorData::I8(vec![2, -2]));
    }

    #[test]
    fn per_axis() {
        let x = Tensor::from_f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let scale = Tensor::from_f32(vec![2], vec![1.0, 0.5]).unwrap();
        let zp = Tensor::new(vec![2], TensorData::I8(vec![0, -1])).unwrap();
        let q = run(
            &Op::QuantizeLinear {
                axis: Some(0),
                dtype: DType::I8,
                block_size: 0,
            },
            &[&x, &scale, &zp],
        );
        assert_eq!(q.data(), &TensorData::I8(vec![1, 2, 5, 7]));
        let d = run(
            &Op::DequantizeLinear {
                axis: Some(0),
                block_size: 0,
            },
            &[&q, &scale, &zp],
        );
        assert_eq!(d.as_f32().unwrap(), &[1.0, 2.0, 3.0, 4.0]);
        let q = run(
            &Op::QuantizeLinear {
                axis: Some(1),
                dtype: DType::I8,
                block_size: 0,
            },
            &[&x, &scale, &zp],
        );
        assert_eq!(q.data(), &TensorData::I8(vec![1, 3, 3, 7]));
    }

    #[test]
    fn dequantize_int32_without_zero_point() {
        let x = Tensor::new(vec![2], TensorData::I32(vec![-3, 1 << 20])).unwrap();
        let d = run(
            &Op::DequantizeLinear {
                axis: None,
                block_size: 0,
            },
            &[&x, &Tensor::scalar_f32(0.5)],
        );
        assert_eq!(d.as_f32().unwrap(), &[-1.5, 524288.0]);
    }

    #[test]
    fn blocked_with_a_short_last_block() {
        // x is 2x3, blocks of 2 along axis 1: columns {0, 1} and {2} per row.
        let x = Tensor::from_f32(vec![2, 3], vec![2.0, 4.0, 6.0, 1.0, 2.0, 3.0]).unwrap();
        let scale = Tensor::from_f32(vec![2, 2], vec![2.0, 3.0, 0.5, 1.0]).unwrap();
        let zp = Tensor::new(vec![2, 2], TensorData::I8(vec![0, 1, -1, 2])).unwrap();
        let op = Op::QuantizeLinear {
            axis: Some(1),
            dtype: DType::I8,
            block_size: 2,
        };
        let q = run(&op, &[&x, &scale, &zp]);
        assert_eq!(q.data(), &TensorData::I8(vec![1, 2, 3, 1, 3, 5]));
        let op = Op::DequantizeLinear {
            axis: Some(1),
            block_size: 2,
        };
        let d = run(&op, &[&q, &scale, &zp]);
        assert_eq!(d.as_f32().unwrap(), &[2.0, 4.0, 6.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn blocked_along_an_outer_axis() {
        // x is 4x2, blocks of 2 along axis 0: rows {0, 1} and {2, 3}, per column.
        let x = Tensor::new(vec![4, 2], TensorData::U8(vec![1, 2, 3, 4, 5, 6, 7, 8])).unwrap();
        let scale = Tensor::from_f32(vec![2, 2], vec![1.0, 10.0, 100.0, 1000.0]).unwrap();
        let op = Op::DequantizeLinear {
            axis: Some(0),
            block_size: 2,
        };
        let d = run(&op, &[&x, &scale]);
        assert_eq!(
            d.as_f32().unwrap(),
            &[1.0, 20.0, 3.0, 40.0, 500.0, 6000.0, 700.0, 8000.0]
        );
        let bad = TensorType::new(DType::F32, vec![1, 2]);
        assert!(matches!(
            infer(&op, &[&x.ty(), &bad]),
            Err(OpError::Invalid(_))
        ));
    }

    #[test]
    fn mismatched_parameters_are_invalid() {
        let x = TensorType::new(DType::F32, vec![2, 3]);
        let scale = TensorType::new(DType::F32, vec![2]);
        let op = Op::QuantizeLinear {
            axis: Some(1),
            dtype: DType::U8,
            block_size: 0,
        };
        assert!(matches!(
            infer(&op, &[&x, &scale]),
            Err(OpError::Invalid(_))
        ));
        let zp = TensorType::new(DType::I8, vec![]);
        let op = Op::QuantizeLinear {
            axis: None,
            dtype: DType::U8,
            block_size: 0,
        };
        assert!(matches!(
            infer(&op, &[&x, &TensorType::new(DType::F32, vec![]), &zp]),
            Err(OpError::Invalid(_))
        ));
    }
}
