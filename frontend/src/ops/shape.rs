//! Lowering of the reduction, shape and data-movement ONNX ops (ReduceMean .. Range) to the IR's
//! reduce and movement families.
//!
//! Every shape-like input (shapes, axes, pads, starts/ends, repeats, scales, sizes) is read as a
//! compile-time constant and resolved here into plain, normalized numbers. Opset differences:
//! Reshape's shape is an input from opset 5; Pad's pads/value are attributes before opset 11
//! (`paddings` in opset 1) and inputs after, with `axes` from 18; Slice's starts/ends/axes are
//! attributes before opset 10; Squeeze/Unsqueeze axes and Split sizes become inputs in 13, with
//! Split's `num_outputs` in 18; Reduce axes become an input in 13 (ReduceSum) or 18 (the
//! others); Resize-10 has only `scales` and Upsample-like coordinates; Tile before opset 6 takes
//! `tiles` and `axis` inputs; Shape's start/end arrive in 15. Upsample (deprecated in 10) takes
//! `scales` as an attribute in opset 7 and as an input from 9, and lowers to Resize-10's form.

use kiln_ir::op::{CoordTransform, DepthToSpaceMode, NearestMode, PadMode, ResizeMode};
use kiln_ir::ops::util::broadcast_shapes;
use kiln_ir::{DType, Op, TensorType};

use super::{norm_axis, LowerError, Lowered, NodeCtx};
use crate::{bad, unsupported};

/// Lowers one node of the shape family.
pub fn lower(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    match ctx.op_type {
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" => reduce(ctx),
        "ArgMax" => argmax(ctx),
        "Reshape" => reshape(ctx),
        "Flatten" => flatten(ctx),
        "Squeeze" => squeeze(ctx),
        "Unsqueeze" => unsqueeze(ctx),
        "Transpose" => transpose(ctx),
        "Concat" => concat(ctx),
        "Split" => split(ctx),
        "Slice" => slice(ctx),
        "Pad" => pad(ctx),
        "Gather" => gather(ctx),
        "Expand" => expand(ctx),
        "Tile" => tile(ctx),
        "DepthToSpace" => depth_to_space(ctx),
        "SpaceToDepth" => space_to_depth(ctx),
        "Resize" => resize(ctx),
        "Upsample" => upsample(ctx),
        "Shape" => shape(ctx),
        "ConstantOfShape" => constant_of_shape(ctx),
        "Range" => range(ctx),
        other => unsupported!("op '{other}' is not a shape-family op"),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn data_type<'a>(ctx: &'a NodeCtx) -> Result<&'a TensorType, LowerError> {
    ctx.input_type(0)
}

/// Normalizes axes against `rank`, keeping their order and refusing repeats. Unlike
/// [`norm_axis`], a scalar has no axes at all.
fn norm_axes_ordered(axes: &[i64], rank: usize) -> Result<Vec<usize>, LowerError> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        if rank == 0 {
            return bad!("axis {a} is out of range for rank 0");
        }
        let n = norm_axis(a, rank)?;
        if out.contains(&n) {
            return bad!("axis {a} is repeated in {axes:?}");
        }
        out.push(n);
    }
    Ok(out)
}

/// Normalized, sorted, distinct axes.
fn norm_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>, LowerError> {
    let mut out = norm_axes_ordered(axes, rank)?;
    out.sort_unstable();
    Ok(out)
}

/// Dimensions from an integer list, refusing negative values.
fn dims(values: &[i64], what: &str) -> Result<Vec<usize>, LowerError> {
    values
        .iter()
        .map(|&v| match usize::try_from(v) {
            Ok(d) => Ok(d),
            Err(_) => bad!("{what} {values:?} has a negative value"),
        })
        .collect()
}

fn product(shape: &[usize]) -> Result<usize, LowerError> {
    match shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) {
        Some(p) => Ok(p),
        None => bad!("shape {shape:?} has too many elements"),
    }
}

/// An integer list that is an input from `input_opset` on and an attribute before.
fn ints_input_or_attr(
    ctx: &NodeCtx,
    input: usize,
    attr: &str,
    input_opset: i64,
) -> Result<Option<Vec<i64>>, LowerError> {
    if ctx.opset >= input_opset {
        if ctx.has_attr(attr) {
            return bad!("'{attr}' is an input from opset {input_opset}, not an attribute");
        }
        ctx.const_ints(input)
    } else {
        ctx.attr_ints(attr)
    }
}

fn required<T>(value: Option<T>, what: &str) -> Result<T, LowerError> {
    match value {
        Some(v) => Ok(v),
        None => bad!("{what} is missing"),
    }
}

