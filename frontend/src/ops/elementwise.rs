//! Lowering of the element-wise ONNX ops (Abs .. Where) to the IR's unary and binary families.
//!
//! Opset differences handled here: `consumed_inputs` (opset < 6, no effect) is ignored; binary
//! ops before opset 7 broadcast only with `broadcast=1` (and `axis`); Max/Min/Sum/Mean before
//! opset 8 do not broadcast; Clip bounds are attributes before opset 11 and constant inputs
//! after; Cast's `to` is a type name before opset 6; Dropout's test mode is `is_test` before
//! opset 7 and the `training_mode` input from opset 12, and its mask is bool only from opset 10.

use kiln_ir::{Activation, DType, Op, TensorType};

use super::{norm_axis, LowerError, Lowered, NodeCtx};
use crate::tensor::dtype_from_onnx;
use crate::{bad, unsupported};

/// Lowers one element-wise node.
pub fn lower(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    match ctx.op_type {
        "Abs" => unary(ctx, Op::Abs),
        "Neg" => unary(ctx, Op::Neg),
        "Sqrt" => unary(ctx, Op::Sqrt),
        "Reciprocal" => unary(ctx, Op::Reciprocal),
        "Exp" => unary(ctx, Op::Exp),
        "Log" => unary(ctx, Op::Log),
        "Erf" => unary(ctx, Op::Erf),
        "Floor" => unary(ctx, Op::Floor),
        "Ceil" => unary(ctx, Op::Ceil),
        "Round" => unary(ctx, Op::Round),
        "Relu" => unary(ctx, Op::Relu),
        "Sigmoid" => unary(ctx, Op::Sigmoid),
        "Tanh" => unary(ctx, Op::Tanh),
        "Softplus" => unary(ctx, Op::Softplus),
        "Not" => unary(ctx, Op::Not),
        "HardSwish" => unary(ctx, Op::HardSwish),
        "Identity" => unary(ctx, Op::Identity),
        "LeakyRelu" => {
            let alpha = ctx.attr_float_or("alpha", 0.01)?;
            unary(ctx, Op::LeakyRelu { alpha })
        }
        "Elu" => {
            let alpha = ctx.attr_float_or("alpha", 1.0)?;
            unary(ctx, Op::Elu { alpha })
        }
        "Selu" => {
            let alpha = ctx.attr_float_or("alpha", 1.673_263_2)?;
            let gamma = ctx.attr_float_or("gamma", 1.050_701)?;
            unary(ctx, Op::Selu { alpha, gamma })
        }
        "HardSigmoid" => {
            let alpha = ctx.attr_float_or("alpha", 0.2)?;
            let beta = ctx.attr_float_or("beta", 0.5)?;
            unary(ctx, Op::HardSigmoid { alpha, beta })
        }
        "Gelu" => gelu(ctx),
        "Clip" => clip(ctx),
        "Cast" => cast(ctx),
        "Dropout" => dropout(ctx),
        "Add" => binary(
            ctx,
            Op::Add {
                activation: Activation::None,
            },
        ),
        "Sub" => binary(ctx, Op::Sub),
        "Mul" => binary(ctx, Op::Mul),
        "Div" => binary(ctx, Op::Div),
        "Pow" => binary(ctx, Op::Pow),
        "Equal" => binary(ctx, Op::Equal),
        "Less" => binary(ctx, Op::Less),
        "Greater" => binary(ctx, Op::Greater),
        "And" => binary(ctx, Op::And),
        "Or" => binary(ctx, Op::Or),
        "PRelu" => {
            ctx.check_inputs(2, 2)?;
            required(ctx, &[0, 1])?;
            Ok(Lowered::new(Op::PRelu, vec![0, 1]))
        }
        "Max" => variadic(ctx, Op::Max),
        "Min" => variadic(ctx, Op::Min),
        "Sum" => variadic(ctx, Op::Sum),
        "Mean" => variadic(ctx, Op::Mean),
        "Where" => {
            ctx.check_inputs(3, 3)?;
            required(ctx, &[0, 1, 2])?;
            Ok(Lowered::new(Op::Where, vec![0, 1, 2]))
        }
        other => unsupported!("'{other}' is not an element-wise op"),
    }
}

