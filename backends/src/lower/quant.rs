//! Kernel lowering of the `quant` ops, matching `kiln_ir::ops::quant`: QuantizeLinear and
//! DequantizeLinear per tensor, per axis or blocked, and the integer element-wise ops
//! (Requantize, QTable, QAdd, QMul; see [`integer_elementwise`]).
//!
//! x is walked as `[outer, len, inner]` around the quantization axis, so the parameter index is
//! plain index arithmetic: `a` per axis, `(o * blocks + a / block) * inner + i` when blocked.
//! Per-tensor and per-axis parameters are loaded once, outside the loops that do not use them.
//!
//! Difference from the interpreter: QuantizeLinear of NaN is undefined in C (the interpreter
//! gives 0); every other input matches exactly.

use kiln_ir::fixed_point::FixedPoint;
use kiln_ir::{DType, Op};

use super::integer::{centered, store, widen, wrapping_shl};
use super::Lowering;
use crate::error::BackendError;
use crate::kernel::{flat_index, for_loop, loop_nest, Expr, Stmt, UnOp, Var};

/// How the scale and zero point are indexed.
#[derive(Clone, Copy)]
enum Granularity {
    PerTensor,
    /// `block == 0`: one parameter per index along the axis; otherwise one per `block`
    /// consecutive indices along it (the last block may be shorter).
    Axis {
        outer: usize,
        len: usize,
        inner: usize,
        block: usize,
    },
}

impl Granularity {
    fn new(shape: &[usize], axis: Option<usize>, block: usize) -> Result<Self, BackendError> {
        let Some(a) = axis else {
            return Ok(Granularity::PerTensor);
        };
        let (Some(before), Some(&len), Some(after)) =
            (shape.get(..a), shape.get(a), shape.get(a + 1..))
        else {
            return crate::cannot!("quantization axis {a} is out of range for shape {shape:?}");
        };
        Ok(Granularity::Axis {
            outer: before.iter().product(),
            len,
            inner: after.iter().product(),
            block,
        })
    }
}

/// The scale and zero point an element uses, bound to locals by `stmts`.
struct Params {
    stmts: Vec<Stmt>,
    scale: Expr,
    zero_point: Option<(Expr, DType)>,
}

/// Loads the scale and (if present) zero point at `index` into locals.
fn load_params(cx: &mut Lowering, index: Expr) -> Params {
    let scale = cx.var(DType::F32);
    let mut stmts = vec![Stmt::Let {
        var: scale,
        ty: DType::F32,
        init: Expr::load(cx.input(1), index.clone()),
    }];
    let zero_point = match cx.inputs.get(2).map(|t| t.dtype) {
        Some(ty) => {
            let zp = cx.var(ty);
            stmts.push(Stmt::Let {
                var: zp,
                ty,
                init: Expr::load(cx.input(2), index),
            });
            Some((Expr::Var(zp), ty))
        }
        None => None,
    };
    Params {
        stmts,
        scale: Expr::Var(scale),
        zero_point,
    }
}

