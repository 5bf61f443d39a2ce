//! Kernel lowering of Conv and ConvTranspose over any number of spatial dimensions, plus the
//! window machinery (per-axis geometry, border splitting, tap loop nests) that pooling shares.
//!
//! Conv accumulates each output element in an f32 local initialized to the bias, summing over
//! input channels then taps in row-major kernel order, which is the reference's order of float
//! additions. The innermost output dimension is split into a left border, an interior and a
//! right border: interior windows lie fully inside the input and run without bounds tests.
//! Pointwise convolutions (1x1, stride 1, no padding) run over the flattened plane instead, so
//! their innermost loop is `H * W` long.
//!
//! QConv runs the same loops and schedules over i32 accumulators (see `Arith`): every tap
//! through `integer::mac`, taps in the padding adding `x_zero_point * w` (the reference pads
//! with the zero point; nothing is added when it is 0), and the sum requantized by its output
//! channel's multiplier and shift.

use kiln_ir::{DType, Op, QOut};

use super::integer::{mac, requantized, value_range, Requant};
use super::Lowering;
use crate::error::BackendError;
use crate::kernel::{for_loop, BinOp, Expr, LoopOrder, Stmt, Var};

/// One spatial dimension of a windowed op: output `o` reads input positions
/// `o * stride - pad + k * dil` for taps `k < k_len`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Axis {
    pub in_len: usize,
    pub out_len: usize,
    pub k_len: usize,
    pub stride: usize,
    pub dil: usize,
    pub pad: usize,
}

impl Axis {
    /// Input position of tap `k` of the window at output `o` (both `I32` expressions).
    pub fn pos(&self, o: &Expr, k: &Expr) -> Expr {
        add(
            o.clone().affine(self.stride as i64, -(self.pad as i64)),
            k.clone().affine(self.dil as i64, 0),
        )
    }

    /// `o * stride - pad`: where the window at output `o` starts.
    pub fn start(&self, o: &Expr) -> Expr {
        o.clone().affine(self.stride as i64, -(self.pad as i64))
    }

    /// The outputs `lo..hi` whose whole window lies inside the input (possibly empty).
    fn interior(&self) -> (usize, usize) {
        let (s, pad) = (self.stride as i64, self.pad as i64);
        let span = ((self.k_len as i64) - 1) * self.dil as i64;
        let lo = ((pad + s - 1) / s).min(self.out_len as i64);
        let room = self.in_len as i64 - 1 + pad - span;
        let hi = if room < 0 {
            0
        } else {
            (room / s + 1).min(self.out_len as i64)
        };
        (lo as usize, hi.max(lo) as usize)
    }

    /// Whether some output of this axis has a window reaching outside the input.
    pub fn needs_checks(&self) -> bool {
        self.interior() != (0, self.out_len)
    }

    /// The taps `lo..hi` of the window at output `o` that lie inside the input.
    pub fn valid_taps(&self, o: usize) -> (usize, usize) {
        let (dil, k) = (self.dil as i64, self.k_len as i64);
        let start = (o * self.stride) as i64 - self.pad as i64;
        // ceil(a / dil) for any sign of a.
        let ceil = |a: i64| a.div_euclid(dil) + i64::from(a.rem_euclid(dil) != 0);
        let lo = ceil(-start).clamp(0, k);
        let hi = ceil(self.in_len as i64 - start).clamp(lo, k);
        (lo as usize, hi as usize)
    }

    /// Output ranges covering `0..out_len`, each with how its taps are bounded: the interior
    /// needs no test, narrow borders are unrolled per output with constant tap ranges, wide
    /// ones test each tap.
    pub fn regions(&self) -> Vec<(usize, usize, Taps)> {
        let (lo, hi) = self.interior();
        if lo >= hi {
            return self.border(0, self.out_len);
        }
        let mut out = self.border(0, lo);
        out.push((lo, hi - lo, Taps::All));
        out.extend(self.border(hi, self.out_len - hi));
        out
    }

    /// The border outputs `start..start + len`.
    fn border(&self, start: usize, len: usize) -> Vec<(usize, usize, Taps)> {
        /// Borders up to this many outputs are unrolled (it is about pad / stride).
        const MAX_UNROLLED: usize = 4;
        if len > MAX_UNROLLED {
            return vec![(start, len, Taps::Checked)];
        }
        (start..start + len)
            .map(|o| {
                let (lo, hi) = self.valid_taps(o);
                (o, 1, Taps::Range(lo, hi))
            })
            .collect()
    }

    /// `0 <= pos < in_len` for tap `k` of output `o`.
    pub fn inside(&self, o: &Expr, k: &Expr) -> Expr {
        let p = self.pos(o, k);
        p.clone()
            .ge(Expr::int(0))
            .and(p.lt(Expr::int(self.in_len as i64)))
    }
}

/// How the taps of one dimension are bounded at some output position.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Taps {
    /// Every tap is inside the input.
    All,
    /// Taps are tested one by one.
    Checked,
    /// Exactly taps `lo..hi` are inside (the output position is a known constant).
    Range(usize, usize),
}

/// `a + b` with a zero operand folded away.
pub(super) fn add(a: Expr, b: Expr) -> Expr {
    match (&a, &b) {
        (_, Expr::Int(0)) => a,
        (Expr::Int(0), _) => b,
        _ => a.add(b),
    }
}

/// A loop counter for `extent` iterations and the expression to index with: a loop of one
/// iteration is not emitted, its index is the constant 0.
pub(super) fn counter(cx: &mut Lowering, extent: usize) -> (Option<Var>, Expr) {
    if extent == 1 {
        (None, Expr::int(0))
    } else {
        let v = cx.kb.counter();
        (Some(v), Expr::Var(v))
    }
}

/// Wraps `body` in the loop of `counter` (if any).
pub(super) fn wrap(var: Option<Var>, extent: usize, body: Vec<Stmt>) -> Vec<Stmt> {
    match var {
        Some(v) => vec![for_loop(v, extent, body)],
        None => body,
    }
}

/// Binds `value` to a fresh `I32` local unless it is already a variable or constant, so
/// index arithmetic is computed once outside the loops that use it.
pub(super) fn hoist(cx: &mut Lowering, out: &mut Vec<Stmt>, value: Expr) -> Expr {
    let value = fold_index(value);
    if matches!(value, Expr::Var(_) | Expr::Int(_)) {
        return value;
    }
    let v = cx.var(DType::I32);
    out.push(Stmt::Let {
        var: v,
        ty: DType::I32,
        init: value,
    });
    Expr::Var(v)
}

/// Row-major strides of `shape`.
pub(super) fn strides(shape: &[usize]) -> Vec<usize> {
    kiln_ir::tensor::strides(shape)
}

/// `sum_d e_d * k_d` with trivial terms folded.
pub(super) fn dot(es: &[Expr], ks: &[usize]) -> Expr {
    es.iter().zip(ks).fold(Expr::int(0), |acc, (e, &k)| {
        add(acc, e.clone().affine(k as i64, 0))
    })
}

