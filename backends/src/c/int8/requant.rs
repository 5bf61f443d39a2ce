//! The output stage of the int8 kernels: an i32 accumulator requantized by its channel's
//! multiplier and shift, clamped to the output range and offset by the zero point, exactly as
//! `QOut::store(rounding.requantize(acc, m, shift))` computes it.
//!
//! Knowing every multiplier, shift and weight at compile time, kiln picks the cheapest form
//! that is exact for every accumulator the layer can produce (`|acc| <= bound`, from the bias
//! and the weights):
//! - half-even: `x * m` is a multiple of `2^t` (`t` trailing zeros of `m`), so a tie (the low
//!   `r = 31 - shift` bits of the product equal `2^(r-1)`) needs `x` to be a multiple of
//!   `2^(r-1-t)`; when that exceeds the bound, no tie can occur, rounding half up equals
//!   rounding half to even, and for `r >= 33` the result is `(mulhi(x, m) + 2^(s-1)) >> s`
//!   with `s = r - 32` (three instructions: the high multiply's discarded low word cannot
//!   change the floor). `r = 32` adds `2^31` to the 64-bit product instead.
//! - tflite (no left shift): the rounding doubling high multiply, then the rounding right
//!   shift as `(h + 2^(e-1) - (h < 0)) >> e`, which cannot overflow under the bound.
//! - otherwise the runtime's exact functions.

use kiln_ir::fixed_point::Rounding;
use kiln_ir::{DType, QOut};

/// How a layer's accumulators are rescaled.
#[derive(Clone, Debug, PartialEq)]
enum Form {
    /// `(kiln_mulhi(acc, m) + 2^(s-1)) >> s` with `s = -shift - 1 >= 1`: `Some(s)` when every
    /// channel has the same shift.
    HalfUp(Option<i32>),
    /// `shift == -1` everywhere: the 64-bit product plus `2^31`, high word.
    HalfUpWord,
    /// TFLite's double rounding without a left shift: `Some(e)` (`e = -shift`) when uniform.
    TfLite(Option<i32>),
    /// The runtime's `kiln_requantize_half_even` / `kiln_requantize`.
    Exact(Rounding),
}

/// The requantization, clamp and zero point of one layer's outputs.
#[derive(Clone, Debug)]
pub(super) struct OutputStage {
    form: Form,
    out: QOut,
    /// The multiplier when every channel shares one.
    uniform_multiplier: Option<i32>,
}

impl OutputStage {
    /// The cheapest exact form for channels with `multipliers` and `shifts` (one entry, or one
    /// per channel) whose accumulators stay within `bounds` (one per channel).
    pub fn new(
        rounding: Rounding,
        out: QOut,
        multipliers: &[i32],
        shifts: &[i32],
        bounds: &[i64],
    ) -> OutputStage {
        let channels = bounds.len();
        let at = |v: &[i32], c: usize| v.get(c).or(v.first()).copied().unwrap_or(0);
        let uniform = |v: &[i32]| v.iter().all(|&x| Some(&x) == v.first());
        let shift_uniform = uniform(shifts);
        let form = match rounding {
            Rounding::HalfEven => {
                let no_tie = (0..channels).all(|c| {
                    let (m, shift) = (at(multipliers, c), at(shifts, c));
                    let r = 31 - i64::from(shift.clamp(-31, 31));
                    let t = i64::from(m.trailing_zeros().min(31));
                    // A tie needs |x| >= 2^(r-1-t); none is possible beyond the bound.
                    let need = r - 1 - t;
                    m > 0 && shift <= -1 && (need >= 63 || (1i64 << need.max(0)) > bounds[c])
                });
                let all_s =
                    |pred: &dyn Fn(i32) -> bool| (0..channels).all(|c| pred(-at(shifts, c) - 1));
                if !no_tie {
                    Form::Exact(rounding)
                } else if all_s(&|s| s == 0) {
                    Form::HalfUpWord
                } else if all_s(&|s| (1..=30).contains(&s)) {
                    Form::HalfUp(shift_uniform.then(|| -at(shifts, 0) - 1))
                } else {
                    Form::Exact(rounding)
                }
            }
            Rounding::TfLite => {
                let fits = (0..channels).all(|c| {
                    let (m, shift) = (at(multipliers, c), at(shifts, c));
                    // |h| <= |acc| * m / 2^31 + 1 <= bound + 1, plus the half.
                    let half = if shift < 0 { 1i64 << (-shift - 1) } else { 0 };
                    m >= 0 && (-30..=0).contains(&shift) && bounds[c] + 2 + half < 1 << 31
                });
                if fits {
                    Form::TfLite(shift_uniform.then(|| -at(shifts, 0)))
                } else {
                    Form::Exact(rounding)
                }
            }
        };
        OutputStage {
            form,
            out,
            uniform_multiplier: (multipliers.len() == 1 || uniform(multipliers))
                .then(|| at(multipliers, 0)),
        }
    }

