//! Reshape and Transpose: shape inference. Reshape's evaluation keeps the buffer as it is and
//! Transpose's gathers through `sources::transposed_sources`, both in `movement::eval`.

use super::single;
use crate::error::OpError;
use crate::invalid;
use crate::ops::util::out_type;
use crate::tensor::TensorType;

/// ONNX Reshape (and Flatten, Squeeze, Unsqueeze): `shape` is the full output shape.
pub(super) fn infer_reshape(
    shape: &[usize],
    inputs: &[&TensorType],
) -> Result<TensorType, OpError> {
    let x = single("Reshape", inputs)?;
    let out = out_type(x.dtype, shape.to_vec())?;
    if out.numel() != x.numel() {
        return invalid!("cannot reshape {x} ({} elements) to {shape:?}", x.numel());
    }
    Ok(out)
}

/// ONNX Transpose.
pub(super) fn infer_transpose(
    perm: &[usize],
    inputs: &[&TensorType],
) -> Result<TensorType, OpError> {
    let x = single("Transpose", inputs)?;
    let mut sorted = perm.to_vec();
    sorted.sort_unstable();
    if perm.len() != x.rank() || sorted.iter().enumerate().any(|(i, &p)| i != p) {
        return invalid!(
            "perm {perm:?} is not a permutation of the {} axes of {x}",
            x.rank()
        );
    }
    out_type(x.dtype, perm.iter().map(|&p| x.shape[p]).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use crate::op::Op;
    use crate::ops::movement::infer;
    use crate::ops::movement::test_util::{iota, run};

    #[test]
    fn transpose_2x3() {
        let x = iota(vec![2, 3]);
        let y = run(Op::Transpose { perm: vec![1, 0] }, &[&x]).remove(0);
        assert_eq!(y.shape(), &[3, 2]);
        assert_eq!(y.as_f32().unwrap(), &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }

    #[test]
    fn reshape_checks_element_count() {
        let x = iota(vec![2, 3]);
        assert!(infer(&Op::Reshape { shape: vec![3, 2] }, &[&x.ty()]).is_ok());
        assert!(infer(&Op::Reshape { shape: vec![4] }, &[&x.ty()]).is_err());
    }
}
