//! Lowering of the quantized ONNX ops.
//!
//! QLinearConv, QLinearMatMul and onnxruntime's `com.microsoft` QLinearAdd, QLinearMul,
//! QLinearConcat, QLinearGlobalAveragePool, QLinearAveragePool, QLinearSigmoid and
//! QLinearLeakyRelu become their QDQ form: a DequantizeLinear of each integer input (per
//! tensor, or per axis where the op allows per-channel parameters), the float op, and a
//! QuantizeLinear to the output's scale and zero point. That is the graph onnxruntime's
//! `quantize_static` writes, which a lowering pass turns into integer ops; run as it is (at
//! -O0) it has the ONNX reference's semantics: float arithmetic, rounding half to even.
//! QLinearConv's int32 bias is dequantized with scale `x_scale * w_scale[m]` (multiplied in
//! f32, as onnxruntime's quantizer computes it) and zero point 0. The float Conv and
//! AveragePool are lowered by `nn.rs` from the node's own attributes, so `auto_pad` and the
//! other window attributes mean what they mean for the float ops.
//!
//! MatMulInteger and ConvInteger become QMatMul and QConv with i32 results. Their weights must
//! be constants: the weights' zero point is subtracted here (stored as i8 when every difference
//! fits, else i16), and the input's zero point enters the i32 bias as `-zp * sum(W')` per
//! output channel (per batch and column for MatMulInteger). ConvInteger keeps `x_zero_point` on
//! the op, so taps in the padding read it. MatMulInteger's per-row A zero points (which the
//! bias, one value per column, cannot hold) become a constant i32 Add after the QMatMul.

use kiln_ir::ops::util::{broadcast_index_map, broadcast_shapes};
use kiln_ir::{Activation, DType, Op, Tensor, TensorData, TensorType};

use super::{nn, norm_axis, Arg, InputInfo, LowerError, Lowered, NodeCtx, MS_DOMAIN};
use crate::{bad, unsupported};

pub fn lower(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    match (ctx.domain, ctx.op_type) {
        ("", "QLinearConv") => qlinear_conv(ctx),
        ("", "QLinearMatMul") => qlinear_matmul(ctx),
        ("", "ConvInteger") => conv_integer(ctx),
        ("", "MatMulInteger") => matmul_integer(ctx),
        (MS_DOMAIN, "QLinearAdd") => qlinear_binary(
            ctx,
            Op::Add {
                activation: Activation::None,
            },
        ),
        (MS_DOMAIN, "QLinearMul") => qlinear_binary(ctx, Op::Mul),
        (MS_DOMAIN, "QLinearSigmoid") => qlinear_unary(ctx, Op::Sigmoid),
        (MS_DOMAIN, "QLinearLeakyRelu") => {
            let alpha = ctx.attr_float_or("alpha", 0.01)?;
            qlinear_unary(ctx, Op::LeakyRelu { alpha })
        }
        (MS_DOMAIN, "QLinearConcat") => qlinear_concat(ctx),
        (MS_DOMAIN, "QLinearGlobalAveragePool") => qlinear_pool(ctx, true),
        (MS_DOMAIN, "QLinearAveragePool") => qlinear_pool(ctx, false),
        (_, other) => unsupported!("'{other}' is not a quantized op"),
    }
}

/// The ONNX input indices of a quantized tensor's scale and zero point (which may be omitted:
/// 0), and the tensor's name in the op's spec, for messages and labels.
#[derive(Clone, Debug)]
struct Params {
    name: String,
    scale: usize,
    zero_point: usize,
}

fn params(name: impl Into<String>, scale: usize, zero_point: usize) -> Params {
    Params {
        name: name.into(),
        scale,
        zero_point,
    }
}

/// Checks that the listed inputs are present (not omitted).
fn required(ctx: &NodeCtx, inputs: &[usize]) -> Result<(), LowerError> {
    for &i in inputs {
        ctx.input(i)?;
    }
    Ok(())
}

