//! Convolutions (Conv and ConvTranspose) over any number of spatial dimensions: shape inference
//! and reference evaluation.
//!
//! Both ops are evaluated tap by tap: for one kernel tap, every output row of a channel pair is
//! an `axpy` over a contiguous run of one plane and a strided run of the other. The valid runs
//! are precomputed per tap ([`TapSpan`]), so the inner loops have no bounds tests and no
//! multi-index arithmetic, which is what makes the interpreter fast enough for real models.

use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::op::Op;
use crate::ops::util::{
    acc_i32, check_arity, check_requant_inputs, expect_dtype, f32_input, int_input, int_tensor,
    make, out_type, require_f32, wrong_family,
};
use crate::tensor::{strides as row_major_strides, Tensor, TensorType};

pub fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, OpError> {
    if let Op::QConv { output, .. } = op {
        return infer_qconv(op, inputs, output.as_ref());
    }
    check_arity(op.name(), inputs.len(), 2, 3)?;
    require_f32(op, inputs)?;
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape.as_slice()).collect();
    let geom = Geometry::new(op, &shapes)?;
    Ok(vec![out_type(DType::F32, geom.out_shape())?])
}

pub fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
    if let Op::QConv { .. } = op {
        return eval_qconv(op, inputs);
    }
    check_arity(op.name(), inputs.len(), 2, 3)?;
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
    let geom = Geometry::new(op, &shapes)?;
    let x = f32_input(op.name(), inputs, 0)?;
    let w = f32_input(op.name(), inputs, 1)?;
    let bias = match inputs.get(2) {
        Some(_) => Some(f32_input(op.name(), inputs, 2)?),
        None => None,
    };
    let out = match op {
        Op::Conv { .. } => conv(&geom, x, w, bias),
        Op::ConvTranspose { .. } => conv_transpose(&geom, x, w, bias),
        _ => return Err(wrong_family(op)),
    };
    Ok(vec![make(Tensor::from_f32(geom.out_shape(), out))?])
}

/// The sizes of one convolution, checked against each other. "Input" and "output" are the
/// op's: for ConvTranspose the output is the larger, upsampled tensor.
#[derive(Debug)]
struct Geometry {
    batch: usize,
    in_ch: usize,
    out_ch: usize,
    group: usize,
    in_sp: Vec<usize>,
    out_sp: Vec<usize>,
    kernel: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    pads_begin: Vec<usize>,
}

impl Geometry {
    fn new(op: &Op, shapes: &[&[usize]]) -> Result<Self, OpError> {
        let (x, w) = match shapes {
            [x, w, ..] => (*x, *w),
            _ => return invalid!("{} takes 2 to 3 inputs, got {}", op.name(), shapes.len()),
        };
        let geom = match op {
            Op::Conv {
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
            } => {
                let attrs =
                    SpatialAttrs::new(x, w, kernel_shape, strides, dilations, pads, *group)?;
                Self::conv(x, w, attrs)?
            }
            Op::ConvTranspose {
                kernel_shape,
                strides,
                dilations,
                pads,
                output_padding,
                group,
                ..
            } => {
                let attrs =
                    SpatialAttrs::new(x, w, kernel_shape, strides, dilations, pads, *group)?;
                if output_padding.len() != attrs.kernel.len() {
                    return invalid!(
                        "output_padding has {} entries, expected {}",
                        output_padding.len(),
                        attrs.kernel.len()
                    );
                }
                Self::conv_transpose(x, w, attrs, output_padding)?
            }
            _ => return Err(wrong_family(op)),
        };
        if let Some(b) = shapes.get(2) {
            if *b != [geom.out_ch] {
                return invalid!("bias has shape {b:?}, expected [{}]", geom.out_ch);
            }
        }
        Ok(geom)
    }

