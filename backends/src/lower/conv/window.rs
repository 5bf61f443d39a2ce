//! The window machinery that Conv, ConvTranspose and the pools share: one spatial axis's
//! geometry (`Axis`: where a window starts, which of its taps lie inside the input), the split
//! of the output positions into border and interior regions (`output_nest`), and the loops over
//! one window's taps (`TapNest`); with the small index and loop builders (`add`, `dot`,
//! `strides`, `counter`, `wrap`, `hoist`) that the matmul lowering uses too.
//!
//! It lives apart from the convolution because pooling walks the same windows; `conv/mod.rs`
//! re-exports it so other lowerings name it `conv::...`.

use kiln_ir::DType;

use super::fold::fold_index;
use crate::error::BackendError;
use crate::kernel::{for_loop, Expr, Stmt, Var};
use crate::lower::Lowering;

/// One spatial dimension of a windowed op: output `o` reads input positions
/// `o * stride - pad + k * dil` for taps `k < k_len`.
#[derive(Clone, Copy, Debug)]
pub(in crate::lower) struct Axis {
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
pub(in crate::lower) enum Taps {
    /// Every tap is inside the input.
    All,
    /// Taps are tested one by one.
    Checked,
    /// Exactly taps `lo..hi` are inside (the output position is a known constant).
    Range(usize, usize),
}

/// `a + b` with a zero operand folded away.
pub(in crate::lower) fn add(a: Expr, b: Expr) -> Expr {
    match (&a, &b) {
        (_, Expr::Int(0)) => a,
        (Expr::Int(0), _) => b,
        _ => a.add(b),
    }
}

/// A loop counter for `extent` iterations and the expression to index with: a loop of one
/// iteration is not emitted, its index is the constant 0.
pub(in crate::lower) fn counter(cx: &mut Lowering, extent: usize) -> (Option<Var>, Expr) {
    if extent == 1 {
        (None, Expr::int(0))
    } else {
        let v = cx.kb.counter();
        (Some(v), Expr::Var(v))
    }
}

/// Wraps `body` in the loop of `counter` (if any).
pub(in crate::lower) fn wrap(var: Option<Var>, extent: usize, body: Vec<Stmt>) -> Vec<Stmt> {
    match var {
        Some(v) => vec![for_loop(v, extent, body)],
        None => body,
    }
}

/// Binds `value` to a fresh `I32` local unless it is already a variable or constant, so
/// index arithmetic is computed once outside the loops that use it.
pub(in crate::lower) fn hoist(cx: &mut Lowering, out: &mut Vec<Stmt>, value: Expr) -> Expr {
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
pub(in crate::lower) fn strides(shape: &[usize]) -> Vec<usize> {
    kiln_ir::tensor::strides(shape)
}

/// `sum_d e_d * k_d` with trivial terms folded.
pub(in crate::lower) fn dot(es: &[Expr], ks: &[usize]) -> Expr {
    es.iter().zip(ks).fold(Expr::int(0), |acc, (e, &k)| {
        add(acc, e.clone().affine(k as i64, 0))
    })
}

/// The body of the innermost tap, given the input index, the weight index (when weights are
/// walked) and the tap counters.
pub(in crate::lower) type TapBody<'f> =
    dyn FnMut(&mut Lowering, Expr, Expr, &[Expr]) -> Vec<Stmt> + 'f;

/// The loops over the taps of one window: `x0` / `w0` are the input and weight indices of
/// tap 0 (the input index already includes the window start), `x_strides` / `w_strides` the
/// index steps per unit of each spatial dimension. Dimensions with `checked` skip taps
/// outside the input with an `If` around the deeper loops; a `Range` runs its taps only.
pub(in crate::lower) struct TapNest<'a> {
    pub axes: &'a [Axis],
    pub outs: &'a [Expr],
    pub taps: &'a [Taps],
    pub x_strides: &'a [usize],
    pub w_strides: &'a [usize],
}

/// The body of a tap outside the input, given its weight index (QConv's padding taps, which
/// read the input's zero point).
pub(in crate::lower) type OutsideBody<'f> = dyn FnMut(&mut Lowering, Expr) -> Vec<Stmt> + 'f;

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
pub(in crate::lower) fn output_nest(
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
pub(in crate::lower) type OutputBody<'f> =
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
