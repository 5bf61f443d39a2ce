//! Kernel lowering of the `norm` ops: BatchNormalization (inference), InstanceNormalization,
//! LayerNormalization, Softmax and LogSoftmax.
//!
//! The reference (`kiln_ir::ops::norm`) accumulates statistics in f64; kernels have no f64, so
//! they use the same two passes in f32 over rows shifted by their first element (see
//! `row_stats`), which keeps badly conditioned rows (a large mean, a small spread) accurate.
//! Kernels have no scratch buffers: every multi-pass algorithm keeps its statistics in scalar
//! locals and re-reads (or recomputes) the row in each pass.
//!
//! QSoftmax is integer only, as its reference: the row's max, table lookups, an i64 sum and one
//! i64 division per element.

use kiln_ir::{DType, Op, QOut};

use super::elementwise::broadcast_index;
use super::integer::{store, value_range, widen};
use super::Lowering;
use crate::error::BackendError;
use crate::kernel::{for_loop, loop_nest, BinOp, Expr, Stmt, UnOp, Var};

pub fn lower(op: &Op, cx: &mut Lowering) -> Result<Vec<Stmt>, BackendError> {
    if let Op::QSoftmax {
        axis,
        inv_scale,
        output,
    } = op
    {
        return qsoftmax(cx, *axis, *inv_scale, output);
    }
    if cx
        .inputs
        .iter()
        .chain(&cx.outputs)
        .any(|t| t.dtype != DType::F32)
    {
        return crate::cannot!("{} supports only f32 tensors", op.name());
    }
    match op {
        Op::BatchNormalization { epsilon } => batch_norm(cx, *epsilon),
        Op::InstanceNormalization { epsilon } => instance_norm(cx, *epsilon),
        Op::LayerNormalization { axis, epsilon, .. } => layer_norm(cx, *axis, *epsilon),
        Op::Softmax { axis, coerce_2d } => softmax(cx, *axis, *coerce_2d, false),
        Op::LogSoftmax { axis, coerce_2d } => softmax(cx, *axis, *coerce_2d, true),
        _ => crate::cannot!("{} is not a norm op", op.name()),
    }
}

/// The shape of input 0 (X).
fn x_shape(cx: &Lowering) -> Result<Vec<usize>, BackendError> {
    match cx.inputs.first() {
        Some(t) => Ok(t.shape.clone()),
        None => crate::cannot!("missing input X"),
    }
}

/// Shape of X split as (batch, channels, elements per channel plane).
fn batch_channel_plane(cx: &Lowering) -> Result<(usize, usize, usize), BackendError> {
    let shape = x_shape(cx)?;
    let Some(&channels) = shape.get(1) else {
        return crate::cannot!("input must have rank 2 or more, got shape {shape:?}");
    };
    let batch = shape.first().copied().unwrap_or(1);
    Ok((batch, channels, shape.iter().skip(2).product()))
}

/// Per channel `k = scale / sqrt(var + epsilon)`, then `y = (x - mean) * k + B`, as the
/// reference computes it (all in f32).
fn batch_norm(cx: &mut Lowering, epsilon: f32) -> Result<Vec<Stmt>, BackendError> {
    let (batch, channels, plane) = batch_channel_plane(cx)?;
    if batch * channels * plane == 0 {
        return Ok(Vec::new());
    }
    let [x, scale, bias, mean, var] = [0, 1, 2, 3, 4].map(|i| cx.input(i));
    let y = cx.output(0);
    let (n, c, p) = (cx.kb.counter(), cx.kb.counter(), cx.kb.counter());
    let (k, m, b, base) = (
        cx.var(DType::F32),
        cx.var(DType::F32),
        cx.var(DType::F32),
        cx.var(DType::I32),
    );
    let at_c = |param: usize| Expr::load(param, Expr::Var(c));
    let k_init = at_c(scale).div(Expr::un(UnOp::Sqrt, at_c(var).add(Expr::f32(epsilon))));
    let idx = Expr::Var(base).add(Expr::Var(p));
    let value = Expr::load(x, idx.clone())
        .sub(Expr::Var(m))
        .mul(Expr::Var(k))
        .add(Expr::Var(b));
    let per_channel = vec![
        Stmt::Let {
            var: k,
            ty: DType::F32,
            init: k_init,
        },
        Stmt::Let {
            var: m,
            ty: DType::F32,
            init: at_c(mean),
        },
        Stmt::Let {
            var: b,
            ty: DType::F32,
            init: at_c(bias),
        },
        Stmt::Let {
            var: base,
            ty: DType::I32,
            init: Expr::Var(n)
                .affine(channels as i64, 0)
                .add(Expr::Var(c))
                .affine(plane as i64, 0),
        },
        for_loop(
            p,
            plane,
            vec![Stmt::Store {
                param: y,
                index: idx,
                value,
            }],
        ),
    ];
    Ok(vec![for_loop(
        n,
        batch,
        vec![for_loop(c, channels, per_channel)],
    )])
}

