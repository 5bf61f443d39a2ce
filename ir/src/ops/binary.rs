//! Broadcasting element-wise ops with two or more inputs (ONNX Add .. Where): shape inference and
//! reference evaluation.
//!
//! All ops broadcast like numpy. Integer semantics follow C and onnxruntime on x86:
//! - arithmetic wraps on overflow;
//! - Div truncates toward zero, and division by zero yields 0 (ONNX leaves it undefined and
//!   onnxruntime traps; kiln picks a value so that no input can crash the compiler);
//! - Pow with an integer base is exact integer power with wrapping overflow; a negative exponent
//!   gives the truncated real result (1 for base 1, ±1 for base -1, else 0, including 0^-n).
//!
//! The [`Elem`] and [`Num`] traits below let each op be written once for every element type;
//! `unary.rs` uses them too.

use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::op::Op;
use crate::ops::util::{
    broadcast_index_map, broadcast_shapes, check_arity, make, out_type, wrong_family,
};
use crate::tensor::{Tensor, TensorData, TensorType};

/// A Rust element type of a kiln tensor, with its [`TensorData`] variant.
pub(crate) trait Elem: Copy + PartialEq {
    /// The elements, if `d` holds this type.
    fn slice(d: &TensorData) -> Option<&[Self]>;
    fn wrap(v: Vec<Self>) -> TensorData;
}

/// Numeric element types (f32 and the integers) with kiln's arithmetic semantics.
pub(crate) trait Num: Elem + PartialOrd {
    const ZERO: Self;
    fn plus(self, o: Self) -> Self;
    fn minus(self, o: Self) -> Self;
    fn times(self, o: Self) -> Self;
    fn divided_by(self, o: Self) -> Self;
    fn negated(self) -> Self;
    fn magnitude(self) -> Self;
    fn is_nan(self) -> bool;
    /// `self` to the power `e` (an integer exponent).
    fn pow_int(self, e: i64) -> Self;
    /// `self` to the power `e` (a float exponent), computed in f64 like onnxruntime's `std::pow`.
    fn pow_float(self, e: f64) -> Self;
    /// Conversion as C's `static_cast` compiles on x86: floats truncate toward zero; NaN and
    /// out-of-range values become the `int32` (or, for i64, `int64`) minimum, which narrower
    /// integer types then wrap (so they read 0).
    fn from_f64_trunc(x: f64) -> Self;
    /// Conversion for bounds: floats round, integers saturate.
    fn from_f64_sat(x: f64) -> Self;
    /// Two's complement wrapping conversion (C semantics), rounding for f32.
    fn from_i64_wrap(x: i64) -> Self;
}

/// f64 -> i32 as x86's `cvttsd2si` does it: NaN and out-of-range give `i32::MIN`. (Values in
/// (-2^31 - 1, -2^31) truncate to `i32::MIN` as well, so the range test may start at -2^31.)
pub(crate) fn trunc_i32_x86(x: f64) -> i32 {
    if (-2_147_483_648.0..2_147_483_648.0).contains(&x) {
        x as i32
    } else {
        i32::MIN
    }
}

/// f64 -> i64 as x86's 64-bit `cvttsd2si` does it: NaN and out-of-range give `i64::MIN`.
pub(crate) fn trunc_i64_x86(x: f64) -> i64 {
    // +-2^63 are exact in f64; every f64 strictly between them truncates into range.
    if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&x) {
        x as i64
    } else {
        i64::MIN
    }
}