/// Checks that the listed inputs are present (not omitted).
fn required(ctx: &NodeCtx, inputs: &[usize]) -> Result<(), LowerError> {
    for &i in inputs {
        ctx.input(i)?;
    }
    Ok(())
}

/// A one-input op whose attributes are already resolved.
fn unary(ctx: &NodeCtx, op: Op) -> Result<Lowered, LowerError> {
    ctx.check_inputs(1, 1)?;
    required(ctx, &[0])?;
    Ok(Lowered::new(op, vec![0]))
}

/// ONNX Gelu (opset 20).
fn gelu(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let tanh_approx = match ctx.attr_string_or("approximate", "none")?.as_str() {
        "none" => false,
        "tanh" => true,
        other => return unsupported!("attribute 'approximate'='{other}'"),
    };
    unary(ctx, Op::Gelu { tanh_approx })
}

/// ONNX Clip: bounds are attributes before opset 11 and optional constant inputs from 11 on.
fn clip(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let (min, max) = if ctx.opset < 11 {
        ctx.check_inputs(1, 1)?;
        (
            ctx.attr_float("min")?.map(f64::from),
            ctx.attr_float("max")?.map(f64::from),
        )
    } else {
        ctx.check_inputs(1, 3)?;
        (clip_bound(ctx, 1)?, clip_bound(ctx, 2)?)
    };
    required(ctx, &[0])?;
    Ok(Lowered::new(Op::Clip { min, max }, vec![0]))
}

/// The value of Clip's bound input `i`, which must be a scalar (or a one-element tensor).
fn clip_bound(ctx: &NodeCtx, i: usize) -> Result<Option<f64>, LowerError> {
    match ctx.const_floats(i)?.as_deref() {
        None => Ok(None),
        Some(&[v]) => Ok(Some(v)),
        Some(v) => bad!(
            "Clip bound input {i} must be a scalar, got {} elements",
            v.len()
        ),
    }
}

/// ONNX Cast: `to` is a `TensorProto.DataType` code, or (before opset 6) its name.
fn cast(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    let to = match ctx.attr_int("to") {
        Ok(Some(code)) => dtype_from_code(code)?,
        Ok(None) => return bad!("attribute 'to' is missing"),
        Err(e) => match ctx.attr_string("to") {
            Ok(Some(name)) => dtype_from_name(&name)?,
            _ => return Err(e),
        },
    };
    unary(ctx, Op::Cast { to })
}

fn dtype_from_code(code: i64) -> Result<DType, LowerError> {
    let Ok(code32) = i32::try_from(code) else {
        return bad!("attribute 'to'={code} is not a data type");
    };
    match dtype_from_onnx(code32) {
        Ok(dt) => Ok(dt),
        Err("unknown" | "undefined") => bad!("attribute 'to'={code} is not a data type"),
        Err(name) => unsupported!("attribute 'to'={name}: kiln has no {name} tensors"),
    }
}

/// The type names Cast-1 used for `to`.
fn dtype_from_name(name: &str) -> Result<DType, LowerError> {
    Ok(match name {
        "FLOAT" => DType::F32,
        "UINT8" => DType::U8,
        "INT8" => DType::I8,
        "INT16" => DType::I16,
        "INT32" => DType::I32,
        "INT64" => DType::I64,
        "BOOL" => DType::Bool,
        "FLOAT16" | "DOUBLE" | "STRING" | "UINT16" | "UINT32" | "UINT64" | "COMPLEX64"
        | "COMPLEX128" | "BFLOAT16" => {
            return unsupported!(
                "attribute 'to'='{name}': kiln has no {} tensors",
                name.to_lowercase()
            )
        }
        _ => return bad!("attribute 'to'='{name}' is not a data type"),
    })
}

