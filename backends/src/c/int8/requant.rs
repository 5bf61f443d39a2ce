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
//!
//! A channel whose multiplier is 0 requantizes everything to 0 whatever its shift: its shift
//! is normalized so it never forces the slow form. The values that vary between channels are
//! read from a per-channel record table the kernel gets in place of the multiplier input;
//! the others are literals in the code.

use kiln_ir::fixed_point::Rounding;
use kiln_ir::{DType, QOut};

/// How a layer's accumulators are rescaled.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Form {
    /// `(kiln_mulhi(acc, m) + r) >> s` with `s = -shift - 1` in `1..=30`, `r = 2^(s-1)`.
    HalfUp,
    /// `shift == -1` everywhere: the 64-bit product plus `2^31`, high word.
    HalfUpWord,
    /// TFLite's double rounding without a left shift, `e = -shift` in `1..=30` (or 0
    /// everywhere), `r = 2^(e-1)`.
    TfLite,
    /// The runtime's `kiln_requantize_half_even` / `kiln_requantize`, with the shift.
    Exact(Rounding),
}

/// One value the output stage reads: a literal when every channel has the same, else a
/// field of the channel records.
#[derive(Clone, Debug)]
struct Field {
    values: Vec<i32>,
    uniform: bool,
}

impl Field {
    fn new(values: Vec<i32>) -> Field {
        let uniform = values.iter().all(|v| Some(v) == values.first());
        Field { values, uniform }
    }
}

/// The requantization, clamp and zero point of one layer's outputs.
#[derive(Clone, Debug)]
pub(super) struct OutputStage {
    form: Form,
    out: QOut,
    /// The multiplier, the shift-like value `a` and the rounding-like value `b` per channel
    /// (their meaning depends on the form).
    fields: [Field; 3],
}

/// The local names of a channel's fields in generated code.
const NAMES: [&str; 3] = ["rm", "ra", "rb"];