/// The body of the innermost tap, given the input index, the weight index (when weights are
/// walked) and the tap counters.
pub(super) type TapBody<'f> = dyn FnMut(&mut Lowering, Expr, Expr, &[Expr]) -> Vec<Stmt> + 'f;

/// The loops over the taps of one window: `x0` / `w0` are the input and weight indices of
/// tap 0 (the input index already includes the window start), `x_strides` / `w_strides` the
/// index steps per unit of each spatial dimension. Dimensions with `checked` skip taps
/// outside the input with an `If` around the deeper loops; a `Range` runs its taps only.
pub(super) struct TapNest<'a> {
    pub axes: &'a [Axis],
    pub outs: &'a [Expr],
    pub taps: &'a [Taps],
    pub x_strides: &'a [usize],
    pub w_strides: &'a [usize],
}

/// The body of a tap outside the input, given its weight index (QConv's padding taps, which
/// read the input's zero point).
pub(super) type OutsideBody<'f> = dyn FnMut(&mut Lowering, Expr) -> Vec<Stmt> + 'f;

impl TapNest<'_> {
    pub fn build(&self, cx: &mut Lowering, x0: Expr, w0: Expr, body: &mut TapBody) -> Vec<Stmt> {
        let mut ks = Vec::with_capacity(self.axes.len());
        self.level(cx, 0, x0, w0, &mut ks, body, None)
    }

    /// [`TapNest::build`], plus `outside` for every tap that lies outside the input (taps a
    /// plain nest skips).
    pub fn build_padded(
        &self,
        cx: &mut Lowering,
        x0: Expr,
        w0: Expr,
        body: &mut TapBody,
        outside: &mut OutsideBody,
    ) -> Vec<Stmt> {
        let mut ks = Vec::with_capacity(self.axes.len());
        self.level(cx, 0, x0, w0, &mut ks, body, Some(outside))
    }

    #[allow(clippy::too_many_arguments)] // the recursion carries both indices and both bodies
    fn level(
        &self,
        cx: &mut Lowering,
        d: usize,
        x: Expr,
        w: Expr,
        ks: &mut Vec<Expr>,
        body: &mut TapBody,
        mut outside: Option<&mut OutsideBody>,
    ) -> Vec<Stmt> {
        let (Some(ax), Some(o)) = (self.axes.get(d), self.outs.get(d)) else {
            return body(cx, x, w, ks);
        };
        let taps = self.taps.get(d).copied().unwrap_or(Taps::Checked);
        let (first, extent) = match taps {
            Taps::Range(lo, hi) => (lo, hi - lo),
            _ => (0, ax.k_len),
        };
        let ws = self.w_strides.get(d).copied().unwrap_or(0);
        let mut result = Vec::new();
        // Extent 0: the window misses the input in this dimension.
        if extent > 0 {
            let (var, k) = counter(cx, extent);
            let k = add(k, Expr::int(first as i64));
            let xs = self.x_strides.get(d).copied().unwrap_or(0) * ax.dil;
            let mut stmts = Vec::new();
            let last = d + 1 == self.axes.len();
            let (xn, wn) = (
                add(x, k.clone().affine(xs as i64, 0)),
                add(w.clone(), k.clone().affine(ws as i64, 0)),
            );
            let w_outside = wn.clone();
            // Row bases are hoisted at every level but the innermost, whose loads index directly.
            let (xn, wn) = if last || var.is_none() {
                (xn, wn)
            } else {
                let xv = hoist(cx, &mut stmts, xn);
                let wv = if ws == 0 {
                    wn
                } else {
                    hoist(cx, &mut stmts, wn)
                };
                (xv, wv)
            };
            ks.push(k.clone());
            let inner = self.level(cx, d + 1, xn, wn, ks, body, outside.as_deref_mut());
            ks.pop();
            stmts.extend(inner);
            if taps == Taps::Checked {
                let otherwise = match outside.as_deref_mut() {
                    Some(out) => self.all_taps(cx, d + 1, w_outside, out),
                    None => Vec::new(),
                };
                stmts = vec![Stmt::If {
                    cond: ax.inside(o, &k),
                    then: stmts,
                    otherwise,
                }];
            }
            result = wrap(var, extent, stmts);
        }
        if let (Some(out), Taps::Range(lo, hi)) = (outside, taps) {
            // The taps before `lo` and from `hi` on miss the input, and so do all their
            // deeper taps.
            for (from, to) in [(0, lo), (hi, ax.k_len)] {
                result.extend(self.tap_range(cx, d, from, to, w.clone(), out));
            }
        }
        result
    }

    /// Every tap of dimensions `d..` at weight index `w`, through `outside`.
    fn all_taps(
        &self,
        cx: &mut Lowering,
        d: usize,
        w: Expr,
        outside: &mut OutsideBody,
    ) -> Vec<Stmt> {
        match self.axes.get(d) {
            Some(ax) => self.tap_range(cx, d, 0, ax.k_len, w, outside),
            None => outside(cx, w),
        }
    }

    /// Taps `from..to` of dimension `d` and every deeper tap, through `outside`.
    fn tap_range(
        &self,
        cx: &mut Lowering,
        d: usize,
        from: usize,
        to: usize,
        w: Expr,
        outside: &mut OutsideBody,
    ) -> Vec<Stmt> {
        if to <= from {
            return Vec::new();
        }
        let (var, k) = counter(cx, to - from);
        let ws = self.w_strides.get(d).copied().unwrap_or(0);
        let wn = add(w, add(k, Expr::int(from as i64)).affine(ws as i64, 0));
        let inner = self.all_taps(cx, d + 1, wn, outside);
        wrap(var, to - from, inner)
    }
}

/// How many innermost spatial dimensions are split into border and interior regions: each
/// split multiplies the code of the window body, so deeper dimensions test their taps.
const SPLIT_DIMS: usize = 2;

/// Loops over the output positions of `axes`: the [`SPLIT_DIMS`] innermost dimensions are
/// split into border and interior regions, the others run whole. `body(cx, outs, taps)`
/// builds the statements of one output position.
pub(super) fn output_nest(
    cx: &mut Lowering,
    axes: &[Axis],
    body: &mut OutputBody,
) -> Result<Vec<Stmt>, BackendError> {
    let (outer, split) = axes.split_at(axes.len().saturating_sub(SPLIT_DIMS));
    let outer_vars: Vec<(Option<Var>, Expr)> =
        outer.iter().map(|a| counter(cx, a.out_len)).collect();
    let mut outs: Vec<Expr> = outer_vars.iter().map(|(_, e)| e.clone()).collect();
    let mut taps: Vec<Taps> = outer
        .iter()
        .map(|a| {
            if a.needs_checks() {
                Taps::Checked
            } else {
                Taps::All
            }
        })
        .collect();
    let mut stmts = split_regions(cx, split, &mut outs, &mut taps, body)?;
    for ((var, _), ax) in outer_vars.iter().zip(outer).rev() {
        stmts = wrap(*var, ax.out_len, stmts);
    }
    Ok(stmts)
}