/// The element type of input `i`, which must be int8 or uint8.
fn q8(ctx: &NodeCtx, i: usize, name: &str) -> Result<DType, LowerError> {
    let dtype = ctx.input_type(i)?.dtype;
    match dtype {
        DType::I8 | DType::U8 => Ok(dtype),
        other => unsupported!(
            "{name} has element type {other}; kiln imports {} for int8 and uint8",
            ctx.op_type
        ),
    }
}

/// A float tensor of `shape`, as the float op sees its dequantized input.
fn float_input(shape: &[usize]) -> Option<InputInfo> {
    Some(InputInfo {
        ty: TensorType::new(DType::F32, shape.to_vec()),
        known: None,
    })
}

/// How a scale or zero point applies to the tensor it quantizes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Extent {
    /// One value for the whole tensor.
    Tensor,
    /// One value per index along the axis: shape `[len]`, or the tensor's rank with every
    /// other dimension 1.
    Axis,
}

/// The extent of a parameter of shape `p` for a tensor of shape `x`, where `axis` (if any) is
/// the axis the op allows per-axis parameters along.
fn extent(
    ctx: &NodeCtx,
    p: &[usize],
    x: &[usize],
    axis: Option<usize>,
    what: &str,
) -> Result<Extent, LowerError> {
    if p.iter().product::<usize>() == 1 {
        return Ok(Extent::Tensor);
    }
    if let Some(a) = axis {
        let len = x.get(a).copied().unwrap_or(0);
        let along = p == [len]
            || (p.len() == x.len() && p.iter().enumerate().all(|(d, &n)| n == 1 || d == a));
        if along && p.iter().product::<usize>() == len {
            return Ok(Extent::Axis);
        }
        return unsupported!(
            "{what} has shape {p:?}; kiln's {} takes a scalar (per tensor) or {len} values (one per index of axis {a} of shape {x:?})",
            ctx.op_type
        );
    }
    unsupported!(
        "{what} has shape {p:?}; kiln's {} takes a scalar here (per-tensor quantization)",
        ctx.op_type
    )
}

/// The scale and zero point of a tensor of shape `shape` and type `dtype`, as the inputs of a
/// DequantizeLinear or QuantizeLinear, and the axis when they are per axis. Parameters are
/// passed through when their shape already suits the IR op (a scalar or `[1]` per tensor,
/// `[len]` per axis); otherwise they must be constants, reshaped or broadcast here.
fn qparams(
    ctx: &NodeCtx,
    lw: &mut Lowered,
    p: &Params,
    dtype: DType,
    shape: &[usize],
    axis: Option<usize>,
) -> Result<(Vec<Arg>, Option<usize>), LowerError> {
    let scale_name = format!("{}_scale", p.name);
    let zp_name = format!("{}_zero_point", p.name);
    let scale_ty = ctx.input_type(p.scale)?;
    if scale_ty.dtype != DType::F32 {
        return unsupported!(
            "{scale_name} has element type {}; only float32 scales are supported",
            scale_ty.dtype
        );
    }
    let mut present = vec![(p.scale, scale_name, scale_ty.shape.clone())];
    if ctx.has_input(p.zero_point) {
        let zp = ctx.input_type(p.zero_point)?;
        if zp.dtype != dtype {
            return bad!(
                "{zp_name} has element type {} but {} has {dtype}",
                zp.dtype,
                p.name
            );
        }
        present.push((p.zero_point, zp_name, zp.shape.clone()));
    }
    let mut extents = Vec::with_capacity(present.len());
    for (_, what, s) in &present {
        extents.push(extent(ctx, s, shape, axis, what)?);
    }
    let per_axis = extents.contains(&Extent::Axis);
    let axis = axis.filter(|_| per_axis);
    let len = axis.and_then(|a| shape.get(a).copied());
    let mut args = Vec::with_capacity(present.len());
    for ((i, what, s), e) in present.into_iter().zip(extents) {
        let fits = match len {
            None => s.is_empty() || s == [1],
            Some(len) => s == [len],
        };
        if fits {
            args.push(Arg::Input(i));
            continue;
        }
        let value = ctx.const_input(i)?.clone();
        let value = match (len, e) {
            (None, _) => reshape(value, vec![], &what)?,
            (Some(len), Extent::Axis) => reshape(value, vec![len], &what)?,
            (Some(len), Extent::Tensor) => {
                let one = reshape(value, vec![1], &what)?;
                let expand = Op::Expand { shape: vec![len] };
                let expanded = kiln_ir::ops::eval(&expand, &[&one])
                    .map_err(|e| LowerError::Invalid(format!("{what}: {e}")))?;
                match expanded.into_iter().next() {
                    Some(t) => t,
                    None => return bad!("internal: Expand of {what} gave no result"),
                }
            }
        };
        args.push(lw.constant(what, value));
    }
    Ok((args, axis))
}

