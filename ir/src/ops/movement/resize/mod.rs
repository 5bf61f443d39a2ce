//! Resize (nearest, N-linear and N-cubic, with antialiasing and tf_crop_and_resize): shape
//! inference, and the per-axis samples both the interpreter and the backend's lowering use.
//!
//! `resize_axis_samples` gives, for every output coordinate of one axis, the input taps and
//! weights (or the extrapolation constant) it reads: `coordinate.rs` places the output
//! coordinate in the input, `filter.rs` computes the taps and weights there, and
//! `interpolate.rs` evaluates the op from the samples of every axis.

mod coordinate;
mod filter;
mod interpolate;

use coordinate::Axis;
use filter::{antialias_taps, clamp_tap, kernel_reach, sample, Filter};
pub(super) use interpolate::eval_resize;

use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::op::{CoordTransform, Op};
use crate::ops::movement::single;
use crate::ops::util::{out_type, wrong_family};
use crate::tensor::TensorType;

/// ONNX Resize (nearest, N-linear and N-cubic, with antialiasing and tf_crop_and_resize).
pub(super) fn infer_resize(op: &Op, inputs: &[&TensorType]) -> Result<TensorType, OpError> {
    let Op::Resize {
        mode,
        coord,
        scales,
        out_shape,
        cubic_coeff_a,
        antialias,
        roi,
        ..
    } = op
    else {
        return Err(wrong_family(op));
    };
    let x = single("Resize", inputs)?;
    if x.dtype == DType::Bool {
        return invalid!("Resize: bool input is not allowed");
    }
    if scales.len() != x.rank() || out_shape.len() != x.rank() {
        return invalid!("Resize needs one scale and one output size per dimension of {x}");
    }
    if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return invalid!("Resize: scale {s} must be positive and finite");
    }
    if x.shape
        .iter()
        .zip(out_shape)
        .any(|(&i, &o)| i == 0 && o > 0)
    {
        return invalid!("Resize: cannot resize an empty dimension of {x} to {out_shape:?}");
    }
    let roi_needed = *coord == CoordTransform::TfCropAndResize;
    if (roi_needed || !roi.is_empty()) && roi.len() != 2 * x.rank() {
        return invalid!(
            "Resize: roi needs {} values (start and end per dimension), got {}",
            2 * x.rank(),
            roi.len()
        );
    }
    if let Some(r) = roi.iter().find(|r| !r.is_finite()) {
        return invalid!("Resize: roi value {r} must be finite");
    }
    if !cubic_coeff_a.is_finite() {
        return invalid!("Resize: cubic_coeff_a {cubic_coeff_a} must be finite");
    }
    if *antialias {
        let Some(reach) = kernel_reach(*mode) else {
            return invalid!("Resize: antialias applies only to linear and cubic modes");
        };
        // A legitimate downscale has out >= 1/2 * in * scale, so its widened filter spans at
        // most a few times the input; anything wider would only burn memory.
        for ((&s, &i), &o) in scales.iter().zip(&x.shape).zip(out_shape) {
            let taps = antialias_taps(reach, s) as f64;
            if o > 0 && taps > 4.0 * reach as f64 * (i as f64 + 1.0) + 2.0 {
                return invalid!("Resize: scale {s} is too small for an antialiased filter");
            }
        }
    }
    out_type(x.dtype, out_shape.to_vec())
}

/// How one output coordinate along a resized axis is computed (see [`resize_axis_samples`]).
#[derive(Clone, Debug, PartialEq)]
pub enum ResizeSample {
    /// A constant: tf_crop_and_resize's `extrapolation_value`, for a coordinate whose source
    /// lies outside the input.
    Fill(f64),
    /// The weighted sum of the input pixels `start..start + weights.len()`, each index clamped
    /// into the axis (as the reference's edge padding does). Nearest mode yields one-hot
    /// weights (all zero when `exclude_outside` dropped the hot tap): use
    /// [`ResizeSample::nearest_source`] for it.
    Taps { start: i64, weights: Vec<f64> },
}

/// Where a nearest-resized value comes from: an input index, or a constant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ResizeSource {
    Index(usize),
    Fill(f64),
}

