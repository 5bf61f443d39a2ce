//! Kernel lowering of MaxPool (with the optional Indices output), AveragePool,
//! GlobalAveragePool and GlobalMaxPool, on the window machinery of `conv/window.rs`.
//!
//! As in the reference, taps outside the input are skipped, a max starts at the type's lowest
//! value and ignores NaNs (`v > m` is false for them), and the first maximum in row-major tap
//! order wins. AveragePool divides by the taps inside the input, or with `count_include_pad`
//! by those inside the input and its explicit pads (a `ceil_mode` overhang never counts).
//!
//! QAveragePool sums the raw taps inside the input in i32; padding taps (which read the zero
//! point) are accounted for from the two counts: `(padded - inside) * zero_point` joins the sum
//! that TFLite's rounding division divides, and the centered sum the rescaled form requantizes
//! is `sum - inside * zero_point`.

use kiln_ir::{DType, Op, QOut};

use super::conv::{
    add, counter, dot, fold, fold_expr, hoist, output_nest, strides, wrap, Axis, TapNest, Taps,
};
use super::integer::{store, value_range, widen};
use super::Lowering;
use crate::error::BackendError;
use crate::kernel::{BinOp, Expr, Stmt};

pub fn lower(op: &Op, cx: &mut Lowering) -> Result<Vec<Stmt>, BackendError> {
    let (Some(x), Some(y)) = (cx.inputs.first(), cx.outputs.first()) else {
        return crate::cannot!("{} takes one input", op.name());
    };
    if x.shape.len() < 3 || y.shape.len() != x.shape.len() {
        return crate::cannot!("{} needs an (N, C, spatial..) input", op.name());
    }
    let body = match op {
        Op::GlobalAveragePool | Op::GlobalMaxPool => global_pool(op, cx)?,
        Op::MaxPool { .. } | Op::AveragePool { .. } | Op::QAveragePool { .. } => windowed(op, cx)?,
        _ => return crate::cannot!("{} is not a pool", op.name()),
    };
    Ok(fold(body))
}

/// The lowest value of `t`: where a max starts (and what an all-padding window yields).
fn lowest(t: DType) -> Result<Expr, BackendError> {
    match t {
        DType::F32 => Ok(Expr::f32(f32::MIN)),
        DType::I8 => Ok(Expr::Const(f64::from(i8::MIN), t)),
        DType::U8 => Ok(Expr::Const(0.0, t)),
        _ => crate::cannot!("pooling on {t} input"),
    }
}

/// `m = v > m ? v : m`: a max that skips NaN values.
fn max_update(m: crate::kernel::Var, v: Expr) -> Stmt {
    Stmt::Assign {
        var: m,
        value: Expr::select(
            Expr::bin(BinOp::Gt, v.clone(), Expr::Var(m)),
            v,
            Expr::Var(m),
        ),
    }
}

/// GlobalAveragePool / GlobalMaxPool: one value per (N, C) plane.
fn global_pool(op: &Op, cx: &mut Lowering) -> Result<Vec<Stmt>, BackendError> {
    let (Some(x), Some(y)) = (cx.inputs.first(), cx.outputs.first()) else {
        return crate::cannot!("{} takes one input", op.name());
    };
    if x.dtype != DType::F32 {
        return crate::cannot!("{} on {} input", op.name(), x.dtype);
    }
    let planes = y.numel();
    let plane: usize = x.shape.iter().skip(2).product();
    let (xp, yp) = (cx.input(0), cx.output(0));
    let (pv, p) = counter(cx, planes);
    let (iv, i) = counter(cx, plane);
    let acc = cx.var(DType::F32);
    let mut stmts = Vec::new();
    let base = hoist(cx, &mut stmts, p.clone().affine(plane as i64, 0));
    let v = Expr::load(xp, add(base, i));
    let average = matches!(op, Op::GlobalAveragePool);
    let (init, update) = if average {
        (
            Expr::f32(0.0),
            Stmt::Assign {
                var: acc,
                value: Expr::Var(acc).add(v),
            },
        )
    } else {
        (lowest(DType::F32)?, max_update(acc, v))
    };
    stmts.push(Stmt::Let {
        var: acc,
        ty: DType::F32,
        init,
    });
    if plane > 0 {
        stmts.extend(wrap(iv, plane, vec![update]));
    }
    let value = if average {
        Expr::Var(acc).div(Expr::f32(plane as f32))
    } else {
        Expr::Var(acc)
    };
    stmts.push(Stmt::Store {
        param: yp,
        index: p,
        value,
    });
    Ok(wrap(pv, planes, stmts))
}