    /// Conv: X is [N, C, D..], W is [M, C / group, k..].
    fn conv(x: &[usize], w: &[usize], a: SpatialAttrs) -> Result<Self, OpError> {
        let (batch, in_ch, out_ch) = (x[0], x[1], w[0]);
        if w[1].checked_mul(a.group) != Some(in_ch) {
            return invalid!(
                "weights {w:?} with group {} do not match {in_ch} input channels",
                a.group
            );
        }
        if out_ch % a.group != 0 {
            return invalid!(
                "{out_ch} output channels are not divisible by group {}",
                a.group
            );
        }
        let mut out_sp = Vec::with_capacity(a.kernel.len());
        for d in 0..a.kernel.len() {
            let padded = x[d + 2]
                .checked_add(a.pads_begin[d])
                .and_then(|v| v.checked_add(a.pads_end[d]))
                .ok_or_else(|| OpError::Invalid("pads are too large".into()))?;
            let window = effective_kernel(a.kernel[d], a.dilations[d])?;
            if padded < window {
                return invalid!(
                    "dilated kernel ({window}) is larger than padded input ({padded}) in spatial dimension {d}"
                );
            }
            out_sp.push((padded - window) / a.strides[d] + 1);
        }
        Ok(Geometry {
            batch,
            in_ch,
            out_ch,
            group: a.group,
            in_sp: x[2..].to_vec(),
            out_sp,
            kernel: a.kernel,
            strides: a.strides,
            dilations: a.dilations,
            pads_begin: a.pads_begin,
        })
    }

    /// ConvTranspose: X is [N, C, D..], W is [C, M / group, k..].
    fn conv_transpose(
        x: &[usize],
        w: &[usize],
        a: SpatialAttrs,
        output_padding: &[usize],
    ) -> Result<Self, OpError> {
        let (batch, in_ch) = (x[0], x[1]);
        if w[0] != in_ch {
            return invalid!("weights {w:?} do not match {in_ch} input channels");
        }
        if in_ch % a.group != 0 {
            return invalid!(
                "{in_ch} input channels are not divisible by group {}",
                a.group
            );
        }
        let out_ch = w[1]
            .checked_mul(a.group)
            .ok_or_else(|| OpError::Invalid("too many output channels".into()))?;
        let too_large = || OpError::Invalid("ConvTranspose output is too large".into());
        let mut out_sp = Vec::with_capacity(a.kernel.len());
        for d in 0..a.kernel.len() {
            if x[d + 2] == 0 {
                return invalid!("spatial dimension {d} of the input is empty");
            }
            let full = a.strides[d]
                .checked_mul(x[d + 2] - 1)
                .and_then(|v| v.checked_add(output_padding[d]))
                .and_then(|v| v.checked_add(effective_kernel(a.kernel[d], a.dilations[d]).ok()?))
                .ok_or_else(too_large)?;
            let pads = a.pads_begin[d]
                .checked_add(a.pads_end[d])
                .ok_or_else(too_large)?;
            if pads >= full {
                return invalid!("pads ({pads}) leave no output in spatial dimension {d}");
            }
            out_sp.push(full - pads);
        }
        Ok(Geometry {
            batch,
            in_ch,
            out_ch,
            group: a.group,
            in_sp: x[2..].to_vec(),
            out_sp,
            kernel: a.kernel,
            strides: a.strides,
            dilations: a.dilations,
            pads_begin: a.pads_begin,
        })
    }

    fn out_shape(&self) -> Vec<usize> {
        let mut s = vec![self.batch, self.out_ch];
        s.extend_from_slice(&self.out_sp);
        s
    }

    fn taps(&self) -> usize {
        self.kernel.iter().product()
    }
}

/// QConv: X i8/u8, W i8/i16, B i32 `[M]`, and multiplier and shift when requantized.
fn infer_qconv(
    op: &Op,
    inputs: &[&TensorType],
    output: Option<&crate::op::QOut>,
) -> Result<Vec<TensorType>, OpError> {
    let n = if output.is_some() { 5 } else { 3 };
    check_arity(op.name(), inputs.len(), n, n)?;
    let name = op.name();
    expect_dtype(name, inputs, 0, "X", &[DType::I8, DType::U8])?;
    expect_dtype(name, inputs, 1, "W", &[DType::I8, DType::I16])?;
    expect_dtype(name, inputs, 2, "B", &[DType::I32])?;
    let shapes: Vec<&[usize]> = inputs[..3].iter().map(|t| t.shape.as_slice()).collect();
    let geom = Geometry::new(op, &shapes)?;
    let dtype = match output {
        Some(out) => {
            check_requant_inputs(name, inputs, 3, geom.out_ch)?;
            out.check()?;
            out.dtype
        }
        None => DType::I32,
    };
    Ok(vec![out_type(dtype, geom.out_shape())?])
}