pub fn lower(op: &Op, cx: &mut Lowering) -> Result<Vec<Stmt>, BackendError> {
    if matches!(
        op,
        Op::Requantize { .. } | Op::QTable | Op::QAdd { .. } | Op::QMul { .. }
    ) {
        return integer_elementwise(op, cx);
    }
    let (axis, block) = match op {
        Op::QuantizeLinear {
            axis, block_size, ..
        }
        | Op::DequantizeLinear { axis, block_size } => (*axis, *block_size),
        _ => return crate::cannot!("{} is not a quantization op", op.name()),
    };
    let Some(x) = cx.inputs.first().copied() else {
        return crate::cannot!("{} has no input", op.name());
    };
    let (x_ty, numel) = (x.dtype, x.numel());
    let out_ty = match cx.outputs.first() {
        Some(t) => t.dtype,
        None => return crate::cannot!("{} has no output", op.name()),
    };
    let (x_param, y_param) = (cx.input(0), cx.output(0));
    let elem = |p: &Params, index: Expr| -> Result<Stmt, BackendError> {
        let v = Expr::load(x_param, index.clone());
        let value = match op {
            Op::QuantizeLinear { .. } => quantize(v, p, out_ty)?,
            _ => dequantize(v, x_ty, p),
        };
        Ok(Stmt::Store {
            param: y_param,
            index,
            value,
        })
    };
    match Granularity::new(&x.shape, axis, block)? {
        Granularity::PerTensor => {
            let p = load_params(cx, Expr::Int(0));
            let i = cx.kb.counter();
            let store = elem(&p, Expr::Var(i))?;
            let mut body = p.stmts.clone();
            body.push(for_loop(i, numel, vec![store]));
            Ok(body)
        }
        Granularity::Axis {
            outer,
            len,
            inner,
            block,
        } => {
            let (ov, o) = dim(cx, outer);
            let (av, a) = dim(cx, len);
            let (iv, i) = dim(cx, inner);
            let x_index = flat_index(&[o.clone(), a.clone(), i.clone()], &[outer, len, inner]);
            if block == 0 {
                // One parameter per axis index: load it once per run of `inner` elements.
                let p = load_params(cx, a);
                let store = elem(&p, x_index)?;
                let mut mid = p.stmts.clone();
                mid.extend(wrap(iv, inner, vec![store]));
                Ok(wrap(ov, outer, wrap(av, len, mid)))
            } else {
                let blocks = len.div_ceil(block);
                let b = a.div(Expr::Int(block as i64));
                let p_index = flat_index(&[o, b, i], &[outer, blocks, inner]);
                let p = load_params(cx, p_index);
                let store = elem(&p, x_index)?;
                let mut body = p.stmts.clone();
                body.push(store);
                Ok(wrap(ov, outer, wrap(av, len, wrap(iv, inner, body))))
            }
        }
    }
}

/// Requantize, QTable, QAdd and QMul: one loop nest over the output (QAdd and QMul broadcast
/// as the element-wise kernels do), each element computed as the interpreter does, with the
/// ops' fixed-point scales as constants of the requantizations:
/// - Requantize: `output.store(scale.apply(x - x_zp))`;
/// - QTable: `table[x - min(x's type)]`;
/// - QAdd: `output.store(output_scale.apply(a_scale.apply((a - a_zp) << ls) +
///   b_scale.apply((b - b_zp) << ls)))`, the shift and the sum wrapping in i32;
/// - QMul: `output.store(scale.apply((a - a_zp) * (b - b_zp)))`.
fn integer_elementwise(op: &Op, cx: &mut Lowering) -> Result<Vec<Stmt>, BackendError> {
    let operands = if matches!(op, Op::QTable) { 1 } else { 2 }.min(cx.inputs.len());
    let types: Vec<DType> = cx.inputs.iter().map(|t| t.dtype).collect();
    let sp = super::elementwise::space_of(cx, operands);
    let load = |i: usize| Expr::load(i, sp.inputs[i].clone());
    let rounding = match op {
        Op::Requantize { rounding, .. } | Op::QAdd { rounding, .. } | Op::QMul { rounding, .. } => {
            *rounding
        }
        _ => Default::default(),
    };
    let apply = |v: Expr, f: &FixedPoint| {
        Expr::requantize(
            v,
            Expr::int(i64::from(f.multiplier)),
            Expr::int(i64::from(f.shift)),
            rounding,
        )
    };
    let value = match (op, types.as_slice()) {
        (
            Op::Requantize {
                x_zero_point,
                scale,
                output,
                ..
            },
            [t],
        ) => {
            let (x, _) = centered(load(0), *t, *x_zero_point)?;
            store(apply(x, scale), output)
        }
        (Op::QTable, [t, _]) => {
            let offset = match t {
                DType::I8 => 128,
                DType::U8 => 0,
                _ => return crate::cannot!("QTable on {t} input"),
            };
            let index = match offset {
                0 => widen(load(0)),
                k => widen(load(0)).add(Expr::int(k)),
            };
            Expr::load(cx.input(1), index)
        }
        (
            Op::QAdd {
                a_zero_point,
                b_zero_point,
                left_shift,
                a_scale,
                b_scale,
                output_scale,
                output,
                ..
            },
            [ta, tb],
        ) => {
            let (a, a_bound) = centered(load(0), *ta, *a_zero_point)?;
            let (b, b_bound) = centered(load(1), *tb, *b_zero_point)?;
            let a = apply(wrapping_shl(a, *left_shift, a_bound), a_scale);
            let b = apply(wrapping_shl(b, *left_shift, b_bound), b_scale);
            // The sum wraps as the interpreter's `wrapping_add` (compilers keep only the low
            // word of the i64 sum).
            let wide = |e: Expr| Expr::cast(DType::I64, e);
            let sum = Expr::cast(DType::I32, wide(a).add(wide(b)));
            store(apply(sum, output_scale), output)
        }
        (
            Op::QMul {
                a_zero_point,
                b_zero_point,
                scale,
                output,
                ..
            },
            [ta, tb],
        ) => {
            let (a, a_bound) = centered(load(0), *ta, *a_zero_point)?;
            let (b, b_bound) = centered(load(1), *tb, *b_zero_point)?;
            if a_bound.saturating_mul(b_bound) > i64::from(i32::MAX) {
                return crate::cannot!(
                    "QMul zero points {a_zero_point} and {b_zero_point} overflow the i32 product"
                );
            }
            store(apply(a.mul(b), scale), output)
        }
        _ => return crate::cannot!("{} with {} inputs", op.name(), types.len()),
    };
    let body = vec![Stmt::Store {
        param: cx.output(0),
        index: sp.output.clone(),
        value,
    }];
    Ok(loop_nest(&sp.vars, &sp.extents, body))
}

