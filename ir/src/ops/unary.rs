//! One-input element-wise ops (ONNX Abs .. Dropout): shape inference and reference evaluation.
//!
//! Float functions are evaluated in f64 and rounded to f32 once, so the reference is as close to
//! the exact result as f32 allows; backends are compared against it with a tolerance.
//!
//! Cast follows numpy and onnxruntime on x86: float -> integer truncates toward zero, and NaN or
//! out-of-range values give what `cvttss2si` gives: the i32 minimum for i8/u8/i16/i32 (which the
//! narrow types then wrap, e.g. 300.0 -> i8 44 and NaN -> i8 0) and the i64 minimum for i64.
//! Integer -> integer wraps (two's complement); anything -> bool is `x != 0`.

use std::f64::consts::{FRAC_2_SQRT_PI, PI};

use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::op::Op;
use crate::ops::binary::{elems, with_num_type, Num};
use crate::ops::util::{check_arity, make, out_type, wrong_family};
use crate::tensor::{Tensor, TensorData, TensorType};

/// The dtypes ONNX defines an op on (among kiln's), for `infer`.
enum Accepts {
    Any,
    /// f32 and every integer type.
    Numeric,
    /// f32 and the signed integers.
    Signed,
    F32,
    Bool,
}

fn accepts(op: &Op) -> Result<Accepts, OpError> {
    Ok(match op {
        Op::Identity | Op::Cast { .. } => Accepts::Any,
        Op::Abs | Op::Clip { .. } => Accepts::Numeric,
        Op::Neg | Op::Relu => Accepts::Signed,
        Op::Not => Accepts::Bool,
        Op::Sqrt
        | Op::Reciprocal
        | Op::Exp
        | Op::Log
        | Op::Erf
        | Op::Floor
        | Op::Ceil
        | Op::Round
        | Op::Sigmoid
        | Op::Tanh
        | Op::Softplus
        | Op::HardSwish
        | Op::LeakyRelu { .. }
        | Op::Elu { .. }
        | Op::Selu { .. }
        | Op::HardSigmoid { .. }
        | Op::Gelu { .. }
        | Op::Dropout { .. } => Accepts::F32,
        _ => return Err(wrong_family(op)),
    })
}

fn check_dtype(op: &Op, dt: DType) -> Result<(), OpError> {
    let ok = match accepts(op)? {
        Accepts::Any => true,
        Accepts::Numeric => dt != DType::Bool,
        Accepts::Signed => matches!(
            dt,
            DType::F32 | DType::I8 | DType::I16 | DType::I32 | DType::I64
        ),
        Accepts::F32 => dt == DType::F32,
        Accepts::Bool => dt == DType::Bool,
    };
    match (ok, op) {
        (true, _) => Ok(()),
        // ONNX defines Erf on integers, but no runtime implements it and no model needs it.
        (false, Op::Erf) if dt.is_integer() => {
            Err(OpError::Unsupported(format!("Erf on {dt} input")))
        }
        (false, _) => invalid!("{} does not accept {dt} input", op.name()),
    }
}

/// Output types of a unary-family op.
pub fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, OpError> {
    check_arity(op.name(), inputs.len(), 1, 1)?;
    let x = inputs[0];
    check_dtype(op, x.dtype)?;
    let mut out = vec![out_type(x.dtype, x.shape.clone())?];
    match op {
        Op::Cast { to } => out = vec![out_type(*to, x.shape.clone())?],
        Op::Not => out = vec![out_type(DType::Bool, x.shape.clone())?],
        Op::Dropout { mask: true } => out.push(out_type(DType::Bool, x.shape.clone())?),
        _ => {}
    }
    Ok(out)
}

