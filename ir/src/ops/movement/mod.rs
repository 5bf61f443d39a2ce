//! Data movement and shape ops (Reshape, Transpose, Concat, Split, Slice, Pad, Gather, Expand,
//! Tile, DepthToSpace, SpaceToDepth, Resize, Shape, ConstantOfShape, Range): shape inference
//! and reference evaluation.
//!
//! Most kernels first compute, for every output element, which input element it copies (or
//! that it is padding), then gather with one generic routine, so every dtype shares one path.
//!
//! This file dispatches `infer` and `eval` to one file per op family; `sources.rs` holds the
//! shared gather machinery. Resize, the largest, is a folder (`resize/`) whose per-axis samples
//! (`resize_axis_samples`) the backend's lowering reuses, re-exported here.

mod concat_split;
mod depth_space;
mod gather_expand_tile;
mod pad;
mod reshape_transpose;
mod resize;
mod shape_range;
mod slice;
mod sources;

use concat_split::{eval_concat, eval_split, infer_concat, infer_split};
use depth_space::{
    eval_depth_to_space, eval_space_to_depth, infer_depth_to_space, infer_space_to_depth,
};
use gather_expand_tile::{eval_gather, eval_tile, infer_expand, infer_gather, infer_tile};
use pad::{eval_pad, infer_pad};
use reshape_transpose::{infer_reshape, infer_transpose};
use resize::{eval_resize, infer_resize};
pub use resize::{resize_axis_samples, ResizeSample, ResizeSource};
use shape_range::{eval_range, filled, infer_range, infer_shape};
use slice::{eval_slice, infer_slice};
use sources::{take, transposed_sources};

use crate::error::OpError;
use crate::invalid;
use crate::op::Op;
use crate::ops::util::{broadcast_index_map, check_arity, make, out_type, wrong_family};
use crate::tensor::{Tensor, TensorData, TensorType};

pub fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, OpError> {
    let one = |ty: TensorType| Ok(vec![ty]);
    match op {
        Op::Reshape { shape } => one(infer_reshape(shape, inputs)?),
        Op::Transpose { perm } => one(infer_transpose(perm, inputs)?),
        Op::Concat { axis } => one(infer_concat(*axis, inputs)?),
        Op::Split { axis, sizes } => infer_split(*axis, sizes, inputs),
        Op::Slice {
            starts,
            ends,
            steps,
        } => one(infer_slice(starts, ends, steps, inputs)?),
        Op::Pad { pads, mode, .. } => one(infer_pad(pads, *mode, inputs)?),
        Op::Gather { axis } => one(infer_gather(*axis, inputs)?),
        Op::Expand { shape } => one(infer_expand(shape, inputs)?),
        Op::Tile { repeats } => one(infer_tile(repeats, inputs)?),
        Op::DepthToSpace { blocksize, .. } => one(infer_depth_to_space(*blocksize, inputs)?),
        Op::SpaceToDepth { blocksize, .. } => one(infer_space_to_depth(*blocksize, inputs)?),
        Op::Resize { .. } => one(infer_resize(op, inputs)?),
        Op::Shape { start, end } => one(infer_shape(*start, *end, inputs)?),
        Op::ConstantOfShape { shape, dtype, .. } => {
            check_arity("ConstantOfShape", inputs.len(), 0, 0)?;
            one(out_type(*dtype, shape.clone())?)
        }
        Op::Range {
            start,
            delta,
            count,
            dtype,
        } => one(infer_range(*start, *delta, *count, *dtype, inputs)?),
        _ => Err(wrong_family(op)),
    }
}

pub fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
    // Re-running inference validates shapes and attributes, so the kernels below can rely on
    // them being consistent.
    let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
    let type_refs: Vec<&TensorType> = types.iter().collect();
    let out_types = infer(op, &type_refs)?;
    let datas: Vec<TensorData> = match op {
        Op::Reshape { .. } => vec![first(op, inputs)?.data().clone()],
        Op::Transpose { perm } => {
            let x = first(op, inputs)?;
            vec![take(x.data(), &transposed_sources(x.shape(), perm))?]
        }
        Op::Concat { axis } => vec![eval_concat(*axis, inputs)?],
        Op::Split { axis, sizes } => eval_split(*axis, sizes, first(op, inputs)?)?,
        Op::Slice { starts, steps, .. } => {
            let x = first(op, inputs)?;
            let out = out_types.first().map(|t| t.shape.as_slice()).unwrap_or(&[]);
            vec![eval_slice(x, starts, steps, out)?]
        }
        Op::Pad { pads, mode, value } => vec![eval_pad(first(op, inputs)?, pads, *mode, *value)?],
        Op::Gather { axis } => vec![eval_gather(*axis, inputs)?],
        Op::Expand { shape } => {
            let x = first(op, inputs)?;
            vec![take(x.data(), &broadcast_index_map(x.shape(), shape))?]
        }
        Op::Tile { repeats } => vec![eval_tile(first(op, inputs)?, repeats)?],
        Op::DepthToSpace { blocksize, mode } => {
            vec![eval_depth_to_space(first(op, inputs)?, *blocksize, *mode)?]
        }
        Op::SpaceToDepth { blocksize, mode } => {
            vec![eval_space_to_depth(first(op, inputs)?, *blocksize, *mode)?]
        }
        Op::Resize { .. } => vec![eval_resize(first(op, inputs)?, op)?],
        Op::Shape { start, end } => {
            let x = first(op, inputs)?;
            let dims = x.shape().get(*start..*end).unwrap_or(&[]);
            vec![TensorData::I64(dims.iter().map(|&d| d as i64).collect())]
        }
        Op::ConstantOfShape {
            shape,
            value,
            dtype,
        } => {
            let n: usize = shape.iter().product();
            vec![filled(*dtype, n, *value)]
        }
        Op::Range {
            start,
            delta,
            count,
            dtype,
        } => vec![eval_range(*start, *delta, *count, *dtype)],
        _ => return Err(wrong_family(op)),
    };
    if datas.len() != out_types.len() {
        return invalid!(
            "internal: {} produced {} outputs, expected {}",
            op.name(),
            datas.len(),
            out_types.len()
        );
    }
    out_types
        .into_iter()
        .zip(datas)
        .map(|(ty, data)| make(Tensor::new(ty.shape, data)))
        .collect()
}

/// The single data input of a one-input op.
fn first<'a, T>(op: &Op, inputs: &[&'a T]) -> Result<&'a T, OpError> {
    match inputs.first() {
        Some(x) => Ok(x),
        None => invalid!("{} takes 1 input, got 0", op.name()),
    }
}

/// The only input of a one-input op, after checking the arity.
fn single<'a>(name: &str, inputs: &[&'a TensorType]) -> Result<&'a TensorType, OpError> {
    check_arity(name, inputs.len(), 1, 1)?;
    match inputs.first() {
        Some(x) => Ok(x),
        None => invalid!("{name} takes 1 input, got 0"),
    }
}

/// Tensors and a runner shared by the unit tests of every movement file.
#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod test_util {
    use super::eval;
    use crate::op::Op;
    use crate::tensor::Tensor;

    pub(super) fn f32s(shape: Vec<usize>, v: &[f32]) -> Tensor {
        Tensor::from_f32(shape, v.to_vec()).unwrap()
    }

    pub(super) fn run(op: Op, inputs: &[&Tensor]) -> Vec<Tensor> {
        eval(&op, inputs).unwrap()
    }

    pub(super) fn iota(shape: Vec<usize>) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_f32(shape, (0..n).map(|v| v as f32).collect()).unwrap()
    }
}
