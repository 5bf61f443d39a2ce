//! Resize's reference evaluation: nearest copies input elements through a source map (exact
//! for every dtype); linear and cubic interpolate one axis at a time in f64 and cast back.

use super::filter::clamp_tap;
use super::{resize_axis_samples, ResizeSample, ResizeSource};
use crate::dtype::DType;
use crate::error::OpError;
use crate::op::{Op, ResizeMode};
use crate::ops::movement::sources::{
    build_data, checked_numel, for_each_index, map_data, out_of_range, Elem,
};
use crate::ops::util::wrong_family;
use crate::tensor::{strides, Tensor, TensorData};

pub(in crate::ops::movement) fn eval_resize(x: &Tensor, op: &Op) -> Result<TensorData, OpError> {
    let Op::Resize { mode, .. } = op else {
        return Err(wrong_family(op));
    };
    let in_shape = x.shape();
    let tables = (0..in_shape.len())
        .map(|d| resize_axis_samples(op, d, in_shape))
        .collect::<Result<Vec<_>, _>>()?;
    match mode {
        ResizeMode::Nearest => resize_nearest(x, &tables),
        ResizeMode::Linear | ResizeMode::Cubic => {
            let mut buf = x.to_f64_vec();
            let mut shape = in_shape.to_vec();
            for (d, samples) in tables.iter().enumerate() {
                let Some(samples) = samples else { continue };
                buf = interpolate_axis(&buf, &shape, d, samples);
                shape[d] = samples.len();
            }
            Ok(from_f64_saturating(x.dtype(), &buf))
        }
    }
}

/// Nearest resize copies input elements (exact for every dtype); a one-hot sample picks its
/// tap, and a sample whose weights were all excluded reads 0 as the reference's weighted sum
/// does.
fn resize_nearest(x: &Tensor, tables: &[Option<Vec<ResizeSample>>]) -> Result<TensorData, OpError> {
    let in_shape = x.shape();
    let in_strides = strides(in_shape);
    let out_shape: Vec<usize> = in_shape
        .iter()
        .zip(tables)
        .map(|(&n, t)| t.as_ref().map_or(n, Vec::len))
        .collect();
    let mut src = Vec::with_capacity(checked_numel(&out_shape).unwrap_or(0));
    for_each_index(&out_shape, |idx| {
        let mut flat = 0usize;
        let mut fill = None;
        for (((&n, table), &y), &st) in in_shape.iter().zip(tables).zip(idx).zip(&in_strides) {
            let i = match table.as_ref().and_then(|t| t.get(y)) {
                None => y,
                Some(s) => match s.nearest_source(n) {
                    ResizeSource::Index(i) => i,
                    ResizeSource::Fill(v) => {
                        // Later axes are resized after earlier ones, so their constants win.
                        fill = Some(v);
                        0
                    }
                },
            };
            flat += i * st;
        }
        src.push(match fill {
            Some(v) => ResizeSource::Fill(v),
            None => ResizeSource::Index(flat),
        });
    });
    let round = x.dtype().is_integer();
    let convert = |v: f64| if round { v.round_ties_even() } else { v };
    Ok(map_data!(x.data(), v => src
        .iter()
        .map(|s| match *s {
            ResizeSource::Index(i) => v.get(i).copied().ok_or_else(|| out_of_range(i)),
            ResizeSource::Fill(f) => Ok(Elem::from_f64(convert(f))),
        })
        .collect::<Result<Vec<_>, OpError>>()?))
}

/// Resamples axis `d` of a row-major buffer of `shape`.
fn interpolate_axis(buf: &[f64], shape: &[usize], d: usize, samples: &[ResizeSample]) -> Vec<f64> {
    let n = shape.get(d).copied().unwrap_or(1);
    let outer: usize = shape[..d].iter().product();
    let inner: usize = shape[d + 1..].iter().product();
    let at =
        |o: usize, k: usize, j: usize| buf.get((o * n + k) * inner + j).copied().unwrap_or(0.0);
    let mut out = Vec::with_capacity(outer * samples.len() * inner);
    for o in 0..outer {
        for s in samples {
            match s {
                ResizeSample::Fill(v) => out.extend(std::iter::repeat_n(*v, inner)),
                ResizeSample::Taps { start, weights } => out.extend((0..inner).map(|j| {
                    weights
                        .iter()
                        .enumerate()
                        .map(|(k, w)| w * at(o, clamp_tap(*start, k, n), j))
                        .sum::<f64>()
                })),
            }
        }
    }
    out
}

/// Interpolated values back to the element type: integers round half to even and saturate,
/// as the ONNX reference's `saturate_cast` does.
fn from_f64_saturating(dtype: DType, v: &[f64]) -> TensorData {
    let round = dtype.is_integer();
    build_data!(dtype, T => v
        .iter()
        .map(|&x| T::from_f64(if round { x.round_ties_even() } else { x }))
        .collect())
}