/// A scalar constant input as f64 (one element required).
fn scalar(ctx: &NodeCtx, i: usize) -> Result<f64, LowerError> {
    let t = ctx.const_input(i)?;
    match t.to_f64_vec()[..] {
        [v] => Ok(v),
        _ => bad!("input {i} must hold one value, got shape {:?}", t.shape()),
    }
}

// ---------------------------------------------------------------------------------------------
// Reductions

/// ONNX ReduceMean, ReduceSum, ReduceMax, ReduceMin.
fn reduce(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let input_opset = if ctx.op_type == "ReduceSum" { 13 } else { 18 };
    let axes = ints_input_or_attr(ctx, 1, "axes", input_opset)?.unwrap_or_default();
    let keepdims = ctx.attr_int_or("keepdims", 1)? != 0;
    let noop = ctx.attr_int_or("noop_with_empty_axes", 0)? != 0;
    let rank = data_type(ctx)?.rank();
    let axes = if axes.is_empty() {
        if noop {
            return Ok(Lowered::new(Op::Identity, vec![0]));
        }
        (0..rank).collect()
    } else {
        norm_axes(&axes, rank)?
    };
    // Reducing a scalar over no axes leaves it unchanged.
    if axes.is_empty() {
        return Ok(Lowered::new(Op::Identity, vec![0]));
    }
    let op = match ctx.op_type {
        "ReduceMean" => Op::ReduceMean { axes, keepdims },
        "ReduceSum" => Op::ReduceSum { axes, keepdims },
        "ReduceMax" => Op::ReduceMax { axes, keepdims },
        _ => Op::ReduceMin { axes, keepdims },
    };
    Ok(Lowered::new(op, vec![0]))
}

/// ONNX ArgMax.
fn argmax(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let rank = data_type(ctx)?.rank();
    let axis = norm_axis(ctx.attr_int_or("axis", 0)?, rank)?;
    let keepdims = ctx.attr_int_or("keepdims", 1)? != 0;
    let select_last_index = ctx.attr_int_or("select_last_index", 0)? != 0;
    Ok(Lowered::new(
        Op::ArgMax {
            axis,
            keepdims,
            select_last_index,
        },
        vec![0],
    ))
}

// ---------------------------------------------------------------------------------------------
// Reshape and its relatives

/// ONNX Reshape.
fn reshape(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let spec = required(ints_input_or_attr(ctx, 1, "shape", 5)?, "the target shape")?;
    let allowzero = ctx.attr_int_or("allowzero", 0)? != 0;
    let shape = resolve_reshape(&data_type(ctx)?.shape, &spec, allowzero)?;
    Ok(Lowered::new(Op::Reshape { shape }, vec![0]))
}

/// Applies Reshape's rules: 0 copies the input dimension (unless `allowzero`), one -1 is
/// inferred from the element count.
fn resolve_reshape(
    in_shape: &[usize],
    spec: &[i64],
    allowzero: bool,
) -> Result<Vec<usize>, LowerError> {
    let mut out = Vec::with_capacity(spec.len());
    let mut inferred = None;
    for (i, &d) in spec.iter().enumerate() {
        let dim = match d {
            -1 if inferred.is_none() => {
                inferred = Some(i);
                1
            }
            -1 => return bad!("shape {spec:?} has more than one -1"),
            0 if !allowzero => match in_shape.get(i) {
                Some(&n) => n,
                None => {
                    return bad!(
                        "shape {spec:?}: the 0 at position {i} has no input dimension to copy"
                    )
                }
            },
            d => match usize::try_from(d) {
                Ok(n) => n,
                Err(_) => return bad!("shape {spec:?} has invalid dimension {d}"),
            },
        };
        out.push(dim);
    }
    if let Some(i) = inferred {
        let total = product(in_shape)?;
        let known = product(&out)?;
        if known == 0 || !total.is_multiple_of(known) {
            return bad!("cannot infer the -1 in shape {spec:?} for input shape {in_shape:?}");
        }
        out[i] = total / known;
    }
    Ok(out)
}

/// ONNX Flatten: a reshape to 2-D at `axis` (which may equal the rank).
fn flatten(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let shape = &data_type(ctx)?.shape;
    let r = shape.len() as i64;
    let axis = ctx.attr_int_or("axis", 1)?;
    let a = if axis < 0 { axis + r } else { axis };
    let Ok(a) = usize::try_from(a) else {
        return bad!("attribute 'axis'={axis} is out of range for rank {r}");
    };
    if a > shape.len() {
        return bad!("attribute 'axis'={axis} is out of range for rank {r}");
    }
    let shape = vec![product(&shape[..a])?, product(&shape[a..])?];
    Ok(Lowered::new(Op::Reshape { shape }, vec![0]))
}