macro_rules! impl_elem {
    ($t:ty, $variant:ident) => {
        impl Elem for $t {
            fn slice(d: &TensorData) -> Option<&[Self]> {
                match d {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn wrap(v: Vec<Self>) -> TensorData {
                TensorData::$variant(v)
            }
        }
    };
}

impl_elem!(f32, F32);
impl_elem!(i8, I8);
impl_elem!(u8, U8);
impl_elem!(i16, I16);
impl_elem!(i32, I32);
impl_elem!(i64, I64);
impl_elem!(bool, Bool);

impl Num for f32 {
    const ZERO: Self = 0.0;
    fn plus(self, o: Self) -> Self {
        self + o
    }
    fn minus(self, o: Self) -> Self {
        self - o
    }
    fn times(self, o: Self) -> Self {
        self * o
    }
    fn divided_by(self, o: Self) -> Self {
        self / o
    }
    fn negated(self) -> Self {
        -self
    }
    fn magnitude(self) -> Self {
        self.abs()
    }
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    fn pow_int(self, e: i64) -> Self {
        f64::from(self).powf(e as f64) as f32
    }
    fn pow_float(self, e: f64) -> Self {
        f64::from(self).powf(e) as f32
    }
    fn from_f64_trunc(x: f64) -> Self {
        x as f32
    }
    fn from_f64_sat(x: f64) -> Self {
        x as f32
    }
    fn from_i64_wrap(x: i64) -> Self {
        x as f32
    }
}

macro_rules! impl_int {
    ($t:ty, abs = $abs:expr, minus_one = $m1:expr, trunc = $trunc:expr) => {
        impl Num for $t {
            const ZERO: Self = 0;
            fn plus(self, o: Self) -> Self {
                self.wrapping_add(o)
            }
            fn minus(self, o: Self) -> Self {
                self.wrapping_sub(o)
            }
            fn times(self, o: Self) -> Self {
                self.wrapping_mul(o)
            }
            fn divided_by(self, o: Self) -> Self {
                if o == 0 {
                    0
                } else {
                    // Only MIN / -1 overflows; it wraps to MIN as on x86 with C's semantics.
                    self.wrapping_div(o)
                }
            }
            fn negated(self) -> Self {
                self.wrapping_neg()
            }
            fn magnitude(self) -> Self {
                $abs(self)
            }
            fn is_nan(self) -> bool {
                false
            }
            fn pow_int(self, e: i64) -> Self {
                let minus_one: Option<$t> = $m1;
                if e < 0 {
                    return if self == 1 {
                        1
                    } else if Some(self) == minus_one {
                        if e % 2 == 0 {
                            1
                        } else {
                            self
                        }
                    } else {
                        0
                    };
                }
                let (mut base, mut e, mut acc): ($t, u64, $t) = (self, e as u64, 1);
                while e > 0 {
                    if e & 1 == 1 {
                        acc = acc.wrapping_mul(base);
                    }
                    base = base.wrapping_mul(base);
                    e >>= 1;
                }
                acc
            }
            fn pow_float(self, e: f64) -> Self {
                Self::from_f64_trunc((self as f64).powf(e))
            }
            fn from_f64_trunc(x: f64) -> Self {
                $trunc(x) as $t
            }
            fn from_f64_sat(x: f64) -> Self {
                x as $t
            }
            fn from_i64_wrap(x: i64) -> Self {
                x as $t
            }
        }
    };
}

impl_int!(
    i8,
    abs = i8::wrapping_abs,
    minus_one = Some(-1),
    trunc = trunc_i32_x86
);
impl_int!(
    u8,
    abs = std::convert::identity,
    minus_one = None,
    trunc = trunc_i32_x86
);
impl_int!(
    i16,
    abs = i16::wrapping_abs,
    minus_one = Some(-1),
    trunc = trunc_i32_x86
);
impl_int!(
    i32,
    abs = i32::wrapping_abs,
    minus_one = Some(-1),
    trunc = trunc_i32_x86
);
impl_int!(
    i64,
    abs = i64::wrapping_abs,
    minus_one = Some(-1),
    trunc = trunc_i64_x86
);

/// Evaluates `$f::<T>($args)` with `T` the element type of numeric dtype `$dt`, or `$bool` for
/// bool.
macro_rules! with_num_type {
    ($dt:expr, $f:ident($($arg:expr),*), bool => $bool:expr) => {
        match $dt {
            DType::F32 => $f::<f32>($($arg),*),
            DType::I8 => $f::<i8>($($arg),*),
            DType::U8 => $f::<u8>($($arg),*),
            DType::I16 => $f::<i16>($($arg),*),
            DType::I32 => $f::<i32>($($arg),*),
            DType::I64 => $f::<i64>($($arg),*),
            DType::Bool => $bool,
        }
    };
}
pub(crate) use with_num_type;

/// Evaluates `$f::<T>($args)` with `T` the element type of any dtype.
macro_rules! with_elem_type {
    ($dt:expr, $f:ident($($arg:expr),*)) => {
        $crate::ops::binary::with_num_type!($dt, $f($($arg),*), bool => $f::<bool>($($arg),*))
    };
}

/// The elements of `t` as `T`, or an error if the dtype differs (infer rules that out).
pub(crate) fn elems<'a, T: Elem>(op: &str, t: &'a Tensor) -> Result<&'a [T], OpError> {
    T::slice(t.data()).ok_or_else(|| {
        OpError::Invalid(format!("internal: {op} got unexpected {} data", t.dtype()))
    })
}