fn reshape(t: Tensor, shape: Vec<usize>, what: &str) -> Result<Tensor, LowerError> {
    t.reshaped(shape)
        .map_err(|e| LowerError::Invalid(format!("{what}: {e}")))
}

/// A DequantizeLinear of `x` (a tensor of `shape` and type `dtype`).
fn dequantize(
    ctx: &NodeCtx,
    lw: &mut Lowered,
    x: Arg,
    p: &Params,
    dtype: DType,
    shape: &[usize],
    axis: Option<usize>,
) -> Result<Arg, LowerError> {
    let (params, axis) = qparams(ctx, lw, p, dtype, shape, axis)?;
    let mut args = vec![x];
    args.extend(params);
    Ok(lw.push(
        format!("dequantize_{}", p.name),
        Op::DequantizeLinear {
            axis,
            block_size: 0,
        },
        args,
    ))
}

/// A QuantizeLinear of `y` to the output's scale and zero point (per tensor). The output type
/// is the zero point's, or `default` when it is omitted.
fn quantize(
    ctx: &NodeCtx,
    lw: &mut Lowered,
    y: Arg,
    p: &Params,
    default: DType,
) -> Result<Arg, LowerError> {
    let dtype = if ctx.has_input(p.zero_point) {
        q8(ctx, p.zero_point, &format!("{}_zero_point", p.name))?
    } else {
        default
    };
    let (params, axis) = qparams(ctx, lw, p, dtype, &[], None)?;
    let mut args = vec![y];
    args.extend(params);
    Ok(lw.push(
        format!("quantize_{}", p.name),
        Op::QuantizeLinear {
            axis,
            dtype,
            block_size: 0,
        },
        args,
    ))
}

/// The op a one-node lowering produced, for a float op lowered through its own family file.
fn single_op(lowered: Lowered) -> Result<Op, LowerError> {
    match lowered.into_single() {
        Some((op, _)) => Ok(op),
        None => bad!("internal: the float op did not lower to one node"),
    }
}

/// ONNX QLinearConv: DequantizeLinear of x (per tensor), of w (per output channel when its
/// scale or zero point has M entries) and of the int32 bias, Conv, QuantizeLinear of y.
fn qlinear_conv(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let px = params("x", 1, 2);
    let pw = params("w", 4, 5);
    let py = params("y", 6, 7);
    ctx.check_inputs(8, 9)?;
    required(ctx, &[0, 1, 3, 4, 6])?;
    let x_shape = ctx.input_type(0)?.shape.clone();
    let w_shape = ctx.input_type(3)?.shape.clone();
    let (xd, wd) = (q8(ctx, 0, "x")?, q8(ctx, 3, "w")?);
    let Some(&m) = w_shape.first() else {
        return bad!("w must have rank 3 or more, got shape {w_shape:?}");
    };
    let conv = nn::lower(&ctx.as_op("Conv", vec![float_input(&x_shape), float_input(&w_shape)]))?;
    let conv = single_op(conv)?;
    let mut lw = Lowered::empty();
    let x = dequantize(ctx, &mut lw, Arg::Input(0), &px, xd, &x_shape, None)?;
    let w = dequantize(ctx, &mut lw, Arg::Input(3), &pw, wd, &w_shape, Some(0))?;
    let mut args = vec![x, w];
    if ctx.has_input(8) {
        args.push(conv_bias(ctx, &mut lw, m)?);
    }
    let y = lw.push("conv", conv, args);
    quantize(ctx, &mut lw, y, &py, xd)?;
    Ok(lw)
}