/// The attributes of a windowed pool.
struct Window<'a> {
    kernel: &'a [usize],
    strides: &'a [usize],
    dilations: &'a [usize],
    pads: &'a [usize],
}

impl<'a> Window<'a> {
    fn of(op: &'a Op) -> Option<Self> {
        match op {
            Op::MaxPool {
                kernel_shape,
                strides,
                dilations,
                pads,
                ..
            }
            | Op::AveragePool {
                kernel_shape,
                strides,
                dilations,
                pads,
                ..
            }
            | Op::QAveragePool {
                kernel_shape,
                strides,
                dilations,
                pads,
                ..
            } => Some(Window {
                kernel: kernel_shape,
                strides,
                dilations,
                pads,
            }),
            _ => None,
        }
    }

    /// One axis per spatial dimension, and the end pads.
    fn axes(&self, x: &[usize], y: &[usize]) -> Result<(Vec<Axis>, Vec<usize>), BackendError> {
        let n = self.kernel.len();
        if x.len() != n + 2
            || self.strides.len() != n
            || self.dilations.len() != n
            || self.pads.len() != 2 * n
            || self.strides.contains(&0)
            || self.dilations.contains(&0)
            || self.kernel.contains(&0)
        {
            return crate::cannot!("pool attributes do not match the input rank");
        }
        let axes = (0..n)
            .map(|d| Axis {
                in_len: x[d + 2],
                out_len: y[d + 2],
                k_len: self.kernel[d],
                stride: self.strides[d],
                dil: self.dilations[d],
                pad: self.pads[d],
            })
            .collect();
        Ok((axes, self.pads[n..].to_vec()))
    }
}

/// What the windowed pool computes per output.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Max {
        indices: bool,
        column_major: bool,
    },
    Average {
        include_pad: bool,
    },
    /// QAveragePool: an i32 sum of the taps inside the input, divided (TFLite's rounding) or
    /// requantized by the count's multiplier and shift (`rescale`).
    QAverage {
        include_pad: bool,
        x_zero_point: i32,
        output: QOut,
        rescale: bool,
        rounding: kiln_ir::fixed_point::Rounding,
    },
}