/// Locals holding the statistics of one row of `len` elements of X starting at `base`. The
/// mean is `pivot + shift`: `pivot` is the row's first element and `shift` the mean of the
/// differences from it.
struct RowStats {
    pivot: Var,
    shift: Var,
    inv_std: Var,
}

impl RowStats {
    /// `x - mean`, computed as `(x - pivot) - shift`.
    fn centered(&self, x: Expr) -> Expr {
        x.sub(Expr::Var(self.pivot)).sub(Expr::Var(self.shift))
    }

    fn mean(&self) -> Expr {
        Expr::Var(self.pivot).add(Expr::Var(self.shift))
    }
}

/// Statements computing the statistics of the row `x[base .. base + len]`: the mean, the
/// biased variance (second pass over the row, as the reference does) and
/// `1 / sqrt(var + epsilon)`.
///
/// Kernels have only f32, so the row is shifted by its first element before anything is
/// summed. A row with a large mean and a small spread (mean 300, std 1e-3) otherwise loses the
/// spread twice: in the rounding of the running sum, and in rounding the mean itself to f32
/// (half an ulp of 300 is 1.5e-5, a 1.5% error in every `x - mean`). `x - pivot` is exact for
/// such rows (Sterbenz), so the shifted sums are small and precise and `x - mean` is never
/// formed at the magnitude of the mean.
fn row_stats(
    cx: &mut Lowering,
    x: usize,
    base: Var,
    len: usize,
    epsilon: f32,
) -> (Vec<Stmt>, RowStats) {
    let (pivot, sum, shift, sq, diff, inv_std) = (
        cx.var(DType::F32),
        cx.var(DType::F32),
        cx.var(DType::F32),
        cx.var(DType::F32),
        cx.var(DType::F32),
        cx.var(DType::F32),
    );
    let st = RowStats {
        pivot,
        shift,
        inv_std,
    };
    let (j1, j2) = (cx.kb.counter(), cx.kb.counter());
    let at = |j: Var| Expr::load(x, Expr::Var(base).add(Expr::Var(j)));
    let n = Expr::f32(len as f32);
    let stmts = vec![
        Stmt::Let {
            var: pivot,
            ty: DType::F32,
            init: Expr::load(x, Expr::Var(base)),
        },
        Stmt::Let {
            var: sum,
            ty: DType::F32,
            init: Expr::f32(0.0),
        },
        for_loop(
            j1,
            len,
            vec![Stmt::Assign {
                var: sum,
                value: Expr::Var(sum).add(at(j1).sub(Expr::Var(pivot))),
            }],
        ),
        Stmt::Let {
            var: shift,
            ty: DType::F32,
            init: Expr::Var(sum).div(n.clone()),
        },
        Stmt::Let {
            var: sq,
            ty: DType::F32,
            init: Expr::f32(0.0),
        },
        for_loop(
            j2,
            len,
            vec![
                Stmt::Let {
                    var: diff,
                    ty: DType::F32,
                    init: st.centered(at(j2)),
                },
                Stmt::Assign {
                    var: sq,
                    value: Expr::Var(sq).add(Expr::Var(diff).mul(Expr::Var(diff))),
                },
            ],
        ),
        Stmt::Let {
            var: inv_std,
            ty: DType::F32,
            init: Expr::f32(1.0).div(Expr::un(
                UnOp::Sqrt,
                Expr::Var(sq).div(n).add(Expr::f32(epsilon)),
            )),
        },
    ];
    (stmts, st)
}