/// A loop counter over `extent` and the index it gives, or no loop and index 0 for extent 1.
fn dim(cx: &mut Lowering, extent: usize) -> (Option<Var>, Expr) {
    if extent == 1 {
        (None, Expr::Int(0))
    } else {
        let v = cx.kb.counter();
        (Some(v), Expr::Var(v))
    }
}

/// `body` inside a loop over `var`, if there is one.
fn wrap(var: Option<Var>, extent: usize, body: Vec<Stmt>) -> Vec<Stmt> {
    match var {
        Some(v) => vec![for_loop(v, extent, body)],
        None => body,
    }
}

/// `saturate(round_half_even(x / scale) + zero_point)`, in f32 as the interpreter computes it.
fn quantize(x: Expr, p: &Params, out_ty: DType) -> Result<Expr, BackendError> {
    let (lo, hi) = match out_ty {
        DType::U8 => (0.0, 255.0),
        DType::I8 => (-128.0, 127.0),
        DType::I16 => (-32768.0, 32767.0),
        _ => return crate::cannot!("QuantizeLinear to {out_ty}"),
    };
    let q = Expr::un(UnOp::RoundEven, x.div(p.scale.clone()));
    let q = match &p.zero_point {
        Some((zp, _)) => q.add(Expr::cast(DType::F32, zp.clone())),
        None => q,
    };
    let q = q
        .max(Expr::Const(lo, DType::F32))
        .min(Expr::Const(hi, DType::F32));
    Ok(Expr::cast(out_ty, q))
}

/// `(x - zero_point) * scale`; the difference is exact in i32 for the narrow types and in i64
/// for i32, then rounded to f32 once, as the interpreter does.
fn dequantize(x: Expr, x_ty: DType, p: &Params) -> Expr {
    let diff = match &p.zero_point {
        Some((zp, _)) => {
            let wide = if x_ty == DType::I32 {
                DType::I64
            } else {
                DType::I32
            };
            Expr::cast(wide, x).sub(Expr::cast(wide, zp.clone()))
        }
        None => x,
    };
    Expr::cast(DType::F32, diff).mul(p.scale.clone())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::cloned_ref_to_slice_refs)] // tests may unwrap
