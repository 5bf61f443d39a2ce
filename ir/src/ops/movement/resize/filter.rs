//! Resize's filters: the taps and weights of nearest, linear and cubic resampling (antialiased
//! or not, with `exclude_outside`) around a source coordinate, after the ONNX reference's
//! `_nearest_coeffs`, `_cubic_coeffs`, `_*_coeffs_antialias` and `_get_neighbor`.

use super::coordinate::Axis;
use super::ResizeSample;
use crate::op::{CoordTransform, NearestMode, ResizeMode};

/// Half the support of the unscaled filter, in input pixels (`None` for nearest).
pub(super) fn kernel_reach(mode: ResizeMode) -> Option<i64> {
    match mode {
        ResizeMode::Nearest => None,
        ResizeMode::Linear => Some(1),
        ResizeMode::Cubic => Some(2),
    }
}

/// First tap offset of the antialiased filter relative to the pixel left of the source
/// coordinate; the filter is stretched by 1/scale when downsampling (as the reference does).
fn antialias_start(reach: i64, scale: f64) -> i64 {
    let s = scale.min(1.0);
    (-(reach as f64) / s).floor() as i64 + 1
}

pub(super) fn antialias_taps(reach: i64, scale: f64) -> i64 {
    2 - 2 * antialias_start(reach, scale)
}

/// Resize attributes that define the filter, shared by every axis.
#[derive(Clone, Copy)]
pub(super) struct Filter {
    pub(super) mode: ResizeMode,
    pub(super) coord: CoordTransform,
    pub(super) nearest: NearestMode,
    pub(super) cubic_a: f64,
    pub(super) exclude_outside: bool,
    pub(super) antialias: bool,
    pub(super) extrapolation: f64,
}

/// The reference's `_nearest_coeffs`: one-hot over the two neighbours.
fn nearest_coeffs(ratio: f64, mode: NearestMode) -> Vec<f64> {
    let up = if ratio.fract() == 0.0 {
        true
    } else {
        match mode {
            NearestMode::RoundPreferFloor => ratio > 0.5,
            NearestMode::RoundPreferCeil => ratio >= 0.5,
            NearestMode::Floor => false,
            NearestMode::Ceil => true,
        }
    };
    if up {
        vec![0.0, 1.0]
    } else {
        vec![1.0, 0.0]
    }
}

/// The reference's `_cubic_coeffs` (Keys' kernel with parameter `a`) for the four taps
/// around a point `ratio` past the second one.
fn cubic_coeffs(ratio: f64, a: f64) -> Vec<f64> {
    let r = ratio;
    let s = 1.0 - r;
    vec![
        ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
        ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
        ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0,
        ((a * (s + 1.0) - 5.0 * a) * (s + 1.0) + 8.0 * a) * (s + 1.0) - 4.0 * a,
    ]
}

fn cubic_kernel(x: f64, a: f64) -> f64 {
    let x = x.abs();
    let (x2, x3) = (x * x, x * x * x);
    if x <= 1.0 {
        (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
    } else if x < 2.0 {
        a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
    } else {
        0.0
    }
}

/// The reference's `_linear_coeffs_antialias` / `_cubic_coeffs_antialias`: the kernel
/// stretched by 1/scale when downsampling, normalized to sum 1.
fn antialias_coeffs(mode: ResizeMode, ratio: f64, scale: f64, a: f64) -> Vec<f64> {
    let reach = kernel_reach(mode).unwrap_or(1);
    let s = scale.min(1.0);
    let start = antialias_start(reach, scale);
    let raw: Vec<f64> = (start..2 - start)
        .map(|i| {
            let x = (i as f64 - ratio) * s;
            match mode {
                ResizeMode::Cubic => cubic_kernel(x, a),
                _ => (1.0 - x.abs()).clamp(0.0, 1.0),
            }
        })
        .collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|c| c / sum).collect()
}

fn coeffs(f: &Filter, ratio: f64, scale: f64) -> Vec<f64> {
    match (f.mode, f.antialias) {
        (ResizeMode::Nearest, _) => nearest_coeffs(ratio, f.nearest),
        (ResizeMode::Linear, false) => vec![1.0 - ratio, ratio],
        (ResizeMode::Cubic, false) => cubic_coeffs(ratio, f.cubic_a),
        (mode, true) => antialias_coeffs(mode, ratio, scale, f.cubic_a),
    }
}

/// First input index of the `n` taps nearest to `x`, ties going to the smaller index (the
/// reference's `_get_neighbor`, computed in its edge-padded coordinates).
fn window_start(x: f64, n: usize) -> i64 {
    let pad = n.div_ceil(2) as i64;
    let padded = x + pad as f64;
    let p = padded.floor();
    let frac = padded - p;
    let half = (n / 2) as i64;
    let offset = if n.is_multiple_of(2) {
        if frac == 0.0 {
            -half
        } else {
            1 - half
        }
    } else {
        let base = -(((n as i64) - 1) / 2);
        if frac <= 0.5 {
            base
        } else {
            base + 1
        }
    };
    (p as i64).saturating_add(offset).saturating_sub(pad)
}

/// The sample for output coordinate `y` along `axis`.
pub(super) fn sample(f: &Filter, axis: &Axis, y: usize) -> ResizeSample {
    let Some(x) = axis.source(f.coord, y) else {
        return ResizeSample::Fill(f.extrapolation);
    };
    // The ratio lies in (0, 1]: an integer coordinate counts as 1 past its left neighbour.
    let base = x.floor();
    let ratio = if x == base { 1.0 } else { x - base };
    let mut weights = coeffs(f, ratio, axis.scale);
    let start = window_start(x, weights.len());
    if f.exclude_outside {
        for (k, w) in weights.iter_mut().enumerate() {
            let i = start.saturating_add(k as i64);
            if i < 0 || i >= axis.in_n as i64 {
                *w = 0.0;
            }
        }
        let sum: f64 = weights.iter().sum();
        let sum = if sum == 0.0 { 1.0 } else { sum };
        weights.iter_mut().for_each(|w| *w /= sum);
    }
    ResizeSample::Taps { start, weights }
}

/// Input index `start + k` clamped into `0..n` (0 when `n` is 0; callers never read an empty
/// axis).
pub(super) fn clamp_tap(start: i64, k: usize, n: usize) -> usize {
    start.saturating_add(k as i64).min(n as i64 - 1).max(0) as usize
}