/// ONNX Squeeze: without axes, every dimension of size 1 goes.
fn squeeze(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let in_shape = &data_type(ctx)?.shape;
    let axes = ints_input_or_attr(ctx, 1, "axes", 13)?.unwrap_or_default();
    let shape: Vec<usize> = if axes.is_empty() {
        in_shape.iter().copied().filter(|&d| d != 1).collect()
    } else {
        let axes = norm_axes(&axes, in_shape.len())?;
        if let Some(&a) = axes.iter().find(|&&a| in_shape[a] != 1) {
            return bad!("cannot squeeze axis {a} of size {}", in_shape[a]);
        }
        in_shape
            .iter()
            .enumerate()
            .filter(|(d, _)| !axes.contains(d))
            .map(|(_, &n)| n)
            .collect()
    };
    Ok(Lowered::new(Op::Reshape { shape }, vec![0]))
}

/// ONNX Unsqueeze: axes index the output shape.
fn unsqueeze(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let in_shape = &data_type(ctx)?.shape;
    let axes = required(ints_input_or_attr(ctx, 1, "axes", 13)?, "axes")?;
    let out_rank = in_shape.len() + axes.len();
    let axes = norm_axes(&axes, out_rank)?;
    let mut rest = in_shape.iter();
    let shape = (0..out_rank)
        .map(|d| {
            if axes.contains(&d) {
                1
            } else {
                rest.next().copied().unwrap_or(1)
            }
        })
        .collect();
    Ok(Lowered::new(Op::Reshape { shape }, vec![0]))
}

// ---------------------------------------------------------------------------------------------
// Transpose, Concat, Split

/// ONNX Transpose: the default permutation reverses the axes.
fn transpose(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let rank = data_type(ctx)?.rank();
    let perm = match ctx.attr_ints("perm")? {
        Some(p) => dims(&p, "attribute 'perm'")?,
        None => (0..rank).rev().collect(),
    };
    Ok(Lowered::new(Op::Transpose { perm }, vec![0]))
}

/// ONNX Concat.
fn concat(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let n = ctx.num_inputs();
    if n == 0 {
        return bad!("Concat needs at least one input");
    }
    if let Some(i) = (0..n).find(|&i| !ctx.has_input(i)) {
        return bad!("input {i} is missing");
    }
    // Opset 4 made `axis` required; before, it defaulted to 1.
    let axis = match ctx.attr_int("axis")? {
        Some(a) => a,
        None if ctx.opset < 4 => 1,
        None => return bad!("attribute 'axis' is missing"),
    };
    let axis = norm_axis(axis, data_type(ctx)?.rank())?;
    Ok(Lowered::new(Op::Concat { axis }, (0..n).collect()))
}

/// ONNX Split.
fn split(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let shape = &data_type(ctx)?.shape;
    let axis = norm_axis(ctx.attr_int_or("axis", 0)?, shape.len())?;
    let dim = shape.get(axis).copied().unwrap_or(0);
    // Split-1 and Split-13+ take sizes as an input; Split-2 and -11 as an attribute.
    if ctx.opset >= 13 && ctx.has_attr("split") {
        return bad!("'split' is an input from opset 13, not an attribute");
    }
    let given = if ctx.opset >= 13 || ctx.has_input(1) {
        ctx.const_ints(1)?
    } else {
        ctx.attr_ints("split")?
    };
    let sizes = match given.filter(|s| !s.is_empty()) {
        Some(s) => dims(&s, "split")?,
        None => match ctx.attr_int("num_outputs")?.filter(|_| ctx.opset >= 18) {
            // Checked before anything is allocated: the count comes straight from the file.
            Some(n) if usize::try_from(n).ok() != Some(ctx.num_outputs) => {
                return bad!(
                    "attribute 'num_outputs'={n} does not match the node's {} outputs",
                    ctx.num_outputs
                )
            }
            Some(n) => uneven_split(dim, n)?,
            None => even_split(dim, ctx.num_outputs)?,
        },
    };
    if sizes.len() != ctx.num_outputs {
        return bad!(
            "'split' has {} entries but the node has {} outputs",
            sizes.len(),
            ctx.num_outputs
        );
    }
    Ok(Lowered::new(Op::Split { axis, sizes }, vec![0]))
}

/// Split-18's `num_outputs`: chunks of ceil(dim / n), the last one smaller.
fn uneven_split(dim: usize, n: i64) -> Result<Vec<usize>, LowerError> {
    let Ok(n) = usize::try_from(n) else {
        return bad!("attribute 'num_outputs'={n} must be positive");
    };
    if n == 0 {
        return bad!("attribute 'num_outputs'=0 must be positive");
    }
    let chunk = dim.div_ceil(n);
    let Some(last) = dim.checked_sub(chunk * (n - 1)) else {
        return bad!("dimension {dim} cannot be split into {n} outputs of size {chunk}");
    };
    let mut sizes = vec![chunk; n - 1];
    sizes.push(last);
    Ok(sizes)
}