/// QLinearConv's int32 bias, dequantized with scale `x_scale * w_scale[m]` and zero point 0.
/// Both scales must be constants.
fn conv_bias(ctx: &NodeCtx, lw: &mut Lowered, m: usize) -> Result<Arg, LowerError> {
    let b = ctx.input_type(8)?;
    if b.dtype != DType::I32 {
        return unsupported!(
            "B has element type {}; QLinearConv's bias is int32",
            b.dtype
        );
    }
    if b.shape != [m] {
        return bad!("B has shape {:?}, expected [{m}]", b.shape);
    }
    let x_scale = ctx.const_input(1)?;
    let w_scale = ctx.const_input(4)?;
    let (Some(x_scale), Some(w_scale)) = (x_scale.as_f32(), w_scale.as_f32()) else {
        return bad!("internal: scales are not float");
    };
    let Some(&xs) = x_scale.first() else {
        return bad!("x_scale is empty");
    };
    let scales: Vec<f32> = w_scale.iter().map(|&ws| xs * ws).collect();
    let (shape, axis) = if scales.len() == 1 {
        (vec![], None)
    } else {
        (vec![m], Some(0))
    };
    let scale = Tensor::from_f32(shape, scales).map_err(|e| LowerError::Invalid(e.to_string()))?;
    let scale = lw.constant("B_scale", scale);
    Ok(lw.push(
        "dequantize_B",
        Op::DequantizeLinear {
            axis,
            block_size: 0,
        },
        vec![Arg::Input(8), scale],
    ))
}

/// ONNX QLinearMatMul: DequantizeLinear of a (per tensor or per row) and b (per tensor or per
/// column), MatMul, QuantizeLinear of y (per tensor).
fn qlinear_matmul(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let pa = params("a", 1, 2);
    let pb = params("b", 4, 5);
    let py = params("y", 6, 7);
    ctx.check_inputs(8, 8)?;
    required(ctx, &[0, 1, 3, 4, 6])?;
    let a_shape = ctx.input_type(0)?.shape.clone();
    let b_shape = ctx.input_type(3)?.shape.clone();
    let (ad, bd) = (q8(ctx, 0, "a")?, q8(ctx, 3, "b")?);
    let rows = a_shape.len().checked_sub(2);
    let columns = b_shape.len().checked_sub(1).filter(|_| b_shape.len() >= 2);
    let mut lw = Lowered::empty();
    let a = dequantize(ctx, &mut lw, Arg::Input(0), &pa, ad, &a_shape, rows)?;
    let b = dequantize(ctx, &mut lw, Arg::Input(3), &pb, bd, &b_shape, columns)?;
    let y = lw.push(
        "matmul",
        Op::MatMul {
            activation: Activation::None,
            a_perm: Vec::new(),
            b_perm: Vec::new(),
        },
        vec![a, b],
    );
    quantize(ctx, &mut lw, y, &py, ad)?;
    Ok(lw)
}

/// `com.microsoft` QLinearAdd and QLinearMul: DequantizeLinear of A and B, the broadcasting
/// float op, QuantizeLinear of C.
fn qlinear_binary(ctx: &NodeCtx, op: Op) -> Result<Lowered, LowerError> {
    let pa = params("A", 1, 2);
    let pb = params("B", 4, 5);
    let pc = params("C", 6, 7);
    ctx.check_inputs(7, 8)?;
    required(ctx, &[0, 1, 3, 4, 6])?;
    let (ad, bd) = (q8(ctx, 0, "A")?, q8(ctx, 3, "B")?);
    if ad != bd {
        return bad!("A has element type {ad} but B has {bd}");
    }
    let a_shape = ctx.input_type(0)?.shape.clone();
    let b_shape = ctx.input_type(3)?.shape.clone();
    let mut lw = Lowered::empty();
    let a = dequantize(ctx, &mut lw, Arg::Input(0), &pa, ad, &a_shape, None)?;
    let b = dequantize(ctx, &mut lw, Arg::Input(3), &pb, bd, &b_shape, None)?;
    let label = op.dump_name();
    let y = lw.push(label, op, vec![a, b]);
    quantize(ctx, &mut lw, y, &pc, ad)?;
    Ok(lw)
}