/// QConv: the input is padded with its zero point, then every output is the bias plus the dot
/// product of its window with the weights, in i64 and checked to fit i32.
fn eval_qconv(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
    let Op::QConv {
        x_zero_point,
        output,
        rounding,
        ..
    } = op
    else {
        return Err(wrong_family(op));
    };
    let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    let out_ty = infer_qconv(op, &refs, output.as_ref())?.remove(0);
    let shapes: Vec<&[usize]> = inputs[..3].iter().map(|t| t.shape()).collect();
    let g = Geometry::new(op, &shapes)?;
    let name = op.name();
    let (x, w, bias) = (
        int_input(name, inputs, 0)?,
        int_input(name, inputs, 1)?,
        int_input(name, inputs, 2)?,
    );
    // The zero-point-padded input, so every tap is in range.
    let padded_sp: Vec<usize> = (0..g.in_sp.len())
        .map(|d| g.in_sp[d] + g.pads_begin[d] + pad_end(&g, d))
        .collect();
    let padded_plane: usize = padded_sp.iter().product();
    let in_plane: usize = g.in_sp.iter().product();
    let pstrides = row_major_strides(&padded_sp);
    let mut xp = vec![*x_zero_point; g.batch * g.in_ch * padded_plane];
    for plane in 0..g.batch * g.in_ch {
        for i in 0..in_plane {
            let pos = crate::ops::util::unravel(i, &g.in_sp);
            let at: usize = pos
                .iter()
                .enumerate()
                .map(|(d, &p)| (p + g.pads_begin[d]) * pstrides[d])
                .sum();
            xp[plane * padded_plane + at] = x[plane * in_plane + i];
        }
    }
    // Flat offsets of the kernel taps in the padded plane, and of each output's window start.
    let tap_offsets: Vec<usize> = (0..g.taps())
        .map(|t| {
            let k = crate::ops::util::unravel(t, &g.kernel);
            (0..k.len())
                .map(|d| k[d] * g.dilations[d] * pstrides[d])
                .sum()
        })
        .collect();
    let out_plane: usize = g.out_sp.iter().product();
    let starts: Vec<usize> = (0..out_plane)
        .map(|o| {
            let pos = crate::ops::util::unravel(o, &g.out_sp);
            (0..pos.len())
                .map(|d| pos[d] * g.strides[d] * pstrides[d])
                .sum()
        })
        .collect();
    let (in_per_group, out_per_group) = (g.in_ch / g.group, g.out_ch / g.group);
    let taps = g.taps();
    let requant = match output {
        Some(_) => Some((int_input(name, inputs, 3)?, int_input(name, inputs, 4)?)),
        None => None,
    };
    let mut out = Vec::with_capacity(g.batch * g.out_ch * out_plane);
    for b in 0..g.batch {
        for (oc, &b_oc) in bias.iter().enumerate().take(g.out_ch) {
            let first_ic = (oc / out_per_group) * in_per_group;
            for &start in &starts {
                let mut acc = i64::from(b_oc);
                for icg in 0..in_per_group {
                    let plane = (b * g.in_ch + first_ic + icg) * padded_plane + start;
                    let wk = (oc * in_per_group + icg) * taps;
                    for (t, &off) in tap_offsets.iter().enumerate() {
                        acc += i64::from(xp[plane + off]) * i64::from(w[wk + t]);
                    }
                }
                let acc = acc_i32(name, acc)?;
                out.push(match (output, &requant) {
                    (Some(o), Some((m, s))) => {
                        // Multiplier and shift are each per tensor or per channel.
                        let at = |t: &[i32]| t[if t.len() == 1 { 0 } else { oc }];
                        o.store(rounding.requantize(acc, at(m), at(s)))
                    }
                    _ => acc,
                });
            }
        }
    }
    Ok(vec![int_tensor(out_ty.dtype, out_ty.shape, out)?])
}

