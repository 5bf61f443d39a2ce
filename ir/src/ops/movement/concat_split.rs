//! Concat and Split: shape inference and reference evaluation. Concat joins its inputs'
//! buffers and gathers the runs of each along the axis; Split reads one coordinate range of
//! the axis per output.

use super::single;
use super::sources::{table_sources, take, take_or_fill};
use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::ops::util::out_type;
use crate::tensor::{Tensor, TensorData, TensorType};

/// ONNX Concat.
pub(super) fn infer_concat(axis: usize, inputs: &[&TensorType]) -> Result<TensorType, OpError> {
    let Some(x) = inputs.first() else {
        return invalid!("Concat takes at least 1 input");
    };
    if axis >= x.rank() {
        return invalid!("Concat: axis {axis} is out of range for rank {}", x.rank());
    }
    let mut total = 0usize;
    for t in inputs {
        let same_dims = t.rank() == x.rank()
            && t.shape
                .iter()
                .zip(&x.shape)
                .enumerate()
                .all(|(d, (a, b))| d == axis || a == b);
        if t.dtype != x.dtype || !same_dims {
            return invalid!("Concat along axis {axis}: {t} does not match {x}");
        }
        total = total
            .checked_add(t.shape[axis])
            .ok_or_else(|| OpError::Invalid("Concat: output is too large".into()))?;
    }
    let mut shape = x.shape.clone();
    shape[axis] = total;
    out_type(x.dtype, shape)
}

/// Appends the element vectors of same-typed tensors.
fn concat_data(parts: &[&TensorData]) -> Result<TensorData, OpError> {
    macro_rules! join {
        ($var:ident) => {{
            let mut out = Vec::new();
            for p in parts {
                match p {
                    TensorData::$var(v) => out.extend_from_slice(v),
                    other => return invalid!("Concat: mixed element types ({})", other.dtype()),
                }
            }
            TensorData::$var(out)
        }};
    }
    Ok(match parts.first().map(|p| p.dtype()) {
        None | Some(DType::F32) => join!(F32),
        Some(DType::I8) => join!(I8),
        Some(DType::U8) => join!(U8),
        Some(DType::I16) => join!(I16),
        Some(DType::I32) => join!(I32),
        Some(DType::I64) => join!(I64),
        Some(DType::Bool) => join!(Bool),
    })
}

pub(super) fn eval_concat(axis: usize, inputs: &[&Tensor]) -> Result<TensorData, OpError> {
    let parts: Vec<&TensorData> = inputs.iter().map(|t| t.data()).collect();
    let joined = concat_data(&parts)?;
    let Some(x) = inputs.first() else {
        return invalid!("Concat takes at least 1 input");
    };
    let outer: usize = x.shape()[..axis].iter().product();
    let inner: usize = x.shape()[axis + 1..].iter().product();
    // Each input contributes one contiguous run of `dim * inner` elements per outer index.
    let mut src = Vec::with_capacity(joined.len());
    for o in 0..outer {
        let mut offset = 0usize;
        for t in inputs {
            let run = t.shape()[axis] * inner;
            src.extend((0..run).map(|j| offset + o * run + j));
            offset += t.numel();
        }
    }
    take(&joined, &src)
}

/// ONNX Split.
pub(super) fn infer_split(
    axis: usize,
    sizes: &[usize],
    inputs: &[&TensorType],
) -> Result<Vec<TensorType>, OpError> {
    let x = single("Split", inputs)?;
    let Some(&dim) = x.shape.get(axis) else {
        return invalid!("Split: axis {axis} is out of range for rank {}", x.rank());
    };
    let total = sizes.iter().try_fold(0usize, |acc, &s| acc.checked_add(s));
    if sizes.is_empty() || total != Some(dim) {
        return invalid!("Split: sizes {sizes:?} do not add up to dimension {axis} of {x}");
    }
    sizes
        .iter()
        .map(|&s| {
            let mut shape = x.shape.clone();
            shape[axis] = s;
            out_type(x.dtype, shape)
        })
        .collect()
}

pub(super) fn eval_split(
    axis: usize,
    sizes: &[usize],
    x: &Tensor,
) -> Result<Vec<TensorData>, OpError> {
    let mut tables: Vec<Vec<Option<usize>>> = x
        .shape()
        .iter()
        .map(|&n| (0..n).map(Some).collect())
        .collect();
    let mut begin = 0usize;
    let mut out = Vec::with_capacity(sizes.len());
    for &s in sizes {
        if let Some(t) = tables.get_mut(axis) {
            *t = (begin..begin + s).map(Some).collect();
        }
        out.push(take_or_fill(
            x.data(),
            &table_sources(x.shape(), &tables),
            0.0,
        )?);
        begin += s;
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use crate::op::Op;
    use crate::ops::movement::test_util::{f32s, iota, run};

    #[test]
    fn concat_and_split_middle_axis() {
        let a = iota(vec![2, 1]);
        let b = f32s(vec![2, 2], &[10.0, 11.0, 12.0, 13.0]);
        let c = run(Op::Concat { axis: 1 }, &[&a, &b]).remove(0);
        assert_eq!(c.as_f32().unwrap(), &[0.0, 10.0, 11.0, 1.0, 12.0, 13.0]);
        let parts = run(
            Op::Split {
                axis: 1,
                sizes: vec![1, 2],
            },
            &[&c],
        );
        assert_eq!(parts[0], a);
        assert_eq!(parts[1], b);
    }
}
