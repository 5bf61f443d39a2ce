//! Lowering of the neural-network ONNX ops: convolutions, matrix products, pooling,
//! normalizations, softmax and linear (de)quantization.
//!
//! Everything ONNX leaves to run time or to the opset version is resolved here from the static
//! input shapes: `auto_pad` and ConvTranspose's `output_shape` become explicit pads, kernel
//! shapes come from the weights when absent, and per-opset defaults are applied.

use kiln_ir::{Activation, DType, Op};

use super::{norm_axis, LowerError, Lowered, NodeCtx};
use crate::{bad, unsupported};

pub fn lower(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    match ctx.op_type {
        "Conv" => conv(ctx),
        "ConvTranspose" => conv_transpose(ctx),
        "MatMul" => matmul(ctx),
        "Gemm" => gemm(ctx),
        "MaxPool" => max_pool(ctx),
        "AveragePool" => average_pool(ctx),
        "GlobalAveragePool" => global_pool(ctx, Op::GlobalAveragePool),
        "GlobalMaxPool" => global_pool(ctx, Op::GlobalMaxPool),
        "BatchNormalization" => batch_norm(ctx),
        "InstanceNormalization" => instance_norm(ctx),
        "LayerNormalization" => layer_norm(ctx),
        "Softmax" | "LogSoftmax" => softmax(ctx),
        "QuantizeLinear" => quantize(ctx),
        "DequantizeLinear" => dequantize(ctx),
        other => unsupported!("op {other} is not a neural-network op"),
    }
}

/// Checks the input count, that inputs `0..required` are present, and returns the indices of
/// the present inputs (the optional ones are trailing for every op here).
fn inputs(ctx: &NodeCtx, required: usize, max: usize) -> Result<Vec<usize>, LowerError> {
    ctx.check_inputs(required, max)?;
    for i in 0..required {
        ctx.input(i)?;
    }
    Ok((0..ctx.num_inputs())
        .filter(|&i| ctx.has_input(i))
        .collect())
}

/// Refuses nodes that ask for more outputs than kiln computes, naming the first extra one.
fn check_outputs(ctx: &NodeCtx, max: usize, what: &str) -> Result<(), LowerError> {
    if ctx.num_outputs > max {
        return unsupported!("output {max} ({what})");
    }
    Ok(())
}

/// An integer list attribute as `usize`s, each at least `min`.
fn usize_list(name: &str, values: &[i64], min: i64) -> Result<Vec<usize>, LowerError> {
    values
        .iter()
        .map(|&v| {
            if v < min {
                bad!("attribute '{name}' has value {v}, expected at least {min}")
            } else {
                Ok(v as usize)
            }
        })
        .collect()
}

/// A list attribute of `n` entries, `default` filled when absent.
fn spatial_list(
    ctx: &NodeCtx,
    name: &str,
    n: usize,
    default: usize,
    min: i64,
) -> Result<Vec<usize>, LowerError> {
    match ctx.attr_ints(name)? {
        None => Ok(vec![default; n]),
        Some(v) if v.len() == n => usize_list(name, &v, min),
        Some(v) => bad!("attribute '{name}' has {} entries, expected {n}", v.len()),
    }
}