/// Without sizes, a split into equal parts, one per output.
fn even_split(dim: usize, outputs: usize) -> Result<Vec<usize>, LowerError> {
    if outputs == 0 || !dim.is_multiple_of(outputs) {
        return bad!("dimension {dim} does not split evenly into {outputs} outputs");
    }
    Ok(vec![dim / outputs; outputs])
}

// ---------------------------------------------------------------------------------------------
// Slice

/// ONNX Slice, normalized to one clamped (start, end, step) per input dimension.
fn slice(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let shape = &data_type(ctx)?.shape;
    let (starts, ends, axes, steps) = if ctx.opset < 10 {
        let starts = required(ctx.attr_ints("starts")?, "attribute 'starts'")?;
        let ends = required(ctx.attr_ints("ends")?, "attribute 'ends'")?;
        (starts, ends, ctx.attr_ints("axes")?, None)
    } else {
        let starts = required(ctx.const_ints(1)?, "input 'starts'")?;
        let ends = required(ctx.const_ints(2)?, "input 'ends'")?;
        (starts, ends, ctx.const_ints(3)?, ctx.const_ints(4)?)
    };
    let n = starts.len();
    let axes = match axes {
        Some(a) => norm_axes_ordered(&a, shape.len())?,
        None => (0..n).collect(),
    };
    let steps = steps.unwrap_or_else(|| vec![1; n]);
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return bad!("starts, ends, axes and steps must have the same length ({n})");
    }
    let mut full_starts = vec![0i64; shape.len()];
    let mut full_ends: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let mut full_steps = vec![1i64; shape.len()];
    for i in 0..n {
        let a = axes[i];
        let Some(&dim) = shape.get(a) else {
            return bad!("axis {a} is out of range for rank {}", shape.len());
        };
        if steps[i] == 0 {
            return bad!("step of axis {a} is 0");
        }
        let (s, e) = clamp_slice(starts[i], ends[i], steps[i], dim);
        full_starts[a] = s;
        full_ends[a] = e;
        full_steps[a] = steps[i];
    }
    let op = Op::Slice {
        starts: full_starts,
        ends: full_ends,
        steps: full_steps,
    };
    Ok(Lowered::new(op, vec![0]))
}

/// ONNX's clamping: negative values count from the end; then starts/ends are clamped to
/// [0, dim] for positive steps, and to [0, dim-1] / [-1, dim-1] for negative steps.
fn clamp_slice(start: i64, end: i64, step: i64, dim: usize) -> (i64, i64) {
    let dim = dim as i64;
    let from_end = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
    let (s, e) = (from_end(start), from_end(end));
    if step > 0 {
        (s.clamp(0, dim), e.clamp(0, dim))
    } else if dim == 0 {
        (0, 0)
    } else {
        (s.clamp(0, dim - 1), e.clamp(-1, dim - 1))
    }
}

// ---------------------------------------------------------------------------------------------
// Pad

/// ONNX Pad.
fn pad(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let rank = data_type(ctx)?.rank();
    let mode_name = ctx.attr_string_or("mode", "constant")?;
    let mode = match mode_name.as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        other => return unsupported!("attribute 'mode'='{other}'"),
    };
    let (pads, value, axes) = if ctx.opset < 11 {
        let name = if ctx.opset < 2 { "paddings" } else { "pads" };
        let pads = required(ctx.attr_ints(name)?, &format!("attribute '{name}'"))?;
        (pads, f64::from(ctx.attr_float_or("value", 0.0)?), None)
    } else {
        let pads = required(ctx.const_ints(1)?, "input 'pads'")?;
        let value = match ctx.const_floats(2)? {
            Some(v) => v.first().copied().unwrap_or(0.0),
            None => 0.0,
        };
        let axes = if ctx.opset >= 18 {
            ctx.const_ints(3)?
        } else {
            None
        };
        (pads, value, axes)
    };
    let pads = match axes {
        None => {
            if pads.len() != 2 * rank {
                return bad!("{} pads given for rank {rank}", pads.len());
            }
            pads
        }
        Some(axes) => {
            let axes = norm_axes_ordered(&axes, rank)?;
            let n = axes.len();
            if pads.len() != 2 * n {
                return bad!("{} pads given for {n} axes", pads.len());
            }
            let mut full = vec![0i64; 2 * rank];
            for (i, &a) in axes.iter().enumerate() {
                full[a] = pads[i];
                full[rank + a] = pads[n + i];
            }
            full
        }
    };
    let value = if mode == PadMode::Constant {
        value
    } else {
        0.0
    };
    Ok(Lowered::new(Op::Pad { pads, mode, value }, vec![0]))
}