/// The statements of one output position, given its indices and how its taps are bounded.
pub(super) type OutputBody<'f> =
    dyn FnMut(&mut Lowering, &[Expr], &[Taps]) -> Result<Vec<Stmt>, BackendError> + 'f;

/// The regions of `axes` (after the dimensions already in `outs`), one nest per combination.
fn split_regions(
    cx: &mut Lowering,
    axes: &[Axis],
    outs: &mut Vec<Expr>,
    taps: &mut Vec<Taps>,
    body: &mut OutputBody,
) -> Result<Vec<Stmt>, BackendError> {
    let Some((ax, rest)) = axes.split_first() else {
        return body(cx, outs, taps);
    };
    let mut stmts = Vec::new();
    for (start, len, t) in ax.regions() {
        let (var, r) = counter(cx, len);
        outs.push(add(r, Expr::int(start as i64)));
        taps.push(t);
        let inner = split_regions(cx, rest, outs, taps, body);
        outs.pop();
        taps.pop();
        stmts.extend(wrap(var, len, inner?));
    }
    Ok(stmts)
}

/// The convolution's sizes, read from the operand shapes and the op's attributes.
struct ConvShape {
    batch: usize,
    in_ch: usize,
    out_ch: usize,
    group: usize,
    axes: Vec<Axis>,
    arith: Arith,
}

/// What a convolution computes in.
#[derive(Clone, Copy, Debug)]
enum Arith {
    /// f32 sums (Conv, ConvTranspose).
    Float,
    /// QConv: i32 sums of narrow integers through [`mac`], taps in the padding reading
    /// `x_zero_point`, and the sum requantized to `output` (or stored raw without one).
    Int {
        x_zero_point: i32,
        output: Option<QOut>,
        rounding: kiln_ir::fixed_point::Rounding,
    },
}

impl Arith {
    /// The accumulator's type.
    fn acc_type(self) -> DType {
        match self {
            Arith::Float => DType::F32,
            Arith::Int { .. } => DType::I32,
        }
    }

    /// A zero of the accumulator's type.
    fn zero(self) -> Expr {
        match self {
            Arith::Float => Expr::f32(0.0),
            Arith::Int { .. } => Expr::int(0),
        }
    }
}

impl ConvShape {
    fn new(op: &Op, cx: &Lowering) -> Result<Self, BackendError> {
        let (kernel, strides, dilations, pads, group) = match op {
            Op::Conv {
                kernel_shape,
                strides,
                dilations,
                pads,
                group,
                ..
            }
            | Op::ConvTranspose {
                kernel_shape,
                strides,
                dilations,
                pads,
                group,
                ..
            }
            | Op::QConv {
                kernel_shape,
                strides,
                dilations,
                pads,
                group,
                ..
            } => (kernel_shape, strides, dilations, pads, *group),
            _ => return crate::cannot!("{} is not a convolution", op.name()),
        };
        let (Some(x), Some(y)) = (cx.inputs.first(), cx.outputs.first()) else {
            return crate::cannot!("convolution without operands");
        };
        let arith = match op {
            Op::QConv {
                x_zero_point,
                output,
                rounding,
                ..
            } => {
                value_range(x.dtype)?;
                if cx
                    .inputs
                    .get(1)
                    .is_none_or(|w| value_range(w.dtype).is_err())
                    || cx.inputs.get(2).is_none_or(|b| b.dtype != DType::I32)
                {
                    return crate::cannot!("QConv takes i8/i16 weights and an i32 bias");
                }
                Arith::Int {
                    x_zero_point: *x_zero_point,
                    output: *output,
                    rounding: *rounding,
                }
            }
            _ if x.dtype == DType::F32 => Arith::Float,
            _ => return crate::cannot!("{} on {} input", op.name(), x.dtype),
        };
        let n = kernel.len();
        if x.shape.len() != n + 2
            || y.shape.len() != n + 2
            || strides.len() != n
            || dilations.len() != n
            || pads.len() != 2 * n
            || group == 0
            || strides.contains(&0)
            || dilations.contains(&0)
            || kernel.contains(&0)
        {
            return crate::cannot!("unexpected convolution shapes or attributes");
        }
        let axes = (0..n)
            .map(|d| Axis {
                in_len: x.shape[d + 2],
                out_len: y.shape[d + 2],
                k_len: kernel[d],
                stride: strides[d],
                dil: dilations[d],
                pad: pads[d],
            })
            .collect();
        Ok(ConvShape {
            axes: flatten_pointwise(axes),
            batch: x.shape[0],
            in_ch: x.shape[1],
            out_ch: y.shape[1],
            group,
            arith,
        })
    }

    fn in_sp(&self) -> Vec<usize> {
        self.axes.iter().map(|a| a.in_len).collect()
    }

    fn out_sp(&self) -> Vec<usize> {
        self.axes.iter().map(|a| a.out_len).collect()
    }

    fn kernel(&self) -> Vec<usize> {
        self.axes.iter().map(|a| a.k_len).collect()
    }
}

/// A pointwise window (every axis 1 wide, stride 1, unpadded) reads exactly its own output
/// position, so the spatial axes are one contiguous plane: a single axis over the whole plane
/// gives the innermost loop `H * W` iterations instead of `W` (long vector loops, no row
/// overhead) and computes the same sums in the same order.
fn flatten_pointwise(axes: Vec<Axis>) -> Vec<Axis> {
    let pointwise = axes
        .iter()
        .all(|a| a.k_len == 1 && a.stride == 1 && a.pad == 0 && a.in_len == a.out_len);
    if !pointwise || axes.len() < 2 {
        return axes;
    }
    let plane = axes.iter().map(|a| a.out_len).product();
    vec![Axis {
        in_len: plane,
        out_len: plane,
        k_len: 1,
        stride: 1,
        dil: 1,
        pad: 0,
    }]
}

pub fn lower(op: &Op, cx: &mut Lowering) -> Result<Vec<Stmt>, BackendError> {
    let g = ConvShape::new(op, cx)?;
    let body = match op {
        Op::Conv { .. } | Op::QConv { .. } => conv(&g, cx)?,
        Op::ConvTranspose { .. } => conv_transpose(&g, cx)?,
        _ => return crate::cannot!("{} is not a convolution", op.name()),
    };
    Ok(fold(body))
}

/// The statements of one output plane, given its batch and output channel indices.
type ChannelBody<'f> =
    dyn FnMut(&mut Lowering, &Expr, &Expr) -> Result<Vec<Stmt>, BackendError> + 'f;

/// The per-(batch, output channel) loops with the accumulator's bias: `body(cx, b, oc)`
/// builds the statements of one output plane.
fn channel_loops(
    g: &ConvShape,
    cx: &mut Lowering,
    body: &mut ChannelBody,
) -> Result<Vec<Stmt>, BackendError> {
    let (bv, b) = counter(cx, g.batch);
    let (ocv, oc) = counter(cx, g.out_ch);
    let inner = body(cx, &b, &oc)?;
    Ok(wrap(bv, g.batch, wrap(ocv, g.out_ch, inner)))
}