/// `com.microsoft` QLinearSigmoid and QLinearLeakyRelu: DequantizeLinear of X, the float op,
/// QuantizeLinear of Y.
fn qlinear_unary(ctx: &NodeCtx, op: Op) -> Result<Lowered, LowerError> {
    let px = params("X", 1, 2);
    let py = params("Y", 3, 4);
    ctx.check_inputs(4, 5)?;
    required(ctx, &[0, 1, 3])?;
    let xd = q8(ctx, 0, "X")?;
    let shape = ctx.input_type(0)?.shape.clone();
    let mut lw = Lowered::empty();
    let x = dequantize(ctx, &mut lw, Arg::Input(0), &px, xd, &shape, None)?;
    let label = op.dump_name();
    let y = lw.push(label, op, vec![x]);
    quantize(ctx, &mut lw, y, &py, xd)?;
    Ok(lw)
}

/// `com.microsoft` QLinearConcat: inputs `Y_scale, Y_zero_point`, then a `(tensor, scale,
/// zero point)` triple per tensor. DequantizeLinear of each tensor, Concat, QuantizeLinear.
fn qlinear_concat(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let py = params("Y", 0, 1);
    let n = ctx.num_inputs();
    if n < 5 || !(n - 2).is_multiple_of(3) {
        return bad!(
            "expects Y_scale, Y_zero_point and one (tensor, scale, zero point) triple per input, got {n} inputs"
        );
    }
    required(ctx, &[0, 1])?;
    let yd = q8(ctx, 1, "Y_zero_point")?;
    let first = ctx.input_type(2)?.shape.clone();
    let Some(axis) = ctx.attr_int("axis")? else {
        return bad!("attribute 'axis' is missing");
    };
    let axis = norm_axis(axis, first.len())?;
    let mut lw = Lowered::empty();
    let mut parts = Vec::with_capacity((n - 2) / 3);
    for t in 0..(n - 2) / 3 {
        let x = 2 + 3 * t;
        required(ctx, &[x, x + 1])?;
        let dtype = q8(ctx, x, &format!("input {t}"))?;
        let shape = ctx.input_type(x)?.shape.clone();
        let p = params(format!("input{t}"), x + 1, x + 2);
        parts.push(dequantize(
            ctx,
            &mut lw,
            Arg::Input(x),
            &p,
            dtype,
            &shape,
            None,
        )?);
    }
    let y = lw.push("concat", Op::Concat { axis }, parts);
    quantize(ctx, &mut lw, y, &py, yd)?;
    Ok(lw)
}

/// `com.microsoft` QLinearGlobalAveragePool and QLinearAveragePool: DequantizeLinear of X, the
/// float pool, QuantizeLinear of Y. With `channels_last` the integer tensors are transposed
/// to channels-first around that, so the QDQ core is the one every pool has.
fn qlinear_pool(ctx: &NodeCtx, global: bool) -> Result<Lowered, LowerError> {
    let px = params("x", 1, 2);
    let py = params("y", 3, 4);
    ctx.check_inputs(4, 5)?;
    required(ctx, &[0, 1, 3])?;
    let xd = q8(ctx, 0, "X")?;
    let shape = ctx.input_type(0)?.shape.clone();
    let rank = shape.len();
    if rank < 3 {
        return bad!("X must have rank 3 or more (N, C, spatial..), got shape {shape:?}");
    }
    let channels_last = match ctx.attr_int_or("channels_last", 0)? {
        0 => false,
        1 => true,
        other => return bad!("attribute 'channels_last'={other} is not 0 or 1"),
    };
    let mut lw = Lowered::empty();
    let (x, nchw) = if channels_last {
        let perm: Vec<usize> = [0, rank - 1].into_iter().chain(1..rank - 1).collect();
        let nchw: Vec<usize> = perm.iter().map(|&d| shape[d]).collect();
        let x = lw.push(
            "to_channels_first",
            Op::Transpose { perm },
            vec![Arg::Input(0)],
        );
        (x, nchw)
    } else {
        (Arg::Input(0), shape)
    };
    let pool = if global {
        Op::GlobalAveragePool
    } else {
        single_op(nn::lower(
            &ctx.as_op("AveragePool", vec![float_input(&nchw)]),
        )?)?
    };
    let x = dequantize(ctx, &mut lw, x, &px, xd, &nchw, None)?;
    let label = pool.dump_name();
    let y = lw.push(label, pool, vec![x]);
    let y = quantize(ctx, &mut lw, y, &py, xd)?;
    if channels_last {
        let perm: Vec<usize> = [0].into_iter().chain(2..rank).chain([1]).collect();
        lw.push("to_channels_last", Op::Transpose { perm }, vec![y]);
    }
    Ok(lw)
}