fn pad_end(g: &Geometry, d: usize) -> usize {
    // The end padding that the output size actually reaches (stride may leave some unread).
    let window = (g.kernel[d] - 1) * g.dilations[d] + 1;
    ((g.out_sp[d] - 1) * g.strides[d] + window).saturating_sub(g.in_sp[d] + g.pads_begin[d])
}

/// The spatial attributes shared by both ops, validated against the input ranks.
#[derive(Debug)]
struct SpatialAttrs {
    kernel: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    pads_begin: Vec<usize>,
    pads_end: Vec<usize>,
    group: usize,
}

impl SpatialAttrs {
    fn new(
        x: &[usize],
        w: &[usize],
        kernel: &[usize],
        strides: &[usize],
        dilations: &[usize],
        pads: &[usize],
        group: usize,
    ) -> Result<Self, OpError> {
        if x.len() < 3 {
            return invalid!("input must have rank 3 or more (N, C, spatial..), got shape {x:?}");
        }
        if w.len() != x.len() {
            return invalid!("weights {w:?} and input {x:?} have different ranks");
        }
        let n = x.len() - 2;
        if w[2..] != *kernel {
            return invalid!("kernel_shape {kernel:?} does not match weights {w:?}");
        }
        if strides.len() != n || dilations.len() != n || pads.len() != 2 * n {
            return invalid!(
                "strides, dilations and pads must have {n}, {n} and {} entries",
                2 * n
            );
        }
        if strides.contains(&0) || dilations.contains(&0) || kernel.contains(&0) {
            return invalid!("strides, dilations and kernel_shape must be positive");
        }
        if group == 0 {
            return invalid!("group must be positive");
        }
        Ok(SpatialAttrs {
            kernel: kernel.to_vec(),
            strides: strides.to_vec(),
            dilations: dilations.to_vec(),
            pads_begin: pads[..n].to_vec(),
            pads_end: pads[n..].to_vec(),
            group,
        })
    }
}

/// Extent of a dilated kernel: `(k - 1) * d + 1`.
fn effective_kernel(k: usize, d: usize) -> Result<usize, OpError> {
    k.checked_sub(1)
        .and_then(|v| v.checked_mul(d))
        .and_then(|v| v.checked_add(1))
        .ok_or_else(|| OpError::Invalid("dilated kernel is too large".into()))
}

/// Where one kernel tap connects two planes along one spatial dimension: dense index `j` in
/// `lo..hi` meets strided index `start + (j - lo) * stride`. For Conv the dense side is the
/// output and the strided side the input; for ConvTranspose it is the other way round.
#[derive(Clone, Copy, Debug, PartialEq)]
struct TapSpan {
    lo: usize,
    hi: usize,
    start: usize,
}

/// The dense indices `j < dense_len` with `0 <= j * stride + offset < strided_len`.
fn tap_span(dense_len: usize, strided_len: usize, stride: usize, offset: i128) -> TapSpan {
    let s = stride as i128;
    // ceil(a / s) for s > 0, any sign of a.
    let ceil_div = |a: i128| a.div_euclid(s) + i128::from(a.rem_euclid(s) != 0);
    let lo = ceil_div(-offset).max(0);
    let hi = ceil_div(strided_len as i128 - offset).clamp(0, dense_len as i128);
    if lo >= hi {
        return TapSpan {
            lo: 0,
            hi: 0,
            start: 0,
        };
    }
    TapSpan {
        lo: lo as usize,
        hi: hi as usize,
        start: (lo * s + offset) as usize,
    }
}