/// Applies `f` element-wise to `a` and `b` broadcast to `out_shape` (which both must broadcast
/// to, as `infer` checks).
pub(crate) fn zip_map<A: Copy, B: Copy, O>(
    (a, a_shape): (&[A], &[usize]),
    (b, b_shape): (&[B], &[usize]),
    out_shape: &[usize],
    f: impl Fn(A, B) -> O,
) -> Vec<O> {
    // Fast paths for the common cases avoid building index maps.
    match (a_shape == out_shape, b_shape == out_shape, a, b) {
        (true, true, _, _) => a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect(),
        (true, _, _, &[y]) => a.iter().map(|&x| f(x, y)).collect(),
        (_, true, &[x], _) => b.iter().map(|&y| f(x, y)).collect(),
        _ => {
            let ia = broadcast_index_map(a_shape, out_shape);
            let ib = broadcast_index_map(b_shape, out_shape);
            ia.iter().zip(&ib).map(|(&i, &j)| f(a[i], b[j])).collect()
        }
    }
}

/// Whether ONNX defines the op for this numeric dtype.
fn numeric(op: &str, dt: DType) -> Result<(), OpError> {
    if dt == DType::Bool {
        return invalid!("{op} does not accept bool inputs");
    }
    Ok(())
}

/// The dtype all inputs share.
fn common_dtype(op: &str, inputs: &[&TensorType]) -> Result<DType, OpError> {
    let Some(first) = inputs.first() else {
        return invalid!("{op} needs at least one input");
    };
    if let Some(other) = inputs.iter().find(|t| t.dtype != first.dtype) {
        return invalid!(
            "{op} needs inputs of one type, got {} and {}",
            first.dtype,
            other.dtype
        );
    }
    Ok(first.dtype)
}

fn broadcast_types(inputs: &[&TensorType]) -> Result<Vec<usize>, OpError> {
    let mut shape: Vec<usize> = Vec::new();
    for t in inputs {
        shape = broadcast_shapes(&shape, &t.shape)?;
    }
    Ok(shape)
}

fn at_least_one(op: &str, n: usize) -> Result<(), OpError> {
    if n == 0 {
        return invalid!("{op} needs at least one input");
    }
    Ok(())
}

