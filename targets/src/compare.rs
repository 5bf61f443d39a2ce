//! The pass/fail rule of `kiln verify`: board outputs against the host interpreter's.

use kiln_ir::{Tensor, TensorData};

/// Largest allowed |board - interpreter| for float outputs, relative to the output's magnitude:
/// the board's libm and soft-float routines round differently from the host's.
pub const RELATIVE_TOLERANCE: f64 = 1e-4;

/// How a board's outputs compare with the reference.
#[derive(Clone, Copy, Debug)]
pub struct Comparison {
    pub passed: bool,
    pub max_abs_error: f64,
    /// The largest tolerance applied (0 for integer outputs).
    pub tolerance: f64,
}

/// Float outputs must agree within [`RELATIVE_TOLERANCE`] of their largest magnitude (at least
/// 1); integer and bool outputs exactly. NaN matches only NaN.
pub fn compare_outputs(got: &[Tensor], want: &[Tensor]) -> Comparison {
    let mut cmp = Comparison {
        passed: got.len() == want.len(),
        max_abs_error: 0.0,
        tolerance: 0.0,
    };
    for (g, w) in got.iter().zip(want) {
        if g.shape() != w.shape() || g.dtype() != w.dtype() {
            cmp.passed = false;
            cmp.max_abs_error = f64::INFINITY;
            continue;
        }
        let (gv, wv) = (as_f64(g.data()), as_f64(w.data()));
        let exact = !matches!(w.data(), TensorData::F32(_));
        let magnitude = wv
            .iter()
            .filter(|x| x.is_finite())
            .fold(1.0f64, |m, x| m.max(x.abs()));
        let tolerance = if exact {
            0.0
        } else {
            RELATIVE_TOLERANCE * magnitude
        };
        cmp.tolerance = cmp.tolerance.max(tolerance);
        for (a, b) in gv.iter().zip(&wv) {
            let err = if a.is_nan() && b.is_nan() || a == b {
                0.0
            } else {
                (a - b).abs()
            };
            let err = if err.is_nan() { f64::INFINITY } else { err };
            cmp.max_abs_error = cmp.max_abs_error.max(err);
            if err > tolerance {
                cmp.passed = false;
            }
        }
    }
    cmp
}

fn as_f64(data: &TensorData) -> Vec<f64> {
    match data {
        TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::I8(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::U8(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::I16(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
        TensorData::Bool(v) => v.iter().map(|&x| f64::from(u8::from(x))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(v: &[f32]) -> Tensor {
        Tensor::new(vec![v.len()], TensorData::F32(v.to_vec())).unwrap()
    }

    #[test]
    fn float_outputs_pass_within_the_relative_tolerance() {
        let cmp = compare_outputs(&[f32s(&[100.0, 1.0])], &[f32s(&[100.005, 1.0])]);
        assert!(cmp.passed, "5e-3 is within 1e-4 of 100");
        assert!((cmp.max_abs_error - 0.005).abs() < 1e-3);
        let cmp = compare_outputs(&[f32s(&[100.0, 1.0])], &[f32s(&[100.5, 1.0])]);
        assert!(!cmp.passed);
    }

    #[test]
    fn nan_matches_only_nan_and_integers_are_exact() {
        assert!(compare_outputs(&[f32s(&[f32::NAN])], &[f32s(&[f32::NAN])]).passed);
        let cmp = compare_outputs(&[f32s(&[0.0])], &[f32s(&[f32::NAN])]);
        assert!(!cmp.passed && cmp.max_abs_error.is_infinite());
        let i = |v: i32| Tensor::new(vec![1], TensorData::I32(vec![v])).unwrap();
        assert!(compare_outputs(&[i(7)], &[i(7)]).passed);
        assert!(!compare_outputs(&[i(7)], &[i(8)]).passed);
    }

    #[test]
    fn shape_or_count_mismatch_fails() {
        assert!(!compare_outputs(&[f32s(&[1.0, 2.0])], &[f32s(&[1.0])]).passed);
        assert!(!compare_outputs(&[], &[f32s(&[1.0])]).passed);
    }
}