/// The spans of every tap, `spatial rank` entries per tap, taps in row-major kernel order.
/// `offset` of a tap is `k * dilation - pad_begin` in every case.
fn all_tap_spans(g: &Geometry, dense_sp: &[usize], strided_sp: &[usize]) -> Vec<TapSpan> {
    let n = g.kernel.len();
    let mut spans = Vec::with_capacity(g.taps() * n);
    let mut tap = vec![0usize; n];
    for _ in 0..g.taps() {
        for d in 0..n {
            let offset = (tap[d] as i128) * (g.dilations[d] as i128) - g.pads_begin[d] as i128;
            spans.push(tap_span(dense_sp[d], strided_sp[d], g.strides[d], offset));
        }
        // Next tap in row-major order.
        for d in (0..n).rev() {
            tap[d] += 1;
            if tap[d] < g.kernel[d] {
                break;
            }
            tap[d] = 0;
        }
    }
    spans
}

/// Which side of a tap is walked contiguously: the output for Conv (each output row gathers
/// from a strided input run), the input for ConvTranspose (each input row scatters).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Dense {
    Output,
    Input,
}

/// Everything the tap loop needs that does not depend on the channel pair.
#[derive(Debug)]
struct TapPlan {
    dense: Dense,
    /// `rank` spans per tap, taps in row-major kernel order.
    spans: Vec<TapSpan>,
    rank: usize,
    dense_strides: Vec<usize>,
    strided_strides: Vec<usize>,
    conv_strides: Vec<usize>,
}

impl TapPlan {
    fn new(g: &Geometry, dense: Dense) -> Self {
        let (dense_sp, strided_sp) = match dense {
            Dense::Output => (&g.out_sp, &g.in_sp),
            Dense::Input => (&g.in_sp, &g.out_sp),
        };
        TapPlan {
            dense,
            spans: all_tap_spans(g, dense_sp, strided_sp),
            rank: g.kernel.len(),
            dense_strides: row_major_strides(dense_sp),
            strided_strides: row_major_strides(strided_sp),
            conv_strides: g.strides.clone(),
        }
    }

    /// Adds the contribution of input plane `src` through kernel `weights` (one per tap) to
    /// output plane `dst`.
    fn accumulate(&self, dst: &mut [f32], src: &[f32], weights: &[f32]) {
        let stride = self.conv_strides.last().copied().unwrap_or(1);
        for (spans, &w) in self.spans.chunks_exact(self.rank.max(1)).zip(weights) {
            let Some(last) = spans.last() else { return };
            let len = last.hi - last.lo;
            self.for_each_row(spans, 0, 0, 0, &mut |dense, strided| match self.dense {
                Dense::Output => {
                    if let (Some(d), Some(s)) =
                        (dst.get_mut(dense..dense + len), src.get(strided..))
                    {
                        axpy_gather(d, s, stride, w);
                    }
                }
                Dense::Input => {
                    if let (Some(d), Some(s)) =
                        (dst.get_mut(strided..), src.get(dense..dense + len))
                    {
                        axpy_scatter(d, s, stride, w);
                    }
                }
            });
        }
    }

    /// Calls `row(dense, strided)` with the plane offsets where each row of one tap starts;
    /// the row then covers the last span's `hi - lo` dense elements.
    fn for_each_row(
        &self,
        spans: &[TapSpan],
        dim: usize,
        dense: usize,
        strided: usize,
        row: &mut impl FnMut(usize, usize),
    ) {
        let span = spans[dim];
        if dim + 1 == spans.len() {
            if span.hi > span.lo {
                row(dense + span.lo, strided + span.start);
            }
            return;
        }
        for j in span.lo..span.hi {
            let k = span.start + (j - span.lo) * self.conv_strides[dim];
            self.for_each_row(
                spans,
                dim + 1,
                dense + j * self.dense_strides[dim],
                strided + k * self.strided_strides[dim],
                row,
            );
        }
    }
}

/// `dst[j] += w * src[j * stride]`.
fn axpy_gather(dst: &mut [f32], src: &[f32], stride: usize, w: f32) {
    if stride == 1 {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d += w * s;
        }
    } else {
        for (d, &s) in dst.iter_mut().zip(src.iter().step_by(stride)) {
            *d += w * s;
        }
    }
}

/// `dst[j * stride] += w * src[j]`.
fn axpy_scatter(dst: &mut [f32], src: &[f32], stride: usize, w: f32) {
    for (d, &s) in dst.iter_mut().step_by(stride).zip(src) {
        *d += w * s;
    }
}