/// MaxPool and AveragePool: a tap nest per output position of every (N, C) plane.
fn windowed(op: &Op, cx: &mut Lowering) -> Result<Vec<Stmt>, BackendError> {
    let kind = match op {
        Op::MaxPool {
            column_major_indices,
            ..
        } => Kind::Max {
            indices: cx.outputs.len() > 1,
            column_major: *column_major_indices,
        },
        Op::AveragePool {
            count_include_pad, ..
        } => Kind::Average {
            include_pad: *count_include_pad,
        },
        Op::QAveragePool {
            count_include_pad,
            x_zero_point,
            output,
            rescale,
            rounding,
            ..
        } => Kind::QAverage {
            include_pad: *count_include_pad,
            x_zero_point: *x_zero_point,
            output: *output,
            rescale: *rescale,
            rounding: *rounding,
        },
        _ => return crate::cannot!("{} is not a windowed pool", op.name()),
    };
    let (Some(win), Some(x), Some(y)) = (Window::of(op), cx.inputs.first(), cx.outputs.first())
    else {
        return crate::cannot!("{} is not a windowed pool", op.name());
    };
    let dtype = x.dtype;
    if matches!(kind, Kind::Average { .. }) && dtype != DType::F32 {
        return crate::cannot!("AveragePool on {dtype} input");
    }
    // QAveragePool sums in i32: every window sum must fit, with the padding's zero points.
    if let Kind::QAverage { .. } = kind {
        value_range(dtype)?;
        if win.kernel.iter().product::<usize>() > 1 << 22 {
            return crate::cannot!("a window of more than 2^22 taps overflows the i32 sum");
        }
    }
    let acc_type = match kind {
        Kind::QAverage { .. } => DType::I32,
        _ => dtype,
    };
    let (axes, pads_end) = win.axes(&x.shape, &y.shape)?;
    let in_sp = &x.shape[2..];
    let out_sp = &y.shape[2..];
    let planes = x.shape[0] * x.shape[1];
    let in_plane: usize = in_sp.iter().product();
    let out_plane: usize = out_sp.iter().product();
    let (x_strides, y_strides) = (strides(in_sp), strides(out_sp));
    let target = index_strides(in_sp, kind);
    let (pv, p) = counter(cx, planes);
    let mut head = Vec::new();
    let x_plane = hoist(cx, &mut head, p.clone().affine(in_plane as i64, 0));
    let y_plane = hoist(cx, &mut head, p.affine(out_plane as i64, 0));
    let cx_params = (cx.input(0), cx.output(0), cx.output(1));
    let nest = output_nest(cx, &axes, &mut |cx, outs, checked| {
        let mut stmts = Vec::new();
        let starts: Vec<Expr> = axes.iter().zip(outs).map(|(a, o)| a.start(o)).collect();
        let x_win = hoist(
            cx,
            &mut stmts,
            add(x_plane.clone(), dot(&starts, &x_strides)),
        );
        let acc = cx.var(acc_type);
        let init = match kind {
            Kind::Max { .. } => lowest(dtype)?,
            Kind::Average { .. } => Expr::f32(0.0),
            Kind::QAverage { .. } => Expr::int(0),
        };
        stmts.push(Stmt::Let {
            var: acc,
            ty: acc_type,
            init,
        });
        // MaxPool's Indices: the position of the best tap in the target storage order.
        let best = match kind {
            Kind::Max { indices: true, .. } => {
                let v = cx.var(DType::I32);
                let none: usize = target.iter().sum();
                stmts.push(Stmt::Let {
                    var: v,
                    ty: DType::I32,
                    init: Expr::int(-(none as i64)),
                });
                Some((v, hoist(cx, &mut stmts, dot(&starts, &target))))
            }
            _ => None,
        };
        let nest = TapNest {
            axes: &axes,
            outs,
            taps: checked,
            x_strides: &x_strides,
            w_strides: &[],
        };
        let (xp, _, _) = cx_params;
        stmts.extend(nest.build(cx, x_win, Expr::int(0), &mut |_, xi, _, ks| {
            let v = Expr::load(xp, xi);
            match (kind, &best) {
                (Kind::Average { .. }, _) => vec![Stmt::Assign {
                    var: acc,
                    value: Expr::Var(acc).add(v),
                }],
                (Kind::QAverage { .. }, _) => vec![Stmt::Assign {
                    var: acc,
                    value: Expr::Var(acc).add(widen(v)),
                }],
                (Kind::Max { .. }, Some((bv, t0))) => {
                    let steps: Vec<usize> =
                        axes.iter().zip(&target).map(|(a, &t)| a.dil * t).collect();
                    vec![Stmt::If {
                        cond: Expr::bin(BinOp::Gt, v.clone(), Expr::Var(acc)),
                        then: vec![
                            Stmt::Assign { var: acc, value: v },
                            Stmt::Assign {
                                var: *bv,
                                value: add(t0.clone(), dot(ks, &steps)),
                            },
                        ],
                        otherwise: Vec::new(),
                    }]
                }
                (Kind::Max { .. }, None) => vec![max_update(acc, v)],
            }
        }));
        let (_, yp, ip) = cx_params;
        let y_index = add(y_plane.clone(), dot(outs, &y_strides));
        let value = match kind {
            Kind::Average { include_pad } => {
                let count = fold_expr(divisor(&axes, &pads_end, outs, checked, include_pad));
                let count = match count {
                    Expr::Int(c) => Expr::f32(c as f32),
                    other => Expr::cast(DType::F32, other),
                };
                Expr::Var(acc).div(count)
            }
            Kind::QAverage {
                include_pad,
                x_zero_point,
                output,
                rescale,
                rounding,
            } => {
                let inside = fold_expr(divisor(&axes, &pads_end, outs, checked, false));
                let count = if include_pad {
                    fold_expr(divisor(&axes, &pads_end, outs, checked, true))
                } else {
                    inside.clone()
                };
                let q = QAverage {
                    sum: Expr::Var(acc),
                    inside,
                    count,
                    zero_point: x_zero_point,
                    output,
                    rounding,
                };
                if rescale {
                    let single = cx.inputs.get(1).is_some_and(|t| t.numel() == 1);
                    q.rescaled(cx.input(1), cx.input(2), single)
                } else {
                    q.divided(cx, &mut stmts, include_pad)
                }
            }
            Kind::Max { .. } => Expr::Var(acc),
        };
        if let Some((bv, _)) = best {
            let y_index = hoist(cx, &mut stmts, y_index.clone());
            stmts.push(Stmt::Store {
                param: yp,
                index: y_index.clone(),
                value,
            });
            stmts.push(Stmt::Store {
                param: ip,
                index: y_index,
                value: Expr::cast(DType::I64, add(x_plane.clone(), Expr::Var(bv))),
            });
        } else {
            stmts.push(Stmt::Store {
                param: yp,
                index: y_index,
                value,
            });
        }
        Ok(stmts)
    })?;
    head.extend(nest);
    Ok(wrap(pv, planes, head))
}