impl ResizeSample {
    /// For nearest mode, on an axis of `in_n` input pixels: the (clamped) index of the hot
    /// tap, or the constant the coordinate takes (its fill value, or 0 when every weight was
    /// excluded, as the reference's weighted sum gives).
    pub fn nearest_source(&self, in_n: usize) -> ResizeSource {
        match self {
            ResizeSample::Fill(v) => ResizeSource::Fill(*v),
            ResizeSample::Taps { start, weights } => match weights.iter().position(|&w| w != 0.0) {
                Some(k) => ResizeSource::Index(clamp_tap(*start, k, in_n)),
                None => ResizeSource::Fill(0.0),
            },
        }
    }
}

/// The samples of ONNX Resize `op` (an [`Op::Resize`] whose input has shape `in_shape`) along
/// dimension `axis`, one per output coordinate, exactly as the interpreter resamples that
/// axis: the filter taps and weights of `mode` (nearest, linear or cubic, antialiased or not,
/// with `exclude_outside`) at the source coordinate given by the coordinate transform, or
/// [`ResizeSample::Fill`] where tf_crop_and_resize extrapolates.
///
/// Returns `Ok(None)` for an axis the reference leaves untouched (same size, scale 1 and the
/// full region of interest): output coordinate `y` then reads input `y`. Axes are resampled
/// in increasing order, so a later axis's fill constant overrides an earlier one's.
pub fn resize_axis_samples(
    op: &Op,
    axis: usize,
    in_shape: &[usize],
) -> Result<Option<Vec<ResizeSample>>, OpError> {
    let Op::Resize {
        mode,
        coord,
        nearest,
        scales,
        out_shape,
        cubic_coeff_a,
        exclude_outside,
        antialias,
        roi,
        extrapolation_value,
    } = op
    else {
        return Err(wrong_family(op));
    };
    let rank = in_shape.len();
    let Some(&in_n) = in_shape.get(axis) else {
        return invalid!("Resize: axis {axis} is out of range for rank {rank}");
    };
    let filter = Filter {
        mode: *mode,
        coord: *coord,
        nearest: *nearest,
        cubic_a: *cubic_coeff_a,
        exclude_outside: *exclude_outside,
        antialias: *antialias,
        extrapolation: *extrapolation_value,
    };
    let a = Axis {
        in_n,
        out_n: out_shape.get(axis).copied().unwrap_or(0),
        scale: scales.get(axis).copied().unwrap_or(1.0),
        roi: (
            roi.get(axis).copied().unwrap_or(0.0),
            roi.get(rank + axis).copied().unwrap_or(1.0),
        ),
    };
    if a.is_identity() {
        return Ok(None);
    }
    Ok(Some((0..a.out_n).map(|y| sample(&filter, &a, y)).collect()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use crate::op::{CoordTransform, NearestMode, Op, ResizeMode};
    use crate::ops::movement::infer;
    use crate::ops::movement::test_util::{f32s, iota, run};
    use crate::tensor::{Tensor, TensorData};

    fn resize(mode: ResizeMode, coord: CoordTransform, scales: Vec<f64>, out: Vec<usize>) -> Op {
        Op::Resize {
            mode,
            coord,
            nearest: NearestMode::RoundPreferFloor,
            scales,
            out_shape: out,
            cubic_coeff_a: -0.75,
            exclude_outside: false,
            antialias: false,
            roi: Vec::new(),
            extrapolation_value: 0.0,
        }
    }

    fn close(got: &Tensor, want: &[f32]) -> bool {
        let got = got.as_f32().unwrap();
        got.len() == want.len() && got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-5)
    }

    #[test]
    fn resize_nearest_and_linear() {
        let x = f32s(vec![1, 2], &[1.0, 2.0]);
        let op = |mode, coord| resize(mode, coord, vec![1.0, 2.0], vec![1, 4]);
        let y = run(op(ResizeMode::Nearest, CoordTransform::Asymmetric), &[&x]).remove(0);
        assert_eq!(y.as_f32().unwrap(), &[1.0, 1.0, 2.0, 2.0]);
        let y = run(op(ResizeMode::Linear, CoordTransform::HalfPixel), &[&x]).remove(0);
        assert_eq!(y.as_f32().unwrap(), &[1.0, 1.25, 1.75, 2.0]);
        let y = run(op(ResizeMode::Linear, CoordTransform::AlignCorners), &[&x]).remove(0);
        let want = [1.0, 4.0 / 3.0, 5.0 / 3.0, 2.0];
        assert!(y
            .as_f32()
            .unwrap()
            .iter()
            .zip(want)
            .all(|(a, b)| (a - b).abs() < 1e-6));
        // Integers round half to even.
        let xi = Tensor::new(vec![2], TensorData::U8(vec![1, 2])).unwrap();
        let lin = resize(
            ResizeMode::Linear,
            CoordTransform::HalfPixel,
            vec![2.0],
            vec![4],
        );
        assert_eq!(
            run(lin, &[&xi])[0].data(),
            &TensorData::U8(vec![1, 1, 2, 2])
        );
    }

    #[test]
    fn resize_cubic_taps() {
        // Asymmetric x2 of [0, 1, 2, 3]: output 1 sits at 0.5, between taps -1 (clamped to 0),
        // 0, 1, 2 with Keys weights (a = -0.75) [-0.09375, 0.59375, 0.59375, -0.09375].
        let x = iota(vec![4]);
        let op = resize(
            ResizeMode::Cubic,
            CoordTransform::Asymmetric,
            vec![2.0],
            vec![8],
        );
        let y = run(op.clone(), &[&x]).remove(0);
        let at_half = -0.09375 * 0.0 + 0.59375 * 0.0 + 0.59375 * 1.0 - 0.09375 * 2.0;
        assert!((y.as_f32().unwrap()[1] - at_half).abs() < 1e-6);
        // Integer coordinates reproduce the input.
        assert_eq!(y.as_f32().unwrap()[2], 1.0);
        // exclude_outside drops the tap at -1 and renormalizes the other three.
        let mut excl = op;
        if let Op::Resize {
            exclude_outside, ..
        } = &mut excl
        {
            *exclude_outside = true;
        }
        let y = run(excl, &[&x]).remove(0);
        let want = (0.59375 * 1.0 - 0.09375 * 2.0) / (1.0 + 0.09375);
        assert!((y.as_f32().unwrap()[1] - want).abs() < 1e-6);
    }

    #[test]
    fn resize_antialias_linear_downsample() {
        // Half-pixel /2 of [0, 1, 2, 3]: output 0 sits at 0.5; the triangle filter widened to
        // radius 2 covers taps -1..=2 with weights [1/8, 3/8, 3/8, 1/8] (tap -1 clamped to 0):
        // 3/8 * 1 + 1/8 * 2 (values checked against the onnx reference).
        let x = iota(vec![4]);
        let mut op = resize(
            ResizeMode::Linear,
            CoordTransform::HalfPixel,
            vec![0.5],
            vec![2],
        );
        if let Op::Resize { antialias, .. } = &mut op {
            *antialias = true;
        }
        let y = run(op, &[&x]).remove(0);
        assert!(close(&y, &[0.625, 2.375]));
    }

    #[test]
    fn resize_tf_crop_and_resize_extrapolates() {
        // roi [0.5, 1.5] of [0, 10, 20] in 3 outputs samples 1, 2 and 3 (outside: fill).
        let x = f32s(vec![3], &[0.0, 10.0, 20.0]);
        let mut op = resize(
            ResizeMode::Linear,
            CoordTransform::TfCropAndResize,
            vec![1.0],
            vec![3],
        );
        if let Op::Resize {
            roi,
            extrapolation_value,
            ..
        } = &mut op
        {
            *roi = vec![0.5, 1.5];
            *extrapolation_value = -1.0;
        }
        let y = run(op.clone(), &[&x]).remove(0);
        assert!(close(&y, &[10.0, 20.0, -1.0]));
        if let Op::Resize { mode, .. } = &mut op {
            *mode = ResizeMode::Nearest;
        }
        let y = run(op.clone(), &[&x]).remove(0);
        assert!(close(&y, &[10.0, 20.0, -1.0]));
        if let Op::Resize { roi, .. } = &mut op {
            roi.pop();
        }
        assert!(infer(&op, &[&x.ty()]).is_err());
    }
}