/// The accumulator's initial value: the bias of channel `oc`, or zero.
fn bias_init(cx: &Lowering, oc: &Expr) -> Expr {
    if cx.inputs.len() > 2 {
        Expr::load(cx.input(2), oc.clone())
    } else {
        Expr::f32(0.0)
    }
}

/// The sizes a Conv kernel indexes with, fixed at compile time.
struct ConvPlan<'g> {
    g: &'g ConvShape,
    in_pg: usize,
    out_pg: usize,
    in_plane: usize,
    out_plane: usize,
    taps: usize,
    x_strides: Vec<usize>,
    y_strides: Vec<usize>,
    w_strides: Vec<usize>,
    /// QConv's multiplier and shift, when it requantizes.
    requant: Option<Requant>,
}

/// `width` consecutive output channels of one group computed in one pass over the input
/// window: `oc0` is the first of them, `ic0` the first input channel of their group.
struct ChanTile {
    oc0: Expr,
    ic0: Expr,
    width: usize,
}

/// The per-tile values hoisted out of the pixel loops: the group's input plane base, the
/// first channel's weight and output bases, one accumulator seed per channel, and (QConv) the
/// multiplier and shift of each channel.
struct TileBases {
    x_group: Expr,
    w_oc: Expr,
    y_oc: Expr,
    biases: Vec<Expr>,
    requant: Vec<(Expr, Expr)>,
}

/// Builds the statements of one channel tile.
type TileBody<'f> = dyn FnMut(&mut Lowering, &ChanTile) -> Result<Vec<Stmt>, BackendError> + 'f;

impl ConvPlan<'_> {
    /// How many output channels are computed per pass: the schedule's `oc_tile` (or
    /// `windowed_oc_tile` for windows wider than one tap) when every group has that many;
    /// depthwise convs (one input channel per group) stay untiled.
    fn tile(&self, cx: &Lowering) -> usize {
        let t = match cx.schedule.windowed_oc_tile {
            w if w > 0 && self.taps > 1 => w,
            _ => cx.schedule.oc_tile,
        };
        let depthwise = self.g.group > 1 && self.in_pg == 1;
        if t > 1 && !depthwise && self.out_pg >= t {
            t
        } else {
            1
        }
    }

    /// Loops over the output channels of one batch item in tiles of `tile` (plus a narrower
    /// remainder tile per group when `tile` does not divide the group's channels).
    fn channel_tiles(
        &self,
        cx: &mut Lowering,
        tile: usize,
        body: &mut TileBody,
    ) -> Result<Vec<Stmt>, BackendError> {
        let (in_pg, out_pg) = (self.in_pg as i64, self.out_pg as i64);
        if tile <= 1 {
            let (ocv, oc) = counter(cx, self.g.out_ch);
            let ic0 = if self.g.group == 1 {
                Expr::int(0)
            } else {
                oc.clone().div(Expr::int(out_pg)).affine(in_pg, 0)
            };
            let inner = body(
                cx,
                &ChanTile {
                    oc0: oc,
                    ic0,
                    width: 1,
                },
            )?;
            return Ok(wrap(ocv, self.g.out_ch, inner));
        }
        let (gv, grp) = counter(cx, self.g.group);
        let (full, rest) = (self.out_pg / tile, self.out_pg % tile);
        let (tv, t) = counter(cx, full);
        let first = grp.clone().affine(out_pg, 0);
        let ic0 = grp.affine(in_pg, 0);
        let whole = ChanTile {
            oc0: add(first.clone(), t.affine(tile as i64, 0)),
            ic0: ic0.clone(),
            width: tile,
        };
        let mut stmts = wrap(tv, full, body(cx, &whole)?);
        if rest > 0 {
            let tail = ChanTile {
                oc0: add(first, Expr::int((full * tile) as i64)),
                ic0,
                width: rest,
            };
            stmts.extend(body(cx, &tail)?);
        }
        Ok(wrap(gv, self.g.group, stmts))
    }

    /// Hoists the bases of `tile` into `head`; biases (and QConv's per-channel multipliers and
    /// shifts) become locals when `hoist_bias` (the pixel loops then run inside, so each is
    /// loaded once per plane).
    fn tile_bases(
        &self,
        cx: &mut Lowering,
        b: &Expr,
        tile: &ChanTile,
        hoist_bias: bool,
        head: &mut Vec<Stmt>,
    ) -> TileBases {
        let g = self.g;
        let x_group = add(b.clone().affine(g.in_ch as i64, 0), tile.ic0.clone())
            .affine(self.in_plane as i64, 0);
        let x_group = hoist(cx, head, x_group);
        let w_oc = hoist(
            cx,
            head,
            tile.oc0.clone().affine((self.in_pg * self.taps) as i64, 0),
        );
        let y_oc = add(b.clone().affine(g.out_ch as i64, 0), tile.oc0.clone())
            .affine(self.out_plane as i64, 0);
        let y_oc = hoist(cx, head, y_oc);
        let acc_type = g.arith.acc_type();
        let biases = (0..tile.width)
            .map(|t| {
                let bias = match bias_init(cx, &add(tile.oc0.clone(), Expr::int(t as i64))) {
                    Expr::Const(..) => g.arith.zero(),
                    load => load,
                };
                if !hoist_bias || !matches!(bias, Expr::Load { .. }) {
                    return bias;
                }
                let v = cx.var(acc_type);
                head.push(Stmt::Let {
                    var: v,
                    ty: acc_type,
                    init: bias,
                });
                Expr::Var(v)
            })
            .collect();
        let requant = match &self.requant {
            Some(r) => (0..tile.width)
                .map(|t| {
                    let oc = add(tile.oc0.clone(), Expr::int(t as i64));
                    if hoist_bias {
                        r.hoisted(cx, &oc, head)
                    } else {
                        r.at(&oc)
                    }
                })
                .collect(),
            None => Vec::new(),
        };
        TileBases {
            x_group,
            w_oc,
            y_oc,
            biases,
            requant,
        }
    }

    /// One output pixel of a channel tile: one accumulator per channel seeded with its bias,
    /// summing over input channels then taps (the reference's order); with several channels
    /// each input element is loaded once into a local feeding every accumulator. QConv sums
    /// through [`mac`], and its taps in the padding add the zero point times their weight.
    fn pixel(&self, cx: &mut Lowering, tb: &TileBases, outs: &[Expr], taps: &[Taps]) -> Vec<Stmt> {
        let (g, (xp, wp, yp)) = (self.g, (cx.input(0), cx.input(1), cx.output(0)));
        let (arith, acc_type) = (g.arith, g.arith.acc_type());
        let mut stmts = Vec::new();
        // The window start as an input plane offset (may be negative in the borders).
        let starts: Vec<Expr> = g.axes.iter().zip(outs).map(|(a, o)| a.start(o)).collect();
        let x_win = hoist(
            cx,
            &mut stmts,
            add(tb.x_group.clone(), dot(&starts, &self.x_strides)),
        );
        let accs: Vec<Var> = tb
            .biases
            .iter()
            .map(|bias| {
                let acc = cx.var(acc_type);
                stmts.push(Stmt::Let {
                    var: acc,
                    ty: acc_type,
                    init: bias.clone(),
                });
                acc
            })
            .collect();
        let width = accs.len();
        let xv = if width > 1 {
            Some(cx.var(acc_type))
        } else {
            None
        };
        let (icv, icg) = counter(cx, self.in_pg);
        let mut inner = Vec::new();
        let x0 = hoist(
            cx,
            &mut inner,
            add(x_win, icg.clone().affine(self.in_plane as i64, 0)),
        );
        let w0 = add(tb.w_oc.clone(), icg.affine(self.taps as i64, 0));
        let w0 = if self.taps > 1 || width > 1 {
            hoist(cx, &mut inner, w0)
        } else {
            w0
        };
        let nest = TapNest {
            axes: &g.axes,
            outs,
            taps,
            x_strides: &self.x_strides,
            w_strides: &self.w_strides,
        };
        let w_step = (self.in_pg * self.taps) as i64;
        // `acc += w * x`, in f32 or through the integer multiply-accumulate.
        let update = |acc: Var, w: Expr, x: Expr| match arith {
            Arith::Float => Stmt::Assign {
                var: acc,
                value: Expr::Var(acc).add(w.mul(x)),
            },
            Arith::Int { .. } => mac(acc, x, w),
        };
        let mut used = false;
        let mut tap = |_: &mut Lowering, xi: Expr, wi: Expr, _: &[Expr]| {
            used = true;
            let Some(xv) = xv else {
                return accs
                    .iter()
                    .map(|&acc| update(acc, Expr::load(wp, wi.clone()), Expr::load(xp, xi.clone())))
                    .collect();
            };
            let x = Expr::load(xp, xi);
            let mut body = vec![Stmt::Assign {
                var: xv,
                value: match arith {
                    Arith::Float => x,
                    Arith::Int { .. } => super::integer::widen(x),
                },
            }];
            body.extend(accs.iter().enumerate().map(|(t, &acc)| {
                let w = Expr::load(wp, add(wi.clone(), Expr::int(t as i64 * w_step)));
                update(acc, w, Expr::Var(xv))
            }));
            body
        };
        let nest_stmts = match arith {
            // Padding taps read the zero point: each adds `zero_point * w`.
            Arith::Int { x_zero_point, .. } if x_zero_point != 0 => {
                let zp = Expr::int(i64::from(x_zero_point));
                let mut pad = |_: &mut Lowering, wi: Expr| -> Vec<Stmt> {
                    accs.iter()
                        .enumerate()
                        .map(|(t, &acc)| {
                            let w = Expr::load(wp, add(wi.clone(), Expr::int(t as i64 * w_step)));
                            mac(acc, zp.clone(), w)
                        })
                        .collect()
                };
                nest.build_padded(cx, x0, w0, &mut tap, &mut pad)
            }
            _ => nest.build(cx, x0, w0, &mut tap),
        };
        inner.extend(nest_stmts);
        // The input local is declared only where some tap reads it (no unused variable).
        if let (Some(xv), true) = (xv, used) {
            stmts.push(Stmt::Let {
                var: xv,
                ty: acc_type,
                init: arith.zero(),
            });
        }
        stmts.extend(wrap(icv, self.in_pg, inner));
        let y_pix = dot(outs, &self.y_strides);
        stmts.extend(accs.iter().enumerate().map(|(t, &acc)| Stmt::Store {
            param: yp,
            index: add(
                add(tb.y_oc.clone(), Expr::int((t * self.out_plane) as i64)),
                y_pix.clone(),
            ),
            value: match (arith, tb.requant.get(t)) {
                (
                    Arith::Int {
                        output: Some(out),
                        rounding,
                        ..
                    },
                    Some(rq),
                ) => requantized(Expr::Var(acc), rq.clone(), &out, rounding),
                _ => Expr::Var(acc),
            },
        }));
        stmts
    }
}

