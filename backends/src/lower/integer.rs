//! Integer arithmetic shared by the lowerings of kiln's integer ops (QConv, QMatMul,
//! QAveragePool, QSoftmax, Requantize, QTable, QAdd, QMul): widening of narrow operands, the
//! multiply-accumulate of every integer dot product, the requantization parameters of an op,
//! and the clamp of a `QOut`. Each matches `kiln_ir`'s reference evaluation exactly.
//!
//! Narrow operands are always widened to `I32` with an explicit cast before arithmetic, so an
//! i8 times a u8 is computed on their values (as the interpreter does), never in either
//! operand's type.

use kiln_ir::{DType, QOut};

use super::Lowering;
use crate::error::BackendError;
use crate::kernel::{Expr, Stmt, Var};

/// `e` (an integer of at most 32 bits) as an `I32` value.
pub fn widen(e: Expr) -> Expr {
    match e {
        Expr::Int(_) => e,
        other => Expr::cast(DType::I32, other),
    }
}

/// The multiply-accumulate of every integer dot product (QConv's taps, QMatMul's `k`):
/// `acc += x * w` in `I32`, both operands widened from their narrow types (i8/u8 inputs, i8/i16
/// weights, or a zero point for a padding tap). Target-specific inner loops (DSP dual
/// multiply-accumulates, Helium) replace exactly this construct, so every integer dot product
/// goes through here.
pub fn mac(acc: Var, x: Expr, w: Expr) -> Stmt {
    Stmt::Assign {
        var: acc,
        value: Expr::Var(acc).add(widen(x).mul(widen(w))),
    }
}

/// `out.store(v)` for an `I32` value `v`: `v + zero_point` (saturating) clamped to
/// `[min, max]`. The clamp runs before the addition, on bounds shifted by the zero point, so the
/// sum never leaves `I32`.
pub fn store(v: Expr, out: &QOut) -> Expr {
    let zp = i64::from(out.zero_point);
    let (lo, hi) = (i64::from(out.min) - zp, i64::from(out.max) - zp);
    let fits = |b: i64| i32::try_from(b).is_ok();
    if !(fits(lo) && fits(hi)) {
        // Only for zero points near the ends of i32: the sum and clamp in i64.
        let wide = Expr::cast(DType::I64, v).add(Expr::Const(zp as f64, DType::I64));
        let clamped = wide
            .max(Expr::Const(f64::from(out.min), DType::I64))
            .min(Expr::Const(f64::from(out.max), DType::I64));
        return Expr::cast(DType::I32, clamped);
    }
    let v = if lo > i64::from(i32::MIN) {
        v.max(Expr::Int(lo))
    } else {
        v
    };
    let v = if hi < i64::from(i32::MAX) {
        v.min(Expr::Int(hi))
    } else {
        v
    };
    offset(v, zp)
}

/// `v + k`, printed as a subtraction for negative `k`.
fn offset(v: Expr, k: i64) -> Expr {
    match k {
        0 => v,
        k if k < 0 => v.sub(Expr::Int(-k)),
        k => v.add(Expr::Int(k)),
    }
}

/// `out.store(requantize(acc))` with the multiplier and shift given.
pub fn requantized(
    acc: Expr,
    (multiplier, shift): (Expr, Expr),
    out: &QOut,
    rounding: kiln_ir::fixed_point::Rounding,
) -> Expr {
    store(Expr::requantize(acc, multiplier, shift, rounding), out)
}

/// The requantization inputs of an op: i32 multiplier and shift tensors, each of one entry
/// (per tensor) or one per output channel.
#[derive(Clone, Debug)]
pub struct Requant {
    multiplier: RequantInput,
    shift: RequantInput,
}

/// One requantization input.
#[derive(Clone, Debug)]
enum RequantInput {
    /// Per tensor: the value, bound to a local once at the top of the kernel.
    Tensor(Expr),
    /// Per channel: the parameter index.
    Channel(usize),
}