/// A constant zero point.
struct ZeroPoint {
    values: Vec<i64>,
    shape: Vec<usize>,
}

/// The constant zero point at input `i`, checked to have type `dtype`; `None` when it is
/// omitted.
fn const_zero_point(
    ctx: &NodeCtx,
    i: usize,
    dtype: DType,
    name: &str,
) -> Result<Option<ZeroPoint>, LowerError> {
    if !ctx.has_input(i) {
        return Ok(None);
    }
    let t = ctx.const_input(i)?;
    if t.dtype() != dtype {
        return bad!(
            "{name} has element type {} but its tensor has {dtype}",
            t.dtype()
        );
    }
    let Some(values) = t.to_i64_vec() else {
        return bad!("{name} is not an integer tensor");
    };
    Ok(Some(ZeroPoint {
        values,
        shape: t.shape().to_vec(),
    }))
}

/// `values` of shape `from` broadcast (numpy rules, one way) to `to`.
fn broadcast_to(
    values: &[i64],
    from: &[usize],
    to: &[usize],
    what: &str,
) -> Result<Vec<i64>, LowerError> {
    match broadcast_shapes(from, to) {
        Ok(s) if s == to => Ok(broadcast_index_map(from, to)
            .into_iter()
            .map(|i| values.get(i).copied().unwrap_or(0))
            .collect()),
        _ => bad!("{what} of shape {from:?} does not broadcast to {to:?}"),
    }
}

/// Weights with their zero point subtracted (each in -255..=255): i8 when every value fits,
/// else i16.
fn narrow_weights(shape: Vec<usize>, values: &[i64]) -> Result<Tensor, LowerError> {
    let fits_i8 = values.iter().all(|&v| i8::try_from(v).is_ok());
    let data = if fits_i8 {
        TensorData::I8(values.iter().map(|&v| v as i8).collect())
    } else {
        TensorData::I16(values.iter().map(|&v| v as i16).collect())
    };
    Tensor::new(shape, data).map_err(|e| LowerError::Invalid(e.to_string()))
}

/// An i32 constant of bias or correction terms computed in i64.
fn i32_tensor(shape: Vec<usize>, values: &[i64], what: &str) -> Result<Tensor, LowerError> {
    let narrowed: Option<Vec<i32>> = values.iter().map(|&v| i32::try_from(v).ok()).collect();
    let Some(narrowed) = narrowed else {
        return unsupported!("the {what} does not fit in int32");
    };
    Tensor::new(shape, TensorData::I32(narrowed)).map_err(|e| LowerError::Invalid(e.to_string()))
}