/// Conv: `y[oc][o] = bias[oc] + sum over ic, k of w[oc][ic][k] * x[ic][o * s + k * d - p]`.
/// The schedule picks the channel tile width and whether channels or pixels run outer.
fn conv(g: &ConvShape, cx: &mut Lowering) -> Result<Vec<Stmt>, BackendError> {
    let (in_pg, out_pg) = (g.in_ch / g.group, g.out_ch / g.group);
    if in_pg * g.group != g.in_ch || out_pg * g.group != g.out_ch {
        return crate::cannot!("channels are not divisible by group {}", g.group);
    }
    let (in_sp, out_sp, kernel) = (g.in_sp(), g.out_sp(), g.kernel());
    // Per-tensor requantization values are read once, before every loop.
    let mut top = Vec::new();
    let requant = match g.arith {
        Arith::Int {
            output: Some(_), ..
        } => Some(Requant::new(cx, 3, g.out_ch, &mut top)?),
        _ => None,
    };
    let plan = ConvPlan {
        g,
        in_pg,
        out_pg,
        in_plane: in_sp.iter().product(),
        out_plane: out_sp.iter().product(),
        taps: kernel.iter().product(),
        x_strides: strides(&in_sp),
        y_strides: strides(&out_sp),
        w_strides: strides(&kernel),
        requant,
    };
    let tile = plan.tile(cx);
    let (bv, b) = counter(cx, g.batch);
    let inner = if cx.schedule.loop_order == LoopOrder::PixelsOuter {
        // Every channel tile of one pixel before the next pixel: the window stays in cache.
        output_nest(cx, &g.axes, &mut |cx, outs, taps| {
            plan.channel_tiles(cx, tile, &mut |cx, t| {
                let mut stmts = Vec::new();
                let tb = plan.tile_bases(cx, &b, t, false, &mut stmts);
                stmts.extend(plan.pixel(cx, &tb, outs, taps));
                Ok(stmts)
            })
        })?
    } else {
        plan.channel_tiles(cx, tile, &mut |cx, t| {
            let mut head = Vec::new();
            let tb = plan.tile_bases(cx, &b, t, true, &mut head);
            head.extend(output_nest(cx, &g.axes, &mut |cx, outs, taps| {
                Ok(plan.pixel(cx, &tb, outs, taps))
            })?);
            Ok(head)
        })?
    };
    top.extend(wrap(bv, g.batch, inner));
    Ok(top)
}

