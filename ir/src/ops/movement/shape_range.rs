//! Shape, ConstantOfShape and Range: shape inference and reference evaluation of the ops
//! whose output is computed from shapes and attributes rather than copied from an input.

use super::single;
use super::sources::{build_data, Elem};
use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::ops::util::{check_arity, out_type};
use crate::tensor::{TensorData, TensorType};

/// ONNX Shape.
pub(super) fn infer_shape(
    start: usize,
    end: usize,
    inputs: &[&TensorType],
) -> Result<TensorType, OpError> {
    let x = single("Shape", inputs)?;
    if start > end || end > x.rank() {
        return invalid!(
            "Shape: dims {start}..{end} are out of range for rank {}",
            x.rank()
        );
    }
    out_type(DType::I64, vec![end - start])
}

/// ONNX Range.
pub(super) fn infer_range(
    start: f64,
    delta: f64,
    count: usize,
    dtype: DType,
    inputs: &[&TensorType],
) -> Result<TensorType, OpError> {
    check_arity("Range", inputs.len(), 0, 0)?;
    if dtype == DType::Bool {
        return invalid!("Range: bool output is not allowed");
    }
    if !start.is_finite() || !delta.is_finite() {
        return invalid!("Range: start {start} and delta {delta} must be finite");
    }
    out_type(dtype, vec![count])
}

/// Floats compute `start + i * delta` in f64; integers in wrapping i64, cast like C.
pub(super) fn eval_range(start: f64, delta: f64, count: usize, dtype: DType) -> TensorData {
    let (s, d) = (start as i64, delta as i64);
    build_data!(dtype, T => (0..count)
        .map(|i| {
            if dtype.is_float() {
                T::from_f64(start + i as f64 * delta)
            } else {
                T::from_i64(s.wrapping_add((i as i64).wrapping_mul(d)))
            }
        })
        .collect())
}

/// A buffer of `n` copies of `value` cast to `dtype`.
pub(super) fn filled(dtype: DType, n: usize, value: f64) -> TensorData {
    build_data!(dtype, T => vec![T::from_f64(value); n])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use crate::dtype::DType;
    use crate::op::Op;
    use crate::ops::movement::test_util::{iota, run};
    use crate::tensor::TensorData;

    #[test]
    fn shape_constant_range() {
        let x = iota(vec![2, 3, 4]);
        let s = run(Op::Shape { start: 1, end: 3 }, &[&x]).remove(0);
        assert_eq!(s.data(), &TensorData::I64(vec![3, 4]));
        let c = run(
            Op::ConstantOfShape {
                shape: vec![2],
                value: 7.0,
                dtype: DType::I32,
            },
            &[],
        )
        .remove(0);
        assert_eq!(c.data(), &TensorData::I32(vec![7, 7]));
        let r = run(
            Op::Range {
                start: 10.0,
                delta: -3.0,
                count: 2,
                dtype: DType::I32,
            },
            &[],
        )
        .remove(0);
        assert_eq!(r.data(), &TensorData::I32(vec![10, 7]));
    }
}