mod tests {
    use kiln_ir::{Tensor, TensorData};

    use super::*;
    use crate::lower::elementwise::tests::check;

    fn t(shape: &[usize], data: TensorData) -> Tensor {
        Tensor::new(shape.to_vec(), data).unwrap()
    }

    fn ramp(shape: &[usize], scale: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let v = (0..n)
            .map(|i| (i as f32 - n as f32 / 2.0) * scale)
            .collect();
        Tensor::from_f32(shape.to_vec(), v).unwrap()
    }

    fn q(axis: Option<usize>, dtype: DType, block_size: usize) -> Op {
        Op::QuantizeLinear {
            axis,
            dtype,
            block_size,
        }
    }

    fn dq(axis: Option<usize>, block_size: usize) -> Op {
        Op::DequantizeLinear { axis, block_size }
    }

    #[test]
    fn per_tensor_rounds_half_to_even_and_saturates() {
        let x =
            Tensor::from_f32(vec![7], vec![0.0, 2.0, 3.0, 5.0, 1000.0, -254.0, -1000.0]).unwrap();
        let s = Tensor::scalar_f32(2.0);
        let zp = t(&[], TensorData::U8(vec![128]));
        check(q(None, DType::U8, 0), &[x.clone(), s.clone(), zp]);
        check(q(None, DType::I8, 0), &[x.clone(), s.clone()]);
        check(q(None, DType::I16, 0), &[x, s.clone()]);
        let xi = t(&[3], TensorData::I32(vec![-3, 1 << 20, i32::MAX]));
        check(dq(None, 0), &[xi.clone(), s.clone()]);
        let zi = t(&[], TensorData::I32(vec![i32::MIN]));
        check(dq(None, 0), &[xi, s, zi]);
    }

    #[test]
    fn per_axis_and_blocked() {
        let x = ramp(&[2, 3, 4], 0.7);
        let s = Tensor::from_f32(vec![3], vec![0.5, 1.0, 0.25]).unwrap();
        let zp = t(&[3], TensorData::I8(vec![0, -3, 10]));
        check(
            q(Some(1), DType::I8, 0),
            &[x.clone(), s.clone(), zp.clone()],
        );
        let xq = t(
            &[2, 3, 2],
            TensorData::I8(vec![-128, -1, 0, 1, 5, 127, 3, 4, 5, 6, 7, 8]),
        );
        check(dq(Some(1), 0), &[xq.clone(), s.clone(), zp]);
        check(dq(Some(1), 0), &[xq, s]);
        // Blocks of 2 along axis 2 (the last one short), and along an outer axis.
        let bs = ramp(&[2, 3, 3], 0.1);
        let bs = Tensor::from_f32(
            vec![2, 3, 3],
            bs.as_f32()
                .unwrap()
                .iter()
                .map(|v| v.abs() + 0.05)
                .collect(),
        )
        .unwrap();
        let x5 = ramp(&[2, 3, 5], 0.3);
        check(q(Some(2), DType::U8, 2), &[x5.clone(), bs.clone()]);
        let bz = t(&[2, 3, 3], TensorData::U8((0..18).map(|i| i * 7).collect()));
        check(q(Some(2), DType::U8, 2), &[x5, bs.clone(), bz.clone()]);
        let xu = t(&[2, 3, 5], TensorData::U8((0..30).map(|i| i * 8).collect()));
        check(dq(Some(2), 2), &[xu, bs, bz]);
        let s0 = Tensor::from_f32(vec![2, 2], vec![1.0, 10.0, 100.0, 1000.0]).unwrap();
        let x0 = t(&[4, 2], TensorData::U8(vec![1, 2, 3, 4, 5, 6, 7, 8]));
        check(dq(Some(0), 2), &[x0, s0]);
    }
}