/// ConvTranspose as a gather: `y[oc][o] = bias[oc] + sum over ic, k of w[ic][oc][k] *
/// x[ic][i]` for the taps where `o + p - k * d = i * s` with `0 <= i < in_len`.
fn conv_transpose(g: &ConvShape, cx: &mut Lowering) -> Result<Vec<Stmt>, BackendError> {
    let (in_pg, out_pg) = (g.in_ch / g.group, g.out_ch / g.group);
    if in_pg * g.group != g.in_ch || out_pg * g.group != g.out_ch {
        return crate::cannot!("channels are not divisible by group {}", g.group);
    }
    let (in_sp, out_sp, kernel) = (g.in_sp(), g.out_sp(), g.kernel());
    let in_plane: usize = in_sp.iter().product();
    let out_plane: usize = out_sp.iter().product();
    let taps: usize = kernel.iter().product();
    let (x_strides, y_strides, w_strides) = (strides(&in_sp), strides(&out_sp), strides(&kernel));
    let (xp, wp, yp) = (cx.input(0), cx.input(1), cx.output(0));
    let axes = g.axes.clone();
    channel_loops(g, cx, &mut |cx, b, oc| {
        let mut head = Vec::new();
        let (grp, ocg) = if g.group == 1 {
            (Expr::int(0), oc.clone())
        } else {
            (
                oc.clone().div(Expr::int(out_pg as i64)),
                oc.clone().rem(Expr::int(out_pg as i64)),
            )
        };
        // Input channel ic = grp * in_pg + icg; its plane and its weights w[ic][ocg].
        let first_ic = add(
            b.clone().affine(g.in_ch as i64, 0),
            grp.clone().affine(in_pg as i64, 0),
        );
        let x_group = hoist(cx, &mut head, first_ic.affine(in_plane as i64, 0));
        let w_base = add(
            grp.affine((in_pg * out_pg * taps) as i64, 0),
            ocg.affine(taps as i64, 0),
        );
        let w_base = hoist(cx, &mut head, w_base);
        let y_oc =
            add(b.clone().affine(g.out_ch as i64, 0), oc.clone()).affine(out_plane as i64, 0);
        let y_oc = hoist(cx, &mut head, y_oc);
        let bias = bias_init(cx, oc);
        let ov = cx.counters(axes.len());
        let outs: Vec<Expr> = ov.iter().map(|&v| Expr::Var(v)).collect();
        let mut stmts = Vec::new();
        let acc = cx.var(DType::F32);
        stmts.push(Stmt::Let {
            var: acc,
            ty: DType::F32,
            init: bias,
        });
        let (icv, icg) = counter(cx, in_pg);
        let mut inner = Vec::new();
        let x0 = hoist(
            cx,
            &mut inner,
            add(x_group, icg.clone().affine(in_plane as i64, 0)),
        );
        let w0 = hoist(
            cx,
            &mut inner,
            add(w_base, icg.affine((out_pg * taps) as i64, 0)),
        );
        inner.extend(transpose_taps(
            cx,
            &axes,
            &outs,
            &x_strides,
            &w_strides,
            0,
            x0,
            w0,
            &mut |xi, wi| {
                vec![Stmt::Assign {
                    var: acc,
                    value: Expr::Var(acc).add(Expr::load(wp, wi).mul(Expr::load(xp, xi))),
                }]
            },
        ));
        stmts.extend(wrap(icv, in_pg, inner));
        stmts.push(Stmt::Store {
            param: yp,
            index: add(y_oc, dot(&outs, &y_strides)),
            value: Expr::Var(acc),
        });
        let mut nest = stmts;
        for (&v, a) in ov.iter().zip(&axes).rev() {
            nest = vec![for_loop(v, a.out_len, nest)];
        }
        head.extend(nest);
        Ok(head)
    })
}

/// The taps of ConvTranspose from spatial dimension `d` on: tap `k` reaches output `o` from
/// input `i = (o + p - k * d) / s` when that division is exact and `i` is in range.
#[allow(clippy::too_many_arguments)] // the recursion carries one index per operand
fn transpose_taps(
    cx: &mut Lowering,
    axes: &[Axis],
    outs: &[Expr],
    x_strides: &[usize],
    w_strides: &[usize],
    d: usize,
    x: Expr,
    w: Expr,
    body: &mut dyn FnMut(Expr, Expr) -> Vec<Stmt>,
) -> Vec<Stmt> {
    let (Some(ax), Some(o)) = (axes.get(d), outs.get(d)) else {
        return body(x, w);
    };
    let (var, k) = counter(cx, ax.k_len);
    // t = o + p - k * dil; the input index is t / stride.
    let t = add(
        o.clone().affine(1, ax.pad as i64),
        k.clone().affine(-(ax.dil as i64), 0),
    );
    let mut stmts = Vec::new();
    let t = hoist(cx, &mut stmts, t);
    let s = ax.stride as i64;
    let i = if s == 1 {
        t.clone()
    } else {
        t.clone().div(Expr::int(s))
    };
    let mut cond = t.clone().ge(Expr::int(0));
    if s > 1 {
        cond = cond.and(Expr::bin(
            BinOp::Eq,
            t.clone().rem(Expr::int(s)),
            Expr::int(0),
        ));
    }
    cond = cond.and(i.clone().lt(Expr::int(ax.in_len as i64)));
    let xs = x_strides.get(d).copied().unwrap_or(0);
    let ws = w_strides.get(d).copied().unwrap_or(0);
    let xn = add(x, i.affine(xs as i64, 0));
    let wn = add(w, k.affine(ws as i64, 0));
    let inner = transpose_taps(cx, axes, outs, x_strides, w_strides, d + 1, xn, wn, body);
    stmts.push(Stmt::If {
        cond,
        then: inner,
        otherwise: Vec::new(),
    });
    wrap(var, ax.k_len, stmts)
}

/// Folds constant `I32` index arithmetic (`0 * 6`, `x + 0`, `2 + 3`) left by the generic
/// builders at unit extents, so the emitted code carries no dead arithmetic.
/// Locals nothing reads (the row bases of a window that misses the input) are dropped.
pub(super) fn fold(stmts: Vec<Stmt>) -> Vec<Stmt> {
    crate::kernel::prune_unused_lets(stmts.into_iter().map(fold_stmt).collect())
}

fn fold_stmt(s: Stmt) -> Stmt {
    match s {
        Stmt::For {
            var,
            extent,
            unroll,
            body,
        } => Stmt::For {
            var,
            extent,
            unroll,
            body: fold(body),
        },
        Stmt::Let { var, ty, init } => Stmt::Let {
            var,
            ty,
            init: if ty == DType::I32 {
                fold_index(init)
            } else {
                fold_expr(init)
            },
        },
        Stmt::Assign { var, value } => Stmt::Assign {
            var,
            value: fold_expr(value),
        },
        Stmt::Store {
            param,
            index,
            value,
        } => Stmt::Store {
            param,
            index: fold_index(index),
            value: fold_expr(value),
        },
        Stmt::If {
            cond,
            then,
            otherwise,
        } => Stmt::If {
            cond: fold_expr(cond),
            then: fold(then),
            otherwise: fold(otherwise),
        },
    }
}