/// Normalizes every (N, C) plane by its own statistics:
/// `y = (x - mean) * inv_std * scale + B`.
fn instance_norm(cx: &mut Lowering, epsilon: f32) -> Result<Vec<Stmt>, BackendError> {
    let (batch, channels, plane) = batch_channel_plane(cx)?;
    if batch * channels * plane == 0 {
        return Ok(Vec::new());
    }
    let (x, scale, bias, y) = (cx.input(0), cx.input(1), cx.input(2), cx.output(0));
    let (n, c, p) = (cx.kb.counter(), cx.kb.counter(), cx.kb.counter());
    let base = cx.var(DType::I32);
    let (stats_stmts, st) = row_stats(cx, x, base, plane, epsilon);
    let idx = Expr::Var(base).add(Expr::Var(p));
    let value = st
        .centered(Expr::load(x, idx.clone()))
        .mul(Expr::Var(st.inv_std))
        .mul(Expr::load(scale, Expr::Var(c)))
        .add(Expr::load(bias, Expr::Var(c)));
    let mut body = vec![Stmt::Let {
        var: base,
        ty: DType::I32,
        init: Expr::Var(n)
            .affine(channels as i64, 0)
            .add(Expr::Var(c))
            .affine(plane as i64, 0),
    }];
    body.extend(stats_stmts);
    body.push(for_loop(
        p,
        plane,
        vec![Stmt::Store {
            param: y,
            index: idx,
            value,
        }],
    ));
    Ok(vec![for_loop(n, batch, vec![for_loop(c, channels, body)])])
}

/// Normalizes over dimensions `axis..`: `y = ((x - mean) * inv_std) * Scale + B`, with Scale
/// and B broadcast to those dimensions; optional outputs Mean and InvStdDev per row.
fn layer_norm(cx: &mut Lowering, axis: usize, epsilon: f32) -> Result<Vec<Stmt>, BackendError> {
    let shape = x_shape(cx)?;
    let Some(normalized) = shape.get(axis..).map(<[usize]>::to_vec) else {
        return crate::cannot!("axis {axis} is out of range for shape {shape:?}");
    };
    let inner: usize = normalized.iter().product();
    let outer: usize = shape.iter().take(axis).product();
    let x = cx.input(0);
    let has_bias = cx.inputs.len() > 2;
    let stat_outputs: Vec<usize> = (1..cx.outputs.len()).map(|j| cx.output(j)).collect();
    if outer == 0 {
        return Ok(Vec::new());
    }
    let r = cx.kb.counter();
    if inner == 0 {
        // No elements to normalize: the statistics are 0 / 0.
        let stores = stat_outputs
            .iter()
            .map(|&param| Stmt::Store {
                param,
                index: Expr::Var(r),
                value: Expr::Const(f64::NAN, DType::F32),
            })
            .collect();
        return Ok(vec![for_loop(r, outer, stores)]);
    }
    let base = cx.var(DType::I32);
    let (mut body, st) = row_stats(cx, x, base, inner, epsilon);
    body.insert(
        0,
        Stmt::Let {
            var: base,
            ty: DType::I32,
            init: Expr::Var(r).affine(inner as i64, 0),
        },
    );
    body.extend(layer_norm_store(cx, &normalized, base, &st, has_bias));
    for (&param, value) in stat_outputs.iter().zip([st.mean(), Expr::Var(st.inv_std)]) {
        body.push(Stmt::Store {
            param,
            index: Expr::Var(r),
            value,
        });
    }
    Ok(vec![for_loop(r, outer, body)])
}