/// One QAveragePool output: `sum` of the raw taps inside the input (`inside` of them) and the
/// window's `count` (with the padding when `count_include_pad`).
struct QAverage {
    sum: Expr,
    inside: Expr,
    count: Expr,
    zero_point: i32,
    output: QOut,
    rounding: kiln_ir::fixed_point::Rounding,
}

impl QAverage {
    /// `sum - inside * zero_point` (the padding's taps center to zero), requantized by entry
    /// `count` of the multiplier and shift tables. A count of 0 requantizes a sum of 0, which
    /// gives the reference's `output.store(0)`.
    /// With `single`, one table entry serves every window (they all count every tap).
    fn rescaled(&self, multipliers: usize, shifts: usize, single: bool) -> Expr {
        let centered = if self.zero_point == 0 {
            self.sum.clone()
        } else {
            self.sum.clone().sub(
                self.inside
                    .clone()
                    .mul(Expr::int(i64::from(self.zero_point))),
            )
        };
        let requantized = Expr::requantize(
            fold_expr(centered),
            Expr::load(
                multipliers,
                if single {
                    Expr::int(0)
                } else {
                    self.count.clone()
                },
            ),
            Expr::load(
                shifts,
                if single {
                    Expr::int(0)
                } else {
                    self.count.clone()
                },
            ),
            self.rounding,
        );
        store(requantized, &self.output)
    }

    /// TFLite's division of the raw sum (padding taps adding the zero point when they count):
    /// `(sum +- count / 2) / count` truncating, so halves round away from zero, clamped to
    /// the output range. An empty window gives `output.store(0)`.
    fn divided(&self, cx: &mut Lowering, stmts: &mut Vec<Stmt>, include_pad: bool) -> Expr {
        let out = &self.output;
        let empty = Expr::int(i64::from(out.store(0)));
        if let Expr::Int(0) = self.count {
            return empty;
        }
        let zp = i64::from(self.zero_point);
        let sum = if include_pad && zp != 0 {
            self.sum.clone().add(
                self.count
                    .clone()
                    .sub(self.inside.clone())
                    .mul(Expr::int(zp)),
            )
        } else {
            self.sum.clone()
        };
        let sum_var = cx.var(DType::I32);
        stmts.push(Stmt::Let {
            var: sum_var,
            ty: DType::I32,
            init: fold_expr(sum),
        });
        let sum = Expr::Var(sum_var);
        let half = match &self.count {
            Expr::Int(c) => Expr::int(c / 2),
            c => c.clone().div(Expr::int(2)),
        };
        let average = Expr::select(
            Expr::bin(BinOp::Gt, sum.clone(), Expr::int(0)),
            sum.clone().add(half.clone()).div(self.count.clone()),
            sum.sub(half).div(self.count.clone()),
        );
        let clamped = average
            .max(Expr::int(i64::from(out.min)))
            .min(Expr::int(i64::from(out.max)));
        if matches!(self.count, Expr::Int(_)) {
            clamped
        } else {
            Expr::select(
                Expr::bin(BinOp::Eq, self.count.clone(), Expr::int(0)),
                empty,
                clamped,
            )
        }
    }
}

/// Strides of MaxPool's Indices over the spatial dimensions: row-major, or column-major
/// with `storage_order = 1`.
fn index_strides(sp: &[usize], kind: Kind) -> Vec<usize> {
    match kind {
        Kind::Max {
            column_major: true, ..
        } => {
            let mut s = 1usize;
            sp.iter()
                .map(|&len| {
                    let cur = s;
                    s *= len;
                    cur
                })
                .collect()
        }
        _ => strides(sp),
    }
}

