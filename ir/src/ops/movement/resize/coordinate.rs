//! Resize's coordinate transforms: where an output coordinate of one axis falls in the input
//! (`Axis::source`), computed in f32 as onnxruntime computes it.

use crate::op::CoordTransform;

/// One axis of a resize: sizes, scale and the region of interest (start, end) as fractions.
#[derive(Clone, Copy)]
pub(super) struct Axis {
    pub(super) in_n: usize,
    pub(super) out_n: usize,
    pub(super) scale: f64,
    pub(super) roi: (f64, f64),
}

/// Python's `math.isclose` with its default tolerances.
fn is_close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

impl Axis {
    /// The reference skips axes that keep their size at scale 1 over the full region.
    pub(super) fn is_identity(&self) -> bool {
        self.in_n == self.out_n
            && is_close(self.scale, 1.0)
            && is_close(self.roi.0, 0.0)
            && is_close(self.roi.1, 1.0)
    }

    /// The scale as onnxruntime holds it: f32, the given value, or `out / in` divided in f32
    /// when the model gave sizes.
    fn scale_f32(&self) -> f32 {
        if self.scale == self.out_n as f64 / self.in_n as f64 {
            self.out_n as f32 / self.in_n as f32
        } else {
            self.scale as f32
        }
    }

    /// Where output coordinate `y` falls in the input; `None` when tf_crop_and_resize samples
    /// outside the input.
    ///
    /// Computed exactly as onnxruntime computes it, in f32 with its formulas and its order of
    /// operations (f64 where its code promotes to double), rather than in exact arithmetic as
    /// the ONNX reference evaluator does, because users validate against onnxruntime and
    /// PyTorch: the coordinate decides which pixel nearest rounding, floors and ceilings take
    /// and whether tf_crop_and_resize extrapolates, and an ulp either side of an integer or a
    /// tie flips them. In particular align_corners, pytorch_half_pixel and tf_crop_and_resize
    /// divide by the integer output length (and test it against 1), where the reference uses
    /// the unrounded `scale * in` (1x1x3x4 at scale 1.5: up to 0.55 apart).
    pub(super) fn source(&self, coord: CoordTransform, y: usize) -> Option<f64> {
        let y = y as f32;
        let in_w = self.in_n as f32;
        let out_len = self.out_n as f32;
        let scale = self.scale_f32();
        let x: f32 = match coord {
            CoordTransform::TfCropAndResize => {
                let (start, end) = (self.roi.0 as f32, self.roi.1 as f32);
                let x = if out_len > 1.0 {
                    start * (in_w - 1.0) + (y * (end - start) * (in_w - 1.0)) / (out_len - 1.0)
                } else {
                    (0.5 * f64::from(start + end) * f64::from(in_w - 1.0)) as f32
                };
                if x < 0.0 || x > in_w - 1.0 {
                    return None;
                }
                x
            }
            CoordTransform::HalfPixel => (y + 0.5) / scale - 0.5,
            CoordTransform::HalfPixelSymmetric => {
                let output_width = scale * in_w;
                let adjustment = out_len / output_width;
                let center = in_w / 2.0;
                let offset = center * (1.0 - adjustment);
                (f64::from(offset) + (f64::from(y) + 0.5) / f64::from(scale) - 0.5) as f32
            }
            CoordTransform::PytorchHalfPixel if out_len > 1.0 => (y + 0.5) / scale - 0.5,
            CoordTransform::PytorchHalfPixel => 0.0,
            CoordTransform::AlignCorners if out_len == 1.0 => 0.0,
            CoordTransform::AlignCorners => y * (in_w - 1.0) / (out_len - 1.0),
            CoordTransform::Asymmetric => y / scale,
        };
        Some(f64::from(x))
    }
}
