//! Pad: shape inference and reference evaluation in constant, edge, reflect and wrap modes,
//! with negative pads cropping the input first.

use super::single;
use super::sources::{table_sources, take_or_fill};
use crate::error::OpError;
use crate::invalid;
use crate::op::PadMode;
use crate::ops::util::out_type;
use crate::tensor::{Tensor, TensorData, TensorType};

/// How one dimension is padded: negative pads first crop the input (`crop` elements from the
/// start, `kept` remain), then `before`/`after` elements are added.
#[derive(Debug, Clone, Copy)]
struct PadDim {
    crop: usize,
    kept: usize,
    before: usize,
    after: usize,
}

fn pad_dim(n: usize, begin: i64, end: i64) -> Option<PadDim> {
    let crop_begin = usize::try_from(begin.min(0).unsigned_abs()).ok()?;
    let crop_end = usize::try_from(end.min(0).unsigned_abs()).ok()?;
    let kept = n.checked_sub(crop_begin)?.checked_sub(crop_end)?;
    Some(PadDim {
        crop: crop_begin,
        kept,
        before: usize::try_from(begin.max(0)).ok()?,
        after: usize::try_from(end.max(0)).ok()?,
    })
}

/// ONNX Pad.
pub(super) fn infer_pad(
    pads: &[i64],
    mode: PadMode,
    inputs: &[&TensorType],
) -> Result<TensorType, OpError> {
    let x = single("Pad", inputs)?;
    let r = x.rank();
    if pads.len() != 2 * r {
        return invalid!(
            "Pad: {} pads given for rank {r} (need {})",
            pads.len(),
            2 * r
        );
    }
    let mut shape = Vec::with_capacity(r);
    for (d, &n) in x.shape.iter().enumerate() {
        let (begin, end) = (pads[d], pads[r + d]);
        let Some(p) = pad_dim(n, begin, end) else {
            return invalid!("Pad: pads {begin}, {end} crop more than dimension {d} of size {n}");
        };
        if mode != PadMode::Constant && p.kept == 0 && p.before + p.after > 0 {
            return invalid!("Pad: cannot pad empty dimension {d} in {mode:?} mode");
        }
        let out = p
            .before
            .checked_add(p.kept)
            .and_then(|v| v.checked_add(p.after));
        shape.push(out.ok_or_else(|| OpError::Invalid("Pad: output is too large".into()))?);
    }
    out_type(x.dtype, shape)
}

/// The input coordinate that output coordinate `o` of one padded dimension reads.
fn pad_source(p: PadDim, mode: PadMode, o: usize) -> Option<usize> {
    let m = p.kept as i64;
    let rel = o as i64 - p.before as i64;
    let inside = if (0..m).contains(&rel) {
        rel
    } else if m == 0 {
        // Only reachable in constant mode: inference refuses padding an empty dimension.
        return None;
    } else {
        match mode {
            PadMode::Constant => return None,
            PadMode::Edge => rel.clamp(0, m - 1),
            // numpy's reflect repeats: a triangle wave of period 2 * (m - 1).
            PadMode::Reflect if m == 1 => 0,
            PadMode::Reflect => {
                let period = 2 * (m - 1);
                let k = rel.rem_euclid(period);
                if k < m {
                    k
                } else {
                    period - k
                }
            }
            PadMode::Wrap => rel.rem_euclid(m),
        }
    };
    usize::try_from(inside).ok().map(|i| i + p.crop)
}

pub(super) fn eval_pad(
    x: &Tensor,
    pads: &[i64],
    mode: PadMode,
    value: f64,
) -> Result<TensorData, OpError> {
    let r = x.shape().len();
    let mut tables = Vec::with_capacity(r);
    for (d, &n) in x.shape().iter().enumerate() {
        let (begin, end) = (
            pads.get(d).copied().unwrap_or(0),
            pads.get(r + d).copied().unwrap_or(0),
        );
        let Some(p) = pad_dim(n, begin, end) else {
            return invalid!("Pad: pads {begin}, {end} crop more than dimension {d} of size {n}");
        };
        let len = p.before + p.kept + p.after;
        tables.push((0..len).map(|o| pad_source(p, mode, o)).collect());
    }
    take_or_fill(x.data(), &table_sources(x.shape(), &tables), value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use crate::op::{Op, PadMode};
    use crate::ops::movement::infer;
    use crate::ops::movement::test_util::{iota, run};

    #[test]
    fn pad_modes() {
        let x = iota(vec![3]);
        let pad = |mode, pads: Vec<i64>| {
            run(
                Op::Pad {
                    pads,
                    mode,
                    value: 9.0,
                },
                &[&x],
            )
            .remove(0)
            .as_f32()
            .unwrap()
            .to_vec()
        };
        assert_eq!(
            pad(PadMode::Constant, vec![1, 2]),
            vec![9.0, 0.0, 1.0, 2.0, 9.0, 9.0]
        );
        assert_eq!(
            pad(PadMode::Edge, vec![2, 1]),
            vec![0.0, 0.0, 0.0, 1.0, 2.0, 2.0]
        );
        // numpy: np.pad([0, 1, 2], (4, 3), 'reflect') = [0 1 2 1 0 1 2 1 0 1]
        assert_eq!(
            pad(PadMode::Reflect, vec![4, 3]),
            vec![0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0, 1.0, 0.0, 1.0]
        );
        assert_eq!(
            pad(PadMode::Wrap, vec![2, 2]),
            vec![1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0]
        );
        // Negative pads crop before padding.
        assert_eq!(pad(PadMode::Constant, vec![-1, 1]), vec![1.0, 2.0, 9.0]);
        assert_eq!(pad(PadMode::Edge, vec![1, -1]), vec![0.0, 0.0, 1.0]);
        assert!(infer(
            &Op::Pad {
                pads: vec![-2, -2],
                mode: PadMode::Constant,
                value: 0.0
            },
            &[&x.ty()]
        )
        .is_err());
    }
}