/// AveragePool's divisor at output `outs`: a product of per-dimension tap counts, constant
/// in dimensions whose window is known to lie inside the input.
fn divisor(
    axes: &[Axis],
    pads_end: &[usize],
    outs: &[Expr],
    checked: &[Taps],
    include_pad: bool,
) -> Expr {
    let mut count = Expr::int(1);
    for (d, (a, o)) in axes.iter().zip(outs).enumerate() {
        let k = a.k_len as i64;
        let c = match checked.get(d).copied().unwrap_or(Taps::Checked) {
            Taps::All => Expr::int(k),
            Taps::Range(lo, hi) if !include_pad => Expr::int((hi - lo) as i64),
            _ => {
                let start = a.start(o);
                let dil = a.dil as i64;
                // ceil((limit - start) / dil) for a positive numerator.
                let taps_below = |limit: i64| {
                    let num = Expr::int(limit + dil - 1).sub(start.clone());
                    if dil == 1 {
                        num
                    } else {
                        num.div(Expr::int(dil))
                    }
                };
                let end = pads_end.get(d).copied().unwrap_or(0) as i64;
                if include_pad {
                    taps_below(a.in_len as i64 + end).min(Expr::int(k))
                } else {
                    // Taps before the input: ceil(-start / dil), clamped at 0 (truncating
                    // division of a non-positive numerator stays non-positive).
                    let skipped = Expr::int(dil - 1).sub(start.clone());
                    let skipped = if dil == 1 {
                        skipped
                    } else {
                        skipped.div(Expr::int(dil))
                    };
                    let lo = skipped.max(Expr::int(0));
                    let hi = taps_below(a.in_len as i64).min(Expr::int(k));
                    hi.sub(lo).max(Expr::int(0))
                }
            }
        };
        count = match (&count, &c) {
            (Expr::Int(1), _) => c,
            (Expr::Int(x), Expr::Int(y)) => Expr::int(x * y),
            _ => count.mul(c),
        };
    }
    count
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    //! MaxPool and AveragePool against the reference interpreter on geometries the ONNX node
    //! tests do not cover (mixed strides and dilations, asymmetric and wide pads, 1-D and 3-D),
    //! each with `ceil_mode`, `count_include_pad` and column-major indices on and off, and an
    //! int8 MaxPool.

    use kiln_ir::{Op, Tensor, TensorData};

    use super::super::conv::tests::{check, f};

    fn window(k: &[usize], s: &[usize], d: &[usize], p: &[usize]) -> [Vec<usize>; 4] {
        [k.to_vec(), s.to_vec(), d.to_vec(), p.to_vec()]
    }

    #[test]
    fn pool_geometries() {
        let cases = [
            window(&[3, 2], &[2, 2], &[1, 2], &[1, 0, 2, 1]),
            window(&[2, 3, 2], &[1, 2, 2], &[2, 1, 1], &[1, 1, 0, 0, 1, 1]),
            window(&[3, 3], &[1, 1], &[1, 1], &[2, 6, 2, 6]),
            window(&[3], &[2], &[2], &[0, 0]),
        ];
        for [k, s, d, p] in cases {
            let shape: Vec<usize> = [1, 2]
                .iter()
                .chain(&[5, 7, 6][..k.len()])
                .copied()
                .collect();
            for ceil_mode in [false, true] {
                for flag in [false, true] {
                    let avg = Op::AveragePool {
                        kernel_shape: k.clone(),
                        strides: s.clone(),
                        dilations: d.clone(),
                        pads: p.clone(),
                        ceil_mode,
                        count_include_pad: flag,
                    };
                    check(avg, vec![f(&shape, 16)]);
                    let max = Op::MaxPool {
                        kernel_shape: k.clone(),
                        strides: s.clone(),
                        dilations: d.clone(),
                        pads: p.clone(),
                        ceil_mode,
                        indices: true,
                        column_major_indices: flag,
                    };
                    check(max, vec![f(&shape, 17)]);
                }
            }
        }
        let x = Tensor::new(vec![1, 1, 4], TensorData::I8(vec![-100, -128, 5, -3])).unwrap();
        let max = Op::MaxPool {
            kernel_shape: vec![2],
            strides: vec![1],
            dilations: vec![1],
            pads: vec![1, 1],
            ceil_mode: false,
            indices: false,
            column_major_indices: false,
        };
        check(max, vec![x]);
    }
}