/// Reference evaluation of a unary-family op.
pub fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
    let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
    let type_refs: Vec<&TensorType> = types.iter().collect();
    infer(op, &type_refs)?;
    let x = inputs[0];
    let shape = x.shape().to_vec();
    let data = match op {
        Op::Identity | Op::Dropout { .. } => x.data().clone(),
        Op::Cast { to } => cast(x.data(), *to),
        Op::Not => TensorData::Bool(elems::<bool>("Not", x)?.iter().map(|b| !b).collect()),
        Op::Abs | Op::Neg | Op::Relu | Op::Clip { .. } => {
            with_num_type!(x.dtype(), numeric(op, x), bool => invalid!("{} on bool", op.name()))?
        }
        _ => TensorData::F32(float_unary(op, elems::<f32>(op.name(), x)?)?),
    };
    let mut out = vec![make(Tensor::new(shape.clone(), data))?];
    if let Op::Dropout { mask: true } = op {
        let n = x.numel();
        out.push(make(Tensor::new(shape, TensorData::Bool(vec![true; n])))?);
    }
    Ok(out)
}

/// Clip's bounds with ONNX's defaults filled in: a missing bound is the element type's lowest
/// or largest value, so a float Clip without bounds turns +-inf into +-f32::MAX (as
/// onnxruntime does) rather than passing it through. Given as +-f32::MAX, which every integer
/// type saturates to its own limit.
pub fn clip_bounds(min: Option<f64>, max: Option<f64>) -> (f64, f64) {
    let limit = f64::from(f32::MAX);
    (min.unwrap_or(-limit), max.unwrap_or(limit))
}

fn map<T: Copy, O>(x: &[T], f: impl Fn(T) -> O) -> Vec<O> {
    x.iter().map(|&v| f(v)).collect()
}

/// Clamps keeping NaN (as numpy's `clip` does): comparisons with NaN are false.
fn clamp<T: PartialOrd>(v: T, lo: Option<T>, hi: Option<T>) -> T {
    let v = match lo {
        Some(lo) if v < lo => lo,
        _ => v,
    };
    match hi {
        Some(hi) if v > hi => hi,
        _ => v,
    }
}

/// ONNX Abs, Neg, Relu, Clip: defined on integers as well as f32.
fn numeric<T: Num>(op: &Op, x: &Tensor) -> Result<TensorData, OpError> {
    let v = elems::<T>(op.name(), x)?;
    let out = match op {
        Op::Abs => map(v, T::magnitude),
        Op::Neg => map(v, T::negated),
        Op::Relu => map(v, |a| if a < T::ZERO { T::ZERO } else { a }),
        // When min > max every element becomes max, as ONNX specifies (max is applied last).
        // Integer bounds saturate to the type's range; a missing bound is the type's limit.
        Op::Clip { min, max } => {
            let (lo, hi) = clip_bounds(*min, *max);
            let (lo, hi) = (Some(T::from_f64_sat(lo)), Some(T::from_f64_sat(hi)));
            map(v, |a| clamp(a, lo, hi))
        }
        _ => return Err(wrong_family(op)),
    };
    Ok(T::wrap(out))
}

/// Rounds an f64 result to f32 once.
fn via_f64(x: &[f32], f: impl Fn(f64) -> f64) -> Vec<f32> {
    x.iter().map(|&v| f(f64::from(v)) as f32).collect()
}