/// ONNX Dropout in inference mode: the identity, with an all-true mask if asked for.
fn dropout(ctx: &NodeCtx) -> Result<Lowered, LowerError> {
    ctx.check_inputs(1, 3)?;
    if ctx.opset < 7 && ctx.attr_int_or("is_test", 0)? == 0 {
        return unsupported!("attribute 'is_test'=0: training-mode dropout is random");
    }
    if ctx.opset >= 12 && ctx.has_input(2) && !training_is_identity(ctx)? {
        return unsupported!(
            "input 'training_mode'=true with a nonzero ratio: training-mode dropout is random"
        );
    }
    let mask = ctx.num_outputs >= 2;
    if mask && ctx.opset < 10 {
        return unsupported!(
            "output 'mask' before opset 10 (it has the input's type, kiln's mask is bool)"
        );
    }
    // `ratio` (and the old `ratio` attribute) only matter in training mode.
    required(ctx, &[0])?;
    Ok(Lowered::new(Op::Dropout { mask }, vec![0]))
}

/// Whether Dropout's `training_mode` input (2) leaves the output equal to the input: it is false,
/// or `ratio` (input 1, default 0.5) is 0. Both must then be compile-time constants.
fn training_is_identity(ctx: &NodeCtx) -> Result<bool, LowerError> {
    let is_true = |i: usize| -> Result<bool, LowerError> {
        Ok(ctx.const_input(i)?.to_f64_vec().iter().any(|&v| v != 0.0))
    };
    if !is_true(2)? {
        return Ok(true);
    }
    Ok(ctx.has_input(1) && !is_true(1)?)
}

/// A two-input broadcasting op.
fn binary(ctx: &NodeCtx, op: Op) -> Result<Lowered, LowerError> {
    ctx.check_inputs(2, 2)?;
    let (a, b) = (ctx.input_type(0)?, ctx.input_type(1)?);
    if ctx.opset < 7 {
        legacy_broadcast(ctx, a, b)?;
    }
    Ok(Lowered::new(op, vec![0, 1]))
}

/// Before opset 7, binary ops broadcast only when `broadcast=1`, and then only B onto A, with
/// B's dimensions matching A's starting at `axis` (by default, A's trailing dimensions). That is
/// numpy broadcasting exactly when B lines up with A's trailing dimensions.
fn legacy_broadcast(ctx: &NodeCtx, a: &TensorType, b: &TensorType) -> Result<(), LowerError> {
    if ctx.attr_int_or("broadcast", 0)? == 0 {
        if a.shape != b.shape {
            return bad!(
                "input shapes {:?} and {:?} differ but attribute 'broadcast' is 0",
                a.shape,
                b.shape
            );
        }
        return Ok(());
    }
    if b.rank() > a.rank() {
        return bad!(
            "with broadcast=1, B (shape {:?}) must not have more dimensions than A (shape {:?})",
            b.shape,
            a.shape
        );
    }
    if let Some(axis) = ctx.attr_int("axis")? {
        let axis = norm_axis(axis, a.rank())?;
        if axis + b.rank() != a.rank() {
            return unsupported!(
                "attribute 'axis'={axis} with broadcast=1 aligns B (shape {:?}) with A (shape {:?}) away from A's trailing dimensions",
                b.shape,
                a.shape
            );
        }
    }
    let offset = a.rank() - b.rank();
    let fits = b
        .shape
        .iter()
        .zip(&a.shape[offset..])
        .all(|(&db, &da)| db == da || db == 1);
    if !fits {
        return bad!(
            "B (shape {:?}) does not broadcast to A (shape {:?})",
            b.shape,
            a.shape
        );
    }
    Ok(())
}

/// Max, Min, Sum, Mean: one or more inputs, broadcasting from opset 8.
fn variadic(ctx: &NodeCtx, op: Op) -> Result<Lowered, LowerError> {
    let n = ctx.num_inputs();
    if n == 0 {
        return bad!("needs at least one input");
    }
    let all: Vec<usize> = (0..n).collect();
    required(ctx, &all)?;
    if ctx.opset < 8 {
        let first = ctx.input_type(0)?;
        for i in 1..n {
            let t = ctx.input_type(i)?;
            if t.shape != first.shape {
                return bad!(
                    "inputs of shapes {:?} and {:?} differ; broadcasting needs opset 8",
                    first.shape,
                    t.shape
                );
            }
        }
    }
    Ok(Lowered::new(op, all))
}