/// Output types of a binary-family op.
pub fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, OpError> {
    let name = op.name();
    let (dtype, shape) = match op {
        // ONNX Add, Sub, Mul, Div.
        Op::Add { .. } | Op::Sub | Op::Mul | Op::Div => {
            check_arity(name, inputs.len(), 2, 2)?;
            let dt = common_dtype(name, inputs)?;
            numeric(name, dt)?;
            (dt, broadcast_types(inputs)?)
        }
        // ONNX Pow: the exponent may have another numeric type; the result has the base's.
        Op::Pow => {
            check_arity(name, inputs.len(), 2, 2)?;
            for t in inputs {
                numeric(name, t.dtype)?;
            }
            (inputs[0].dtype, broadcast_types(inputs)?)
        }
        // ONNX Equal.
        Op::Equal => {
            check_arity(name, inputs.len(), 2, 2)?;
            common_dtype(name, inputs)?;
            (DType::Bool, broadcast_types(inputs)?)
        }
        // ONNX Less, Greater.
        Op::Less | Op::Greater => {
            check_arity(name, inputs.len(), 2, 2)?;
            numeric(name, common_dtype(name, inputs)?)?;
            (DType::Bool, broadcast_types(inputs)?)
        }
        // ONNX And, Or.
        Op::And | Op::Or => {
            check_arity(name, inputs.len(), 2, 2)?;
            if common_dtype(name, inputs)? != DType::Bool {
                return invalid!("{name} needs bool inputs, got {}", inputs[0].dtype);
            }
            (DType::Bool, broadcast_types(inputs)?)
        }
        // ONNX PRelu: the slope broadcasts to x, never the other way.
        Op::PRelu => {
            check_arity(name, inputs.len(), 2, 2)?;
            let dt = common_dtype(name, inputs)?;
            if !matches!(dt, DType::F32 | DType::I32 | DType::I64) {
                return invalid!("PRelu does not accept {dt} inputs");
            }
            let (x, slope) = (&inputs[0].shape, &inputs[1].shape);
            if broadcast_shapes(x, slope)? != *x {
                return invalid!(
                    "PRelu slope of shape {slope:?} does not broadcast to x of shape {x:?}"
                );
            }
            (dt, x.clone())
        }
        // ONNX Max, Min.
        Op::Max | Op::Min => {
            at_least_one(name, inputs.len())?;
            numeric(name, common_dtype(name, inputs)?)?;
            (inputs[0].dtype, broadcast_types(inputs)?)
        }
        // ONNX Sum, Mean: float only, as ONNX defines them.
        Op::Sum | Op::Mean => {
            at_least_one(name, inputs.len())?;
            let dt = common_dtype(name, inputs)?;
            if dt != DType::F32 {
                return invalid!("{name} needs f32 inputs, got {dt}");
            }
            (dt, broadcast_types(inputs)?)
        }
        // ONNX Where.
        Op::Where => {
            check_arity(name, inputs.len(), 3, 3)?;
            if inputs[0].dtype != DType::Bool {
                return invalid!("Where needs a bool condition, got {}", inputs[0].dtype);
            }
            let dt = common_dtype(name, &inputs[1..])?;
            (dt, broadcast_types(inputs)?)
        }
        _ => return Err(wrong_family(op)),
    };
    Ok(vec![out_type(dtype, shape)?])
}

/// Reference evaluation of a binary-family op.
pub fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
    let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
    let type_refs: Vec<&TensorType> = types.iter().collect();
    let out = infer(op, &type_refs)?
        .pop()
        .ok_or_else(|| OpError::Invalid("internal: no output type".into()))?;
    let shape = out.shape.as_slice();
    let name = op.name();
    let data = match op {
        Op::Add { .. } | Op::Sub | Op::Mul | Op::Div | Op::PRelu => {
            let (a, b) = (inputs[0], inputs[1]);
            with_num_type!(a.dtype(), arith(op, a, b, shape), bool => unreachable_dtype(name))?
        }
        Op::Pow => {
            let (a, b) = (inputs[0], inputs[1]);
            with_num_type!(a.dtype(), pow(a, b, shape), bool => unreachable_dtype(name))?
        }
        Op::Equal => {
            let (a, b) = (inputs[0], inputs[1]);
            with_elem_type!(a.dtype(), equal(a, b, shape))?
        }
        Op::Less | Op::Greater => {
            let (a, b) = (inputs[0], inputs[1]);
            with_num_type!(a.dtype(), compare(op, a, b, shape), bool => unreachable_dtype(name))?
        }
        Op::And | Op::Or => logic(op, inputs[0], inputs[1], shape)?,
        Op::Max | Op::Min | Op::Sum | Op::Mean => {
            with_num_type!(inputs[0].dtype(), variadic(op, inputs, shape), bool => unreachable_dtype(name))?
        }
        Op::Where => with_elem_type!(inputs[1].dtype(), select(inputs, shape))?,
        _ => return Err(wrong_family(op)),
    };
    Ok(vec![make(Tensor::new(out.shape, data))?])
}

