//! Kernel lowering of Conv, ConvTranspose and QConv over any number of spatial dimensions.
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
//!
//! This file reads a convolution's sizes (`ConvShape`) and what it computes in (`Arith`), and
//! lowers Conv and QConv (`conv`) on the plan of `plan.rs` (channel tiles, the per-pixel
//! body); `transpose.rs` lowers ConvTranspose; `window.rs` holds the window machinery the pools
//! share and `fold.rs` the index folding every kernel passes through, both re-exported here
//! for the other lowerings.

mod fold;
mod plan;
#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
pub(super) mod tests;
mod transpose;
mod window;

use kiln_ir::{DType, Op, QOut};

pub(super) use fold::{fold, fold_expr};
use plan::ConvPlan;
use transpose::conv_transpose;
pub(super) use window::{
    add, counter, dot, hoist, output_nest, strides, wrap, Axis, TapNest, Taps,
};

use super::integer::{value_range, Requant};
use super::Lowering;
use crate::error::BackendError;
use crate::kernel::{Expr, LoopOrder, Stmt};

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

/// The accumulator's initial value: the bias of channel `oc`, or zero.
fn bias_init(cx: &Lowering, oc: &Expr) -> Expr {
    if cx.inputs.len() > 2 {
        Expr::load(cx.input(2), oc.clone())
    } else {
        Expr::f32(0.0)
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
