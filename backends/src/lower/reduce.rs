//! Kernel lowering of the `reduce` ops: ReduceMean, ReduceSum, ReduceMax, ReduceMin and ArgMax.
//!
//! Every output element gets its own accumulator local: the loops run over the kept
//! dimensions outside and the reduced dimensions inside (in row-major order, the order the
//! reference `kiln_ir::ops::reduce` adds in). Float sums accumulate in f32 (kernels have no
//! f64), integer sums in i64 and wrap to the element type as the reference does.

use kiln_ir::{DType, Op};

use super::Lowering;
use crate::error::BackendError;
use crate::kernel::{flat_index, for_loop, loop_nest, BinOp, Expr, Stmt, UnOp, Var};

/// The combining rule of a `ReduceX` op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Sum,
    Mean,
    Max,
    Min,
}

pub fn lower(op: &Op, cx: &mut Lowering) -> Result<Vec<Stmt>, BackendError> {
    let (kind, axes) = match op {
        Op::ReduceSum { axes, .. } => (Kind::Sum, axes),
        Op::ReduceMean { axes, .. } => (Kind::Mean, axes),
        Op::ReduceMax { axes, .. } => (Kind::Max, axes),
        Op::ReduceMin { axes, .. } => (Kind::Min, axes),
        Op::ArgMax {
            axis,
            select_last_index,
            ..
        } => return argmax(cx, *axis, *select_last_index),
        _ => return crate::cannot!("{} is not a reduce op", op.name()),
    };
    reduce(cx, kind, axes)
}

/// The input's shape and element type.
fn input_type(cx: &Lowering) -> Result<(Vec<usize>, DType), BackendError> {
    match cx.inputs.first() {
        Some(t) => Ok((t.shape.clone(), t.dtype)),
        None => crate::cannot!("missing input X"),
    }
}

/// The accumulator's type and initial value, and the value of an empty reduction.
fn accumulator(kind: Kind, dtype: DType) -> Result<(DType, Expr), BackendError> {
    let c = |v: f64, t: DType| Expr::Const(v, t);
    Ok(match (kind, dtype) {
        (Kind::Sum | Kind::Mean, DType::Bool) => {
            return crate::cannot!("sums of bool tensors are not defined")
        }
        (Kind::Sum | Kind::Mean, DType::F32) => (DType::F32, c(0.0, DType::F32)),
        (Kind::Sum | Kind::Mean, _) => (DType::I64, c(0.0, DType::I64)),
        // Max is "any" and Min is "all" for bool (0 / 1 start values).
        (Kind::Max, DType::Bool) => (dtype, c(0.0, dtype)),
        (Kind::Min, DType::Bool) => (dtype, c(1.0, dtype)),
        (Kind::Max, DType::F32) => (dtype, c(f64::NEG_INFINITY, dtype)),
        (Kind::Min, DType::F32) => (dtype, c(f64::INFINITY, dtype)),
        (Kind::Max, _) => (dtype, int_bound(dtype, false)),
        (Kind::Min, _) => (dtype, int_bound(dtype, true)),
    })
}

/// The largest (`max`) or smallest value of an integer type.
fn int_bound(dtype: DType, max: bool) -> Expr {
    let (lo, hi): (i64, i64) = match dtype {
        DType::I8 => (i8::MIN.into(), i8::MAX.into()),
        DType::U8 | DType::Bool => (0, u8::MAX.into()),
        DType::I16 => (i16::MIN.into(), i16::MAX.into()),
        DType::I32 => (i32::MIN.into(), i32::MAX.into()),
        // f64 rounds i64::MAX up to 2^63; the C literal printer saturates it back.
        DType::I64 | DType::F32 => (i64::MIN, i64::MAX),
    };
    Expr::Const(if max { hi as f64 } else { lo as f64 }, dtype)
}