impl RequantInput {
    fn at(&self, c: &Expr) -> Expr {
        match self {
            RequantInput::Tensor(e) => e.clone(),
            RequantInput::Channel(p) => Expr::load(*p, c.clone()),
        }
    }
}

impl Requant {
    /// Reads the requantization inputs `first` (multiplier) and `first + 1` (shift) of a kernel
    /// with `channels` output channels; per-tensor values are loaded into locals by `head`.
    pub fn new(
        cx: &mut Lowering,
        first: usize,
        channels: usize,
        head: &mut Vec<Stmt>,
    ) -> Result<Requant, BackendError> {
        let mut input = |slot: usize| -> Result<RequantInput, BackendError> {
            let Some(t) = cx.inputs.get(slot) else {
                return crate::cannot!("missing requantization inputs");
            };
            if t.dtype != DType::I32 {
                return crate::cannot!("requantization inputs must be i32");
            }
            let n = t.numel();
            if n != 1 && n != channels {
                return crate::cannot!(
                    "a requantization input of {n} entries for {channels} channels"
                );
            }
            let p = cx.input(slot);
            if n == 1 {
                let v = cx.var(DType::I32);
                head.push(Stmt::Let {
                    var: v,
                    ty: DType::I32,
                    init: Expr::load(p, Expr::Int(0)),
                });
                Ok(RequantInput::Tensor(Expr::Var(v)))
            } else {
                Ok(RequantInput::Channel(p))
            }
        };
        Ok(Requant {
            multiplier: input(first)?,
            shift: input(first + 1)?,
        })
    }

    /// The multiplier and shift of channel `c`.
    pub fn at(&self, c: &Expr) -> (Expr, Expr) {
        (self.multiplier.at(c), self.shift.at(c))
    }

    /// The multiplier and shift of channel `c`, bound to locals in `head` when they are loads
    /// (a channel's values read once, outside the loops over its outputs).
    pub fn hoisted(&self, cx: &mut Lowering, c: &Expr, head: &mut Vec<Stmt>) -> (Expr, Expr) {
        let mut bind = |input: &RequantInput| match input {
            RequantInput::Tensor(e) => e.clone(),
            RequantInput::Channel(_) => {
                let v = cx.var(DType::I32);
                head.push(Stmt::Let {
                    var: v,
                    ty: DType::I32,
                    init: input.at(c),
                });
                Expr::Var(v)
            }
        };
        (bind(&self.multiplier), bind(&self.shift))
    }
}

/// The range of values an input of type `t` holds.
pub fn value_range(t: DType) -> Result<(i64, i64), BackendError> {
    match t {
        DType::I8 => Ok((-128, 127)),
        DType::U8 => Ok((0, 255)),
        DType::I16 => Ok((-32768, 32767)),
        _ => crate::cannot!("integer kernels take i8, u8 or i16 operands, not {t}"),
    }
}

/// `x - zero_point` for an input of type `t`, in `I32`; also its largest magnitude.
pub fn centered(x: Expr, t: DType, zero_point: i32) -> Result<(Expr, i64), BackendError> {
    let (lo, hi) = value_range(t)?;
    let zp = i64::from(zero_point);
    let bound = (lo - zp).abs().max((hi - zp).abs());
    if bound > i64::from(i32::MAX) {
        return crate::cannot!("zero point {zero_point} is out of range for {t}");
    }
    Ok((offset(widen(x), -zp), bound))
}

/// `v * 2^k` wrapping in i32, as the interpreter's `wrapping_shl` (`k` taken modulo 32), for
/// a `v` of magnitude at most `bound`: an i32 product when it cannot overflow, else an i64
/// product truncated to i32.
pub fn wrapping_shl(v: Expr, k: i32, bound: i64) -> Expr {
    let k = (k as u32) & 31;
    if k == 0 {
        return v;
    }
    let factor = 1i64 << k;
    if bound.saturating_mul(factor) <= i64::from(i32::MAX) {
        v.mul(Expr::Int(factor))
    } else {
        let wide = Expr::cast(DType::I64, v).mul(Expr::Const(factor as f64, DType::I64));
        Expr::cast(DType::I32, wide)
    }
}