/// The final pass of LayerNormalization over one row. A flat loop when Scale and B hold one
/// value per row element (the usual case), else a nest over the normalized dimensions so they
/// can broadcast.
fn layer_norm_store(
    cx: &mut Lowering,
    normalized: &[usize],
    base: Var,
    st: &RowStats,
    has_bias: bool,
) -> Vec<Stmt> {
    let inner: usize = normalized.iter().product();
    let (x, y) = (cx.input(0), cx.output(0));
    let params: Vec<usize> = if has_bias { vec![1, 2] } else { vec![1] };
    let flat = params
        .iter()
        .all(|&i| cx.inputs.get(i).is_some_and(|t| t.numel() == inner));
    let (vars, extents, offset) = if flat {
        let j = cx.kb.counter();
        (vec![j], vec![inner], Expr::Var(j))
    } else {
        let vars = cx.counters(normalized.len());
        let idx: Vec<Expr> = vars.iter().map(|&v| Expr::Var(v)).collect();
        let off = crate::kernel::flat_index(&idx, normalized);
        (vars, normalized.to_vec(), off)
    };
    let idx: Vec<Expr> = vars.iter().map(|&v| Expr::Var(v)).collect();
    let param_at = |i: usize| {
        let index = if flat {
            offset.clone()
        } else {
            let shape = cx.inputs.get(i).map_or(&[][..], |t| t.shape.as_slice());
            broadcast_index(&idx, shape, normalized.len())
        };
        Expr::load(cx.input(i), index)
    };
    let at = Expr::Var(base).add(offset.clone());
    let mut value = st
        .centered(Expr::load(x, at.clone()))
        .mul(Expr::Var(st.inv_std))
        .mul(param_at(1));
    if has_bias {
        value = value.add(param_at(2));
    }
    let store = Stmt::Store {
        param: y,
        index: at,
        value,
    };
    loop_nest(&vars, &extents, vec![store])
}

/// Softmax / LogSoftmax of `len` elements `stride` apart, for every (outer, stride) position:
/// the max (ignoring NaN, as the reference's `f32::max` fold), the sum of `exp(x - max)`, then
/// `exp(x - max) / sum` or `(x - max) - log(sum)`.
fn softmax(
    cx: &mut Lowering,
    axis: usize,
    coerce_2d: bool,
    log: bool,
) -> Result<Vec<Stmt>, BackendError> {
    let shape = x_shape(cx)?;
    if axis >= shape.len() {
        return crate::cannot!("axis {axis} is out of range for shape {shape:?}");
    }
    let outer: usize = shape.iter().take(axis).product();
    let (len, stride): (usize, usize) = if coerce_2d {
        (shape.iter().skip(axis).product(), 1)
    } else {
        (
            shape.get(axis).copied().unwrap_or(1),
            shape.iter().skip(axis + 1).product(),
        )
    };
    if outer * len * stride == 0 {
        return Ok(Vec::new());
    }
    let (x, y) = (cx.input(0), cx.output(0));
    let (o, i, j1, j2, j3) = (
        cx.kb.counter(),
        cx.kb.counter(),
        cx.kb.counter(),
        cx.kb.counter(),
        cx.kb.counter(),
    );
    let (base, max, sum, e) = (
        cx.var(DType::I32),
        cx.var(DType::F32),
        cx.var(DType::F32),
        cx.var(DType::F32),
    );
    let at = |j: Var| Expr::Var(base).add(Expr::Var(j).affine(stride as i64, 0));
    let shifted = |j: Var| Expr::load(x, at(j)).sub(Expr::Var(max));
    let result = if log {
        shifted(j3).sub(Expr::un(UnOp::Log, Expr::Var(sum)))
    } else {
        Expr::un(UnOp::Exp, shifted(j3)).div(Expr::Var(sum))
    };
    let body = vec![
        Stmt::Let {
            var: base,
            ty: DType::I32,
            init: Expr::Var(o)
                .affine((len * stride) as i64, 0)
                .add(Expr::Var(i)),
        },
        Stmt::Let {
            var: max,
            ty: DType::F32,
            init: Expr::Const(f64::NEG_INFINITY, DType::F32),
        },
        for_loop(
            j1,
            len,
            vec![
                Stmt::Let {
                    var: e,
                    ty: DType::F32,
                    init: Expr::load(x, at(j1)),
                },
                Stmt::Assign {
                    var: max,
                    value: Expr::select(
                        Expr::bin(BinOp::Gt, Expr::Var(e), Expr::Var(max)),
                        Expr::Var(e),
                        Expr::Var(max),
                    ),
                },
            ],
        ),
        Stmt::Let {
            var: sum,
            ty: DType::F32,
            init: Expr::f32(0.0),
        },
        for_loop(
            j2,
            len,
            vec![Stmt::Assign {
                var: sum,
                value: Expr::Var(sum).add(Expr::un(UnOp::Exp, shifted(j2))),
            }],
        ),
        for_loop(
            j3,
            len,
            vec![Stmt::Store {
                param: y,
                index: at(j3),
                value: result,
            }],
        ),
    ];
    Ok(vec![for_loop(o, outer, vec![for_loop(i, stride, body)])])
}