/// Folds an expression of any type; index sub-expressions are normalized.
pub(super) fn fold_expr(e: Expr) -> Expr {
    match e {
        Expr::Load { param, index } => Expr::load(param, fold_index(*index)),
        Expr::Unary(op, a) => Expr::un(op, fold_expr(*a)),
        Expr::Select(c, a, b) => Expr::select(fold_expr(*c), fold_expr(*a), fold_expr(*b)),
        Expr::Cast(t, a) => Expr::cast(t, fold_expr(*a)),
        Expr::Requantize {
            value,
            multiplier,
            shift,
            rounding,
        } => Expr::requantize(
            fold_expr(*value),
            fold_expr(*multiplier),
            fold_expr(*shift),
            rounding,
        ),
        Expr::Binary(op, a, b) => {
            // An `Int` operand makes both sides index math (the lowerings here only use
            // `Int` for `I32` values).
            let index = matches!(*a, Expr::Int(_)) || matches!(*b, Expr::Int(_));
            if !index {
                return fold_binary(op, fold_expr(*a), fold_expr(*b));
            }
            let e = Expr::Binary(op, a, b);
            let mut terms = Vec::new();
            match linear(&e, 1, &mut terms) {
                Some(c) => rebuild(terms, c),
                None => match e {
                    Expr::Binary(op, a, b) => fold_binary(op, fold_index(*a), fold_index(*b)),
                    other => other,
                },
            }
        }
        other => other,
    }
}

/// Folds an `I32` index expression, rewriting sums of scaled variables into one
/// `v * a + w * b + c` so constant offsets from padding and region starts merge.
fn fold_index(e: Expr) -> Expr {
    let mut terms = Vec::new();
    match linear(&e, 1, &mut terms) {
        Some(c) => rebuild(terms, c),
        None => fold_expr(e),
    }
}

/// Adds `scale * e` to `terms` (variable, coefficient) and returns its constant part, or
/// `None` when `e` is not linear in variables.
fn linear(e: &Expr, scale: i64, terms: &mut Vec<(Var, i64)>) -> Option<i64> {
    match e {
        Expr::Int(v) => Some(v * scale),
        Expr::Var(v) => {
            match terms.iter_mut().find(|(t, _)| t == v) {
                Some((_, c)) => *c += scale,
                None => terms.push((*v, scale)),
            }
            Some(0)
        }
        Expr::Binary(BinOp::Add, a, b) => Some(linear(a, scale, terms)? + linear(b, scale, terms)?),
        Expr::Binary(BinOp::Sub, a, b) => {
            Some(linear(a, scale, terms)? + linear(b, -scale, terms)?)
        }
        Expr::Binary(BinOp::Mul, a, b) => match (a.as_ref(), b.as_ref()) {
            (x, Expr::Int(k)) | (Expr::Int(k), x) => linear(x, scale * k, terms),
            _ => None,
        },
        _ => None,
    }
}

fn rebuild(terms: Vec<(Var, i64)>, c: i64) -> Expr {
    let mut acc: Option<Expr> = None;
    for (v, k) in terms.into_iter().filter(|(_, k)| *k != 0) {
        let term = Expr::Var(v).affine(k.abs(), 0);
        acc = Some(match acc {
            None if k < 0 => Expr::int(0).sub(term),
            None => term,
            Some(a) if k < 0 => a.sub(term),
            Some(a) => a.add(term),
        });
    }
    match acc {
        None => Expr::int(c),
        Some(a) if c > 0 => a.add(Expr::int(c)),
        Some(a) if c < 0 => a.sub(Expr::int(-c)),
        Some(a) => a,
    }
}