// ---------------------------------------------------------------------------------------------
// Gather, Expand, Tile

/// ONNX Gather.
fn gather(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let rank = data_type(ctx)?.rank();
    let axis = norm_axis(ctx.attr_int_or("axis", 0)?, rank)?;
    ctx.input(1)?;
    Ok(Lowered::new(Op::Gather { axis }, vec![0, 1]))
}

/// ONNX Expand: the target shape broadcasts with the input shape both ways.
fn expand(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let in_shape = &data_type(ctx)?.shape;
    let target = dims(&required(ctx.const_ints(1)?, "input 'shape'")?, "shape")?;
    let shape = match broadcast_shapes(in_shape, &target) {
        Ok(s) => s,
        Err(e) => return bad!("{e}"),
    };
    Ok(Lowered::new(Op::Expand { shape }, vec![0]))
}

/// ONNX Tile (Tile-1 repeats along one `axis`).
fn tile(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let rank = data_type(ctx)?.rank();
    let repeats = if ctx.opset < 6 {
        let tiles = scalar(ctx, 1)?;
        let axis = norm_axis(scalar(ctx, 2)? as i64, rank)?;
        let mut r = vec![1i64; rank];
        if let Some(t) = r.get_mut(axis) {
            *t = tiles as i64;
        }
        r
    } else {
        required(ctx.const_ints(1)?, "input 'repeats'")?
    };
    if repeats.len() != rank {
        return bad!("{} repeats given for rank {rank}", repeats.len());
    }
    let repeats = dims(&repeats, "repeats")?;
    Ok(Lowered::new(Op::Tile { repeats }, vec![0]))
}

// ---------------------------------------------------------------------------------------------
// DepthToSpace, SpaceToDepth

fn blocksize(ctx: &NodeCtx) -> Result<usize, LowerError> {
    let b = required(ctx.attr_int("blocksize")?, "attribute 'blocksize'")?;
    match usize::try_from(b) {
        Ok(b) if b > 0 => Ok(b),
        _ => bad!("attribute 'blocksize'={b} must be positive"),
    }
}

/// ONNX DepthToSpace.
fn depth_to_space(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let blocksize = blocksize(ctx)?;
    let mode = depth_to_space_mode(ctx)?;
    Ok(Lowered::new(Op::DepthToSpace { blocksize, mode }, vec![0]))
}

fn depth_to_space_mode(ctx: &NodeCtx) -> Result<DepthToSpaceMode, LowerError> {
    match ctx.attr_string_or("mode", "DCR")?.as_str() {
        "DCR" => Ok(DepthToSpaceMode::Dcr),
        "CRD" => Ok(DepthToSpaceMode::Crd),
        other => bad!("attribute 'mode'='{other}' is not DCR or CRD"),
    }
}

/// ONNX SpaceToDepth (`mode` exists from opset 28; earlier opsets are DCR).
fn space_to_depth(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let blocksize = blocksize(ctx)?;
    let mode = depth_to_space_mode(ctx)?;
    Ok(Lowered::new(Op::SpaceToDepth { blocksize, mode }, vec![0]))
}

// ---------------------------------------------------------------------------------------------
// Resize

/// ONNX Resize. Output sizes, the per-axis scales used for coordinate mapping and the full-rank
/// region of interest are resolved here as the spec defines them.
fn resize(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let x = data_type(ctx)?;
    let mode = match ctx.attr_string_or("mode", "nearest")?.as_str() {
        "nearest" => ResizeMode::Nearest,
        "linear" | "bilinear" | "trilinear" => ResizeMode::Linear,
        "cubic" | "bicubic" => ResizeMode::Cubic,
        other => return bad!("attribute 'mode'='{other}' is not a Resize mode"),
    };
    let antialias = ctx.attr_int_or("antialias", 0)? != 0;
    if antialias && mode == ResizeMode::Nearest {
        return bad!("attribute 'antialias'=1 applies only to linear and cubic modes");
    }
    let exclude_outside = ctx.attr_int_or("exclude_outside", 0)? != 0;
    let cubic_coeff_a = f64::from(ctx.attr_float_or("cubic_coeff_a", -0.75)?);
    let extrapolation_value = f64::from(ctx.attr_float_or("extrapolation_value", 0.0)?);
    let (scales, sizes) = if ctx.opset < 11 {
        (ctx.const_floats(1)?, None)
    } else {
        (ctx.const_floats(2)?, ctx.const_ints(3)?)
    };
    // Empty tensors stand for "not given".
    let scales = scales.filter(|s| !s.is_empty());
    let sizes = sizes.filter(|s| !s.is_empty());
    let axes = match ctx.attr_ints("axes")? {
        Some(a) => norm_axes_ordered(&a, x.rank())?,
        None => (0..x.rank()).collect(),
    };
    let (scales, out_shape) = match (scales, sizes) {
        (Some(s), None) => resize_from_scales(&x.shape, &axes, &s)?,
        (None, Some(s)) => {
            let policy = ctx.attr_string_or("keep_aspect_ratio_policy", "stretch")?;
            resize_from_sizes(&x.shape, &axes, &s, &policy)?
        }
        (Some(_), Some(_)) => return bad!("only one of 'scales' and 'sizes' may be given"),
        (None, None) => return bad!("one of 'scales' and 'sizes' must be given"),
    };
    let (coord, nearest) = if ctx.opset < 11 {
        resize10_modes(&scales)?
    } else {
        (coord_transform(ctx)?, nearest_mode(ctx)?)
    };
    let roi = if coord == CoordTransform::TfCropAndResize {
        let given = required(ctx.const_floats(1)?, "input 'roi'")?;
        full_roi(x.rank(), &axes, &given)?
    } else {
        // The spec uses roi only for tf_crop_and_resize.
        Vec::new()
    };
    let op = Op::Resize {
        mode,
        coord,
        nearest,
        scales,
        out_shape,
        cubic_coeff_a,
        exclude_outside,
        antialias,
        roi,
        extrapolation_value,
    };
    Ok(Lowered::new(op, vec![0]))
}