impl OutputStage {
    /// The cheapest exact form for `channels` output channels with `multipliers` and
    /// `shifts` (one entry, or one per channel) whose accumulators stay within `bounds`.
    pub fn new(
        rounding: Rounding,
        out: QOut,
        multipliers: &[i32],
        shifts: &[i32],
        bounds: &[i64],
    ) -> OutputStage {
        let channels = bounds.len();
        let at = |v: &[i32], c: usize| v.get(c).or(v.first()).copied().unwrap_or(0);
        let m: Vec<i32> = (0..channels).map(|c| at(multipliers, c)).collect();
        let shift: Vec<i32> = (0..channels).map(|c| at(shifts, c)).collect();
        // Channels that compute something (a zero multiplier gives 0 under any form).
        let live: Vec<usize> = (0..channels).filter(|&c| m[c] != 0).collect();
        let form = match rounding {
            Rounding::HalfEven => {
                let no_tie = live.iter().all(|&c| {
                    let r = 31 - i64::from(shift[c].clamp(-31, 31));
                    let t = i64::from(m[c].trailing_zeros().min(31));
                    // A tie needs |x| >= 2^(r-1-t); none is possible within the bound.
                    let need = r - 1 - t;
                    m[c] > 0 && shift[c] <= -1 && (need >= 63 || (1i64 << need.max(0)) > bounds[c])
                });
                if !no_tie {
                    Form::Exact(rounding)
                } else if live.iter().all(|&c| shift[c] == -1) {
                    Form::HalfUpWord
                } else if live.iter().all(|&c| (-31..=-2).contains(&shift[c])) {
                    Form::HalfUp
                } else {
                    Form::Exact(rounding)
                }
            }
            Rounding::TfLite => {
                let fits = live.iter().all(|&c| {
                    // |h| <= |acc| * m / 2^31 + 1 <= bound + 1, plus the half.
                    let half = if shift[c] < 0 {
                        1i64 << (-shift[c] - 1)
                    } else {
                        0
                    };
                    m[c] > 0 && (-30..=0).contains(&shift[c]) && bounds[c] + 2 + half < 1 << 31
                });
                let all_zero = live.iter().all(|&c| shift[c] == 0);
                let all_right = live.iter().all(|&c| shift[c] <= -1);
                if fits && (all_zero || all_right) {
                    Form::TfLite
                } else {
                    Form::Exact(rounding)
                }
            }
        };
        let first_live = live.first().copied();
        let (a, b): (Vec<i32>, Vec<i32>) = (0..channels)
            .map(|c| {
                let dead = m[c] == 0;
                // A dead channel takes a live one's shift, so it keeps the field uniform.
                let shift_c = match (dead, first_live) {
                    (true, Some(l)) => shift[l],
                    _ => shift[c],
                };
                match form {
                    Form::HalfUp => {
                        let s = if dead && first_live.is_none() {
                            1
                        } else {
                            -shift_c - 1
                        };
                        (s, 1 << (s - 1))
                    }
                    Form::TfLite => {
                        // Dead channels copy a live one's shift (0 stays 0 for `0 + r >> e`).
                        let e = match (dead, first_live) {
                            (true, Some(l)) => -shift[l],
                            (true, None) => 0,
                            (false, _) => -shift[c],
                        };
                        (e, if e > 0 { 1 << (e - 1) } else { 0 })
                    }
                    Form::HalfUpWord => (0, 0),
                    Form::Exact(_) => (shift_c, 0),
                }
            })
            .unzip();
        OutputStage {
            form,
            out,
            fields: [Field::new(m), Field::new(a), Field::new(b)],
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

    /// Which fields the form reads at all.
    fn used(&self) -> [bool; 3] {
        match self.form {
            Form::HalfUp | Form::TfLite => [true, true, true],
            Form::HalfUpWord => [true, false, false],
            Form::Exact(_) => [true, true, false],
        }
    }

    /// Which fields vary between channels (read from the records).
    fn varying(&self) -> [bool; 3] {
        let used = self.used();
        [0, 1, 2].map(|i| used[i] && !self.fields[i].uniform)
    }

    /// Words per channel record (0: every channel is the same; no table).
    pub fn record_len(&self) -> usize {
        self.varying().iter().filter(|&&v| v).count()
    }

    /// The channel records, channel after channel.
    pub fn records(&self) -> Vec<i32> {
        let varying = self.varying();
        let channels = self.fields[0].values.len();
        (0..channels)
            .flat_map(|c| {
                (0..3)
                    .filter(|&i| varying[i])
                    .map(move |i| self.fields[i].values[c])
            })
            .collect()
    }

    /// Statements loading channel `c`'s varying fields (from the record table `table`) into
    /// locals suffixed `i`.
    pub fn load(&self, table: &str, c: &str, i: usize) -> Vec<String> {
        let len = self.record_len();
        let mut pos = 0;
        let mut out = Vec::new();
        for (f, name) in NAMES.iter().enumerate() {
            if self.varying()[f] {
                out.push(format!(
                    "const int32_t {name}{i} = {table}[({c}) * {len} + {pos}];"
                ));
                pos += 1;
            }
        }
        out
    }

    /// The call of output function `name` on accumulator `acc` of the channel loaded with
    /// suffix `i`.
    pub fn call(&self, name: &str, acc: &str, i: usize) -> String {
        format!("{name}({acc}, {})", self.fields_args(i))
    }

    /// The channel arguments `rm, ra, rb` of an output function for the channel loaded with
    /// suffix `i` (0 for the fields every channel shares).
    pub fn fields_args(&self, i: usize) -> String {
        let v = self.varying();
        let arg = |f: usize| {
            if v[f] {
                format!("{}{i}", NAMES[f])
            } else {
                "0".to_string()
            }
        };
        format!("{}, {}, {}", arg(0), arg(1), arg(2))
    }

    /// A `static inline` function `name(acc, rm, ra, rb)` giving the value to store for an
    /// accumulator; the arguments are the channel's varying fields (0 where uniform).
    pub fn function(&self, name: &str) -> String {
        let v = self.varying();
        let val = |f: usize| {
            if v[f] {
                NAMES[f].to_string()
            } else {
                self.fields[f]
                    .values
                    .first()
                    .copied()
                    .unwrap_or(0)
                    .to_string()
            }
        };
        let (m, a, b) = (val(0), val(1), val(2));
        let body: Vec<String> = match self.form {
            Form::HalfUp => vec![format!(
                "const int32_t q = (kiln_mulhi(acc, {m}) + {b}) >> {a};"
            )],
            Form::HalfUpWord => vec![format!(
                "const int32_t q = (int32_t)(((int64_t)acc * {m} + INT64_C(0x80000000)) >> 32);"
            )],
            Form::TfLite => vec![
                format!("const int32_t h = (int32_t)(((int64_t)acc * {m} + (1 << 30)) >> 31);"),
                if self.fields[1].uniform && self.fields[1].values.first() == Some(&0) {
                    "const int32_t q = h;".to_string()
                } else {
                    format!("const int32_t q = (h + {b} - (h < 0)) >> {a};")
                },
            ],
            Form::Exact(Rounding::HalfEven) => {
                vec![format!(
                    "const int32_t q = kiln_requantize_half_even(acc, {m}, {a});"
                )]
            }
            Form::Exact(Rounding::TfLite) => {
                vec![format!("const int32_t q = kiln_requantize(acc, {m}, {a});")]
            }
        };
        let zp = i64::from(self.out.zero_point);
        let (lo, hi) = (i64::from(self.out.min) - zp, i64::from(self.out.max) - zp);
        let mut s = format!(
            "static inline int32_t {name}(int32_t acc, int32_t rm, int32_t ra, int32_t rb) {{\n"
        );
        for (f, name) in NAMES.iter().enumerate() {
            if !v[f] {
                s.push_str(&format!("    (void){name};\n"));
            }
        }
        for l in body {
            s.push_str(&format!("    {l}\n"));
        }
        let offset = match zp {
            0 => String::new(),
            z if z < 0 => format!(" - {}", -z),
            z => format!(" + {z}"),
        };
        // The half-up forms give |q| <= 2^30, so q + zp cannot overflow: one saturation.
        let range = (self.out.dtype, self.out.min, self.out.max);
        let fast = matches!(self.form, Form::HalfUp | Form::HalfUpWord);
        let ret = match range {
            (DType::I8, -128, 127) if fast => format!("kiln_ssat8(q{offset})"),
            (DType::U8, 0, 255) if fast => format!("kiln_usat8(q{offset})"),
            _ => format!("(q < {lo} ? {lo} : (q > {hi} ? {hi} : q)){offset}"),
        };
        s.push_str(&format!("    return {ret};\n}}\n"));
        s
    }
}

impl OutputStage {
    /// Whether [`OutputStage::vector_function`] exists for this stage (the forms Helium
    /// computes exactly lane by lane).
    pub fn vectorizes(&self) -> bool {
        matches!(self.form, Form::HalfUp | Form::HalfUpWord | Form::TfLite)
    }

    /// A `static inline` function `name(y, acc, rm, ra, rb, n)` storing the outputs of four
    /// accumulators of one channel to `y[0..n]` with the Helium helpers of the runtime
    /// header: the same integers as [`OutputStage::function`] (VMULH, VRMULH and VQRDMULH
    /// give exactly the scalar forms' high words; VRSHL rounds half up without overflow).
    pub fn vector_function(&self, name: &str) -> Option<String> {
        let v = self.varying();
        let val = |f: usize| {
            if v[f] {
                NAMES[f].to_string()
            } else {
                self.fields[f]
                    .values
                    .first()
                    .copied()
                    .unwrap_or(0)
                    .to_string()
            }
        };
        let (m, a) = (val(0), val(1));
        let body: Vec<String> = match self.form {
            Form::HalfUp => vec![format!(
                "const kiln_i32x4 q = kiln_vrshr(kiln_vmulhi_n(acc, {m}), {a});"
            )],
            Form::HalfUpWord => vec![format!("const kiln_i32x4 q = kiln_vrmulhi_n(acc, {m});")],
            Form::TfLite => {
                if self.fields[1].uniform && self.fields[1].values.first() == Some(&0) {
                    vec![format!("const kiln_i32x4 q = kiln_vqrdmulh_n(acc, {m});")]
                } else {
                    vec![format!(
                        "const kiln_i32x4 q = kiln_vrshr(kiln_vdecneg(kiln_vqrdmulh_n(acc, {m})), {a});"
                    )]
                }
            }
            Form::Exact(_) => return None,
        };
        let mut s = format!(
            "static inline void {name}({} *y, kiln_i32x4 acc, int32_t rm, int32_t ra, int32_t rb, int32_t n) {{\n",
            self.c_type()
        );
        for (f, name) in NAMES.iter().enumerate() {
            if !v[f] || f == 2 {
                // The rounding term is implied by VRSHL's shift.
                s.push_str(&format!("    (void){name};\n"));
            }
        }
        for l in body {
            s.push_str(&format!("    {l}\n"));
        }
        // Clamped before the zero point is added, as the scalar form does: q + zp could wrap.
        let zp = i64::from(self.out.zero_point);
        s.push_str(&format!(
            "    kiln_vst8x4(y, kiln_vclamp_add(q, {zp}, {}, {}), n);\n}}\n",
            i64::from(self.out.min) - zp,
            i64::from(self.out.max) - zp
        ));
        Some(s)
    }
}

/// The values an int8 kernel's input of type `dtype` (i8 or u8) can take.
pub(super) fn input_range(dtype: kiln_ir::DType) -> (i64, i64) {
    if dtype == kiln_ir::DType::U8 {
        (0, 255)
    } else {
        (-128, 127)
    }
}

/// `|acc|` bound of each output channel: the bias plus the largest sum the weights can make
/// with inputs in `x_range` (padding reads the zero point, which lies in that range too).
/// `weights` holds each channel's weights one channel after the other.
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