/// ONNX ConvInteger: QConv with i32 output. W must be a constant; `x_zero_point` (a scalar)
/// stays on the op for the padding taps and enters the bias as `-x_zp * sum(W'[m])`.
fn conv_integer(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    ctx.check_inputs(2, 4)?;
    required(ctx, &[0, 1])?;
    let (xd, wd) = (q8(ctx, 0, "x")?, q8(ctx, 1, "w")?);
    let x_shape = ctx.input_type(0)?.shape.clone();
    let w = ctx.const_input(1)?;
    let w_shape = w.shape().to_vec();
    let Some(&m) = w_shape.first() else {
        return bad!("w must have rank 3 or more, got shape {w_shape:?}");
    };
    let x_zp = match const_zero_point(ctx, 2, xd, "x_zero_point")? {
        None => 0,
        Some(z) if z.values.len() == 1 => z.values[0],
        Some(z) => {
            return unsupported!(
                "x_zero_point has shape {:?}; kiln's ConvInteger takes a scalar (per-tensor) input zero point",
                z.shape
            )
        }
    };
    let w_zp = match const_zero_point(ctx, 3, wd, "w_zero_point")? {
        None => vec![0],
        Some(z) if z.values.len() == 1 || z.values.len() == m => z.values,
        Some(z) => {
            return bad!(
            "w_zero_point has shape {:?}; expected a scalar or {m} values (one per output channel)",
            z.shape
        )
        }
    };
    let conv = nn::lower(&ctx.as_op("Conv", vec![float_input(&x_shape), float_input(&w_shape)]))?;
    let Op::Conv {
        kernel_shape,
        strides,
        dilations,
        pads,
        group,
        ..
    } = single_op(conv)?
    else {
        return bad!("internal: Conv did not lower to Conv");
    };
    let Some(w_values) = w.to_i64_vec() else {
        return bad!("w is not an integer tensor");
    };
    let per_m = w_values.len().checked_div(m).unwrap_or(0);
    let weights: Vec<i64> = w_values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = if w_zp.len() == 1 { 0 } else { i / per_m.max(1) };
            v - w_zp.get(c).copied().unwrap_or(0)
        })
        .collect();
    let bias: Vec<i64> = (0..m)
        .map(|c| -x_zp * weights[c * per_m..(c + 1) * per_m].iter().sum::<i64>())
        .collect();
    let mut lw = Lowered::empty();
    let w = lw.constant("w", narrow_weights(w_shape, &weights)?);
    let bias = lw.constant(
        "bias",
        i32_tensor(vec![m], &bias, "zero-point term of the bias")?,
    );
    let x_zero_point = i32::try_from(x_zp)
        .map_err(|_| LowerError::Invalid(format!("x_zero_point {x_zp} is out of range")))?;
    lw.push(
        "conv",
        Op::QConv {
            kernel_shape,
            strides,
            dilations,
            pads,
            group,
            x_zero_point,
            output: None,
            rounding: Default::default(),
        },
        vec![Arg::Input(0), w, bias],
    );
    Ok(lw)
}