    /// The C type of a stored element.
    pub fn c_type(&self) -> &'static str {
        if self.out.dtype == DType::U8 {
            "uint8_t"
        } else {
            "int8_t"
        }
    }

    /// Whether the per-channel multiplier must be loaded (it differs between channels).
    pub fn needs_multiplier(&self) -> bool {
        self.uniform_multiplier.is_none()
    }

    /// Whether the per-channel shift must be loaded.
    pub fn needs_shift(&self) -> bool {
        matches!(
            self.form,
            Form::HalfUp(None) | Form::TfLite(None) | Form::Exact(_)
        )
    }

    /// The multiplier expression: a literal when uniform, else `m`.
    fn multiplier(&self, m: &str) -> String {
        match self.uniform_multiplier {
            Some(v) => v.to_string(),
            None => m.to_string(),
        }
    }

    /// A `static inline` function `name(acc, m, sh)` giving the value to store for an
    /// accumulator with multiplier `m` and shift `sh` (read only where they vary by channel).
    pub fn function(&self, name: &str) -> String {
        let m = self.multiplier("m");
        let q = match &self.form {
            Form::HalfUp(Some(s)) => format!("(kiln_mulhi(acc, {m}) + {}) >> {s}", 1i64 << (s - 1)),
            Form::HalfUp(None) => {
                format!("(kiln_mulhi(acc, {m}) + (1 << (-sh - 2))) >> (-sh - 1)")
            }
            Form::HalfUpWord => {
                format!("(int32_t)(((int64_t)acc * {m} + INT64_C(0x80000000)) >> 32)")
            }
            Form::TfLite(e) => {
                let high = format!("(int32_t)(((int64_t)acc * {m} + (1 << 30)) >> 31)");
                match e {
                    Some(0) => high,
                    Some(e) => {
                        return self.wrap(
                            name,
                            &[
                                format!("const int32_t h = {high};"),
                                format!("int32_t q = (h + {} - (h < 0)) >> {e};", 1i64 << (e - 1)),
                            ],
                        )
                    }
                    None => return self.wrap(
                        name,
                        &[
                            format!("const int32_t h = {high};"),
                            "int32_t q = sh == 0 ? h : (h + (1 << (-sh - 1)) - (h < 0)) >> -sh;"
                                .to_string(),
                        ],
                    ),
                }
            }
            Form::Exact(Rounding::HalfEven) => format!("kiln_requantize_half_even(acc, {m}, sh)"),
            Form::Exact(Rounding::TfLite) => format!("kiln_requantize(acc, {m}, sh)"),
        };
        self.wrap(name, &[format!("int32_t q = {q};")])
    }

    fn wrap(&self, name: &str, body: &[String]) -> String {
        let zp = i64::from(self.out.zero_point);
        let (lo, hi) = (i64::from(self.out.min) - zp, i64::from(self.out.max) - zp);
        let mut s =
            format!("static inline int32_t {name}(int32_t acc, int32_t m, int32_t sh) {{\n");
        if !self.needs_multiplier() {
            s.push_str("    (void)m;\n");
        }
        if !self.needs_shift() {
            s.push_str("    (void)sh;\n");
        }
        for l in body {
            s.push_str(&format!("    {l}\n"));
        }
        let offset = match zp {
            0 => String::new(),
            z if z < 0 => format!(" - {}", -z),
            z => format!(" + {z}"),
        };
        s.push_str(&format!(
            "    return (q < {lo} ? {lo} : (q > {hi} ? {hi} : q)){offset};\n}}\n"
        ));
        s
    }
}

/// `|acc|` bound of each output channel: the bias plus the largest sum the weights can make
/// with inputs in `x_range` (padding reads the zero point, which lies in that range too).
pub(super) fn bounds(bias: &[i32], weights: &[i8], x_range: (i64, i64)) -> Vec<i64> {
    let xmax = x_range.0.abs().max(x_range.1.abs());
    let k = weights.len() / bias.len().max(1);
    bias.iter()
        .enumerate()
        .map(|(c, &b)| {
            let w: i64 = weights[c * k..(c + 1) * k]
                .iter()
                .map(|&w| i64::from(w).abs())
                .sum();
            i64::from(b).abs() + w * xmax
        })
        .collect()
}
