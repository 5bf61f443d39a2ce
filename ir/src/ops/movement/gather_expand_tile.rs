//! Gather, Expand and Tile: shape inference and reference evaluation (Expand's evaluation is
//! a broadcast gather in `movement::eval`). Gather's source map depends on its index input,
//! negative indices counting from the end.

use super::single;
use super::sources::{table_sources, take, take_or_fill};
use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::ops::util::{broadcast_shapes, check_arity, out_type};
use crate::tensor::{Tensor, TensorData, TensorType};

/// ONNX Gather.
pub(super) fn infer_gather(axis: usize, inputs: &[&TensorType]) -> Result<TensorType, OpError> {
    check_arity("Gather", inputs.len(), 2, 2)?;
    let [data, indices] = inputs else {
        return invalid!("Gather takes 2 inputs");
    };
    if !matches!(indices.dtype, DType::I32 | DType::I64) {
        return invalid!("Gather: indices must be i32 or i64, got {}", indices.dtype);
    }
    if axis >= data.rank() {
        return invalid!(
            "Gather: axis {axis} is out of range for rank {}",
            data.rank()
        );
    }
    let mut shape = data.shape[..axis].to_vec();
    shape.extend_from_slice(&indices.shape);
    shape.extend_from_slice(&data.shape[axis + 1..]);
    out_type(data.dtype, shape)
}

pub(super) fn eval_gather(axis: usize, inputs: &[&Tensor]) -> Result<TensorData, OpError> {
    let [data, indices] = inputs else {
        return invalid!("Gather takes 2 inputs");
    };
    let shape = data.shape();
    let Some(&n) = shape.get(axis) else {
        return invalid!(
            "Gather: axis {axis} is out of range for rank {}",
            shape.len()
        );
    };
    let Some(raw) = indices.to_i64_vec() else {
        return invalid!(
            "Gather: indices must be i32 or i64, got {}",
            indices.dtype()
        );
    };
    let mut idx = Vec::with_capacity(raw.len());
    for i in raw {
        let wrapped = if i < 0 { i + n as i64 } else { i };
        match usize::try_from(wrapped) {
            Ok(k) if k < n => idx.push(k),
            _ => {
                return invalid!(
                    "Gather: index {i} is out of range for dimension {axis} of size {n}"
                )
            }
        }
    }
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut src = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &k in &idx {
            src.extend((0..inner).map(|j| (o * n + k) * inner + j));
        }
    }
    take(data.data(), &src)
}

/// ONNX Expand: `shape` is already the full broadcast shape.
pub(super) fn infer_expand(shape: &[usize], inputs: &[&TensorType]) -> Result<TensorType, OpError> {
    let x = single("Expand", inputs)?;
    if x.rank() > shape.len() || broadcast_shapes(&x.shape, shape)? != shape {
        return invalid!("Expand: {x} does not broadcast to {shape:?}");
    }
    out_type(x.dtype, shape.to_vec())
}

/// ONNX Tile.
pub(super) fn infer_tile(repeats: &[usize], inputs: &[&TensorType]) -> Result<TensorType, OpError> {
    let x = single("Tile", inputs)?;
    if repeats.len() != x.rank() {
        return invalid!(
            "Tile: {} repeats given for rank {}",
            repeats.len(),
            x.rank()
        );
    }
    let shape: Option<Vec<usize>> = x
        .shape
        .iter()
        .zip(repeats)
        .map(|(&d, &r)| d.checked_mul(r))
        .collect();
    match shape {
        Some(s) => out_type(x.dtype, s),
        None => invalid!("Tile: output is too large"),
    }
}

pub(super) fn eval_tile(x: &Tensor, repeats: &[usize]) -> Result<TensorData, OpError> {
    let tables: Vec<Vec<Option<usize>>> = x
        .shape()
        .iter()
        .zip(repeats)
        .map(|(&n, &r)| (0..n * r).map(|o| Some(o % n)).collect())
        .collect();
    take_or_fill(x.data(), &table_sources(x.shape(), &tables), 0.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use crate::error::OpError;
    use crate::op::Op;
    use crate::ops::movement::eval;
    use crate::ops::movement::test_util::{f32s, iota, run};
    use crate::tensor::{Tensor, TensorData};

    #[test]
    fn gather_wraps_negative_and_rejects_out_of_range() {
        let x = iota(vec![3, 2]);
        let idx = Tensor::new(vec![2], TensorData::I32(vec![-1, 0])).unwrap();
        let y = run(Op::Gather { axis: 0 }, &[&x, &idx]).remove(0);
        assert_eq!(y.as_f32().unwrap(), &[4.0, 5.0, 0.0, 1.0]);
        let idx = Tensor::from_i64(vec![1], vec![3]).unwrap();
        assert!(matches!(
            eval(&Op::Gather { axis: 0 }, &[&x, &idx]),
            Err(OpError::Invalid(_))
        ));
        let idx = Tensor::from_i64(vec![], vec![1]).unwrap();
        let y = run(Op::Gather { axis: 1 }, &[&x, &idx]).remove(0);
        assert_eq!(y.shape(), &[3]);
        assert_eq!(y.as_f32().unwrap(), &[1.0, 3.0, 5.0]);
    }

    #[test]
    fn expand_and_tile() {
        let x = f32s(vec![2, 1], &[1.0, 2.0]);
        let y = run(
            Op::Expand {
                shape: vec![2, 2, 3],
            },
            &[&x],
        )
        .remove(0);
        assert_eq!(y.as_f32().unwrap()[..6], [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        let y = run(
            Op::Tile {
                repeats: vec![2, 2],
            },
            &[&x],
        )
        .remove(0);
        assert_eq!(
            y.as_f32().unwrap(),
            &[1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]
        );
    }
}
