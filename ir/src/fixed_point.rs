//! Integer-only requantization, as the TFLite int8 specification defines it: a real multiplier
//! becomes a 31-bit fixed-point mantissa and a power-of-two shift at compile time, and the
//! accumulator is rescaled at run time with gemmlowp's double rounding (the default of TFLite,
//! TFLM and CMSIS-NN), so kiln's results match LiteRT's bit for bit where the model came from
//! TFLite.
//!
//! Everything here is the reference: the interpreter calls it, the kernel lowerings emit the
//! same steps (`kiln_requantize` in the C runtime, the same instruction sequence in Cranelift),
//! and the tests pin the rounding on the edge cases.

/// A real multiplier `m * 2^shift / 2^31`, with `m` in `[2^30, 2^31)` (or 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedPoint {
    pub multiplier: i32,
    /// Positive: shift left before the high multiply; negative: rounding shift right after.
    pub shift: i32,
}

impl FixedPoint {
    /// TFLite's `QuantizeMultiplier`: `frexp`, the mantissa rounded half away from zero to 31
    /// bits (a mantissa that rounds up to 2^31 is halved and the exponent incremented), and
    /// multipliers below 2^-31 flushed to zero. `real` must be finite and non-negative.
    pub fn from_real(real: f64) -> FixedPoint {
        if real <= 0.0 || !real.is_finite() {
            return FixedPoint {
                multiplier: 0,
                shift: 0,
            };
        }
        let (mantissa, mut exponent) = frexp(real);
        let mut q = (mantissa * 2f64.powi(31)).round() as i64;
        if q == 1i64 << 31 {
            q /= 2;
            exponent += 1;
        }
        if exponent < -31 {
            return FixedPoint {
                multiplier: 0,
                shift: 0,
            };
        }
        FixedPoint {
            multiplier: q as i32,
            shift: exponent,
        }
    }

    /// The real value this fixed-point number stands for.
    pub fn to_real(self) -> f64 {
        f64::from(self.multiplier) * 2f64.powi(self.shift - 31)
    }

    /// `x * real`, rounded as TFLite's `MultiplyByQuantizedMultiplier` does.
    pub fn apply(self, x: i32) -> i32 {
        multiply_by_quantized_multiplier(x, self.multiplier, self.shift)
    }
}

/// `frexp`: `x = mantissa * 2^exponent` with `mantissa` in `[0.5, 1)`, for finite positive `x`.
fn frexp(x: f64) -> (f64, i32) {
    let bits = x.to_bits();
    let raw_exp = ((bits >> 52) & 0x7ff) as i32;
    if raw_exp == 0 {
        // Subnormal: scale into the normal range first.
        let (m, e) = frexp(x * 2f64.powi(64));
        return (m, e - 64);
    }
    let exponent = raw_exp - 1022;
    let mantissa = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (mantissa, exponent)
}

/// gemmlowp's `SaturatingRoundingDoublingHighMul`: the high 32 bits of `2 * a * b`, rounded
/// half up (the nudge), with the one overflowing case saturated.
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = i64::from(a) * i64::from(b);
    let nudge = if ab >= 0 {
        1i64 << 30
    } else {
        1 - (1i64 << 30)
    };
    // Integer division truncates toward zero, as in gemmlowp (not an arithmetic shift).
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// gemmlowp's `RoundingDivideByPOT`: `x / 2^exponent`, rounded half away from zero.
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    if exponent <= 0 {
        return x;
    }
    let mask = (1i64 << exponent) - 1;
    let remainder = i64::from(x) & mask;
    let threshold = (mask >> 1) + i64::from(x < 0);
    (i64::from(x) >> exponent) as i32 + i32::from(remainder > threshold)
}

/// TFLite's `MultiplyByQuantizedMultiplier` (double rounding): `x * 2^left` (wrapping, as in
/// C on two's complement; the compiler's accumulator bound keeps it in range), the rounding
/// doubling high multiply by `multiplier`, then a rounding right shift.
pub fn multiply_by_quantized_multiplier(x: i32, multiplier: i32, shift: i32) -> i32 {
    let left = shift.clamp(0, 31);
    let right = shift.saturating_neg().clamp(0, 31);
    let shifted = x.wrapping_mul(1i32.wrapping_shl(left as u32));
    rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(shifted, multiplier),
        right,
    )
}

/// How integer ops round.
///
/// `HalfEven` is the default: it reproduces the reference outputs of every model tried bit
/// for bit (onnxruntime on QDQ models; LiteRT on x86, whose XNNPACK kernels requantize in
/// f32 with ties to even, on the MLPerf Tiny models converted from TFLite). `TfLite` is the
/// fixed-point scheme of TFLite's reference kernels, TFLM and CMSIS-NN, for bit-exactness
/// with those on a microcontroller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Rounding {
    /// gemmlowp double rounding in requantization (a rounding high multiply, then a rounding
    /// shift, halves away from zero), and halves away from zero in average pools.
    TfLite,
    /// One rounding of the exact product `x * multiplier * 2^(shift - 31)`, halves to even.
    #[default]
    HalfEven,
}

impl Rounding {
    /// `x * multiplier * 2^(shift - 31)`, rounded the way this convention does.
    pub fn apply(self, x: i32, fp: FixedPoint) -> i32 {
        match self {
            Rounding::TfLite => multiply_by_quantized_multiplier(x, fp.multiplier, fp.shift),
            Rounding::HalfEven => multiply_half_even(x, fp.multiplier, fp.shift),
        }
    }

