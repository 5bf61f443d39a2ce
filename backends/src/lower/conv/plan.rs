//! The Conv and QConv kernel plan: the sizes a kernel indexes with (`ConvPlan`), the loops
//! over output channels in tiles of the schedule's width (`ChanTile`), the per-tile bases
//! hoisted out of the pixel loops (`TileBases`), and the statements of one output pixel of a
//! tile. `conv` in `mod.rs` builds the plan and picks the loop order.

use super::window::{add, counter, dot, hoist, wrap, TapNest, Taps};
use super::{bias_init, Arith, ConvShape};
use crate::error::BackendError;
use crate::kernel::{Expr, Stmt, Var};
use crate::lower::integer::{mac, requantized, widen, Requant};
use crate::lower::Lowering;

/// The sizes a Conv kernel indexes with, fixed at compile time.
pub(super) struct ConvPlan<'g> {
    pub(super) g: &'g ConvShape,
    pub(super) in_pg: usize,
    pub(super) out_pg: usize,
    pub(super) in_plane: usize,
    pub(super) out_plane: usize,
    pub(super) taps: usize,
    pub(super) x_strides: Vec<usize>,
    pub(super) y_strides: Vec<usize>,
    pub(super) w_strides: Vec<usize>,
    /// QConv's multiplier and shift, when it requantizes.
    pub(super) requant: Option<Requant>,
}

/// `width` consecutive output channels of one group computed in one pass over the input
/// window: `oc0` is the first of them, `ic0` the first input channel of their group.
pub(super) struct ChanTile {
    oc0: Expr,
    ic0: Expr,
    width: usize,
}

/// The per-tile values hoisted out of the pixel loops: the group's input plane base, the
/// first channel's weight and output bases, one accumulator seed per channel, and (QConv) the
/// multiplier and shift of each channel.
pub(super) struct TileBases {
    x_group: Expr,
    w_oc: Expr,
    y_oc: Expr,
    biases: Vec<Expr>,
    requant: Vec<(Expr, Expr)>,
}

/// Builds the statements of one channel tile.
pub(super) type TileBody<'f> =
    dyn FnMut(&mut Lowering, &ChanTile) -> Result<Vec<Stmt>, BackendError> + 'f;

impl ConvPlan<'_> {
    /// How many output channels are computed per pass: the schedule's `oc_tile` (or
    /// `windowed_oc_tile` for windows wider than one tap) when every group has that many;
    /// depthwise convs (one input channel per group) stay untiled.
    pub(super) fn tile(&self, cx: &Lowering) -> usize {
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
    pub(super) fn channel_tiles(
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
    pub(super) fn tile_bases(
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
    pub(super) fn pixel(
        &self,
        cx: &mut Lowering,
        tb: &TileBases,
        outs: &[Expr],
        taps: &[Taps],
    ) -> Vec<Stmt> {
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
                    Arith::Int { .. } => widen(x),
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