fn unreachable_dtype(op: &str) -> Result<TensorData, OpError> {
    invalid!("internal: {op} got an input type infer rejects")
}

/// ONNX Add, Sub, Mul, Div, PRelu.
fn arith<T: Num>(op: &Op, a: &Tensor, b: &Tensor, shape: &[usize]) -> Result<TensorData, OpError> {
    let a_ = (elems::<T>(op.name(), a)?, a.shape());
    let b_ = (elems::<T>(op.name(), b)?, b.shape());
    let v = match op {
        Op::Add { .. } => zip_map(a_, b_, shape, T::plus),
        Op::Sub => zip_map(a_, b_, shape, T::minus),
        Op::Mul => zip_map(a_, b_, shape, T::times),
        Op::Div => zip_map(a_, b_, shape, T::divided_by),
        Op::PRelu => zip_map(
            a_,
            b_,
            shape,
            |x, slope| if x < T::ZERO { x.times(slope) } else { x },
        ),
        _ => return Err(wrong_family(op)),
    };
    Ok(T::wrap(v))
}

/// ONNX Pow, base of type `T`, exponent of any numeric type.
fn pow<T: Num>(base: &Tensor, exp: &Tensor, shape: &[usize]) -> Result<TensorData, OpError> {
    let b_ = (elems::<T>("Pow", base)?, base.shape());
    let v = match exp.data() {
        TensorData::F32(e) => zip_map(b_, (e, exp.shape()), shape, |b, e| {
            b.pow_float(f64::from(e))
        }),
        _ => {
            let e = exp.to_i64_vec().ok_or_else(|| {
                OpError::Invalid(format!("Pow exponent cannot be {}", exp.dtype()))
            })?;
            zip_map(b_, (&e, exp.shape()), shape, T::pow_int)
        }
    };
    Ok(T::wrap(v))
}

/// ONNX Equal.
fn equal<T: Elem>(a: &Tensor, b: &Tensor, shape: &[usize]) -> Result<TensorData, OpError> {
    let a_ = (elems::<T>("Equal", a)?, a.shape());
    let b_ = (elems::<T>("Equal", b)?, b.shape());
    Ok(TensorData::Bool(zip_map(a_, b_, shape, |x, y| x == y)))
}

/// ONNX Less, Greater.
fn compare<T: Num>(
    op: &Op,
    a: &Tensor,
    b: &Tensor,
    shape: &[usize],
) -> Result<TensorData, OpError> {
    let a_ = (elems::<T>(op.name(), a)?, a.shape());
    let b_ = (elems::<T>(op.name(), b)?, b.shape());
    let v = match op {
        Op::Less => zip_map(a_, b_, shape, |x, y| x < y),
        Op::Greater => zip_map(a_, b_, shape, |x, y| x > y),
        _ => return Err(wrong_family(op)),
    };
    Ok(TensorData::Bool(v))
}

/// ONNX And, Or.
fn logic(op: &Op, a: &Tensor, b: &Tensor, shape: &[usize]) -> Result<TensorData, OpError> {
    let a_ = (elems::<bool>(op.name(), a)?, a.shape());
    let b_ = (elems::<bool>(op.name(), b)?, b.shape());
    let v = match op {
        Op::And => zip_map(a_, b_, shape, |x, y| x && y),
        Op::Or => zip_map(a_, b_, shape, |x, y| x || y),
        _ => return Err(wrong_family(op)),
    };
    Ok(TensorData::Bool(v))
}