/// The f32-only ops.
fn float_unary(op: &Op, x: &[f32]) -> Result<Vec<f32>, OpError> {
    Ok(match op {
        // ONNX Sqrt, Reciprocal, Floor, Ceil, Round: exactly rounded in f32 already.
        Op::Sqrt => map(x, f32::sqrt),
        Op::Reciprocal => map(x, |v| 1.0 / v),
        Op::Floor => map(x, f32::floor),
        Op::Ceil => map(x, f32::ceil),
        Op::Round => map(x, f32::round_ties_even),
        // ONNX Exp, Log, Erf, Tanh.
        Op::Exp => via_f64(x, f64::exp),
        Op::Log => via_f64(x, f64::ln),
        Op::Erf => via_f64(x, erf),
        Op::Tanh => via_f64(x, f64::tanh),
        // ONNX Sigmoid, Softplus, HardSwish, HardSigmoid.
        Op::Sigmoid => via_f64(x, sigmoid),
        Op::Softplus => via_f64(x, softplus),
        Op::HardSwish => via_f64(x, |v| v * clamp(v / 6.0 + 0.5, Some(0.0), Some(1.0))),
        Op::HardSigmoid { alpha, beta } => {
            let (a, b) = (f64::from(*alpha), f64::from(*beta));
            via_f64(x, |v| clamp(a * v + b, Some(0.0), Some(1.0)))
        }
        // ONNX LeakyRelu, Elu, Selu.
        Op::LeakyRelu { alpha } => {
            let a = f64::from(*alpha);
            via_f64(x, |v| if v < 0.0 { a * v } else { v })
        }
        Op::Elu { alpha } => {
            let a = f64::from(*alpha);
            via_f64(x, |v| if v < 0.0 { a * v.exp_m1() } else { v })
        }
        Op::Selu { alpha, gamma } => {
            let (a, g) = (f64::from(*alpha), f64::from(*gamma));
            via_f64(x, |v| if v > 0.0 { g * v } else { g * a * v.exp_m1() })
        }
        // ONNX Gelu: the exact erf form or the tanh approximation.
        Op::Gelu { tanh_approx: false } => via_f64(x, |v| {
            0.5 * v * (1.0 + erf(v * std::f64::consts::FRAC_1_SQRT_2))
        }),
        Op::Gelu { tanh_approx: true } => {
            let k = (2.0 / PI).sqrt();
            via_f64(x, |v| {
                0.5 * v * (1.0 + (k * (v + 0.044715 * v * v * v)).tanh())
            })
        }
        _ => return Err(wrong_family(op)),
    })
}

/// Logistic function, split by sign so that `exp` never overflows into a 0/inf division.
fn sigmoid(v: f64) -> f64 {
    if v >= 0.0 {
        1.0 / (1.0 + (-v).exp())
    } else {
        let e = v.exp();
        e / (1.0 + e)
    }
}

/// `ln(1 + e^v)`, rewritten as `max(v, 0) + ln(1 + e^-|v|)` so large |v| neither overflows nor
/// loses the small term.
fn softplus(v: f64) -> f64 {
    if v.is_nan() {
        return v;
    }
    v.max(0.0) + (-v.abs()).exp().ln_1p()
}

/// The error function, from the series
/// `erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n 2^n x^(2n+1) / (1*3*...*(2n+1))`.
/// Every term is positive, so there is no cancellation: the result is accurate to a few f64 ulp
/// (far below f32 resolution). For |x| >= 6, erf(x) is ±1 even in f64 (erfc(6) is 2e-17).
fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    if a >= 6.0 {
        return 1.0f64.copysign(x);
    }
    let two_a2 = 2.0 * a * a;
    let (mut term, mut sum) = (a, a);
    // The terms peak near n = a^2 and then shrink geometrically: 250 terms cover a < 6.
    for n in 1..250 {
        term *= two_a2 / f64::from(2 * n + 1);
        sum += term;
        if term <= sum * 1e-17 {
            break;
        }
    }
    (FRAC_2_SQRT_PI * (-a * a).exp() * sum).copysign(x)
}

/// ONNX Cast.
fn cast(data: &TensorData, to: DType) -> TensorData {
    match data {
        TensorData::F32(v) => with_num_type!(to, floats_to(v), bool => {
            TensorData::Bool(map(v, |x| x != 0.0))
        }),
        TensorData::I8(v) => ints_to(v, to),
        TensorData::U8(v) => ints_to(v, to),
        TensorData::I16(v) => ints_to(v, to),
        TensorData::I32(v) => ints_to(v, to),
        TensorData::I64(v) => ints_to(v, to),
        TensorData::Bool(v) => ints_to(v, to),
    }
}

fn floats_to<T: Num>(v: &[f32]) -> TensorData {
    T::wrap(map(v, |x| T::from_f64_trunc(f64::from(x))))
}