/// QSoftmax along `axis`, as `kiln_ir::ops::norm` defines it: per row the max, `e = table[max -
/// x]` (the difference is within 0..=255 for i8 and u8), the i64 sum `S` of the row's `e`
/// (at least 1), then `floor((e * inv_scale + S * 2^15) / (S * 2^16))` stored to `output`.
/// The numerator is never negative, so the truncating division floors.
fn qsoftmax(
    cx: &mut Lowering,
    axis: usize,
    inv_scale: i64,
    output: &QOut,
) -> Result<Vec<Stmt>, BackendError> {
    let shape = x_shape(cx)?;
    let x_type = cx.inputs.first().map_or(DType::F32, |t| t.dtype);
    let (lowest, _) = value_range(x_type)?;
    if cx.inputs.get(1).map(|t| (t.dtype, t.numel())) != Some((DType::I32, 256)) {
        return crate::cannot!("QSoftmax takes an i32 table of 256 entries");
    }
    if axis >= shape.len() {
        return crate::cannot!("axis {axis} is out of range for shape {shape:?}");
    }
    let outer: usize = shape.iter().take(axis).product();
    let len = shape[axis];
    let stride: usize = shape.iter().skip(axis + 1).product();
    if outer * len * stride == 0 {
        return Ok(Vec::new());
    }
    let (x, table, y) = (cx.input(0), cx.input(1), cx.output(0));
    let [o, i, j1, j2, j3] = [0; 5].map(|_| cx.kb.counter());
    let base = cx.var(DType::I32);
    let max = cx.var(DType::I32);
    let [sum, den, half] = [0; 3].map(|_| cx.var(DType::I64));
    let at = |j: Var| Expr::Var(base).add(Expr::Var(j).affine(stride as i64, 0));
    let e = |j: Var| {
        let d = Expr::Var(max).sub(widen(Expr::load(x, at(j))));
        Expr::cast(DType::I64, Expr::load(table, d))
    };
    let wide = |v: i64| Expr::Const(v as f64, DType::I64);
    let q = e(j3)
        .mul(wide(inv_scale))
        .add(Expr::Var(half))
        .div(Expr::Var(den));
    let body = vec![
        Stmt::Let {
            var: base,
            ty: DType::I32,
            init: Expr::Var(o)
                .affine((len * stride) as i64, 0)
                .add(Expr::Var(i)),
        },
        Stmt::Let {
            var: max,
            ty: DType::I32,
            init: Expr::int(lowest),
        },
        for_loop(
            j1,
            len,
            vec![Stmt::Assign {
                var: max,
                value: Expr::Var(max).max(widen(Expr::load(x, at(j1)))),
            }],
        ),
        Stmt::Let {
            var: sum,
            ty: DType::I64,
            init: wide(0),
        },
        for_loop(
            j2,
            len,
            vec![Stmt::Assign {
                var: sum,
                value: Expr::Var(sum).add(e(j2)),
            }],
        ),
        Stmt::Let {
            var: den,
            ty: DType::I64,
            init: Expr::Var(sum).max(wide(1)).mul(wide(1 << 16)),
        },
        Stmt::Let {
            var: half,
            ty: DType::I64,
            init: Expr::Var(sum).max(wide(1)).mul(wide(1 << 15)),
        },
        for_loop(
            j3,
            len,
            vec![Stmt::Store {
                param: y,
                index: at(j3),
                value: store(Expr::cast(DType::I32, q), output),
            }],
        ),
    ];
    Ok(vec![for_loop(o, outer, vec![for_loop(i, stride, body)])])
}