/// numpy's `maximum`: NaN wins.
fn max_nan<T: Num>(a: T, b: T) -> T {
    if a.is_nan() || !(b.is_nan() || b > a) {
        a
    } else {
        b
    }
}

/// numpy's `minimum`: NaN wins.
fn min_nan<T: Num>(a: T, b: T) -> T {
    if a.is_nan() || !(b.is_nan() || b < a) {
        a
    } else {
        b
    }
}

/// ONNX Max, Min, Sum, Mean: a left fold over the inputs, broadcasting step by step (the final
/// shape is the same as broadcasting all inputs at once).
fn variadic<T: Num>(op: &Op, inputs: &[&Tensor], shape: &[usize]) -> Result<TensorData, OpError> {
    let f: fn(T, T) -> T = match op {
        Op::Max => max_nan,
        Op::Min => min_nan,
        Op::Sum | Op::Mean => T::plus,
        _ => return Err(wrong_family(op)),
    };
    let Some((first, rest)) = inputs.split_first() else {
        return invalid!("{} needs at least one input", op.name());
    };
    let mut acc: Vec<T> = elems::<T>(op.name(), first)?.to_vec();
    let mut acc_shape = first.shape().to_vec();
    for t in rest {
        let next_shape = broadcast_shapes(&acc_shape, t.shape())?;
        acc = zip_map(
            (&acc, &acc_shape),
            (elems::<T>(op.name(), t)?, t.shape()),
            &next_shape,
            f,
        );
        acc_shape = next_shape;
    }
    if acc_shape != shape {
        // A single input smaller than the output cannot happen: its shape is the output's.
        return invalid!(
            "internal: {} folded to shape {acc_shape:?}, expected {shape:?}",
            op.name()
        );
    }
    if matches!(op, Op::Mean) {
        let n = T::from_i64_wrap(inputs.len() as i64);
        for x in &mut acc {
            *x = x.divided_by(n);
        }
    }
    Ok(T::wrap(acc))
}

