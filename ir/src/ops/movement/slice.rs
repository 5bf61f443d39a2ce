//! Slice: shape inference and reference evaluation, for starts and ends already clamped per
//! dimension and steps of either sign.

use super::single;
use super::sources::{table_sources, take_or_fill};
use crate::error::OpError;
use crate::invalid;
use crate::ops::util::out_type;
use crate::tensor::{Tensor, TensorData, TensorType};

/// Number of elements `start, start + step, ..` before reaching `end` (exclusive).
fn slice_len(start: i64, end: i64, step: i64) -> usize {
    let (start, end, step) = (i128::from(start), i128::from(end), i128::from(step));
    let n = if step > 0 {
        (end - start + step - 1) / step
    } else {
        (start - end - step - 1) / -step
    };
    n.max(0) as usize
}

/// ONNX Slice, with starts/ends already clamped per dimension.
pub(super) fn infer_slice(
    starts: &[i64],
    ends: &[i64],
    steps: &[i64],
    inputs: &[&TensorType],
) -> Result<TensorType, OpError> {
    let x = single("Slice", inputs)?;
    let r = x.rank();
    if starts.len() != r || ends.len() != r || steps.len() != r {
        return invalid!("Slice needs one start, end and step per dimension of {x}");
    }
    let mut shape = Vec::with_capacity(r);
    for d in 0..r {
        let (start, end, step, dim) = (starts[d], ends[d], steps[d], x.shape[d]);
        if step == 0 {
            return invalid!("Slice: step of dimension {d} is 0");
        }
        let n = slice_len(start, end, step);
        if n > 0 {
            let last = i128::from(start) + (n as i128 - 1) * i128::from(step);
            let in_range = |i: i128| i >= 0 && i < dim as i128;
            if !in_range(i128::from(start)) || !in_range(last) {
                return invalid!(
                    "Slice: {start}..{end} step {step} leaves dimension {d} of size {dim}"
                );
            }
        }
        shape.push(n);
    }
    out_type(x.dtype, shape)
}

pub(super) fn eval_slice(
    x: &Tensor,
    starts: &[i64],
    steps: &[i64],
    out_shape: &[usize],
) -> Result<TensorData, OpError> {
    let tables: Vec<Vec<Option<usize>>> = out_shape
        .iter()
        .zip(starts.iter().zip(steps))
        .map(|(&n, (&start, &step))| {
            (0..n as i64)
                .map(|k| usize::try_from(start + k * step).ok())
                .collect()
        })
        .collect();
    take_or_fill(x.data(), &table_sources(x.shape(), &tables), 0.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use crate::op::Op;
    use crate::ops::movement::infer;
    use crate::ops::movement::test_util::{iota, run};

    #[test]
    fn slice_negative_step() {
        let x = iota(vec![5]);
        // x[4:0:-2] = [4, 2]
        let y = run(
            Op::Slice {
                starts: vec![4],
                ends: vec![0],
                steps: vec![-2],
            },
            &[&x],
        )
        .remove(0);
        assert_eq!(y.as_f32().unwrap(), &[4.0, 2.0]);
        // x[3::-1] (end clamped to -1) = [3, 2, 1, 0]
        let y = run(
            Op::Slice {
                starts: vec![3],
                ends: vec![-1],
                steps: vec![-1],
            },
            &[&x],
        )
        .remove(0);
        assert_eq!(y.as_f32().unwrap(), &[3.0, 2.0, 1.0, 0.0]);
        let bad = Op::Slice {
            starts: vec![5],
            ends: vec![0],
            steps: vec![-1],
        };
        assert!(infer(&bad, &[&x.ty()]).is_err());
    }
}