/// ReduceSum / Mean / Max / Min over `axes` (keepdims does not change the flat layout).
fn reduce(cx: &mut Lowering, kind: Kind, axes: &[usize]) -> Result<Vec<Stmt>, BackendError> {
    let (shape, dtype) = input_type(cx)?;
    let (acc_ty, init) = accumulator(kind, dtype)?;
    let (x, y) = (cx.input(0), cx.output(0));
    let kept: Vec<usize> = (0..shape.len()).filter(|d| !axes.contains(d)).collect();
    let kept_shape: Vec<usize> = kept.iter().filter_map(|&d| shape.get(d).copied()).collect();
    let red_shape: Vec<usize> = axes.iter().filter_map(|&d| shape.get(d).copied()).collect();
    let count: usize = red_shape.iter().product();
    if kept_shape.iter().product::<usize>() == 0 {
        return Ok(Vec::new());
    }
    let outer = cx.counters(kept.len());
    let inner = cx.counters(axes.len());
    // Input offset = (kept dims' part, hoisted per output element) + (reduced dims' part).
    let strides = kiln_ir::tensor::strides(&shape);
    let base_offset = strided_sum(&outer, &kept, &shape, &strides);
    let red_offset = strided_sum(&inner, axes, &shape, &strides);
    let out_idx: Vec<Expr> = outer.iter().map(|&v| Expr::Var(v)).collect();
    let (base, acc) = (cx.var(DType::I32), cx.var(acc_ty));
    let elem = Expr::load(x, Expr::Var(base).add(red_offset));
    let elem = if acc_ty == dtype {
        elem
    } else {
        Expr::cast(acc_ty, elem)
    };
    let combined = match kind {
        Kind::Sum | Kind::Mean => Expr::Var(acc).add(elem),
        Kind::Max => Expr::Var(acc).max(elem),
        Kind::Min => Expr::Var(acc).min(elem),
    };
    let out_index = flat_index(&out_idx, &kept_shape);
    let body = if count == 0 {
        // Nothing to combine: store the empty reduction's value directly.
        vec![Stmt::Store {
            param: y,
            index: out_index,
            value: empty_value(kind, init, acc_ty, dtype),
        }]
    } else {
        let mut body = vec![
            Stmt::Let {
                var: base,
                ty: DType::I32,
                init: base_offset,
            },
            Stmt::Let {
                var: acc,
                ty: acc_ty,
                init,
            },
        ];
        body.extend(loop_nest(
            &inner,
            &red_shape,
            vec![Stmt::Assign {
                var: acc,
                value: combined,
            }],
        ));
        body.push(Stmt::Store {
            param: y,
            index: out_index,
            value: finish(kind, acc, acc_ty, dtype, count),
        });
        body
    };
    Ok(loop_nest(&outer, &kept_shape, body))
}

/// `sum(vars[i] * strides[dims[i]])`, leaving out unit dimensions (their counter is always 0).
fn strided_sum(vars: &[Var], dims: &[usize], shape: &[usize], strides: &[usize]) -> Expr {
    let mut acc: Option<Expr> = None;
    for (&v, &d) in vars.iter().zip(dims) {
        let (Some(&n), Some(&st)) = (shape.get(d), strides.get(d)) else {
            continue;
        };
        if n == 1 {
            continue;
        }
        let term = Expr::Var(v).affine(st as i64, 0);
        acc = Some(match acc {
            None => term,
            Some(a) => a.add(term),
        });
    }
    acc.unwrap_or(Expr::Int(0))
}

/// The value of an empty reduction, as the reference defines it: the start value (0 for sums,
/// -inf / +inf or the type's bounds for Max / Min), NaN for a float mean, 0 for an integer mean.
fn empty_value(kind: Kind, init: Expr, acc_ty: DType, dtype: DType) -> Expr {
    let value = match (kind, dtype) {
        (Kind::Mean, DType::F32) => Expr::Const(f64::NAN, DType::F32),
        _ => init,
    };
    if acc_ty == dtype || dtype == DType::F32 {
        value
    } else {
        Expr::cast(dtype, value)
    }
}