/// An output tensor whose (N, C) planes start as the bias of their channel.
fn planes_with_bias(g: &Geometry, bias: Option<&[f32]>) -> (Vec<f32>, usize) {
    let plane: usize = g.out_sp.iter().product();
    let mut out = vec![0.0f32; g.batch * g.out_ch * plane];
    if let (Some(bias), true) = (bias, plane > 0) {
        for (i, dst) in out.chunks_exact_mut(plane).enumerate() {
            dst.fill(bias.get(i % g.out_ch).copied().unwrap_or(0.0));
        }
    }
    (out, plane)
}

/// Conv: `out[oc][o] = bias[oc] + sum over ic, k of w[oc][ic][k] * in[ic][o * s + k * d - p]`.
fn conv(g: &Geometry, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (mut out, out_plane) = planes_with_bias(g, bias);
    let in_plane: usize = g.in_sp.iter().product();
    if out.is_empty() {
        return out;
    }
    let taps = g.taps();
    let (in_per_group, out_per_group) = (g.in_ch / g.group, g.out_ch / g.group);
    let plan = TapPlan::new(g, Dense::Output);
    // A 1x1 kernel with unit strides and no padding maps whole planes onto planes.
    let pointwise = taps == 1 && g.strides.iter().all(|&s| s == 1) && g.out_sp == g.in_sp;
    for (i, dst) in out.chunks_exact_mut(out_plane).enumerate() {
        let (b, oc) = (i / g.out_ch, i % g.out_ch);
        let first_ic = (oc / out_per_group) * in_per_group;
        for icg in 0..in_per_group {
            let x_start = (b * g.in_ch + first_ic + icg) * in_plane;
            let w_start = (oc * in_per_group + icg) * taps;
            let (Some(src), Some(wk)) = (
                x.get(x_start..x_start + in_plane),
                w.get(w_start..w_start + taps),
            ) else {
                continue;
            };
            match (pointwise, wk) {
                (true, &[wv]) => axpy_gather(dst, src, 1, wv),
                _ => plan.accumulate(dst, src, wk),
            }
        }
    }
    out
}