/// The spatial dimensions of input 0, which must be [N, C, D1, ..].
fn spatial_dims(ctx: &NodeCtx) -> Result<Vec<usize>, LowerError> {
    let x = &ctx.input_type(0)?.shape;
    if x.len() < 3 {
        return bad!("input must have rank 3 or more (N, C, spatial..), got shape {x:?}");
    }
    Ok(x[2..].to_vec())
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

fn auto_pad(ctx: &NodeCtx) -> Result<AutoPad, LowerError> {
    match ctx.attr_string_or("auto_pad", "NOTSET")?.as_str() {
        // An empty string means the default, as onnxruntime reads it.
        "NOTSET" | "" => Ok(AutoPad::NotSet),
        "SAME_UPPER" => Ok(AutoPad::SameUpper),
        "SAME_LOWER" => Ok(AutoPad::SameLower),
        "VALID" => Ok(AutoPad::Valid),
        other => {
            bad!("attribute 'auto_pad'='{other}' is not NOTSET, SAME_UPPER, SAME_LOWER or VALID")
        }
    }
}

/// Kernel, strides, dilations and pads of a windowed op, with `auto_pad` resolved.
#[derive(Debug)]
struct Window {
    kernel: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    pads: Vec<usize>,
    auto_pad: AutoPad,
}

/// Reads the window attributes of Conv and the pools; `kernel` is already resolved.
fn window(ctx: &NodeCtx, kernel: Vec<usize>, pooling: bool) -> Result<Window, LowerError> {
    let input = spatial_dims(ctx)?;
    let n = input.len();
    if kernel.len() != n {
        return bad!("kernel_shape {kernel:?} does not match {n} spatial dimensions");
    }
    if kernel.contains(&0) {
        return bad!("attribute 'kernel_shape' must be positive, got {kernel:?}");
    }
    let strides = spatial_list(ctx, "strides", n, 1, 1)?;
    let dilations = spatial_list(ctx, "dilations", n, 1, 1)?;
    let explicit = spatial_list(ctx, "pads", 2 * n, 0, 0)?;
    let auto_pad = auto_pad(ctx)?;
    let pads = match auto_pad {
        AutoPad::NotSet => explicit,
        AutoPad::Valid => vec![0; 2 * n],
        AutoPad::SameUpper | AutoPad::SameLower => same_pads(
            &input,
            &kernel,
            &strides,
            &dilations,
            auto_pad == AutoPad::SameUpper,
            pooling,
        )?,
    };
    Ok(Window {
        kernel,
        strides,
        dilations,
        pads,
        auto_pad,
    })
}

/// SAME padding: the output is `ceil(input / stride)` long and the odd pad goes at the end
/// (SAME_UPPER) or at the beginning (SAME_LOWER).
///
/// When the windows need less than the input (a window smaller than the stride) the total pad
/// is negative. Conv then pads nothing, as onnxruntime does. onnxruntime's pools instead split
/// the negative total like a positive one, which shifts every window when the begin share is
/// nonzero; kiln's pads cannot be negative, so that case is refused.
fn same_pads(
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    upper: bool,
    pooling: bool,
) -> Result<Vec<usize>, LowerError> {
    let n = input.len();
    let mut pads = vec![0; 2 * n];
    for d in 0..n {
        let out = input[d].div_ceil(strides[d]) as i128;
        let Some(window) = effective_kernel(kernel[d], dilations[d]) else {
            return bad!("dilated kernel is too large");
        };
        let total = (out - 1).max(0) * strides[d] as i128 + window as i128 - input[d] as i128;
        if total < 0 {
            // onnxruntime's split, with C's truncating division.
            let begin = if upper { total / 2 } else { total - total / 2 };
            if pooling && begin != 0 {
                return unsupported!(
                    "auto_pad SAME with a window smaller than the stride (negative padding {total} in spatial dimension {d})"
                );
            }
            continue;
        }
        let total = total as usize;
        let (small, large) = (total / 2, total - total / 2);
        (pads[d], pads[n + d]) = if upper {
            (small, large)
        } else {
            (large, small)
        };
    }
    Ok(pads)
}

/// Extent of a dilated kernel, `(k - 1) * d + 1`.
fn effective_kernel(k: usize, d: usize) -> Option<usize> {
    k.checked_sub(1)?.checked_mul(d)?.checked_add(1)
}

/// `kernel_shape`, or the weights' spatial dimensions when the attribute is absent.
fn conv_kernel(ctx: &NodeCtx) -> Result<Vec<usize>, LowerError> {
    match ctx.attr_ints("kernel_shape")? {
        Some(k) => usize_list("kernel_shape", &k, 1),
        None => Ok(ctx.input_type(1)?.shape.iter().skip(2).copied().collect()),
    }
}

fn group(ctx: &NodeCtx) -> Result<usize, LowerError> {
    let g = ctx.attr_int_or("group", 1)?;
    if g < 1 {
        return bad!("attribute 'group'={g} must be positive");
    }
    Ok(g as usize)
}

/// ONNX Conv.
fn conv(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let inputs = inputs(ctx, 2, 3)?;
    let w = window(ctx, conv_kernel(ctx)?, false)?;
    let op = Op::Conv {
        kernel_shape: w.kernel,
        strides: w.strides,
        dilations: w.dilations,
        pads: w.pads,
        group: group(ctx)?,
        activation: Activation::None,
    };
    Ok(Lowered::new(op, inputs))
}

/// ONNX ConvTranspose. Output size per spatial dimension, before padding, is
/// `stride * (in - 1) + output_padding + (k - 1) * dilation + 1`; `output_shape` and SAME
/// auto_pad fix the final size instead, and the difference becomes pads.
fn conv_transpose(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let inputs = inputs(ctx, 2, 3)?;
    let input = spatial_dims(ctx)?;
    let n = input.len();
    let kernel = conv_kernel(ctx)?;
    if kernel.len() != n || kernel.contains(&0) {
        return bad!("kernel_shape {kernel:?} does not match {n} spatial dimensions");
    }
    let strides = spatial_list(ctx, "strides", n, 1, 1)?;
    let dilations = spatial_list(ctx, "dilations", n, 1, 1)?;
    let mut output_padding = spatial_list(ctx, "output_padding", n, 0, 0)?;
    let auto_pad = auto_pad(ctx)?;
    let pads = match transpose_target(ctx, &input, &strides, auto_pad)? {
        Some(target) => {
            let mut full = Vec::with_capacity(n);
            for d in 0..n {
                let size = input[d]
                    .checked_sub(1)
                    .and_then(|v| v.checked_mul(strides[d]))
                    .and_then(|v| v.checked_add(output_padding[d]))
                    .and_then(|v| v.checked_add(effective_kernel(kernel[d], dilations[d])?));
                let Some(size) = size else {
                    return bad!("spatial dimension {d} is empty or the kernel is too large");
                };
                full.push(size);
            }
            fit_transpose_output(&full, &target, auto_pad, &mut output_padding)
        }
        None if auto_pad == AutoPad::Valid => vec![0; 2 * n],
        None => spatial_list(ctx, "pads", 2 * n, 0, 0)?,
    };
    let op = Op::ConvTranspose {
        kernel_shape: kernel,
        strides,
        dilations,
        pads,
        output_padding,
        group: group(ctx)?,
        activation: Activation::None,
    };
    Ok(Lowered::new(op, inputs))
}

/// The output size ConvTranspose must produce, when `output_shape` or SAME fixes it.
#[derive(Debug)]
struct TransposeTarget {
    sizes: Vec<usize>,
    /// Given by `output_shape`, which may also ask for more than the kernels reach.
    explicit: bool,
}

fn transpose_target(
    ctx: &NodeCtx,
    input: &[usize],
    strides: &[usize],
    auto_pad: AutoPad,
) -> Result<Option<TransposeTarget>, LowerError> {
    let n = input.len();
    match ctx.attr_ints("output_shape")? {
        Some(s) if s.len() == n => Ok(Some(TransposeTarget {
            sizes: usize_list("output_shape", &s, 0)?,
            explicit: true,
        })),
        Some(s) => bad!(
            "attribute 'output_shape' has {} entries, expected {n}",
            s.len()
        ),
        None if matches!(auto_pad, AutoPad::SameUpper | AutoPad::SameLower) => {
            let sizes: Option<Vec<usize>> = input
                .iter()
                .zip(strides)
                .map(|(&i, &s)| i.checked_mul(s))
                .collect();
            match sizes {
                Some(sizes) => Ok(Some(TransposeTarget {
                    sizes,
                    explicit: false,
                })),
                None => bad!("input size times stride is too large"),
            }
        }
        None => Ok(None),
    }
}

/// Pads that cut each `full` output size down to its target. A larger explicit target is
/// reached by growing `output_padding` instead: the extra end rows hold only the bias. Under
/// SAME, a negative total pad is taken as 0 and the output stays short of `input * stride`,
/// as onnx shape inference and onnxruntime do.
fn fit_transpose_output(
    full: &[usize],
    target: &TransposeTarget,
    auto_pad: AutoPad,
    output_padding: &mut [usize],
) -> Vec<usize> {
    let n = full.len();
    let mut pads = vec![0; 2 * n];
    for d in 0..n {
        if full[d] >= target.sizes[d] {
            (pads[d], pads[n + d]) = split_transpose_pad(full[d] - target.sizes[d], auto_pad);
        } else if target.explicit {
            output_padding[d] += target.sizes[d] - full[d];
        }
    }
    pads
}

/// ConvTranspose's split of a total pad, as the ONNX spec gives it: SAME_UPPER puts the odd
/// one at the end, everything else at the beginning.
fn split_transpose_pad(total: usize, auto_pad: AutoPad) -> (usize, usize) {
    let half = total / 2;
    if auto_pad == AutoPad::SameUpper {
        (half, total - half)
    } else {
        (total - half, half)
    }
}

/// ONNX MatMul.
fn matmul(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    Ok(Lowered::new(
        Op::MatMul {
            activation: Activation::None,
            a_perm: Vec::new(),
            b_perm: Vec::new(),
        },
        inputs(ctx, 2, 2)?,
    ))
}

/// ONNX Gemm. Opsets before 7 have a `broadcast` flag; broadcasting C always gives the same
/// result for models valid under either setting, so the flag is ignored.
fn gemm(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let inputs = inputs(ctx, 2, 3)?;
    let op = Op::Gemm {
        alpha: ctx.attr_float_or("alpha", 1.0)?,
        beta: ctx.attr_float_or("beta", 1.0)?,
        trans_a: ctx.attr_int_or("transA", 0)? != 0,
        trans_b: ctx.attr_int_or("transB", 0)? != 0,
        activation: Activation::None,
    };
    Ok(Lowered::new(op, inputs))
}

/// The window of MaxPool and AveragePool: `kernel_shape` is required, and `ceil_mode` has no
/// effect under SAME auto_pad, whose output size is fixed at `ceil(input / stride)`.
fn pool_window(ctx: &NodeCtx) -> Result<(Window, bool), LowerError> {
    let Some(kernel) = ctx.attr_ints("kernel_shape")? else {
        return bad!("attribute 'kernel_shape' is required");
    };
    let w = window(ctx, usize_list("kernel_shape", &kernel, 1)?, true)?;
    let ceil_mode = ctx.attr_int_or("ceil_mode", 0)? != 0;
    let ceil_mode = ceil_mode && !matches!(w.auto_pad, AutoPad::SameUpper | AutoPad::SameLower);
    Ok((w, ceil_mode))
}

/// ONNX MaxPool, with the optional Indices output (opset 8). `storage_order` (default 0,
/// row-major) picks the order of the spatial dimensions in those indices.
fn max_pool(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let inputs = inputs(ctx, 1, 1)?;
    check_outputs(ctx, 2, "MaxPool has 2 outputs")?;
    let (w, ceil_mode) = pool_window(ctx)?;
    let column_major_indices = match ctx.attr_int_or("storage_order", 0)? {
        0 => false,
        1 => true,
        other => return bad!("attribute 'storage_order'={other} is not 0 or 1"),
    };
    let op = Op::MaxPool {
        kernel_shape: w.kernel,
        strides: w.strides,
        dilations: w.dilations,
        pads: w.pads,
        ceil_mode,
        indices: ctx.num_outputs == 2,
        column_major_indices,
    };
    Ok(Lowered::new(op, inputs))
}

/// ONNX AveragePool.
fn average_pool(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let inputs = inputs(ctx, 1, 1)?;
    let (w, ceil_mode) = pool_window(ctx)?;
    let op = Op::AveragePool {
        kernel_shape: w.kernel,
        strides: w.strides,
        dilations: w.dilations,
        pads: w.pads,
        ceil_mode,
        count_include_pad: ctx.attr_int_or("count_include_pad", 0)? != 0,
    };
    Ok(Lowered::new(op, inputs))
}

/// ONNX GlobalAveragePool and GlobalMaxPool.
fn global_pool(ctx: &NodeCtx, op: Op) -> Result<Lowered, LowerError> {
    Ok(Lowered::new(op, inputs(ctx, 1, 1)?))
}

/// ONNX BatchNormalization, inference form only.
fn batch_norm(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let inputs = inputs(ctx, 5, 5)?;
    let training = ctx.attr_int_or("training_mode", 0)?;
    if training != 0 {
        return unsupported!("attribute 'training_mode'={training}");
    }
    check_outputs(ctx, 1, "the training statistics of BatchNormalization")?;
    // Opsets before 9: `spatial`=0 means statistics per activation rather than per channel;
    // the two agree only when there are no spatial dimensions. `is_test` is ignored, as
    // onnxruntime does: a node with only output Y is an inference node.
    let spatial = ctx.attr_int_or("spatial", 1)?;
    if spatial == 0 && ctx.input_type(0)?.rank() > 2 {
        return unsupported!("attribute 'spatial'=0 (per-activation statistics)");
    }
    let op = Op::BatchNormalization {
        epsilon: ctx.attr_float_or("epsilon", 1e-5)?,
    };
    Ok(Lowered::new(op, inputs))
}

/// ONNX InstanceNormalization.
fn instance_norm(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let inputs = inputs(ctx, 3, 3)?;
    let op = Op::InstanceNormalization {
        epsilon: ctx.attr_float_or("epsilon", 1e-5)?,
    };
    Ok(Lowered::new(op, inputs))
}

/// ONNX LayerNormalization (opset 17): Y, and optionally Mean and InvStdDev.
fn layer_norm(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let inputs = inputs(ctx, 2, 3)?;
    check_outputs(ctx, 3, "LayerNormalization has 3 outputs")?;
    let stash = ctx.attr_int_or("stash_type", 1)?;
    if stash != 1 {
        return unsupported!("attribute 'stash_type'={stash} (only float statistics)");
    }
    let rank = ctx.input_type(0)?.rank();
    let op = Op::LayerNormalization {
        axis: norm_axis(ctx.attr_int_or("axis", -1)?, rank)?,
        epsilon: ctx.attr_float_or("epsilon", 1e-5)?,
        outputs: ctx.num_outputs.max(1),
    };
    Ok(Lowered::new(op, inputs))
}

/// ONNX Softmax and LogSoftmax. Before opset 13 the input is coerced to 2-D at `axis`
/// (default 1); from 13 on the op runs along `axis` (default -1).
fn softmax(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let inputs = inputs(ctx, 1, 1)?;
    let coerce_2d = ctx.opset < 13;
    let default_axis = if coerce_2d { 1 } else { -1 };
    let rank = ctx.input_type(0)?.rank();
    if rank == 0 {
        return bad!("{} input must have rank 1 or more", ctx.op_type);
    }
    let axis = norm_axis(ctx.attr_int_or("axis", default_axis)?, rank)?;
    let op = if ctx.op_type == "Softmax" {
        Op::Softmax { axis, coerce_2d }
    } else {
        Op::LogSoftmax { axis, coerce_2d }
    };
    Ok(Lowered::new(op, inputs))
}

/// The quantization axis and block size. A scalar or one-element scale is per tensor (as in
/// onnx's reference, even with `block_size`); otherwise `block_size` > 0 (opset 21) selects
/// blocked quantization, whose scale has the input's rank, and else a 1-D scale is per `axis`
/// (an attribute from opset 13, default 1).
fn quant_axis(ctx: &NodeCtx) -> Result<(Option<usize>, usize), LowerError> {
    let block = ctx.attr_int_or("block_size", 0)?;
    let Ok(block) = usize::try_from(block) else {
        return bad!("attribute 'block_size'={block} is negative");
    };
    let scale = &ctx.input_type(1)?.shape;
    if scale.iter().product::<usize>() == 1 && scale.len() <= 1 {
        return Ok((None, 0));
    }
    let rank = ctx.input_type(0)?.rank();
    let axis = norm_axis(ctx.attr_int_or("axis", 1)?, rank)?;
    match (scale.len(), block) {
        (1, 0) => Ok((Some(axis), 0)),
        (r, 0) => unsupported!("scale of rank {r} without attribute 'block_size'"),
        (r, _) if r != rank => {
            bad!("blocked quantization needs a scale of rank {rank}, got rank {r}")
        }
        (_, block) => Ok((Some(axis), block)),
    }
}

/// An ONNX element type code as a kiln type, for `output_dtype` attributes.
fn onnx_dtype(name: &str, code: i64) -> Result<DType, LowerError> {
    let code = i32::try_from(code)
        .map_err(|_| LowerError::Invalid(format!("attribute '{name}'={code}")))?;
    crate::tensor::dtype_from_onnx(code)
        .map_err(|t| LowerError::Unsupported(format!("attribute '{name}'={code} ({t})")))
}

/// ONNX QuantizeLinear. The output type is the zero point's, else `output_dtype` (opset 21),
/// else uint8. `saturate` only concerns float8 outputs, which kiln does not have.
fn quantize(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let inputs = inputs(ctx, 2, 3)?;
    let precision = ctx.attr_int_or("precision", 0)?;
    if precision != 0 && precision != 1 {
        return unsupported!("attribute 'precision'={precision} (only float)");
    }
    let attr = match ctx.attr_int_or("output_dtype", 0)? {
        0 => None,
        code => Some(onnx_dtype("output_dtype", code)?),
    };
    let dtype = match (ctx.has_input(2), attr) {
        (true, attr) => {
            let zp = ctx.input_type(2)?.dtype;
            if attr.is_some_and(|a| a != zp) {
                return bad!("attribute 'output_dtype' disagrees with the zero point type {zp}");
            }
            zp
        }
        (false, Some(a)) => a,
        (false, None) => DType::U8,
    };
    let (axis, block_size) = quant_axis(ctx)?;
    let op = Op::QuantizeLinear {
        axis,
        dtype,
        block_size,
    };
    Ok(Lowered::new(op, inputs))
}

/// ONNX DequantizeLinear. kiln's output is always f32; `output_dtype` (opset 23) may only
/// ask for that.
fn dequantize(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let inputs = inputs(ctx, 2, 3)?;
    match ctx.attr_int_or("output_dtype", 0)? {
        0 | 1 => {}
        code => return unsupported!("attribute 'output_dtype'={code} (only float)"),
    }
    let (axis, block_size) = quant_axis(ctx)?;
    let op = Op::DequantizeLinear { axis, block_size };
    Ok(Lowered::new(op, inputs))
}