/// The output value from a non-empty accumulator: the mean divides by the count, and integer
/// sums are cast back (wrapping) to the element type.
fn finish(kind: Kind, acc: Var, acc_ty: DType, dtype: DType, count: usize) -> Expr {
    let value = match (kind, acc_ty) {
        (Kind::Mean, DType::F32) => Expr::Var(acc).div(Expr::f32(count as f32)),
        (Kind::Mean, _) => Expr::Var(acc).div(Expr::Int(count as i64)),
        _ => Expr::Var(acc),
    };
    if acc_ty == dtype {
        value
    } else {
        Expr::cast(dtype, value)
    }
}

/// ArgMax along `axis` of the `[outer, n, inner]` view of X: a running best value and index;
/// ties keep the first index, or the last with `last`. NaN counts as the largest float.
fn argmax(cx: &mut Lowering, axis: usize, last: bool) -> Result<Vec<Stmt>, BackendError> {
    let (shape, dtype) = input_type(cx)?;
    if dtype == DType::Bool {
        return crate::cannot!("ArgMax of a bool tensor");
    }
    let Some(&n) = shape.get(axis) else {
        return crate::cannot!("axis {axis} is out of range for shape {shape:?}");
    };
    let outer: usize = shape.iter().take(axis).product();
    let inner: usize = shape.iter().skip(axis + 1).product();
    if n == 0 || outer * inner == 0 {
        return Ok(Vec::new());
    }
    let (x, y) = (cx.input(0), cx.output(0));
    let (o, i) = (cx.kb.counter(), cx.kb.counter());
    let out_index = Expr::Var(o).affine(inner as i64, 0).add(Expr::Var(i));
    if n == 1 {
        // A single candidate: every index is 0.
        let store = Stmt::Store {
            param: y,
            index: out_index,
            value: Expr::Const(0.0, DType::I64),
        };
        return Ok(vec![for_loop(
            o,
            outer,
            vec![for_loop(i, inner, vec![store])],
        )]);
    }
    let k = cx.kb.counter();
    let (base, best, best_k, e) = (
        cx.var(DType::I32),
        cx.var(dtype),
        cx.var(DType::I32),
        cx.var(dtype),
    );
    let greater = |a: Expr, b: Expr| {
        let gt = Expr::bin(BinOp::Gt, a.clone(), b.clone());
        if dtype == DType::F32 {
            let is_nan = |v: Expr| Expr::bin(BinOp::Ne, v.clone(), v);
            let not_nan = Expr::un(UnOp::Not, is_nan(b));
            Expr::bin(BinOp::Or, gt, is_nan(a).and(not_nan))
        } else {
            gt
        }
    };
    let take = if last {
        Expr::un(UnOp::Not, greater(Expr::Var(best), Expr::Var(e)))
    } else {
        greater(Expr::Var(e), Expr::Var(best))
    };
    // Candidate k + 1 (element 0 is the starting best).
    let candidate = Expr::Var(k).add(Expr::Int(1));
    let cand_index = Expr::Var(base).add(Expr::Var(k).affine(inner as i64, inner as i64));
    let scan = vec![
        Stmt::Let {
            var: e,
            ty: dtype,
            init: Expr::load(x, cand_index),
        },
        Stmt::If {
            cond: take,
            then: vec![
                Stmt::Assign {
                    var: best,
                    value: Expr::Var(e),
                },
                Stmt::Assign {
                    var: best_k,
                    value: candidate,
                },
            ],
            otherwise: Vec::new(),
        },
    ];
    let mut body = vec![
        Stmt::Let {
            var: base,
            ty: DType::I32,
            init: Expr::Var(o).affine((n * inner) as i64, 0).add(Expr::Var(i)),
        },
        Stmt::Let {
            var: best,
            ty: dtype,
            init: Expr::load(x, Expr::Var(base)),
        },
        Stmt::Let {
            var: best_k,
            ty: DType::I32,
            init: Expr::Int(0),
        },
    ];
    body.push(for_loop(k, n - 1, scan));
    body.push(Stmt::Store {
        param: y,
        index: out_index,
        value: Expr::cast(DType::I64, Expr::Var(best_k)),
    });
    Ok(vec![for_loop(o, outer, vec![for_loop(i, inner, body)])])
}
