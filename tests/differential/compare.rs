//! Comparison of a backend's outputs with onnxruntime's: the tolerance rule of the test's
//! module docs (`1e-4 * max(1, scale)` for floats, equality otherwise), how close passing
//! outputs came to it, and the verdict on one run.

use kiln_ir::{Tensor, TensorData};

use super::{Case, Kind, Outcome};

/// Relative tolerance against `max(1, scale)`; see the module docs of `differential.rs`.
const RTOL: f64 = 1e-4;

/// Compares `got` with onnxruntime's outputs; returns the first problem, or the largest error
/// ratio (error / allowed error) over all float outputs.
fn compare(case: &Case, got: &[Tensor]) -> Result<Errors, String> {
    compare_to(&case.want, &case.scales, got).map_err(|e| {
        if !case.reference.is_empty() && compare_to(&case.reference, &case.scales, got).is_ok() {
            format!(
                "{e} [kiln matches the onnx reference implementation; onnxruntime departs from it]"
            )
        } else {
            e
        }
    })
}

/// How close passing outputs came to the tolerance: the largest error as a fraction of the
/// allowed error, under the test's rule (`scaled`) and under the plain `1e-4 * max(1, |want|)`
/// rule (`plain`), and how many outputs the plain rule would have failed.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Errors {
    pub(super) scaled: f64,
    pub(super) plain: f64,
    pub(super) plain_failures: usize,
}

impl Errors {
    pub(super) fn merge(&mut self, o: Errors) {
        self.scaled = self.scaled.max(o.scaled);
        self.plain = self.plain.max(o.plain);
        self.plain_failures += o.plain_failures;
    }
}

/// A float as the message needs it: plain, or in exponent form when large or tiny.
fn num(v: f32) -> String {
    if v != 0.0 && v.is_finite() && !(1e-4..1e6).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

fn compare_to(want: &[Tensor], scales: &[f64], got: &[Tensor]) -> Result<Errors, String> {
    if got.len() != want.len() {
        return Err(format!("{} outputs, expected {}", got.len(), want.len()));
    }
    let mut worst = Errors::default();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g.dtype() != w.dtype() || g.shape() != w.shape() {
            return Err(format!(
                "output {i}: {}{:?}, expected {}{:?}",
                g.dtype(),
                g.shape(),
                w.dtype(),
                w.shape()
            ));
        }
        let scale = scales.get(i).copied().unwrap_or(0.0).max(1.0);
        match (g.data(), w.data()) {
            (TensorData::F32(gv), TensorData::F32(wv)) => {
                let allowed = RTOL * scale;
                let mut first: Option<(usize, f32, f32)> = None;
                let mut max_err = 0f64;
                for (k, (&a, &b)) in gv.iter().zip(wv).enumerate() {
                    let bad = if a.is_nan() || b.is_nan() {
                        !(a.is_nan() && b.is_nan())
                    } else if a.is_infinite() || b.is_infinite() {
                        a != b
                    } else {
                        let e = (f64::from(a) - f64::from(b)).abs();
                        max_err = max_err.max(e);
                        e > allowed
                    };
                    if bad && first.is_none() {
                        first = Some((k, a, b));
                    }
                }
                if let Some((k, a, b)) = first {
                    return Err(format!(
                        "output {i} {:?}: element {k} is {}, expected {}; max error {max_err:.3e}, allowed {allowed:.1e}",
                        w.shape(),
                        num(a),
                        num(b)
                    ));
                }
                worst.scaled = worst.scaled.max(max_err / allowed);
                let magnitude = wv
                    .iter()
                    .filter(|x| x.is_finite())
                    .fold(1f64, |m, &x| m.max(f64::from(x).abs()));
                let plain = max_err / (RTOL * magnitude);
                worst.plain = worst.plain.max(plain);
                worst.plain_failures += usize::from(plain > 1.0);
            }
            (gd, wd) => {
                if gd != wd {
                    let k = (0..gd.len())
                        .find(|&k| gd.get_f64(k) != wd.get_f64(k))
                        .unwrap_or(0);
                    return Err(format!(
                        "output {i} {:?} ({}): element {k} is {}, expected {}",
                        w.shape(),
                        w.dtype(),
                        gd.get_f64(k),
                        wd.get_f64(k)
                    ));
                }
            }
        }
    }
    Ok(worst)
}

pub(super) fn judge(case: &Case, got: &[Tensor]) -> Outcome {
    match compare(case, got) {
        Ok(errors) => Outcome {
            kind: Kind::Ok,
            detail: String::new(),
            errors,
        },
        Err(e) => Outcome::new(Kind::Mismatch, e),
    }
}
