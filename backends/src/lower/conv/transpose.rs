//! Kernel lowering of ConvTranspose, as a gather: each output element sums the taps that
//! reach it, found per spatial dimension by an exact division (`transpose_taps`), inside
//! per-(batch, output channel) loops (`channel_loops`).

use kiln_ir::DType;

use super::window::{add, counter, dot, hoist, strides, wrap, Axis};
use super::{bias_init, ConvShape};
use crate::error::BackendError;
use crate::kernel::{for_loop, BinOp, Expr, Stmt};
use crate::lower::Lowering;

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

/// ConvTranspose as a gather: `y[oc][o] = bias[oc] + sum over ic, k of w[ic][oc][k] *
/// x[ic][i]` for the taps where `o + p - k * d = i * s` with `0 <= i < in_len`.
pub(super) fn conv_transpose(g: &ConvShape, cx: &mut Lowering) -> Result<Vec<Stmt>, BackendError> {
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

#[cfg(test)]
mod tests {
    //! ConvTranspose against the reference interpreter on a geometry the ONNX node tests do
    //! not cover: groups, mixed strides and dilations, asymmetric pads and output padding.

    use kiln_ir::Op;

    use super::super::tests::{check, f};

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
}