/// ConvTranspose: every input element scatters `w[ic][oc][k] * in[ic][i]` to
/// `out[oc][i * s + k * d - p]`.
fn conv_transpose(g: &Geometry, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (mut out, out_plane) = planes_with_bias(g, bias);
    let in_plane: usize = g.in_sp.iter().product();
    if out.is_empty() {
        return out;
    }
    let taps = g.taps();
    let (in_per_group, out_per_group) = (g.in_ch / g.group, g.out_ch / g.group);
    let plan = TapPlan::new(g, Dense::Input);
    for (i, dst) in out.chunks_exact_mut(out_plane).enumerate() {
        let (b, oc) = (i / g.out_ch, i % g.out_ch);
        let (grp, ocg) = (oc / out_per_group, oc % out_per_group);
        for icg in 0..in_per_group {
            let ic = grp * in_per_group + icg;
            let x_start = (b * g.in_ch + ic) * in_plane;
            let w_start = (ic * out_per_group + ocg) * taps;
            if let (Some(src), Some(wk)) = (
                x.get(x_start..x_start + in_plane),
                w.get(w_start..w_start + taps),
            ) {
                plan.accumulate(dst, src, wk);
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v).unwrap()
    }

    fn conv_op(k: &[usize], s: &[usize], d: &[usize], p: &[usize], group: usize) -> Op {
        Op::Conv {
            kernel_shape: k.to_vec(),
            strides: s.to_vec(),
            dilations: d.to_vec(),
            pads: p.to_vec(),
            group,
            activation: Default::default(),
        }
    }

    fn run(op: &Op, inputs: &[&Tensor]) -> Tensor {
        let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
        let refs: Vec<&TensorType> = types.iter().collect();
        let ty = infer(op, &refs).unwrap().remove(0);
        let out = eval(op, inputs).unwrap().remove(0);
        assert_eq!(out.ty(), ty);
        out
    }

    /// Direct definition of Conv, for comparison with the row-based kernel.
    fn naive_conv_2d(
        x: &Tensor,
        w: &Tensor,
        s: usize,
        d: usize,
        p: [usize; 4],
        group: usize,
    ) -> Vec<f32> {
        let (xs, ws) = (x.shape(), w.shape());
        let (n, c, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
        let (m, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
        let oh = (h + p[0] + p[2] - ((kh - 1) * d + 1)) / s + 1;
        let ow = (wd + p[1] + p[3] - ((kw - 1) * d + 1)) / s + 1;
        let (xv, wv) = (x.as_f32().unwrap(), w.as_f32().unwrap());
        let mut out = vec![0.0; n * m * oh * ow];
        for b in 0..n {
            for oc in 0..m {
                let g = oc / (m / group);
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0.0;
                        for icg in 0..cg {
                            let ic = g * cg + icg;
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * s + ky * d) as i64 - p[0] as i64;
                                    let ix = (ox * s + kx * d) as i64 - p[1] as i64;
                                    if iy < 0 || ix < 0 || iy >= h as i64 || ix >= wd as i64 {
                                        continue;
                                    }
                                    acc += xv[((b * c + ic) * h + iy as usize) * wd + ix as usize]
                                        * wv[((oc * cg + icg) * kh + ky) * kw + kx];
                                }
                            }
                        }
                        out[((b * m + oc) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        out
    }

    fn ramp(n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * scale)
            .collect()
    }

    #[test]
    fn tap_spans_clip_to_both_planes() {
        // Output 3 wide, input 5 wide, stride 2, offset -1 (tap 0 with pad 1): o=0 reads -1.
        assert_eq!(
            tap_span(3, 5, 2, -1),
            TapSpan {
                lo: 1,
                hi: 3,
                start: 1
            }
        );
        // Offset past the end: nothing.
        assert_eq!(
            tap_span(3, 5, 1, 7),
            TapSpan {
                lo: 0,
                hi: 0,
                start: 0
            }
        );
        assert_eq!(
            tap_span(4, 4, 1, 1),
            TapSpan {
                lo: 0,
                hi: 3,
                start: 1
            }
        );
    }

    #[test]
    fn basic_conv_with_padding() {
        // ONNX test_basic_conv_with_padding: 5x5 ramp, 3x3 ones, pads 1.
        let x = t(&[1, 1, 5, 5], (0..25).map(|i| i as f32).collect());
        let w = t(&[1, 1, 3, 3], vec![1.0; 9]);
        let y = run(
            &conv_op(&[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1], 1),
            &[&x, &w],
        );
        let v = y.as_f32().unwrap();
        assert_eq!(y.shape(), &[1, 1, 5, 5]);
        assert_eq!(&v[..5], &[12.0, 21.0, 27.0, 33.0, 24.0]);
        assert_eq!(v[12], 108.0);
    }

    #[test]
    fn matches_naive_with_groups_strides_dilations_and_asymmetric_pads() {
        let x = t(&[2, 4, 7, 6], ramp(2 * 4 * 7 * 6, 0.5));
        let w = t(&[6, 2, 3, 2], ramp(6 * 2 * 3 * 2, 0.25));
        for (s, d, p) in [
            (1, 1, [1, 0, 2, 1]),
            (2, 1, [0, 1, 1, 0]),
            (2, 2, [2, 2, 0, 1]),
            (3, 1, [0, 0, 0, 0]),
        ] {
            let op = conv_op(&[3, 2], &[s, s], &[d, d], &p, 2);
            let y = run(&op, &[&x, &w]);
            assert_eq!(
                y.as_f32().unwrap(),
                naive_conv_2d(&x, &w, s, d, p, 2).as_slice(),
                "s={s} d={d} p={p:?}"
            );
        }
    }

    #[test]
    fn depthwise_with_bias_and_pointwise() {
        let x = t(&[1, 3, 4, 4], ramp(48, 1.0));
        let w = t(&[3, 1, 3, 3], ramp(27, 0.5));
        let b = t(&[3], vec![1.0, -2.0, 0.5]);
        let y = run(
            &conv_op(&[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1], 3),
            &[&x, &w, &b],
        );
        let want = naive_conv_2d(&x, &w, 1, 1, [1, 1, 1, 1], 3);
        for (i, (g, w)) in y.as_f32().unwrap().iter().zip(&want).enumerate() {
            assert_eq!(*g, w + [1.0, -2.0, 0.5][i / 16]);
        }
        let w1 = t(&[2, 3, 1, 1], vec![1.0, 2.0, 3.0, -1.0, 0.0, 1.0]);
        let y = run(
            &conv_op(&[1, 1], &[1, 1], &[1, 1], &[0, 0, 0, 0], 1),
            &[&x, &w1],
        );
        assert_eq!(
            y.as_f32().unwrap(),
            naive_conv_2d(&x, &w1, 1, 1, [0; 4], 1).as_slice()
        );
    }

    #[test]
    fn conv_1d_and_3d() {
        let x = t(&[1, 1, 5], vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        let w = t(&[1, 1, 2], vec![1.0, -1.0]);
        let y = run(&conv_op(&[2], &[2], &[1], &[1, 0], 1), &[&x, &w]);
        // Windows at -1..1, 1..3, 3..5: [0-1, 2-3, 4-5].
        assert_eq!(y.as_f32().unwrap(), &[-1.0, -1.0, -1.0]);
        let x = t(&[1, 1, 2, 2, 2], (1..=8).map(|i| i as f32).collect());
        let w = t(&[1, 1, 2, 2, 2], vec![1.0; 8]);
        let y = run(
            &conv_op(&[2, 2, 2], &[1, 1, 1], &[1, 1, 1], &[0; 6], 1),
            &[&x, &w],
        );
        assert_eq!(y.as_f32().unwrap(), &[36.0]);
    }

    #[test]
    fn conv_transpose_1d_stride_and_pads() {
        let op = Op::ConvTranspose {
            kernel_shape: vec![3],
            strides: vec![2],
            dilations: vec![1],
            pads: vec![1, 0],
            output_padding: vec![1],
            group: 1,
            activation: Default::default(),
        };
        let x = t(&[1, 1, 2], vec![1.0, 10.0]);
        let w = t(&[1, 1, 3], vec![1.0, 2.0, 3.0]);
        let y = run(&op, &[&x, &w]);
        // Full output (before pads) is 2*(2-1)+1+3 = 6: [1, 2, 3+10, 20, 30, 0]; drop 1 in front.
        assert_eq!(y.as_f32().unwrap(), &[2.0, 13.0, 20.0, 30.0, 0.0]);
    }

    #[test]
    fn conv_transpose_groups() {
        let op = Op::ConvTranspose {
            kernel_shape: vec![1, 1],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![0; 4],
            output_padding: vec![0, 0],
            group: 2,
            activation: Default::default(),
        };
        let x = t(&[1, 2, 1, 1], vec![1.0, 10.0]);
        // [C_in=2, C_out/group=2, 1, 1]
        let w = t(&[2, 2, 1, 1], vec![1.0, 2.0, 3.0, 4.0]);
        let b = t(&[4], vec![0.5; 4]);
        let y = run(&op, &[&x, &w, &b]);
        assert_eq!(y.as_f32().unwrap(), &[1.5, 2.5, 30.5, 40.5]);
    }

    #[test]
    fn rejects_bad_shapes() {
        let x = TensorType::new(DType::F32, vec![1, 3, 5, 5]);
        let w = TensorType::new(DType::F32, vec![4, 2, 3, 3]);
        let op = conv_op(&[3, 3], &[1, 1], &[1, 1], &[0; 4], 1);
        assert!(matches!(infer(&op, &[&x, &w]), Err(OpError::Invalid(_))));
        let w = TensorType::new(DType::F32, vec![4, 3, 7, 7]);
        let op = conv_op(&[7, 7], &[1, 1], &[1, 1], &[0; 4], 1);
        assert!(matches!(infer(&op, &[&x, &w]), Err(OpError::Invalid(_))));
        let op = conv_op(&[7, 7], &[0, 1], &[1, 1], &[0; 4], 1);
        assert!(matches!(infer(&op, &[&x, &w]), Err(OpError::Invalid(_))));
    }
}