/// ONNX Where: condition, x, y.
fn select<T: Elem>(inputs: &[&Tensor], shape: &[usize]) -> Result<TensorData, OpError> {
    let [cond, x, y] = inputs else {
        return invalid!("Where takes 3 inputs, got {}", inputs.len());
    };
    let c = elems::<bool>("Where", cond)?;
    let (xv, yv) = (elems::<T>("Where", x)?, elems::<T>("Where", y)?);
    let all_full = [cond.shape(), x.shape(), y.shape()]
        .iter()
        .all(|s| *s == shape);
    let v = if all_full {
        c.iter()
            .zip(xv.iter().zip(yv))
            .map(|(&c, (&a, &b))| if c { a } else { b })
            .collect()
    } else {
        let ic = broadcast_index_map(cond.shape(), shape);
        let ix = broadcast_index_map(x.shape(), shape);
        let iy = broadcast_index_map(y.shape(), shape);
        ic.iter()
            .zip(ix.iter().zip(&iy))
            .map(|(&k, (&i, &j))| if c[k] { xv[i] } else { yv[j] })
            .collect()
    };
    Ok(T::wrap(v))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v.to_vec()).unwrap()
    }

    fn t(shape: &[usize], data: TensorData) -> Tensor {
        Tensor::new(shape.to_vec(), data).unwrap()
    }

    fn run(op: Op, inputs: &[&Tensor]) -> Tensor {
        eval(&op, inputs).unwrap().remove(0)
    }

    #[test]
    fn add_broadcasts_like_numpy() {
        let a = f32s(&[2, 1], &[1.0, 2.0]);
        let b = f32s(&[3], &[10.0, 20.0, 30.0]);
        let y = run(
            Op::Add {
                activation: Default::default(),
            },
            &[&a, &b],
        );
        assert_eq!(y.shape(), &[2, 3]);
        assert_eq!(y.as_f32().unwrap(), &[11.0, 21.0, 31.0, 12.0, 22.0, 32.0]);
        // Scalar on the left.
        let s = f32s(&[], &[1.0]);
        let y = run(Op::Sub, &[&s, &b]);
        assert_eq!(y.as_f32().unwrap(), &[-9.0, -19.0, -29.0]);
    }

    #[test]
    fn integer_division_truncates_and_never_traps() {
        let a = t(&[5], TensorData::I32(vec![7, -7, 7, i32::MIN, 5]));
        let b = t(&[5], TensorData::I32(vec![2, 2, -2, -1, 0]));
        let y = run(Op::Div, &[&a, &b]);
        assert_eq!(y.data(), &TensorData::I32(vec![3, -3, -3, i32::MIN, 0]));
    }

    #[test]
    fn integer_arithmetic_wraps() {
        let a = t(&[2], TensorData::I8(vec![127, -128]));
        let b = t(&[2], TensorData::I8(vec![1, 2]));
        assert_eq!(
            run(
                Op::Add {
                    activation: Default::default()
                },
                &[&a, &b]
            )
            .data(),
            &TensorData::I8(vec![-128, -126])
        );
        assert_eq!(
            run(Op::Mul, &[&a, &b]).data(),
            &TensorData::I8(vec![127, 0])
        );
        let u = t(&[1], TensorData::U8(vec![0]));
        let one = t(&[1], TensorData::U8(vec![1]));
        assert_eq!(run(Op::Sub, &[&u, &one]).data(), &TensorData::U8(vec![255]));
    }

    #[test]
    fn integer_pow() {
        let base = t(&[6], TensorData::I64(vec![2, 3, -2, 1, -1, 5]));
        let exp = t(&[6], TensorData::I64(vec![10, 0, 3, -4, -3, -1]));
        let y = run(Op::Pow, &[&base, &exp]);
        assert_eq!(y.data(), &TensorData::I64(vec![1024, 1, -8, 1, -1, 0]));
        // Wrapping overflow: 2^64 wraps to 0, 3^40 to its low 64 bits.
        let base = t(&[2], TensorData::I64(vec![2, 3]));
        let exp = t(&[2], TensorData::I64(vec![64, 40]));
        let y = run(Op::Pow, &[&base, &exp]);
        assert_eq!(y.data(), &TensorData::I64(vec![0, 3i64.wrapping_pow(40)]));
    }

    #[test]
    fn pow_with_mixed_types_keeps_the_base_type() {
        let base = t(&[3], TensorData::I32(vec![1, 2, 3]));
        let exp = f32s(&[3], &[4.0, 5.0, 0.5]);
        let y = run(Op::Pow, &[&base, &exp]);
        // 3^0.5 = 1.73 truncates to 1.
        assert_eq!(y.data(), &TensorData::I32(vec![1, 32, 1]));
        let base = f32s(&[2], &[2.0, 4.0]);
        let exp = t(&[1], TensorData::I64(vec![-1]));
        let y = run(Op::Pow, &[&base, &exp]);
        assert_eq!(y.as_f32().unwrap(), &[0.5, 0.25]);
    }

    #[test]
    fn max_min_propagate_nan_and_broadcast() {
        let a = f32s(&[3], &[1.0, f32::NAN, 5.0]);
        let b = f32s(&[3], &[f32::NAN, 2.0, 3.0]);
        let c = f32s(&[], &[4.0]);
        let y = run(Op::Max, &[&a, &b, &c]);
        let v = y.as_f32().unwrap();
        assert!(v[0].is_nan() && v[1].is_nan());
        assert_eq!(v[2], 5.0);
        let y = run(Op::Min, &[&c, &f32s(&[2, 1], &[3.0, 6.0])]);
        assert_eq!(y.shape(), &[2, 1]);
        assert_eq!(y.as_f32().unwrap(), &[3.0, 4.0]);
    }

    #[test]
    fn sum_and_mean_of_one_and_three_inputs() {
        let a = f32s(&[2], &[1.0, 2.0]);
        assert_eq!(run(Op::Sum, &[&a]).as_f32().unwrap(), &[1.0, 2.0]);
        assert_eq!(run(Op::Mean, &[&a]).as_f32().unwrap(), &[1.0, 2.0]);
        let b = f32s(&[2], &[3.0, 4.0]);
        let c = f32s(&[1], &[5.0]);
        assert_eq!(
            run(Op::Mean, &[&a, &b, &c]).as_f32().unwrap(),
            &[3.0, 11.0 / 3.0]
        );
    }

    #[test]
    fn comparisons_and_logic_give_bool() {
        let a = f32s(&[3], &[1.0, 2.0, f32::NAN]);
        let b = f32s(&[], &[2.0]);
        assert_eq!(
            run(Op::Less, &[&a, &b]).data(),
            &TensorData::Bool(vec![true, false, false])
        );
        assert_eq!(
            run(Op::Greater, &[&a, &b]).data(),
            &TensorData::Bool(vec![false, false, false])
        );
        assert_eq!(
            run(Op::Equal, &[&a, &b]).data(),
            &TensorData::Bool(vec![false, true, false])
        );
        let p = t(&[2], TensorData::Bool(vec![true, false]));
        let q = t(&[2, 1], TensorData::Bool(vec![true, false]));
        assert_eq!(
            run(Op::And, &[&p, &q]).data(),
            &TensorData::Bool(vec![true, false, false, false])
        );
        assert_eq!(
            run(Op::Or, &[&p, &q]).data(),
            &TensorData::Bool(vec![true, true, true, false])
        );
    }

    #[test]
    fn prelu_slope_broadcasts_one_way() {
        let x = f32s(&[2, 2], &[-1.0, 2.0, -3.0, 4.0]);
        let slope = f32s(&[2], &[0.5, 0.25]);
        assert_eq!(
            run(Op::PRelu, &[&x, &slope]).as_f32().unwrap(),
            &[-0.5, 2.0, -1.5, 4.0]
        );
        // The slope may not enlarge x.
        let big = f32s(&[3, 2, 2], &[0.0; 12]);
        assert!(matches!(
            eval(&Op::PRelu, &[&x, &big]),
            Err(OpError::Invalid(_))
        ));
    }

    #[test]
    fn where_broadcasts_all_three() {
        let c = t(&[2, 1], TensorData::Bool(vec![true, false]));
        let x = t(&[2], TensorData::I64(vec![1, 2]));
        let y = t(&[], TensorData::I64(vec![9]));
        let out = run(Op::Where, &[&c, &x, &y]);
        assert_eq!(out.shape(), &[2, 2]);
        assert_eq!(out.data(), &TensorData::I64(vec![1, 2, 9, 9]));
    }

    #[test]
    fn infer_rejects_bad_inputs() {
        let f = TensorType::new(DType::F32, vec![2, 3]);
        let i = TensorType::new(DType::I64, vec![2, 3]);
        let b = TensorType::new(DType::Bool, vec![2, 3]);
        let odd = TensorType::new(DType::F32, vec![4]);
        assert!(infer(
            &Op::Add {
                activation: Default::default()
            },
            &[&f, &i]
        )
        .is_err());
        assert!(infer(
            &Op::Add {
                activation: Default::default()
            },
            &[&f, &odd]
        )
        .is_err());
        assert!(infer(
            &Op::Add {
                activation: Default::default()
            },
            &[&b, &b]
        )
        .is_err());
        assert!(infer(&Op::And, &[&f, &f]).is_err());
        assert!(infer(&Op::Where, &[&f, &f, &f]).is_err());
        assert!(infer(&Op::Sum, &[&i, &i]).is_err());
        assert!(infer(&Op::Max, &[]).is_err());
        assert_eq!(infer(&Op::Pow, &[&f, &i]).unwrap()[0].dtype, DType::F32);
        assert_eq!(infer(&Op::Equal, &[&b, &b]).unwrap()[0].dtype, DType::Bool);
    }
}
