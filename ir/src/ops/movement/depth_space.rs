//! DepthToSpace and SpaceToDepth (DCR and CRD modes): shape inference and reference
//! evaluation, each a reshape, a transpose and a reshape of an NCHW tensor.

use super::single;
use super::sources::{take, transposed_sources};
use crate::error::OpError;
use crate::invalid;
use crate::op::DepthToSpaceMode;
use crate::ops::util::out_type;
use crate::tensor::{Tensor, TensorData, TensorType};

fn nchw<'a>(
    name: &str,
    inputs: &[&'a TensorType],
    blocksize: usize,
) -> Result<(&'a TensorType, [usize; 4]), OpError> {
    let x = single(name, inputs)?;
    let [n, c, h, w] = x.shape[..] else {
        return invalid!("{name} needs a 4-D input, got {x}");
    };
    if blocksize == 0 {
        return invalid!("{name}: blocksize must be positive");
    }
    Ok((x, [n, c, h, w]))
}

/// ONNX DepthToSpace.
pub(super) fn infer_depth_to_space(
    b: usize,
    inputs: &[&TensorType],
) -> Result<TensorType, OpError> {
    let (x, [n, c, h, w]) = nchw("DepthToSpace", inputs, b)?;
    let bb = b.saturating_mul(b);
    if !c.is_multiple_of(bb) {
        return invalid!("DepthToSpace: channels {c} are not divisible by blocksize^2 = {bb}");
    }
    match (h.checked_mul(b), w.checked_mul(b)) {
        (Some(hb), Some(wb)) => out_type(x.dtype, vec![n, c / bb, hb, wb]),
        _ => invalid!("DepthToSpace: output is too large"),
    }
}

/// DCR splits channels as (b, b, c'), CRD as (c', b, b); both then interleave the blocks into
/// the spatial dimensions: a reshape, a transpose and a reshape.
pub(super) fn eval_depth_to_space(
    x: &Tensor,
    b: usize,
    mode: DepthToSpaceMode,
) -> Result<TensorData, OpError> {
    let [n, c, h, w] = x.shape()[..] else {
        return invalid!("DepthToSpace needs a 4-D input");
    };
    let c2 = c / (b * b);
    let (shape, perm) = match mode {
        DepthToSpaceMode::Dcr => ([n, b, b, c2, h, w], [0, 3, 4, 1, 5, 2]),
        DepthToSpaceMode::Crd => ([n, c2, b, b, h, w], [0, 1, 4, 2, 5, 3]),
    };
    take(x.data(), &transposed_sources(&shape, &perm))
}

/// ONNX SpaceToDepth.
pub(super) fn infer_space_to_depth(
    b: usize,
    inputs: &[&TensorType],
) -> Result<TensorType, OpError> {
    let (x, [n, c, h, w]) = nchw("SpaceToDepth", inputs, b)?;
    if !h.is_multiple_of(b) || !w.is_multiple_of(b) {
        return invalid!("SpaceToDepth: spatial size {h}x{w} is not divisible by blocksize {b}");
    }
    match c.checked_mul(b).and_then(|v| v.checked_mul(b)) {
        Some(cb) => out_type(x.dtype, vec![n, cb, h / b, w / b]),
        None => invalid!("SpaceToDepth: output is too large"),
    }
}

/// The inverse of [`eval_depth_to_space`]: blocks of the spatial dimensions move into the
/// channels, ahead of them (DCR: (b, b, c)) or after them (CRD: (c, b, b)).
pub(super) fn eval_space_to_depth(
    x: &Tensor,
    b: usize,
    mode: DepthToSpaceMode,
) -> Result<TensorData, OpError> {
    let [n, c, h, w] = x.shape()[..] else {
        return invalid!("SpaceToDepth needs a 4-D input");
    };
    let shape = [n, c, h / b, b, w / b, b];
    let perm = match mode {
        DepthToSpaceMode::Dcr => [0, 3, 5, 1, 2, 4],
        DepthToSpaceMode::Crd => [0, 1, 3, 5, 2, 4],
    };
    take(x.data(), &transposed_sources(&shape, &perm))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use crate::op::{DepthToSpaceMode, Op};
    use crate::ops::movement::test_util::{iota, run};
    use crate::tensor::Tensor;

    #[test]
    fn depth_space_round_trip() {
        let x = iota(vec![1, 8, 2, 3]);
        let d2s = run(
            Op::DepthToSpace {
                blocksize: 2,
                mode: DepthToSpaceMode::Dcr,
            },
            &[&x],
        )
        .remove(0);
        assert_eq!(d2s.shape(), &[1, 2, 4, 6]);
        // DCR: channel = (row offset * b + column offset) * C/b^2 + c, so out[0, 0, 0, 1] (column
        // offset 1) comes from channel 2, pixel (0, 0).
        assert_eq!(d2s.as_f32().unwrap()[1], 12.0);
        let s2d = |mode, x: &Tensor| run(Op::SpaceToDepth { blocksize: 2, mode }, &[x]).remove(0);
        assert_eq!(s2d(DepthToSpaceMode::Dcr, &d2s), x);
        let crd = run(
            Op::DepthToSpace {
                blocksize: 2,
                mode: DepthToSpaceMode::Crd,
            },
            &[&x],
        )
        .remove(0);
        // CRD: channel = c * b^2 + row offset * b + column offset, so out[0, 0, 0, 1] comes from
        // channel 1 and out[0, 1, 0, 0] from channel 4.
        assert_eq!(crd.as_f32().unwrap()[1], 6.0);
        assert_eq!(crd.as_f32().unwrap()[24], 24.0);
        assert_eq!(s2d(DepthToSpaceMode::Crd, &crd), x);
    }
}
