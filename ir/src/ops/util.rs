//! Helpers shared by the op files: arity checks, broadcasting, index arithmetic.

use crate::error::OpError;
use crate::invalid;
use crate::tensor::{strides, Tensor, TensorType};

/// Checks that `n` inputs were given, `min <= n <= max`.
pub fn check_arity(op: &str, n: usize, min: usize, max: usize) -> Result<(), OpError> {
    if n < min || n > max {
        let want = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(OpError::Invalid(format!(
            "{op} takes {want} inputs, got {n}"
        )));
    }
    Ok(())
}

/// numpy-style multidirectional broadcast of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>, OpError> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(OpError::Invalid(format!(
                    "shapes {a:?} and {b:?} do not broadcast"
                )))
            }
        };
    }
    Ok(out)
}

/// Broadcast of any number of shapes.
pub fn broadcast_all(shapes: &[&[usize]]) -> Result<Vec<usize>, OpError> {
    let mut out: Vec<usize> = Vec::new();
    for s in shapes {
        out = broadcast_shapes(&out, s)?;
    }
    Ok(out)
}

/// For every element of `out_shape` (row-major), the flat index of the element of a tensor of
/// `in_shape` that broadcasts to it. `in_shape` must broadcast to `out_shape`.
pub fn broadcast_index_map(in_shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let rank = out_shape.len();
    let offset = rank - in_shape.len();
    let in_strides = strides(in_shape);
    // Stride 0 along broadcast dimensions.
    let eff: Vec<usize> = (0..rank)
        .map(|d| {
            if d < offset || in_shape[d - offset] == 1 {
                0
            } else {
                in_strides[d - offset]
            }
        })
        .collect();
    let numel: usize = out_shape.iter().product();
    let mut map = Vec::with_capacity(numel);
    let mut idx = vec![0usize; rank];
    let mut flat = 0usize;
    for _ in 0..numel {
        map.push(flat);
        // Increment the multi-index, keeping `flat` in step.
        for d in (0..rank).rev() {
            idx[d] += 1;
            flat += eff[d];
            if idx[d] < out_shape[d] {
                break;
            }
            flat -= eff[d] * idx[d];
            idx[d] = 0;
        }
    }
    map
}

/// Row-major multi-index of flat index `i` in `shape`.
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        if shape[d] > 0 {
            idx[d] = i % shape[d];
            i /= shape[d];
        }
    }
    idx
}

/// A checked output type: refuses absurd sizes before anything is allocated.
pub fn out_type(dtype: crate::dtype::DType, shape: Vec<usize>) -> Result<TensorType, OpError> {
    TensorType::checked(dtype, shape).map_err(|e| OpError::Invalid(e.to_string()))
}

/// Wraps a tensor constructor's error.
pub fn make(t: Result<Tensor, crate::error::IrError>) -> Result<Tensor, OpError> {
    t.map_err(|e| OpError::Invalid(e.to_string()))
}

/// The f32 data of input `i`, or an error naming the dtype found.
pub fn f32_input<'a>(op: &str, inputs: &[&'a Tensor], i: usize) -> Result<&'a [f32], OpError> {
    let t = inputs
        .get(i)
        .ok_or_else(|| OpError::Invalid(format!("{op}: missing input {i}")))?;
    t.as_f32()
        .ok_or_else(|| OpError::Unsupported(format!("{op} on {} input {i}", t.dtype())))
}

/// Checks that every input is f32 (for ops kiln defines on float only).
pub fn require_f32(op: &crate::op::Op, inputs: &[&TensorType]) -> Result<(), OpError> {
    match inputs
        .iter()
        .position(|t| t.dtype != crate::dtype::DType::F32)
    {
        Some(i) => Err(OpError::Unsupported(format!(
            "{} on {} input {i}",
            op.name(),
            inputs[i].dtype
        ))),
        None => Ok(()),
    }
}