    /// As [`Rounding::apply`], with the multiplier and shift given apart.
    pub fn requantize(self, x: i32, multiplier: i32, shift: i32) -> i32 {
        self.apply(x, FixedPoint { multiplier, shift })
    }
}

/// `x * multiplier * 2^(shift - 31)` rounded once, halves to even, saturated to i32: the
/// 64-bit product shifted right by `31 - shift` bits.
///
/// `shift` is taken within `-31..=31` (as for the double-rounding form), so the right shift is
/// 0 to 62 bits of a product that always fits i64.
pub fn multiply_half_even(x: i32, multiplier: i32, shift: i32) -> i32 {
    let p = i64::from(x) * i64::from(multiplier);
    let r = 31 - shift.clamp(-31, 31);
    let q = if r == 0 {
        p
    } else {
        let q = p >> r;
        let rem = p - (q << r);
        let half = 1i64 << (r - 1);
        q + i64::from(rem > half || (rem == half && q & 1 == 1))
    };
    q.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// The representable range of an 8-bit (or 16-bit) quantized type.
pub fn qrange(dtype: crate::DType) -> Option<(i32, i32)> {
    match dtype {
        crate::DType::I8 => Some((-128, 127)),
        crate::DType::U8 => Some((0, 255)),
        crate::DType::I16 => Some((-32768, 32767)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipliers_round_trip() {
        for real in [
            1.0,
            0.5,
            0.75,
            0.0003,
            1.0 / 3.0,
            2.5,
            1e-9,
            0.999_999_999_9,
        ] {
            let fp = FixedPoint::from_real(real);
            assert!(
                (fp.to_real() - real).abs() <= real * 2f64.powi(-30),
                "{real}"
            );
            assert!(fp.multiplier >= 1 << 30, "{real}: mantissa {fp:?}");
        }
        // A mantissa that rounds up to 2^31 moves to the next exponent.
        let fp = FixedPoint::from_real(1.0 - 2f64.powi(-40));
        assert_eq!(
            fp,
            FixedPoint {
                multiplier: 1 << 30,
                shift: 1
            }
        );
        assert_eq!(FixedPoint::from_real(0.0).multiplier, 0);
        assert_eq!(FixedPoint::from_real(1e-12).multiplier, 0, "below 2^-31");
    }

    #[test]
    fn high_mul_rounds_half_up_and_saturates() {
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN),
            i32::MAX
        );
        // 2 * a * b / 2^32 with a = 2^30, b = 3: exactly 1.5 -> 2; -1.5 -> -1 (half up).
        assert_eq!(saturating_rounding_doubling_high_mul(1 << 30, 3), 2);
        assert_eq!(saturating_rounding_doubling_high_mul(-(1 << 30), 3), -1);
    }

    #[test]
    fn divide_by_pot_rounds_half_away_from_zero() {
        assert_eq!(rounding_divide_by_pot(5, 1), 3);
        assert_eq!(rounding_divide_by_pot(-5, 1), -3);
        assert_eq!(rounding_divide_by_pot(4, 1), 2);
        assert_eq!(rounding_divide_by_pot(-7, 2), -2);
        assert_eq!(rounding_divide_by_pot(-6, 2), -2);
        assert_eq!(rounding_divide_by_pot(6, 2), 2);
        assert_eq!(rounding_divide_by_pot(7, 0), 7);
    }

    #[test]
    fn half_even_rounds_once() {
        // 2^30 * 2^(0 - 31) = 1/2: 5/2 -> 2, 7/2 -> 4, -5/2 -> -2.
        assert_eq!(multiply_half_even(5, 1 << 30, 0), 2);
        assert_eq!(multiply_half_even(7, 1 << 30, 0), 4);
        assert_eq!(multiply_half_even(-5, 1 << 30, 0), -2);
        assert_eq!(multiply_half_even(-7, 1 << 30, 0), -4);
        assert_eq!(multiply_half_even(6, 1 << 30, 0), 3);
        // Multiplier 1 (2^30 * 2^1 / 2^31) is exact; a large left shift saturates.
        assert_eq!(multiply_half_even(-123, 1 << 30, 1), -123);
        assert_eq!(multiply_half_even(1 << 30, 1 << 30, 10), i32::MAX);
        // Shifts beyond +-31 are clamped, as the kernels clamp them.
        assert_eq!(multiply_half_even(-1000, 1 << 30, i32::MIN), 0);
        assert_eq!(
            multiply_by_quantized_multiplier(-1000, 1 << 30, i32::MIN),
            0
        );
        let mut s = 777u32;
        for _ in 0..20_000 {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let x = (s >> 8) as i32 - (1 << 23);
            let real = f64::from((s >> 3) % 10_000 + 1) / 7_919.0 * 2f64.powi(-((s % 13) as i32));
            let fp = FixedPoint::from_real(real);
            let exact = f64::from(x) * fp.to_real();
            let got = Rounding::HalfEven.apply(x, fp);
            assert!((f64::from(got) - exact).abs() <= 0.5, "{x} * {real}: {got}");
        }
    }

    #[test]
    fn requantize_matches_real_arithmetic_within_one() {
        let mut s = 12345u32;
        for _ in 0..20_000 {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let x = (s >> 8) as i32 - (1 << 23);
            let real = f64::from((s >> 3) % 10_000 + 1) / 7_919.0 * 2f64.powi(-((s % 13) as i32));
            let fp = FixedPoint::from_real(real);
            let got = fp.apply(x);
            let want = f64::from(x) * real;
            // Double rounding: the high multiply rounds, then the shift rounds again.
            assert!((f64::from(got) - want).abs() < 1.0, "{x} * {real}: {got}");
        }
    }
}
