//! Kernel lowering of the data movement ops (Reshape, Transpose, Concat, Split, Slice, Pad,
//! Gather, Expand, Tile, DepthToSpace, SpaceToDepth, Resize, Shape, ConstantOfShape, Range).
//!
//! Shapes are static, so most ops become one loop nest over the output whose input index is
//! an affine (or clamped / wrapped) function of the loop counters. Resize takes its per-axis
//! taps and weights from `kiln_ir::ops::movement::resize_axis_samples` (the interpreter's own
//! computation) and encodes those tables as index arithmetic or balanced `Select` trees
//! (kernels have no constant tables).

use kiln_ir::op::{DepthToSpaceMode, PadMode, ResizeMode};
use kiln_ir::ops::movement::{resize_axis_samples, ResizeSample, ResizeSource};
use kiln_ir::tensor::strides;
use kiln_ir::{DType, Op};

use super::elementwise::broadcast_index;
use super::Lowering;
use crate::error::BackendError;
use crate::kernel::{flat_index, for_loop, loop_nest, BinOp, Expr, Stmt, UnOp, Var};

pub fn lower(op: &Op, cx: &mut Lowering) -> Result<Vec<Stmt>, BackendError> {
    match op {
        Op::Reshape { .. } => reshape(cx),
        Op::Transpose { perm } => {
            let shape = in_shape(cx, 0)?;
            Ok(transpose(cx, &shape, perm))
        }
        Op::Concat { axis } => concat(cx, *axis),
        Op::Split { axis, .. } => split(cx, *axis),
        Op::Slice { starts, steps, .. } => slice(cx, starts, steps),
        Op::Pad { pads, mode, value } => pad(cx, pads, *mode, *value),
        Op::Gather { axis } => gather(cx, *axis),
        Op::Expand { .. } => expand(cx),
        Op::Tile { .. } => tile(cx),
        Op::DepthToSpace { blocksize, mode } => depth_to_space(cx, *blocksize, *mode),
        Op::SpaceToDepth { blocksize, mode } => space_to_depth(cx, *blocksize, *mode),
        Op::Resize { .. } => resize(op, cx),
        Op::Shape { start, end } => shape_op(cx, *start, *end),
        Op::ConstantOfShape { value, .. } => constant_of_shape(cx, *value),
        Op::Range {
            start,
            delta,
            count,
            ..
        } => range(cx, *start, *delta, *count),
        _ => crate::cannot!("{} is not a movement op", op.name()),
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

fn in_shape(cx: &Lowering, i: usize) -> Result<Vec<usize>, BackendError> {
    match cx.inputs.get(i) {
        Some(t) => Ok(t.shape.clone()),
        None => crate::cannot!("missing input {i}"),
    }
}

fn out_shape(cx: &Lowering, j: usize) -> Result<Vec<usize>, BackendError> {
    match cx.outputs.get(j) {
        Some(t) => Ok(t.shape.clone()),
        None => crate::cannot!("missing output {j}"),
    }
}

fn out_dtype(cx: &Lowering, j: usize) -> Result<DType, BackendError> {
    match cx.outputs.get(j) {
        Some(t) => Ok(t.dtype),
        None => crate::cannot!("missing output {j}"),
    }
}

fn vars_expr(vars: &[Var]) -> Vec<Expr> {
    vars.iter().map(|&v| Expr::Var(v)).collect()
}

/// A constant `v` converted to `dtype` as the interpreter does (Rust `as`: saturating
/// integers, bool is "not zero"), so the emitted literal needs no runtime conversion.
fn elem_const(v: f64, dtype: DType) -> Expr {
    let exact = match dtype {
        DType::F32 => f64::from(v as f32),
        DType::Bool => f64::from(u8::from(v != 0.0)),
        DType::I8 => f64::from(v as i8),
        DType::U8 => f64::from(v as u8),
        DType::I16 => f64::from(v as i16),
        DType::I32 => f64::from(v as i32),
        DType::I64 => (v as i64) as f64,
    };
    Expr::Const(exact, dtype)
}

/// `min(max(e, lo), hi)` on `I32` index expressions.
fn clamp_index(e: Expr, lo: i64, hi: i64) -> Expr {
    e.max(Expr::Int(lo)).min(Expr::Int(hi))
}

/// `a + b`, leaving out a zero `a` (keeps generated index expressions readable).
fn plus(a: Expr, b: Expr) -> Expr {
    if a == Expr::Int(0) {
        b
    } else {
        a.add(b)
    }
}

/// Conjunction of conditions (`None` when there are none).
fn all_of(conds: Vec<Expr>) -> Option<Expr> {
    conds.into_iter().reduce(Expr::and)
}

/// Loops over `extents` with `preludes[0]` before the outermost loop, `preludes[d + 1]` at
/// the top of loop `d` (so per-axis values are computed once per coordinate), then `inner`.
fn nest_with_preludes(
    vars: &[Var],
    extents: &[usize],
    mut preludes: Vec<Vec<Stmt>>,
    inner: Vec<Stmt>,
) -> Vec<Stmt> {
    preludes.resize(vars.len() + 1, Vec::new());
    let mut body = inner;
    for (d, (&v, &e)) in vars.iter().zip(extents).enumerate().rev() {
        let mut level = std::mem::take(&mut preludes[d + 1]);
        level.extend(body);
        body = vec![for_loop(v, e, level)];
    }
    let mut top = std::mem::take(&mut preludes[0]);
    top.extend(body);
    top
}

/// The loop nest of a gather-like op: output element `idx` (the counters over `out_shape`)
/// copies input element `src(idx)`, or `fill` where any condition of `src` fails.
fn copy_from(
    cx: &mut Lowering,
    in_shape: &[usize],
    out_shape: &[usize],
    fill: Option<Expr>,
    src: impl FnOnce(&[Expr]) -> (Vec<Expr>, Vec<Expr>),
) -> Vec<Stmt> {
    let vars = cx.counters(out_shape.len());
    let idx = vars_expr(&vars);
    let (in_idx, conds) = src(&idx);
    let (x, y) = (cx.input(0), cx.output(0));
    let out_index = flat_index(&idx, out_shape);
    let load = Stmt::Store {
        param: y,
        index: out_index.clone(),
        value: Expr::load(x, flat_index(&in_idx, in_shape)),
    };
    // An `If` (not a `Select`) guards the load, so padding never reads out of bounds.
    let body = match (all_of(conds), fill) {
        (Some(cond), Some(fill)) => Stmt::If {
            cond,
            then: vec![load],
            otherwise: vec![Stmt::Store {
                param: y,
                index: out_index,
                value: fill,
            }],
        },
        _ => load,
    };
    loop_nest(&vars, out_shape, vec![body])
}

// ---------------------------------------------------------------------------------------------
// Reshape, Transpose, Expand, Tile, Slice

/// A plain element copy (the emitter normally aliases Reshapes instead).
fn reshape(cx: &mut Lowering) -> Result<Vec<Stmt>, BackendError> {
    let n = cx.outputs.first().map_or(0, |t| t.numel());
    let i = cx.kb.counter();
    let store = Stmt::Store {
        param: cx.output(0),
        index: Expr::Var(i),
        value: Expr::load(cx.input(0), Expr::Var(i)),
    };
    Ok(vec![for_loop(i, n, vec![store])])
}

/// Output axis `k` walks input axis `perm[k]`; `shape` is the input (possibly a reshaped view
/// of it, for DepthToSpace / SpaceToDepth: the output is then the same view transposed).
fn transpose(cx: &mut Lowering, shape: &[usize], perm: &[usize]) -> Vec<Stmt> {
    let out: Vec<usize> = perm
        .iter()
        .map(|&p| shape.get(p).copied().unwrap_or(1))
        .collect();
    copy_from(cx, shape, &out, None, |idx| {
        let in_idx = (0..shape.len())
            .map(|d| {
                perm.iter()
                    .position(|&p| p == d)
                    .and_then(|k| idx.get(k).cloned())
                    .unwrap_or(Expr::Int(0))
            })
            .collect();
        (in_idx, Vec::new())
    })
}

fn expand(cx: &mut Lowering) -> Result<Vec<Stmt>, BackendError> {
    let (xs, ys) = (in_shape(cx, 0)?, out_shape(cx, 0)?);
    if xs.len() > ys.len() {
        return crate::cannot!("Expand to a lower rank");
    }
    let vars = cx.counters(ys.len());
    let idx = vars_expr(&vars);
    let store = Stmt::Store {
        param: cx.output(0),
        index: flat_index(&idx, &ys),
        value: Expr::load(cx.input(0), broadcast_index(&idx, &xs, ys.len())),
    };
    Ok(loop_nest(&vars, &ys, vec![store]))
}

fn tile(cx: &mut Lowering) -> Result<Vec<Stmt>, BackendError> {
    let (xs, ys) = (in_shape(cx, 0)?, out_shape(cx, 0)?);
    Ok(copy_from(cx, &xs, &ys, None, |idx| {
        let in_idx = idx
            .iter()
            .zip(xs.iter().zip(&ys))
            .map(|(i, (&n, &o))| {
                if n == o || n <= 1 {
                    i.clone()
                } else {
                    i.clone().rem(Expr::Int(n as i64))
                }
            })
            .collect();
        (in_idx, Vec::new())
    }))
}

fn slice(cx: &mut Lowering, starts: &[i64], steps: &[i64]) -> Result<Vec<Stmt>, BackendError> {
    let (xs, ys) = (in_shape(cx, 0)?, out_shape(cx, 0)?);
    if starts.len() != ys.len() || steps.len() != ys.len() {
        return crate::cannot!("Slice needs one start and step per dimension");
    }
    Ok(copy_from(cx, &xs, &ys, None, |idx| {
        let in_idx = idx
            .iter()
            .zip(starts.iter().zip(steps))
            .map(|(i, (&s, &k))| i.clone().affine(k, s))
            .collect();
        (in_idx, Vec::new())
    }))
}

// ---------------------------------------------------------------------------------------------
// Concat, Split

/// The multi-index `idx` moved by `offset` along `axis` (the slab position of a Concat input or
/// a Split output).
fn shifted_along(idx: &[Expr], axis: usize, offset: i64) -> Vec<Expr> {
    idx.iter()
        .enumerate()
        .map(|(d, e)| {
            if d == axis {
                e.clone().affine(1, offset)
            } else {
                e.clone()
            }
        })
        .collect()
}

/// Each input is copied into its slab of the output along `axis`.
fn concat(cx: &mut Lowering, axis: usize) -> Result<Vec<Stmt>, BackendError> {
    let ys = out_shape(cx, 0)?;
    let mut body = Vec::new();
    let mut offset = 0i64;
    for i in 0..cx.inputs.len() {
        let xs = in_shape(cx, i)?;
        let vars = cx.counters(xs.len());
        let idx = vars_expr(&vars);
        let out_idx = shifted_along(&idx, axis, offset);
        let store = Stmt::Store {
            param: cx.output(0),
            index: flat_index(&out_idx, &ys),
            value: Expr::load(cx.input(i), flat_index(&idx, &xs)),
        };
        body.extend(loop_nest(&vars, &xs, vec![store]));
        offset += xs.get(axis).copied().unwrap_or(0) as i64;
    }
    Ok(body)
}

/// Each output copies its slab of the input along `axis`.
fn split(cx: &mut Lowering, axis: usize) -> Result<Vec<Stmt>, BackendError> {
    let xs = in_shape(cx, 0)?;
    let mut body = Vec::new();
    let mut offset = 0i64;
    for j in 0..cx.outputs.len() {
        let ys = out_shape(cx, j)?;
        let vars = cx.counters(ys.len());
        let idx = vars_expr(&vars);
        let in_idx = shifted_along(&idx, axis, offset);
        let store = Stmt::Store {
            param: cx.output(j),
            index: flat_index(&idx, &ys),
            value: Expr::load(cx.input(0), flat_index(&in_idx, &xs)),
        };
        body.extend(loop_nest(&vars, &ys, vec![store]));
        offset += ys.get(axis).copied().unwrap_or(0) as i64;
    }
    Ok(body)
}

// ---------------------------------------------------------------------------------------------
// Pad

/// The input coordinate output coordinate `o` reads along one dimension of `n` elements padded
/// by `begin`/`end` (negative: cropped), and the condition for it to be inside the input
/// (constant mode only).
fn pad_axis(o: &Expr, n: usize, begin: i64, end: i64, mode: PadMode) -> (Expr, Option<Expr>) {
    let crop = -begin.min(0);
    let before = begin.max(0);
    let m = n as i64 - crop - (-end.min(0));
    let rel = o.clone().affine(1, -before);
    if begin <= 0 && end <= 0 {
        return (o.clone().affine(1, crop), None);
    }
    if m <= 0 {
        // Only constant mode may pad an empty dimension: everything is padding.
        return (Expr::Int(0), Some(Expr::Const(0.0, DType::Bool)));
    }
    // A multiple of `period` no smaller than `before` makes the remainder's operand
    // non-negative, so C's `%` computes the Euclidean remainder.
    let lift = |period: i64| period * ((before + period - 1) / period);
    let inside = match mode {
        PadMode::Constant => {
            let cond = rel
                .clone()
                .ge(Expr::Int(0))
                .and(rel.clone().lt(Expr::Int(m)));
            return (rel.affine(1, crop), Some(cond));
        }
        PadMode::Edge => clamp_index(rel, 0, m - 1),
        PadMode::Reflect if m == 1 => Expr::Int(0),
        PadMode::Reflect => {
            // numpy's reflect is a triangle wave of period 2 (m - 1).
            let period = 2 * (m - 1);
            let k = rel.affine(1, lift(period)).rem(Expr::Int(period));
            // (m - 1) - |k - (m - 1)| folds the descending half back.
            Expr::Int(m - 1).sub(Expr::un(UnOp::Abs, k.affine(1, -(m - 1))))
        }
        PadMode::Wrap => rel.affine(1, lift(m)).rem(Expr::Int(m)),
    };
    (inside.affine(1, crop), None)
}

fn pad(
    cx: &mut Lowering,
    pads: &[i64],
    mode: PadMode,
    value: f64,
) -> Result<Vec<Stmt>, BackendError> {
    let (xs, ys) = (in_shape(cx, 0)?, out_shape(cx, 0)?);
    let r = xs.len();
    if pads.len() != 2 * r {
        return crate::cannot!("Pad needs two pads per dimension");
    }
    let fill = elem_const(value, out_dtype(cx, 0)?);
    if mode == PadMode::Constant && pads.iter().all(|&p| p >= 0) {
        return Ok(pad_constant(cx, &xs, &ys, &pads[..r], fill));
    }
    Ok(copy_from(cx, &xs, &ys, Some(fill), |idx| {
        let mut in_idx = Vec::with_capacity(r);
        let mut conds = Vec::new();
        for (d, (o, &n)) in idx.iter().zip(&xs).enumerate() {
            let begin = pads.get(d).copied().unwrap_or(0);
            let end = pads.get(r + d).copied().unwrap_or(0);
            let (i, cond) = pad_axis(o, n, begin, end, mode);
            in_idx.push(i);
            conds.extend(cond);
        }
        (in_idx, conds)
    }))
}

/// Constant padding that only grows: fill the whole output, then copy the input into place.
/// Both loops are branch-free with stride-one innermost accesses (they vectorize), where the
/// general form tests every output element; the interior is written twice, which costs less
/// than a test per element.
fn pad_constant(
    cx: &mut Lowering,
    xs: &[usize],
    ys: &[usize],
    begin: &[i64],
    fill: Expr,
) -> Vec<Stmt> {
    let (x, y) = (cx.input(0), cx.output(0));
    let i = cx.kb.counter();
    let mut body = vec![for_loop(
        i,
        ys.iter().product(),
        vec![Stmt::Store {
            param: y,
            index: Expr::Var(i),
            value: fill,
        }],
    )];
    let vars = cx.counters(xs.len());
    let idx = vars_expr(&vars);
    let out_idx: Vec<Expr> = idx
        .iter()
        .zip(begin)
        .map(|(e, &b)| e.clone().affine(1, b))
        .collect();
    let copy = Stmt::Store {
        param: y,
        index: flat_index(&out_idx, ys),
        value: Expr::load(x, flat_index(&idx, xs)),
    };
    body.extend(loop_nest(&vars, xs, vec![copy]));
    body
}

// ---------------------------------------------------------------------------------------------
// Gather

/// Indices are loaded at run time. Negative ones count from the end; out-of-range ones (which
/// ONNX leaves undefined and the interpreter rejects) are clamped into the axis so the kernel
/// never reads outside `data`.
fn gather(cx: &mut Lowering, axis: usize) -> Result<Vec<Stmt>, BackendError> {
    let (ds, is, ys) = (in_shape(cx, 0)?, in_shape(cx, 1)?, out_shape(cx, 0)?);
    let idx_ty = match cx.inputs.get(1) {
        Some(t) => t.dtype,
        None => return crate::cannot!("Gather needs indices"),
    };
    let Some(&n) = ds.get(axis) else {
        return crate::cannot!("Gather axis {axis} out of range");
    };
    if n == 0 {
        return if ys.iter().product::<usize>() == 0 {
            Ok(Vec::new())
        } else {
            crate::cannot!("Gather from an empty axis")
        };
    }
    let q = is.len();
    let vars = cx.counters(ys.len());
    let idx = vars_expr(&vars);
    let ind_idx = idx.get(axis..axis + q).unwrap_or(&[]);
    let raw = cx.var(idx_ty);
    let k = cx.var(DType::I32);
    let c = |v: i64| Expr::Const(v as f64, idx_ty);
    let wrapped = Expr::select(
        Expr::Var(raw).lt(c(0)),
        Expr::Var(raw).add(c(n as i64)),
        Expr::Var(raw),
    );
    let prelude = vec![
        Stmt::Let {
            var: raw,
            ty: idx_ty,
            init: Expr::load(cx.input(1), flat_index(ind_idx, &is)),
        },
        Stmt::Let {
            var: k,
            ty: DType::I32,
            init: Expr::cast(DType::I32, wrapped.max(c(0)).min(c(n as i64 - 1))),
        },
    ];
    let mut data_idx: Vec<Expr> = idx.get(..axis).unwrap_or(&[]).to_vec();
    data_idx.push(Expr::Var(k));
    data_idx.extend_from_slice(idx.get(axis + q..).unwrap_or(&[]));
    let store = Stmt::Store {
        param: cx.output(0),
        index: flat_index(&idx, &ys),
        value: Expr::load(cx.input(0), flat_index(&data_idx, &ds)),
    };
    let mut preludes = vec![Vec::new(); axis + q + 1];
    if let Some(p) = preludes.last_mut() {
        *p = prelude;
    }
    Ok(nest_with_preludes(&vars, &ys, preludes, vec![store]))
}

// ---------------------------------------------------------------------------------------------
// DepthToSpace, SpaceToDepth: transposes of 6-D views, as the reference defines them.

fn nchw(cx: &Lowering, b: usize) -> Result<[usize; 4], BackendError> {
    match in_shape(cx, 0)?[..] {
        [n, c, h, w] if b > 0 => Ok([n, c, h, w]),
        _ => crate::cannot!("needs a 4-D input and a positive blocksize"),
    }
}

fn depth_to_space(
    cx: &mut Lowering,
    b: usize,
    mode: DepthToSpaceMode,
) -> Result<Vec<Stmt>, BackendError> {
    let [n, c, h, w] = nchw(cx, b)?;
    let c2 = c / (b * b);
    let (shape, perm) = match mode {
        DepthToSpaceMode::Dcr => ([n, b, b, c2, h, w], [0, 3, 4, 1, 5, 2]),
        DepthToSpaceMode::Crd => ([n, c2, b, b, h, w], [0, 1, 4, 2, 5, 3]),
    };
    Ok(transpose(cx, &shape, &perm))
}

fn space_to_depth(
    cx: &mut Lowering,
    b: usize,
    mode: DepthToSpaceMode,
) -> Result<Vec<Stmt>, BackendError> {
    let [n, c, h, w] = nchw(cx, b)?;
    let shape = [n, c, h / b, b, w / b, b];
    let perm = match mode {
        DepthToSpaceMode::Dcr => [0, 3, 5, 1, 2, 4],
        DepthToSpaceMode::Crd => [0, 1, 3, 5, 2, 4],
    };
    Ok(transpose(cx, &shape, &perm))
}

// ---------------------------------------------------------------------------------------------
// Shape, ConstantOfShape, Range

fn shape_op(cx: &mut Lowering, start: usize, end: usize) -> Result<Vec<Stmt>, BackendError> {
    let xs = in_shape(cx, 0)?;
    let dims = xs.get(start..end).unwrap_or(&[]);
    let y = cx.output(0);
    Ok(dims
        .iter()
        .enumerate()
        .map(|(i, &d)| Stmt::Store {
            param: y,
            index: Expr::Int(i as i64),
            value: Expr::Const(d as f64, DType::I64),
        })
        .collect())
}

fn constant_of_shape(cx: &mut Lowering, value: f64) -> Result<Vec<Stmt>, BackendError> {
    let dtype = out_dtype(cx, 0)?;
    let n = cx.outputs.first().map_or(0, |t| t.numel());
    let i = cx.kb.counter();
    let store = Stmt::Store {
        param: cx.output(0),
        index: Expr::Var(i),
        value: elem_const(value, dtype),
    };
    Ok(vec![for_loop(i, n, vec![store])])
}

/// Floats compute `start + i * delta` (in f32 here, f64 in the interpreter: within
/// tolerance); integers in i64, wrapping on the store like the interpreter's C-like cast.
fn range(
    cx: &mut Lowering,
    start: f64,
    delta: f64,
    count: usize,
) -> Result<Vec<Stmt>, BackendError> {
    let dtype = out_dtype(cx, 0)?;
    let i = cx.kb.counter();
    let value = if dtype.is_float() {
        Expr::cast(DType::F32, Expr::Var(i))
            .mul(Expr::Const(delta, DType::F32))
            .add(Expr::Const(start, DType::F32))
    } else {
        let (s, d) = (start as i64, delta as i64);
        Expr::cast(DType::I64, Expr::Var(i))
            .mul(Expr::Const(d as f64, DType::I64))
            .add(Expr::Const(s as f64, DType::I64))
    };
    let store = Stmt::Store {
        param: cx.output(0),
        index: Expr::Var(i),
        value,
    };
    Ok(vec![for_loop(i, count, vec![store])])
}

// ---------------------------------------------------------------------------------------------
// Compile-time tables as expressions

/// A value of a per-coordinate table.
trait TableValue: Copy {
    fn same(self, other: Self) -> bool;
    fn expr(self) -> Expr;
    /// `other - self` when the table may step by it per period (integers only).
    fn step(self, other: Self) -> Option<i64>;
}

impl TableValue for i64 {
    fn same(self, other: Self) -> bool {
        self == other
    }
    fn expr(self) -> Expr {
        Expr::Int(self)
    }
    fn step(self, other: Self) -> Option<i64> {
        Some(other - self)
    }
}

impl TableValue for f32 {
    /// Weights equal to f32 precision reuse one entry (the f64 computation of a periodic
    /// pattern may differ in the last bits).
    fn same(self, other: Self) -> bool {
        (self - other).abs() <= 1e-7 * self.abs().max(other.abs()).max(1.0)
    }
    fn expr(self) -> Expr {
        Expr::Const(f64::from(self), DType::F32)
    }
    fn step(self, _other: Self) -> Option<i64> {
        Some(0)
    }
}

/// `vals[o]` as an expression of the coordinate `o` (`I32`, in `0..vals.len()`). Tables that
/// repeat with a period `p`, adding a constant step each period (resize by a rational scale),
/// become `vals[o % p] + (o / p) * step`; the rest a balanced `Select` tree over runs of equal
/// values (depth log2 of the run count).
fn table_expr<T: TableValue>(o: &Expr, vals: &[T]) -> Expr {
    let n = vals.len();
    for p in 1..n {
        let Some(step) = vals.first().zip(vals.get(p)).and_then(|(a, b)| a.step(*b)) else {
            continue;
        };
        let periodic = vals
            .iter()
            .zip(vals.iter().skip(p))
            .all(|(a, b)| a.step(*b) == Some(step) && (step != 0 || a.same(*b)));
        // A period pays off only when it repeats (or is 1: an affine table).
        if !periodic || (p > 1 && p * 2 > n) {
            continue;
        }
        let head = vals.get(..p).unwrap_or(&[]);
        let local = if p == 1 {
            Expr::Int(0)
        } else {
            o.clone().rem(Expr::Int(p as i64))
        };
        let base = select_tree(&local, &runs(head));
        return if step == 0 {
            base
        } else if p == 1 {
            plus(base, o.clone().affine(step, 0))
        } else {
            plus(base, o.clone().div(Expr::Int(p as i64)).affine(step, 0))
        };
    }
    select_tree(o, &runs(vals))
}

/// Maximal runs of equal values, as (first coordinate, value).
fn runs<T: TableValue>(vals: &[T]) -> Vec<(usize, T)> {
    let mut out: Vec<(usize, T)> = Vec::new();
    for (i, &v) in vals.iter().enumerate() {
        match out.last() {
            Some(&(_, last)) if last.same(v) => {}
            _ => out.push((i, v)),
        }
    }
    out
}

fn select_tree<T: TableValue>(o: &Expr, runs: &[(usize, T)]) -> Expr {
    match runs {
        [] => Expr::Int(0),
        [(_, v)] => v.expr(),
        _ => {
            let (lo, hi) = runs.split_at(runs.len() / 2);
            let boundary = hi.first().map_or(0, |r| r.0) as i64;
            Expr::select(
                o.clone().lt(Expr::Int(boundary)),
                select_tree(o, lo),
                select_tree(o, hi),
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Resize: the taps and weights come from kiln_ir::ops::movement::resize_axis_samples, the
// interpreter's own coefficient computation.

/// One resized axis, lowered: per-coordinate tables plus the locals that hold their values.
struct AxisPlan {
    /// Input coordinate of each tap (nearest: a single tap), clamped into the axis.
    taps: Vec<Var>,
    /// Weight of each tap (empty for nearest).
    weights: Vec<Var>,
    /// 0, or 1 + the index in `fills` of the constant this coordinate takes.
    fill: Option<Var>,
    prelude: Vec<Stmt>,
}

/// Distinct fill constants of all axes.
fn fill_code(fills: &mut Vec<f64>, v: f64) -> i64 {
    let pos = fills.iter().position(|f| f.to_bits() == v.to_bits());
    let i = pos.unwrap_or_else(|| {
        fills.push(v);
        fills.len() - 1
    });
    i as i64 + 1
}

/// Lowers the `samples` of one axis of `in_n` input pixels, with `o` its output coordinate.
fn plan_axis(
    cx: &mut Lowering,
    nearest: bool,
    in_n: usize,
    samples: &[ResizeSample],
    o: &Expr,
    fills: &mut Vec<f64>,
) -> AxisPlan {
    let n_taps = samples
        .iter()
        .map(|s| match s {
            ResizeSample::Taps { weights, .. } => weights.len(),
            ResizeSample::Fill(_) => 0,
        })
        .max()
        .unwrap_or(0);
    let hi = in_n as i64 - 1;
    let mut starts = Vec::with_capacity(samples.len());
    let mut codes = Vec::with_capacity(samples.len());
    let mut weights: Vec<Vec<f32>> = vec![Vec::with_capacity(samples.len()); n_taps];
    for s in samples {
        match s {
            ResizeSample::Fill(v) => {
                starts.push(0);
                codes.push(fill_code(fills, *v));
                weights.iter_mut().for_each(|w| w.push(0.0));
            }
            // The one-hot tap, clamped as the reference does; no hot tap reads 0.
            _ if nearest => match s.nearest_source(in_n) {
                ResizeSource::Index(i) => {
                    starts.push(i as i64);
                    codes.push(0);
                }
                ResizeSource::Fill(v) => {
                    starts.push(0);
                    codes.push(fill_code(fills, v));
                }
            },
            ResizeSample::Taps { start, weights: ws } => {
                starts.push(*start);
                codes.push(0);
                for (k, w) in weights.iter_mut().enumerate() {
                    w.push(ws.get(k).copied().unwrap_or(0.0) as f32);
                }
            }
        }
    }
    let mut prelude = Vec::new();
    let mut let_var = |cx: &mut Lowering, ty: DType, init: Expr| {
        let v = cx.var(ty);
        prelude.push(Stmt::Let { var: v, ty, init });
        v
    };
    let fill = codes
        .iter()
        .any(|&c| c != 0)
        .then(|| let_var(cx, DType::I32, table_expr(o, &codes)));
    let start = table_expr(o, &starts);
    let (taps, wvars) = if nearest {
        (vec![let_var(cx, DType::I32, start)], Vec::new())
    } else {
        let s = let_var(cx, DType::I32, start);
        let taps = (0..n_taps)
            .map(|k| {
                let i = clamp_index(Expr::Var(s).affine(1, k as i64), 0, hi.max(0));
                let_var(cx, DType::I32, i)
            })
            .collect();
        let ws = weights
            .iter()
            .map(|w| let_var(cx, DType::F32, table_expr(o, w)))
            .collect();
        (taps, ws)
    };
    AxisPlan {
        taps,
        weights: wvars,
        fill,
        prelude,
    }
}

/// The weighted sum over the taps of the resized axes `plans[..=pos]` (innermost: the first
/// axis, which the reference resamples first), with `index` the input offset of the other
/// axes and the taps already chosen.
fn tap_sum(
    x: usize,
    in_dtype: DType,
    plans: &[(usize, AxisPlan)],
    strides: &[usize],
    pos: usize,
    index: Expr,
) -> Expr {
    let Some((d, plan)) = plans.get(pos) else {
        let v = Expr::load(x, index);
        return if in_dtype == DType::F32 {
            v
        } else {
            Expr::cast(DType::F32, v)
        };
    };
    let st = strides.get(*d).copied().unwrap_or(0) as i64;
    plan.taps
        .iter()
        .zip(&plan.weights)
        .map(|(&t, &w)| {
            let idx = plus(index.clone(), Expr::Var(t).affine(st, 0));
            let inner = if pos == 0 {
                tap_sum(x, in_dtype, plans, strides, usize::MAX, idx)
            } else {
                tap_sum(x, in_dtype, plans, strides, pos - 1, idx)
            };
            Expr::Var(w).mul(inner)
        })
        .reduce(Expr::add)
        .unwrap_or(Expr::Const(0.0, DType::F32))
}

/// The representable range of an integer type, for saturating interpolated values.
fn int_range(dtype: DType) -> Option<(f64, f64)> {
    match dtype {
        DType::I8 => Some((-128.0, 127.0)),
        DType::U8 => Some((0.0, 255.0)),
        DType::I16 => Some((-32768.0, 32767.0)),
        DType::I32 => Some((-2147483648.0, 2147483520.0)),
        DType::I64 => Some((-9.223372e18, 9.223372e18)),
        _ => None,
    }
}

/// Resize: per-axis tables from `resize_axis_samples`; nearest copies one input element
/// (exact for every dtype), linear and cubic sum the product of the per-axis weights over all
/// tap combinations in f32 (the interpreter resamples axis by axis in f64: same sums, within
/// tolerance). A coordinate outside a tf_crop_and_resize region takes the fill constant
/// (the interpreter's later-axis weights sum to 1 there, so the fill passes through).
fn resize(op: &Op, cx: &mut Lowering) -> Result<Vec<Stmt>, BackendError> {
    let Op::Resize {
        mode,
        out_shape: op_shape,
        ..
    } = op
    else {
        return crate::cannot!("not a Resize");
    };
    let (xs, ys) = (in_shape(cx, 0)?, out_shape(cx, 0)?);
    let in_dtype = cx.inputs.first().map_or(DType::F32, |t| t.dtype);
    let rank = xs.len();
    if ys.len() != rank {
        return crate::cannot!("Resize output rank differs from the input's");
    }
    if ys != *op_shape {
        return crate::cannot!("Resize output shape {ys:?} differs from the op's {op_shape:?}");
    }
    let nearest = *mode == ResizeMode::Nearest;
    if xs.contains(&0) {
        if ys.contains(&0) {
            return Ok(Vec::new());
        }
        return crate::cannot!("Resize of an empty input");
    }
    let vars = cx.counters(rank);
    let idx = vars_expr(&vars);
    let st = strides(&xs);
    let mut fills = Vec::new();
    let mut preludes = vec![Vec::new(); rank + 1];
    let mut plans: Vec<(usize, AxisPlan)> = Vec::new();
    let mut base = Expr::Int(0);
    for (d, &in_n) in xs.iter().enumerate() {
        let o = idx.get(d).cloned().unwrap_or(Expr::Int(0));
        let stride = st.get(d).copied().unwrap_or(0) as i64;
        let samples = resize_axis_samples(op, d, &xs)
            .map_err(|e| BackendError::Lowering(format!("Resize: {e}")))?;
        let Some(samples) = samples else {
            if in_n > 1 {
                base = plus(base, o.affine(stride, 0));
            }
            continue;
        };
        let mut plan = plan_axis(cx, nearest, in_n, &samples, &o, &mut fills);
        if let Some(p) = preludes.get_mut(d + 1) {
            p.append(&mut plan.prelude);
        }
        if nearest {
            if let Some(&t) = plan.taps.first() {
                base = plus(base, Expr::Var(t).affine(stride, 0));
            }
        }
        plans.push((d, plan));
    }
    let x = cx.input(0);
    let out_dtype = out_dtype(cx, 0)?;
    let mut value = if nearest {
        Expr::load(x, base)
    } else {
        match plans.len() {
            0 => tap_sum(x, in_dtype, &plans, &st, usize::MAX, base),
            n => tap_sum(x, in_dtype, &plans, &st, n - 1, base),
        }
    };
    // Later axes are resampled after earlier ones, so their fill constants win: wrap them
    // outermost.
    for (_, plan) in &plans {
        let Some(code) = plan.fill else { continue };
        for (i, &v) in fills.iter().enumerate() {
            let fill = if nearest {
                let r = if out_dtype.is_integer() {
                    v.round_ties_even()
                } else {
                    v
                };
                elem_const(r, out_dtype)
            } else {
                Expr::Const(f64::from(v as f32), DType::F32)
            };
            value = Expr::select(
                Expr::bin(BinOp::Eq, Expr::Var(code), Expr::Int(i as i64 + 1)),
                fill,
                value,
            );
        }
    }
    if !nearest {
        if let Some((lo, hi)) = int_range(out_dtype) {
            // Integers round half to even and saturate, as the reference's saturate_cast.
            value = Expr::un(UnOp::RoundEven, value)
                .max(Expr::Const(lo, DType::F32))
                .min(Expr::Const(hi, DType::F32));
        }
    }
    let store = Stmt::Store {
        param: cx.output(0),
        index: flat_index(&idx, &ys),
        value,
    };
    Ok(nest_with_preludes(&vars, &ys, preludes, vec![store]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Evaluates the integer index expressions these lowerings build, with `Var(0)` = `o`.
    fn eval(e: &Expr, o: i64) -> f64 {
        match e {
            Expr::Int(v) => *v as f64,
            Expr::Const(v, _) => *v,
            Expr::Var(_) => o as f64,
            Expr::Unary(UnOp::Abs, a) => eval(a, o).abs(),
            Expr::Select(c, a, b) => {
                if eval(c, o) != 0.0 {
                    eval(a, o)
                } else {
                    eval(b, o)
                }
            }
            Expr::Binary(op, a, b) => {
                let (x, y) = (eval(a, o), eval(b, o));
                match op {
                    BinOp::Add => x + y,
                    BinOp::Sub => x - y,
                    BinOp::Mul => x * y,
                    BinOp::Div => (x / y).trunc(),
                    BinOp::Rem => x % y,
                    BinOp::Max => x.max(y),
                    BinOp::Min => x.min(y),
                    BinOp::Lt => f64::from(u8::from(x < y)),
                    BinOp::Ge => f64::from(u8::from(x >= y)),
                    BinOp::Eq => f64::from(u8::from(x == y)),
                    BinOp::And => f64::from(u8::from(x != 0.0 && y != 0.0)),
                    _ => f64::NAN,
                }
            }
            _ => f64::NAN,
        }
    }

    #[test]
    fn tables_round_trip() {
        let o = Expr::Var(Var(0));
        let ints: [&[i64]; 4] = [
            &[-1, 0, 0, 1, 1, 2, 2, 3],
            &[5, 5, 5],
            &[0, 3, 1, 7, 2],
            &[0, 0, 1, 1, 1, 2, 2, 2, 3],
        ];
        for t in ints {
            let e = table_expr(&o, t);
            for (i, &v) in t.iter().enumerate() {
                assert_eq!(eval(&e, i as i64), v as f64, "{t:?} at {i}");
            }
        }
        let w = [0.25f32, 0.75, 0.25, 0.75, 0.25, 0.75, 0.5];
        let e = table_expr(&o, &w);
        for (i, &v) in w.iter().enumerate() {
            assert_eq!(eval(&e, i as i64) as f32, v);
        }
    }

    #[test]
    fn pad_axis_matches_numpy() {
        let o = Expr::Var(Var(0));
        let src = |n, b, e, mode| -> Vec<i64> {
            let len = n as i64 + b + e;
            let (i, _) = pad_axis(&o, n, b, e, mode);
            (0..len).map(|k| eval(&i, k) as i64).collect()
        };
        // np.pad(arange(3), (4, 3), 'reflect') = [0 1 2 1 0 1 2 1 0 1]
        assert_eq!(
            src(3, 4, 3, PadMode::Reflect),
            [0, 1, 2, 1, 0, 1, 2, 1, 0, 1]
        );
        assert_eq!(src(3, 2, 2, PadMode::Wrap), [1, 2, 0, 1, 2, 0, 1]);
        assert_eq!(src(3, 2, 1, PadMode::Edge), [0, 0, 0, 1, 2, 2]);
        assert_eq!(src(3, 1, -1, PadMode::Edge), [0, 0, 1]);
        let (i, cond) = pad_axis(&o, 3, -1, 1, PadMode::Constant);
        let cond = cond.unwrap_or(Expr::Int(1));
        let got: Vec<Option<i64>> = (0..3)
            .map(|k| (eval(&cond, k) != 0.0).then(|| eval(&i, k) as i64))
            .collect();
        assert_eq!(got, [Some(1), Some(2), None]);
    }
}