/// The values of an integer tensor (i8, u8, i16 or i32) as i32.
pub fn int_input(op: &str, inputs: &[&Tensor], i: usize) -> Result<Vec<i32>, OpError> {
    let t = inputs
        .get(i)
        .ok_or_else(|| OpError::Invalid(format!("{op}: missing input {i}")))?;
    match t.dtype() {
        crate::dtype::DType::I8
        | crate::dtype::DType::U8
        | crate::dtype::DType::I16
        | crate::dtype::DType::I32 => Ok(t
            .to_i64_vec()
            .unwrap_or_default()
            .into_iter()
            .map(|v| v as i32)
            .collect()),
        other => Err(OpError::Unsupported(format!("{op} on {other} input {i}"))),
    }
}

/// A tensor of `dtype` (i8, u8, i16 or i32) holding `values`, which are already in range.
pub fn int_tensor(
    dtype: crate::dtype::DType,
    shape: Vec<usize>,
    values: Vec<i32>,
) -> Result<Tensor, OpError> {
    use crate::tensor::TensorData;
    let data = match dtype {
        crate::dtype::DType::I8 => TensorData::I8(values.iter().map(|&v| v as i8).collect()),
        crate::dtype::DType::U8 => TensorData::U8(values.iter().map(|&v| v as u8).collect()),
        crate::dtype::DType::I16 => TensorData::I16(values.iter().map(|&v| v as i16).collect()),
        crate::dtype::DType::I32 => TensorData::I32(values),
        other => {
            return Err(OpError::Unsupported(format!(
                "integer result of type {other}"
            )))
        }
    };
    make(Tensor::new(shape, data))
}

/// Checks that input `i` has one of `dtypes`, naming the operand in the error.
pub fn expect_dtype(
    op: &str,
    inputs: &[&TensorType],
    i: usize,
    what: &str,
    dtypes: &[crate::dtype::DType],
) -> Result<(), OpError> {
    let t = inputs
        .get(i)
        .ok_or_else(|| OpError::Invalid(format!("{op}: missing input {i} ({what})")))?;
    if dtypes.contains(&t.dtype) {
        Ok(())
    } else {
        let names: Vec<&str> = dtypes.iter().map(|d| d.name()).collect();
        Err(OpError::Invalid(format!(
            "{op}: {what} (input {i}) is {}, expected {}",
            t.dtype,
            names.join(" or ")
        )))
    }
}

/// Checks the requantization inputs `i` (multiplier) and `i + 1` (shift): i32 vectors of one
/// entry or `channels` entries.
pub fn check_requant_inputs(
    op: &str,
    inputs: &[&TensorType],
    i: usize,
    channels: usize,
) -> Result<(), OpError> {
    for (slot, what) in [(i, "multiplier"), (i + 1, "shift")] {
        expect_dtype(op, inputs, slot, what, &[crate::dtype::DType::I32])?;
        let n = inputs[slot].numel();
        if inputs[slot].rank() != 1 || (n != 1 && n != channels) {
            return invalid!(
                "{op}: {what} has shape {:?}, expected [1] or [{channels}]",
                inputs[slot].shape
            );
        }
    }
    Ok(())
}

/// An accumulator that must fit i32, as the compiler proved for every quantized layer.
pub fn acc_i32(op: &str, acc: i64) -> Result<i32, OpError> {
    i32::try_from(acc).map_err(|_| {
        OpError::Invalid(format!(
            "{op}: accumulator {acc} overflows i32 (kiln's bound check should have refused this layer)"
        ))
    })
}

/// Error for an op routed to a family file that does not handle it (a dispatch bug).
pub fn wrong_family(op: &crate::op::Op) -> OpError {
    OpError::Invalid(format!(
        "internal: {} dispatched to the wrong op family",
        op.name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting() {
        assert_eq!(
            broadcast_shapes(&[2, 1, 3], &[4, 1]).ok(),
            Some(vec![2, 4, 3])
        );
        assert!(broadcast_shapes(&[2, 3], &[3, 2]).is_err());
        assert_eq!(broadcast_index_map(&[3], &[2, 3]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(
            broadcast_index_map(&[2, 1], &[2, 3]),
            vec![0, 0, 0, 1, 1, 1]
        );
        assert_eq!(broadcast_index_map(&[], &[2]), vec![0, 0]);
    }
}