/// One binary node with folded operands.
fn fold_binary(op: BinOp, a: Expr, b: Expr) -> Expr {
    match (op, &a, &b) {
        (BinOp::Add, Expr::Int(x), Expr::Int(y)) => Expr::Int(x + y),
        (BinOp::Sub, Expr::Int(x), Expr::Int(y)) => Expr::Int(x - y),
        (BinOp::Mul, Expr::Int(x), Expr::Int(y)) => Expr::Int(x * y),
        (BinOp::Div, Expr::Int(x), Expr::Int(y)) if *y > 0 => Expr::Int(x / y),
        (BinOp::Max, Expr::Int(x), Expr::Int(y)) => Expr::Int(*x.max(y)),
        (BinOp::Min, Expr::Int(x), Expr::Int(y)) => Expr::Int(*x.min(y)),
        (BinOp::Add, _, Expr::Int(0)) | (BinOp::Mul, _, Expr::Int(1)) => a,
        (BinOp::Add, Expr::Int(0), _) | (BinOp::Mul, Expr::Int(1), _) => b,
        (BinOp::Mul, Expr::Int(0), _) | (BinOp::Mul, _, Expr::Int(0)) => Expr::Int(0),
        (BinOp::Div, _, Expr::Int(1)) => a,
        _ => Expr::bin(op, a, b),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
pub(super) mod tests {
    //! Windowed lowerings (Conv, ConvTranspose and the pools that share the window code)
    //! against the reference interpreter, on geometries the ONNX node tests do not cover:
    //! groups, mixed strides and dilations, asymmetric and wide pads, 1-D and 3-D.

    use kiln_ir::{Graph, Tensor, TensorData};

    use super::*;
    use crate::c::COptions;
    use crate::host::{run_c, HostOptions};
    use crate::kernel::Schedule;

    /// Deterministic pseudo-random values in [-1, 1).
    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 23) as f32) - 1.0
            })
            .collect()
    }

    /// Runs `op` on `inputs` through the C backend and the interpreter and compares.
    pub(in crate::lower) fn check(op: Op, inputs: Vec<Tensor>) {
        check_with(op, inputs, &Schedule::default());
    }

    /// The schedules the tiled and reordered lowerings are tested under.
    pub(in crate::lower) fn schedules() -> Vec<Schedule> {
        let tiled = |oc_tile, loop_order, unroll_limit| Schedule {
            unroll_limit,
            oc_tile,
            loop_order,
            windowed_oc_tile: 0,
        };
        vec![
            Schedule::default(),
            Schedule {
                windowed_oc_tile: 8,
                ..tiled(4, LoopOrder::ChannelsOuter, 3)
            },
            tiled(4, LoopOrder::ChannelsOuter, 0),
            tiled(3, LoopOrder::PixelsOuter, 3),
            tiled(1, LoopOrder::PixelsOuter, 0),
            tiled(2, LoopOrder::ChannelsOuter, 9),
        ]
    }

    /// [`check`] under every schedule of [`schedules`].
    pub(in crate::lower) fn check_schedules(op: Op, inputs: Vec<Tensor>) {
        for s in schedules() {
            check_with(op.clone(), inputs.clone(), &s);
        }
    }

    /// [`check`] with the kernels built under `schedule`.
    pub(in crate::lower) fn check_with(op: Op, inputs: Vec<Tensor>, schedule: &Schedule) {
        let mut g = Graph::new("t");
        let ids = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| g.add_input(format!("in{i}"), t.ty()))
            .collect();
        let node = g.add_node("n", op.clone(), ids, Vec::new()).unwrap();
        g.set_outputs(g.node(node).outputs.clone());
        let want = kiln_ir::interp::run(&g, &inputs).unwrap();
        let c = COptions {
            schedule: *schedule,
            ..COptions::default()
        };
        let got = run_c(&g, &inputs, &c, &HostOptions::default()).unwrap();
        for (w, o) in want.iter().zip(&got) {
            assert_eq!(w.shape(), o.shape(), "{op:?}");
            for i in 0..w.numel() {
                let (a, b) = (o.data().get_f64(i), w.data().get_f64(i));
                let same = (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-5 + 1e-4 * b.abs();
                assert!(same, "{op:?} {schedule:?}: [{i}] {a} vs {b}");
            }
        }
    }

    pub(in crate::lower) fn f(shape: &[usize], seed: u64) -> Tensor {
        Tensor::from_f32(shape.to_vec(), data(shape.iter().product(), seed)).unwrap()
    }

    fn conv(k: &[usize], s: &[usize], d: &[usize], p: &[usize], group: usize) -> Op {
        Op::Conv {
            kernel_shape: k.to_vec(),
            strides: s.to_vec(),
            dilations: d.to_vec(),
            pads: p.to_vec(),
            group,
            activation: Default::default(),
        }
    }

    /// Every fused activation, as the epilogue of a Conv and a ConvTranspose (and under a
    /// channel-tiled schedule), against the interpreter.
    #[test]
    fn fused_activations() {
        use kiln_ir::Activation;
        let acts = [
            Activation::Relu,
            Activation::Clip {
                min: Some(0.0),
                max: Some(0.5),
            },
            Activation::LeakyRelu { alpha: 0.1 },
            Activation::HardSwish,
            Activation::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            Activation::Sigmoid,
            Activation::Tanh,
        ];
        for (i, act) in acts.into_iter().enumerate() {
            let seed = 100 + 3 * i as u64;
            let op = conv(&[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1], 1)
                .with_activation(act)
                .unwrap();
            check_schedules(
                op,
                vec![
                    f(&[1, 2, 5, 4], seed),
                    f(&[4, 2, 3, 3], seed + 1),
                    f(&[4], seed + 2),
                ],
            );
            let op = Op::ConvTranspose {
                kernel_shape: vec![2, 2],
                strides: vec![2, 2],
                dilations: vec![1, 1],
                pads: vec![0, 0, 0, 0],
                output_padding: vec![0, 0],
                group: 1,
                activation: act,
            };
            check(op, vec![f(&[1, 2, 3, 3], seed), f(&[2, 3, 2, 2], seed + 1)]);
        }
    }

    #[test]
    fn conv_geometries() {
        let op = conv(&[3, 2], &[2, 1], &[1, 2], &[1, 0, 2, 3], 2);
        check(
            op,
            vec![f(&[1, 4, 7, 6], 1), f(&[6, 2, 3, 2], 2), f(&[6], 3)],
        );
        // Depthwise, batch 2, pads wider than the unrolled borders.
        let op = conv(&[3, 3], &[1, 1], &[1, 1], &[6, 1, 5, 6], 3);
        check(op, vec![f(&[2, 3, 5, 12], 4), f(&[3, 1, 3, 3], 5)]);
        let op = conv(&[2, 3, 2], &[1, 2, 1], &[2, 1, 1], &[1, 0, 1, 0, 1, 1], 1);
        check(op, vec![f(&[1, 2, 4, 5, 6], 6), f(&[3, 2, 2, 3, 2], 7)]);
        let op = conv(&[3], &[2], &[3], &[4, 1], 1);
        check(op, vec![f(&[1, 2, 9], 8), f(&[2, 2, 3], 9), f(&[2], 10)]);
        // A dilated kernel wider than the input: some windows miss it in a dimension.
        let op = conv(&[2, 2], &[1, 1], &[5, 1], &[3, 0, 3, 0], 1);
        check(op, vec![f(&[1, 1, 2, 3], 11), f(&[1, 1, 2, 2], 12)]);
    }

    #[test]
    fn conv_schedules() {
        // Groups of 5 output channels (tiles of 4, 3 and 2 leave remainders), stride, dilation
        // and asymmetric pads.
        let op = conv(&[3, 2], &[2, 1], &[1, 2], &[1, 0, 2, 3], 2);
        check_schedules(
            op,
            vec![f(&[1, 4, 7, 6], 21), f(&[10, 2, 3, 2], 22), f(&[10], 23)],
        );
        // One group of 7 channels, batch 2, no bias, pads wider than the unrolled borders.
        let op = conv(&[3, 3], &[1, 1], &[1, 1], &[6, 1, 5, 6], 1);
        check_schedules(op, vec![f(&[2, 3, 5, 12], 24), f(&[7, 3, 3, 3], 25)]);
        // Depthwise (untiled) and a group narrower than the tile (untiled).
        let op = conv(&[3, 3], &[2, 2], &[1, 1], &[1, 1, 1, 1], 4);
        check_schedules(
            op.clone(),
            vec![f(&[1, 4, 6, 6], 26), f(&[4, 1, 3, 3], 27), f(&[4], 28)],
        );
        check_schedules(
            op,
            vec![f(&[1, 8, 6, 6], 29), f(&[8, 2, 3, 3], 30), f(&[8], 31)],
        );
        // 1x1 (one tap), 1-D and 3-D.
        let op = conv(&[1, 1], &[1, 1], &[1, 1], &[0, 0, 0, 0], 1);
        check_schedules(
            op,
            vec![f(&[1, 3, 4, 5], 32), f(&[9, 3, 1, 1], 33), f(&[9], 34)],
        );
        let op = conv(&[3], &[2], &[3], &[4, 1], 1);
        check_schedules(op, vec![f(&[1, 2, 9], 35), f(&[6, 2, 3], 36), f(&[6], 37)]);
        let op = conv(&[2, 3, 2], &[1, 2, 1], &[2, 1, 1], &[1, 0, 1, 0, 1, 1], 1);
        check_schedules(op, vec![f(&[1, 2, 4, 5, 6], 38), f(&[5, 2, 2, 3, 2], 39)]);
        // A dilated kernel wider than the input: some windows miss it entirely.
        let op = conv(&[2, 2], &[1, 1], &[5, 1], &[3, 0, 3, 0], 1);
        check_schedules(op, vec![f(&[1, 1, 2, 3], 40), f(&[5, 1, 2, 2], 41)]);
    }

    #[test]
    fn conv_transpose_geometries() {
        let op = Op::ConvTranspose {
            kernel_shape: vec![3, 3],
            strides: vec![2, 3],
            dilations: vec![1, 2],
            pads: vec![1, 0, 0, 1],
            output_padding: vec![1, 0],
            group: 2,
            activation: Default::default(),
        };
        check(
            op,
            vec![f(&[1, 4, 3, 4], 13), f(&[4, 2, 3, 3], 14), f(&[4], 15)],
        );
    }

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