/// The region of interest for every dimension (starts.., ends..): axes not listed in `axes`
/// keep the whole range [0, 1].
fn full_roi(rank: usize, axes: &[usize], given: &[f64]) -> Result<Vec<f64>, LowerError> {
    if given.len() != 2 * axes.len() {
        return bad!(
            "input 'roi' has {} values, expected {} (start and end per axis)",
            given.len(),
            2 * axes.len()
        );
    }
    let mut roi = vec![0.0; rank];
    roi.resize(2 * rank, 1.0);
    for (i, &a) in axes.iter().enumerate() {
        roi[a] = given[i];
        roi[rank + a] = given[axes.len() + i];
    }
    Ok(roi)
}

/// With `scales`, each output size is floor(in * scale).
fn resize_from_scales(
    in_shape: &[usize],
    axes: &[usize],
    given: &[f64],
) -> Result<(Vec<f64>, Vec<usize>), LowerError> {
    if given.len() != axes.len() {
        return bad!("{} scales given for {} axes", given.len(), axes.len());
    }
    let mut scales = vec![1f64; in_shape.len()];
    let mut out = in_shape.to_vec();
    for (&a, &s) in axes.iter().zip(given) {
        if !(s.is_finite() && s > 0.0) {
            return bad!("scale {s} must be positive and finite");
        }
        scales[a] = s;
        out[a] = (in_shape[a] as f64 * s).floor() as usize;
    }
    Ok((scales, out))
}