/// Integer (or bool) elements to `to`: every source value is exact in i64, and wrapping an i64
/// to a narrower type gives the same bits as wrapping the original value.
fn ints_to<S: Copy + Into<i64>>(v: &[S], to: DType) -> TensorData {
    fn convert<T: Num>(v: &[i64]) -> TensorData {
        T::wrap(map(v, T::from_i64_wrap))
    }
    let wide: Vec<i64> = map(v, Into::into);
    with_num_type!(to, convert(&wide), bool => TensorData::Bool(map(&wide, |x| x != 0)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn f32s(v: &[f32]) -> Tensor {
        Tensor::from_f32(vec![v.len()], v.to_vec()).unwrap()
    }

    fn run(op: Op, x: &Tensor) -> Tensor {
        eval(&op, &[x]).unwrap().remove(0)
    }

    fn run_f32(op: Op, v: &[f32]) -> Vec<f32> {
        run(op, &f32s(v)).as_f32().unwrap().to_vec()
    }

    #[test]
    fn round_is_half_to_even() {
        assert_eq!(
            run_f32(Op::Round, &[0.5, 1.5, 2.5, -0.5, -1.5, 2.4, -2.6]),
            [0.0, 2.0, 2.0, -0.0, -2.0, 2.0, -3.0]
        );
    }

    #[test]
    fn erf_matches_known_values() {
        // Values from mpmath.
        let cases = [
            (0.0, 0.0),
            (1e-8, 1.1283791670955126e-8),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (3.0, 0.9999779095030014),
            (5.9, 0.9999999999999999),
            (-1.5, -0.9661051464753108),
        ];
        for (x, want) in cases {
            let got = erf(x);
            assert!((got - want).abs() <= 1e-15, "erf({x}) = {got}, want {want}");
        }
        assert_eq!(erf(7.0), 1.0);
        assert_eq!(erf(f64::NEG_INFINITY), -1.0);
        assert!(erf(f64::NAN).is_nan());
    }

    #[test]
    fn cast_float_to_int_truncates_like_x86() {
        let x = f32s(&[300.0, -1.0, 1e10, f32::NAN, -129.5, 3.7, -3.7]);
        let cast_to = |to| run(Op::Cast { to }, &x).into_data();
        assert_eq!(
            cast_to(DType::I8),
            TensorData::I8(vec![44, -1, 0, 0, 127, 3, -3])
        );
        assert_eq!(
            cast_to(DType::U8),
            TensorData::U8(vec![44, 255, 0, 0, 127, 3, 253])
        );
        assert_eq!(
            cast_to(DType::I16),
            TensorData::I16(vec![300, -1, 0, 0, -129, 3, -3])
        );
        assert_eq!(
            cast_to(DType::I32),
            TensorData::I32(vec![300, -1, i32::MIN, i32::MIN, -129, 3, -3])
        );
        assert_eq!(
            cast_to(DType::I64),
            TensorData::I64(vec![300, -1, 10_000_000_000, i64::MIN, -129, 3, -3])
        );
        assert_eq!(
            cast_to(DType::Bool),
            TensorData::Bool(vec![true, true, true, true, true, true, true])
        );
    }

    #[test]
    fn cast_between_integers_wraps() {
        let x = Tensor::new(vec![3], TensorData::I64(vec![300, -1, 1 << 40])).unwrap();
        let y = run(Op::Cast { to: DType::U8 }, &x);
        assert_eq!(y.data(), &TensorData::U8(vec![44, 255, 0]));
        let y = run(Op::Cast { to: DType::Bool }, &x);
        assert_eq!(y.data(), &TensorData::Bool(vec![true, true, true]));
        let b = Tensor::new(vec![2], TensorData::Bool(vec![true, false])).unwrap();
        assert_eq!(
            run(Op::Cast { to: DType::F32 }, &b).as_f32().unwrap(),
            &[1.0, 0.0]
        );
    }

    #[test]
    fn clip_handles_missing_bounds_integers_and_inverted_bounds() {
        let clip = |min, max| Op::Clip { min, max };
        assert_eq!(
            run_f32(clip(Some(0.0), Some(6.0)), &[-1.0, 3.0, 7.0]),
            [0.0, 3.0, 6.0]
        );
        assert_eq!(run_f32(clip(None, Some(1.0)), &[-9.0, 2.0]), [-9.0, 1.0]);
        // min > max: everything becomes max.
        assert_eq!(
            run_f32(clip(Some(2.0), Some(1.0)), &[0.0, 1.5, 3.0]),
            [1.0, 1.0, 1.0]
        );
        assert!(run_f32(clip(Some(0.0), None), &[f32::NAN])[0].is_nan());
        let x = Tensor::new(vec![3], TensorData::I8(vec![-100, 5, 100])).unwrap();
        let y = run(clip(Some(-1000.0), Some(10.0)), &x);
        assert_eq!(y.data(), &TensorData::I8(vec![-100, 5, 10]));
    }

    #[test]
    fn integer_abs_neg_relu() {
        let x = Tensor::new(vec![3], TensorData::I8(vec![-128, -3, 4])).unwrap();
        assert_eq!(run(Op::Abs, &x).data(), &TensorData::I8(vec![-128, 3, 4]));
        assert_eq!(run(Op::Neg, &x).data(), &TensorData::I8(vec![-128, 3, -4]));
        assert_eq!(run(Op::Relu, &x).data(), &TensorData::I8(vec![0, 0, 4]));
        let u = Tensor::new(vec![1], TensorData::U8(vec![200])).unwrap();
        assert_eq!(run(Op::Abs, &u).data(), &TensorData::U8(vec![200]));
        assert!(eval(&Op::Neg, &[&u]).is_err());
    }

    #[test]
    fn activations() {
        let y = run_f32(Op::Sigmoid, &[0.0, -1000.0, 1000.0]);
        assert_eq!(y, [0.5, 0.0, 1.0]);
        let y = run_f32(Op::Softplus, &[0.0, 100.0, -100.0]);
        assert!((y[0] - std::f32::consts::LN_2).abs() < 1e-7);
        assert_eq!(y[1], 100.0);
        assert!(y[2] > 0.0 && y[2] < 1e-40);
        assert_eq!(
            run_f32(Op::HardSwish, &[-4.0, 0.0, 1.0, 4.0]),
            [-0.0, 0.0, 1.0 * 4.0 / 6.0, 4.0]
        );
        assert_eq!(
            run_f32(Op::LeakyRelu { alpha: 0.5 }, &[-2.0, 3.0]),
            [-1.0, 3.0]
        );
        let gelu = run_f32(Op::Gelu { tanh_approx: false }, &[1.0]);
        assert!((gelu[0] - 0.841_344_7).abs() < 1e-6);
        let gelu = run_f32(Op::Gelu { tanh_approx: true }, &[1.0]);
        assert!((gelu[0] - 0.841_192).abs() < 1e-6);
    }

    #[test]
    fn dropout_mask_is_all_true() {
        let x = f32s(&[1.0, 2.0]);
        let out = eval(&Op::Dropout { mask: true }, &[&x]).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], x);
        assert_eq!(out[1].data(), &TensorData::Bool(vec![true, true]));
    }

    #[test]
    fn infer_checks_dtypes() {
        let i = TensorType::new(DType::I32, vec![2]);
        let b = TensorType::new(DType::Bool, vec![2]);
        assert!(matches!(infer(&Op::Sqrt, &[&i]), Err(OpError::Invalid(_))));
        assert!(matches!(
            infer(&Op::Erf, &[&i]),
            Err(OpError::Unsupported(_))
        ));
        assert!(infer(&Op::Not, &[&i]).is_err());
        assert_eq!(infer(&Op::Not, &[&b]).unwrap()[0], b);
        assert!(infer(&Op::Abs, &[&b]).is_err());
        assert!(infer(&Op::Abs, &[&i, &i]).is_err());
        assert_eq!(
            infer(&Op::Cast { to: DType::F32 }, &[&b]).unwrap()[0].dtype,
            DType::F32
        );
    }
}