/// ONNX MatMulInteger: QMatMul with i32 output, with numpy's promotion of 1-D operands (a
/// Reshape of A before, one of the result after). B must be a constant; its zero point
/// (scalar or per column) is subtracted here. A's zero point (a constant) enters the bias as
/// `-a_zp * sum_k B'[.., k, n]`, or, when it differs between rows, a constant i32 Add of
/// `-a_zp[.., m] * sum_k B'[.., k, n]` after the product.
fn matmul_integer(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    ctx.check_inputs(2, 4)?;
    required(ctx, &[0, 1])?;
    let (ad, bd) = (q8(ctx, 0, "A")?, q8(ctx, 1, "B")?);
    let a_shape = ctx.input_type(0)?.shape.clone();
    let b = ctx.const_input(1)?;
    let b_shape = b.shape().to_vec();
    if a_shape.is_empty() || b_shape.is_empty() {
        return bad!("operands must have rank 1 or more, got shapes {a_shape:?} and {b_shape:?}");
    }
    let Some(b_values) = b.to_i64_vec() else {
        return bad!("B is not an integer tensor");
    };
    let b_zp = match const_zero_point(ctx, 3, bd, "b_zero_point")? {
        None => vec![0; b_values.len()],
        Some(z) if b_shape.len() == 1 && z.values.len() != 1 => {
            return bad!(
                "b_zero_point has shape {:?}, but a 1-D B has one column",
                z.shape
            )
        }
        Some(z) => broadcast_to(&z.values, &z.shape, &b_shape, "b_zero_point")?,
    };
    let weights: Vec<i64> = b_values.iter().zip(&b_zp).map(|(b, z)| b - z).collect();
    // numpy promotes a 1-D A to one row and a 1-D B to one column.
    let a2 = match a_shape.as_slice() {
        [k] => vec![1, *k],
        s => s.to_vec(),
    };
    let b2 = match b_shape.as_slice() {
        [k] => vec![*k, 1],
        s => s.to_vec(),
    };
    let (rb, ra) = (b2.len(), a2.len());
    let (m, k, n) = (a2[ra - 2], b2[rb - 2], b2[rb - 1]);
    if a2[ra - 1] != k {
        return bad!("A of shape {a_shape:?} and B of shape {b_shape:?} do not multiply");
    }
    let (a_batch, b_batch) = (&a2[..ra - 2], &b2[..rb - 2]);
    let Ok(out_batch) = broadcast_shapes(a_batch, b_batch) else {
        return bad!("the batch dimensions of A {a_shape:?} and B {b_shape:?} do not broadcast");
    };
    // Column sums of B', one row of N per batch of B.
    let b_batches: usize = b_batch.iter().product();
    let mut column_sums = vec![0i64; b_batches * n];
    for (i, &w) in weights.iter().enumerate() {
        let (batch, j) = (i / (k * n).max(1), i % n.max(1));
        column_sums[batch * n + j] += w;
    }
    // A's zero point: one value, or one per row of A.
    let mut rows_shape = a2.clone();
    rows_shape[ra - 1] = 1;
    let a_rows = match const_zero_point(ctx, 2, ad, "a_zero_point")? {
        None => vec![0],
        Some(z) if z.values.windows(2).all(|p| p[0] == p[1]) => {
            z.values.first().map_or(vec![0], |&v| vec![v])
        }
        Some(z) if a_shape.len() == 1 => {
            return bad!(
                "a_zero_point has shape {:?}, but a 1-D A has one row",
                z.shape
            )
        }
        Some(z) => {
            // A 1-D zero point holds one value per row ([M] stands for [M, 1]).
            let s = match z.shape.as_slice() {
                [rows] => vec![*rows, 1],
                s => s.to_vec(),
            };
            broadcast_to(&z.values, &s, &rows_shape, "a_zero_point")?
        }
    };
    let a_zp = if a_rows.len() == 1 { a_rows[0] } else { 0 };
    let bias: Vec<i64> = column_sums.iter().map(|&s| -a_zp * s).collect();
    let mut bias_shape = b_batch.to_vec();
    bias_shape.push(n);

    let mut lw = Lowered::empty();
    let a = if a_shape.len() == 1 {
        lw.push(
            "a_as_row",
            Op::Reshape { shape: a2.clone() },
            vec![Arg::Input(0)],
        )
    } else {
        Arg::Input(0)
    };
    let w = lw.constant("B", narrow_weights(b2.clone(), &weights)?);
    let bias = lw.constant(
        "bias",
        i32_tensor(bias_shape, &bias, "zero-point term of the bias")?,
    );
    let mut y = lw.push(
        "matmul",
        Op::QMatMul {
            output: None,
            rounding: Default::default(),
        },
        vec![a, w, bias],
    );
    let mut out2 = out_batch.clone();
    out2.extend([m, n]);
    if a_rows.len() > 1 {
        // -a_zp[.., m] * colsum[.., n] for every output element.
        let a_map = broadcast_index_map(a_batch, &out_batch);
        let b_map = broadcast_index_map(b_batch, &out_batch);
        let mut correction = Vec::with_capacity(out2.iter().product());
        for (&ab, &bb) in a_map.iter().zip(&b_map) {
            for i in 0..m {
                for j in 0..n {
                    correction.push(-a_rows[ab * m + i] * column_sums[bb * n + j]);
                }
            }
        }
        let correction = lw.constant(
            "a_zero_point_term",
            i32_tensor(out2.clone(), &correction, "zero-point term of A's rows")?,
        );
        y = lw.push(
            "add_a_zero_point_term",
            Op::Add {
                activation: Activation::None,
            },
            vec![y, correction],
        );
    }
    let mut out = out_batch;
    if a_shape.len() > 1 {
        out.push(m);
    }
    if b_shape.len() > 1 {
        out.push(n);
    }
    if out != out2 {
        lw.push("y", Op::Reshape { shape: out }, vec![y]);
    }
    Ok(lw)
}