/// With `sizes`, the scales are out / in; `keep_aspect_ratio_policy` may replace them by their
/// min or max and round the sizes accordingly.
fn resize_from_sizes(
    in_shape: &[usize],
    axes: &[usize],
    given: &[i64],
    policy: &str,
) -> Result<(Vec<f64>, Vec<usize>), LowerError> {
    if given.len() != axes.len() {
        return bad!("{} sizes given for {} axes", given.len(), axes.len());
    }
    let sizes = dims(given, "sizes")?;
    let mut ratios = Vec::with_capacity(axes.len());
    for (&a, &size) in axes.iter().zip(&sizes) {
        let n = in_shape[a];
        if n == 0 && size != 0 {
            return bad!("cannot resize empty axis {a} to size {size}");
        }
        ratios.push(if n == 0 { 1.0 } else { size as f64 / n as f64 });
    }
    let mut scales = vec![1f64; in_shape.len()];
    let mut out = in_shape.to_vec();
    let common = match policy {
        "stretch" => None,
        "not_larger" => Some(ratios.iter().copied().fold(f64::INFINITY, f64::min)),
        "not_smaller" => Some(ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
        other => return bad!("attribute 'keep_aspect_ratio_policy'='{other}' is not a policy"),
    };
    for ((&a, &size), &ratio) in axes.iter().zip(&sizes).zip(&ratios) {
        match common {
            None => {
                scales[a] = ratio;
                out[a] = size;
            }
            Some(s) => {
                scales[a] = s;
                // Round half up, as the spec does.
                out[a] = (s * in_shape[a] as f64 + 0.5).floor() as usize;
            }
        }
    }
    Ok((scales, out))
}

fn coord_transform(ctx: &NodeCtx) -> Result<CoordTransform, LowerError> {
    Ok(
        match ctx
            .attr_string_or("coordinate_transformation_mode", "half_pixel")?
            .as_str()
        {
            "half_pixel" => CoordTransform::HalfPixel,
            "half_pixel_symmetric" => CoordTransform::HalfPixelSymmetric,
            "pytorch_half_pixel" => CoordTransform::PytorchHalfPixel,
            "align_corners" => CoordTransform::AlignCorners,
            "asymmetric" => CoordTransform::Asymmetric,
            "tf_crop_and_resize" => CoordTransform::TfCropAndResize,
            other @ "tf_half_pixel_for_nn" => {
                return unsupported!("attribute 'coordinate_transformation_mode'='{other}'")
            }
            other => {
                return bad!("attribute 'coordinate_transformation_mode'='{other}' is not a mode")
            }
        },
    )
}

fn nearest_mode(ctx: &NodeCtx) -> Result<NearestMode, LowerError> {
    Ok(
        match ctx
            .attr_string_or("nearest_mode", "round_prefer_floor")?
            .as_str()
        {
            "round_prefer_floor" => NearestMode::RoundPreferFloor,
            "round_prefer_ceil" => NearestMode::RoundPreferCeil,
            "floor" => NearestMode::Floor,
            "ceil" => NearestMode::Ceil,
            other => return bad!("attribute 'nearest_mode'='{other}' is not a mode"),
        },
    )
}

/// ONNX Upsample (opsets 7-9, deprecated since 10 but still in exported detection and
/// segmentation models): Resize-10's semantics. `scales` (one per dimension, none below one) is
/// an attribute in opset 7 and an input (a compile-time constant) from opset 9. Modes `nearest`
/// and `linear` (`bilinear` as onnxruntime also reads it); the experimental Upsample-1
/// (`height_scale`/`width_scale`) is not supported.
fn upsample(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    if ctx.opset < 7 {
        return unsupported!(
            "Upsample before opset 7 (experimental height_scale/width_scale form)"
        );
    }
    let x = data_type(ctx)?;
    let mode = match ctx.attr_string_or("mode", "nearest")?.as_str() {
        "nearest" => ResizeMode::Nearest,
        "linear" | "bilinear" => ResizeMode::Linear,
        other => return bad!("attribute 'mode'='{other}' is not an Upsample mode"),
    };
    let scales = if ctx.opset < 9 {
        ctx.check_inputs(1, 1)?;
        match ctx.attr_floats("scales")? {
            Some(s) => s.into_iter().map(f64::from).collect(),
            None => return bad!("attribute 'scales' is required"),
        }
    } else {
        ctx.check_inputs(2, 2)?;
        required(ctx.const_floats(1)?, "input 'scales'")?
    };
    if scales.len() != x.rank() {
        return bad!(
            "{} scales given for an input of rank {}",
            scales.len(),
            x.rank()
        );
    }
    if let Some(s) = scales.iter().find(|&&s| s < 1.0) {
        return bad!("scale {s} is below 1 (Upsample only enlarges)");
    }
    let axes: Vec<usize> = (0..x.rank()).collect();
    let (scales, out_shape) = resize_from_scales(&x.shape, &axes, &scales)?;
    let (coord, nearest) = resize10_modes(&scales)?;
    let op = Op::Resize {
        mode,
        coord,
        nearest,
        scales,
        out_shape,
        cubic_coeff_a: -0.75,
        exclude_outside: false,
        antialias: false,
        roi: Vec::new(),
        extrapolation_value: 0.0,
    };
    Ok(Lowered::new(op, vec![0]))
}

/// Resize-10 behaves like Upsample: asymmetric coordinates, and (as onnxruntime does) nearest
/// rounds down when upsampling and up when downsampling.
fn resize10_modes(scales: &[f64]) -> Result<(CoordTransform, NearestMode), LowerError> {
    let down = scales.iter().any(|&s| s < 1.0);
    let up = scales.iter().any(|&s| s > 1.0);
    let nearest = match (down, up) {
        (true, true) => {
            return unsupported!("Resize-10 that upsamples some axes and downsamples others")
        }
        (true, false) => NearestMode::Ceil,
        _ => NearestMode::Floor,
    };
    Ok((CoordTransform::Asymmetric, nearest))
}

// ---------------------------------------------------------------------------------------------
// Shape, ConstantOfShape, Range

/// ONNX Shape: `start`/`end` count from the end when negative and are clamped to the rank.
fn shape(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let rank = data_type(ctx)?.rank() as i64;
    let clamp = |v: i64| (if v < 0 { v.saturating_add(rank) } else { v }).clamp(0, rank) as usize;
    let start = clamp(ctx.attr_int_or("start", 0)?);
    let end = clamp(ctx.attr_int_or("end", rank)?).max(start);
    Ok(Lowered::new(Op::Shape { start, end }, vec![0]))
}

/// ONNX ConstantOfShape: `value` defaults to f32 0.
fn constant_of_shape(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let shape = dims(&required(ctx.const_ints(0)?, "input 'input'")?, "shape")?;
    let (value, dtype) = match ctx.attr_tensor("value")? {
        None => (0.0, DType::F32),
        Some(t) => match t.to_f64_vec()[..] {
            [v] => (v, t.dtype()),
            _ => {
                return bad!(
                    "attribute 'value' must hold one element, got shape {:?}",
                    t.shape()
                )
            }
        },
    };
    Ok(Lowered::new(
        Op::ConstantOfShape {
            shape,
            value,
            dtype,
        },
        vec![],
    ))
}

/// ONNX Range: count = max(ceil((limit - start) / delta), 0), exact for integer types.
fn range(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let dtype = data_type(ctx)?.dtype;
    for i in 1..3 {
        if ctx.input_type(i)?.dtype != dtype {
            return bad!("start, limit and delta must have the same type");
        }
    }
    if dtype == DType::Bool {
        return bad!("Range of bool is not allowed");
    }
    let count = if dtype.is_integer() {
        let [start, limit, delta] = [
            int_scalar(ctx, 0)?,
            int_scalar(ctx, 1)?,
            int_scalar(ctx, 2)?,
        ];
        if delta == 0 {
            return bad!("delta is 0");
        }
        let (span, delta) = (i128::from(limit) - i128::from(start), i128::from(delta));
        // Ceiling division that rounds toward +inf for either sign.
        let q = span / delta;
        let q = if span % delta != 0 && (span < 0) == (delta < 0) {
            q + 1
        } else {
            q
        };
        usize::try_from(q.max(0)).unwrap_or(usize::MAX)
    } else {
        let [start, limit, delta] = [scalar(ctx, 0)?, scalar(ctx, 1)?, scalar(ctx, 2)?];
        if delta == 0.0 {
            return bad!("delta is 0");
        }
        let n = ((limit - start) / delta).ceil();
        if !n.is_finite() {
            return bad!("Range({start}, {limit}, {delta}) has no finite length");
        }
        n.max(0.0) as usize
    };
    let start = scalar(ctx, 0)?;
    let delta = scalar(ctx, 2)?;
    Ok(Lowered::new(
        Op::Range {
            start,
            delta,
            count,
            dtype,
        },
        vec![],
    ))
}

fn int_scalar(ctx: &NodeCtx, i: usize) -> Result<i64, LowerError> {
    let t = ctx.const_input(i)?;
    match t.to_i64_vec().as_deref() {
        Some([v]) => Ok(*v),
        _ => bad!("input {i} must hold one integer, got shape {:?}", t.shape()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_rules() {
        assert_eq!(
            resolve_reshape(&[2, 3, 4], &[2, 0, -1], false),
            Ok(vec![2, 3, 4])
        );
        assert_eq!(
            resolve_reshape(&[0, 3, 4], &[3, 4, 0], true),
            Ok(vec![3, 4, 0])
        );
        assert!(resolve_reshape(&[2, 3], &[-1, -1], false).is_err());
        assert!(resolve_reshape(&[2, 3], &[4, -1], false).is_err());
    }

    #[test]
    fn slice_clamping() {
        assert_eq!(clamp_slice(1, 1000, 1, 10), (1, 10));
        assert_eq!(clamp_slice(-1, i64::MIN, -1, 10), (9, -1));
        assert_eq!(clamp_slice(i64::MAX, 0, -1, 10), (9, 0));
        assert_eq!(clamp_slice(0, -1, 1, 10), (0, 9));
        assert_eq!(clamp_slice(5, 0, -1, 0), (0, 0));
    }

    #[test]
    fn split_sizes() {
        assert_eq!(uneven_split(7, 4), Ok(vec![2, 2, 2, 1]));
        assert_eq!(uneven_split(8, 3), Ok(vec![3, 3, 2]));
        assert!(uneven_split(5, 4).is_err());
        assert_eq!(even_split(6, 3), Ok(vec![2, 2, 2]));
        assert!(even_split(7, 3).is_err());
    }

    #[test]
    fn resize_sizes_and_policies() {
        let (s, o) =
            resize_from_sizes(&[1, 1, 2, 4], &[2, 3], &[1, 3], "not_larger").unwrap_or_default();
        assert_eq!((s, o), (vec![1.0, 1.0, 0.5, 0.5], vec![1, 1, 1, 2]));
        let (s, o) = resize_from_scales(&[1, 1, 2, 4], &[0, 1, 2, 3], &[1.0, 1.0, 0.6, 0.6])
            .unwrap_or_default();
        assert_eq!((s, o), (vec![1.0, 1.0, 0.6, 0.6], vec![1, 1, 1, 2]));
    }
}
