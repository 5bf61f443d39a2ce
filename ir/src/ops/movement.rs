//! Data movement and shape ops (Reshape, Transpose, Concat, Split, Slice, Pad, Gather, Expand,
//! Tile, DepthToSpace, SpaceToDepth, Resize, Shape, ConstantOfShape, Range): shape inference
//! and reference evaluation.
//!
//! Most kernels first compute, for every output element, which input element it copies (or
//! that it is padding), then gather with one generic routine, so every dtype shares one path.

use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::op::{CoordTransform, DepthToSpaceMode, NearestMode, Op, PadMode, ResizeMode};
use crate::ops::util::{
    broadcast_index_map, broadcast_shapes, check_arity, make, out_type, wrong_family,
};
use crate::tensor::{strides, Tensor, TensorData, TensorType};

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

// ---------------------------------------------------------------------------------------------
// Shared helpers

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

fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Element types, with the conversions padding values and generated sequences need.
trait Elem: Copy {
    /// Rounds / saturates like Rust's `as` (NaN becomes 0; bool is "not zero").
    fn from_f64(v: f64) -> Self;
    /// Wraps like a C cast.
    fn from_i64(v: i64) -> Self;
}

macro_rules! elem_numeric {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn from_i64(v: i64) -> Self {
                v as $t
            }
        }
    )*};
}
elem_numeric!(f32, i8, u8, i16, i32, i64);

impl Elem for bool {
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    fn from_i64(v: i64) -> Self {
        v != 0
    }
}

/// Applies a generic expression to the vector inside a `TensorData`, keeping the variant.
macro_rules! map_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::F32($v) => TensorData::F32($body),
            TensorData::I8($v) => TensorData::I8($body),
            TensorData::U8($v) => TensorData::U8($body),
            TensorData::I16($v) => TensorData::I16($body),
            TensorData::I32($v) => TensorData::I32($body),
            TensorData::I64($v) => TensorData::I64($body),
            TensorData::Bool($v) => TensorData::Bool($body),
        }
    };
}

/// Builds a `TensorData` of `dtype` from an expression generic in the element type `$t`.
macro_rules! build_data {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $t = f32;
                TensorData::F32($body)
            }
            DType::I8 => {
                type $t = i8;
                TensorData::I8($body)
            }
            DType::U8 => {
                type $t = u8;
                TensorData::U8($body)
            }
            DType::I16 => {
                type $t = i16;
                TensorData::I16($body)
            }
            DType::I32 => {
                type $t = i32;
                TensorData::I32($body)
            }
            DType::I64 => {
                type $t = i64;
                TensorData::I64($body)
            }
            DType::Bool => {
                type $t = bool;
                TensorData::Bool($body)
            }
        }
    };
}

fn out_of_range(i: usize) -> OpError {
    OpError::Invalid(format!("internal: source index {i} is out of range"))
}

fn take_vec<T: Copy>(v: &[T], src: &[usize]) -> Result<Vec<T>, OpError> {
    src.iter()
        .map(|&i| v.get(i).copied().ok_or_else(|| out_of_range(i)))
        .collect()
}

fn take_or_fill_vec<T: Elem>(v: &[T], src: &[Option<usize>], fill: f64) -> Result<Vec<T>, OpError> {
    let fill = T::from_f64(fill);
    src.iter()
        .map(|s| match *s {
            Some(i) => v.get(i).copied().ok_or_else(|| out_of_range(i)),
            None => Ok(fill),
        })
        .collect()
}

/// Output element `i` is input element `src[i]`.
fn take(data: &TensorData, src: &[usize]) -> Result<TensorData, OpError> {
    Ok(map_data!(data, v => take_vec(v, src)?))
}

/// Like [`take`], with `None` meaning "the constant `fill`, cast to the element type".
fn take_or_fill(
    data: &TensorData,
    src: &[Option<usize>],
    fill: f64,
) -> Result<TensorData, OpError> {
    Ok(map_data!(data, v => take_or_fill_vec(v, src, fill)?))
}

/// Calls `f` with every multi-index of `shape` in row-major order.
fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    if shape.contains(&0) {
        return;
    }
    let mut idx = vec![0usize; shape.len()];
    loop {
        f(&idx);
        let mut d = shape.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// Source indices for an output whose coordinate `o` along dimension `d` reads input
/// coordinate `tables[d][o]` (`None`: padding). The output shape is the table lengths.
fn table_sources(in_shape: &[usize], tables: &[Vec<Option<usize>>]) -> Vec<Option<usize>> {
    let in_strides = strides(in_shape);
    let out_shape: Vec<usize> = tables.iter().map(Vec::len).collect();
    let mut src = Vec::with_capacity(checked_numel(&out_shape).unwrap_or(0));
    for_each_index(&out_shape, |idx| {
        let mut flat = Some(0usize);
        for ((table, &o), &st) in tables.iter().zip(idx).zip(&in_strides) {
            flat = match (flat, table.get(o).copied().flatten()) {
                (Some(f), Some(i)) => Some(f + i * st),
                _ => None,
            };
        }
        src.push(flat);
    });
    src
}

/// Source indices of the transpose of a tensor of `in_shape` by `perm`.
fn transposed_sources(in_shape: &[usize], perm: &[usize]) -> Vec<usize> {
    let in_strides = strides(in_shape);
    let out_shape: Vec<usize> = perm
        .iter()
        .map(|&p| in_shape.get(p).copied().unwrap_or(0))
        .collect();
    let st: Vec<usize> = perm
        .iter()
        .map(|&p| in_strides.get(p).copied().unwrap_or(0))
        .collect();
    let mut src = Vec::with_capacity(checked_numel(&out_shape).unwrap_or(0));
    for_each_index(&out_shape, |idx| {
        src.push(idx.iter().zip(&st).map(|(i, s)| i * s).sum())
    });
    src
}

/// A buffer of `n` copies of `value` cast to `dtype`.
fn filled(dtype: DType, n: usize, value: f64) -> TensorData {
    build_data!(dtype, T => vec![T::from_f64(value); n])
}

// ---------------------------------------------------------------------------------------------
// Reshape, Transpose

/// ONNX Reshape (and Flatten, Squeeze, Unsqueeze): `shape` is the full output shape.
fn infer_reshape(shape: &[usize], inputs: &[&TensorType]) -> Result<TensorType, OpError> {
    let x = single("Reshape", inputs)?;
    let out = out_type(x.dtype, shape.to_vec())?;
    if out.numel() != x.numel() {
        return invalid!("cannot reshape {x} ({} elements) to {shape:?}", x.numel());
    }
    Ok(out)
}

/// ONNX Transpose.
fn infer_transpose(perm: &[usize], inputs: &[&TensorType]) -> Result<TensorType, OpError> {
    let x = single("Transpose", inputs)?;
    let mut sorted = perm.to_vec();
    sorted.sort_unstable();
    if perm.len() != x.rank() || sorted.iter().enumerate().any(|(i, &p)| i != p) {
        return invalid!(
            "perm {perm:?} is not a permutation of the {} axes of {x}",
            x.rank()
        );
    }
    out_type(x.dtype, perm.iter().map(|&p| x.shape[p]).collect())
}

// ---------------------------------------------------------------------------------------------
// Concat, Split

/// ONNX Concat.
fn infer_concat(axis: usize, inputs: &[&TensorType]) -> Result<TensorType, OpError> {
    let Some(x) = inputs.first() else {
        return invalid!("Concat takes at least 1 input");
    };
    if axis >= x.rank() {
        return invalid!("Concat: axis {axis} is out of range for rank {}", x.rank());
    }
    let mut total = 0usize;
    for t in inputs {
        let same_dims = t.rank() == x.rank()
            && t.shape
                .iter()
                .zip(&x.shape)
                .enumerate()
                .all(|(d, (a, b))| d == axis || a == b);
        if t.dtype != x.dtype || !same_dims {
            return invalid!("Concat along axis {axis}: {t} does not match {x}");
        }
        total = total
            .checked_add(t.shape[axis])
            .ok_or_else(|| OpError::Invalid("Concat: output is too large".into()))?;
    }
    let mut shape = x.shape.clone();
    shape[axis] = total;
    out_type(x.dtype, shape)
}

/// Appends the element vectors of same-typed tensors.
fn concat_data(parts: &[&TensorData]) -> Result<TensorData, OpError> {
    macro_rules! join {
        ($var:ident) => {{
            let mut out = Vec::new();
            for p in parts {
                match p {
                    TensorData::$var(v) => out.extend_from_slice(v),
                    other => return invalid!("Concat: mixed element types ({})", other.dtype()),
                }
            }
            TensorData::$var(out)
        }};
    }
    Ok(match parts.first().map(|p| p.dtype()) {
        None | Some(DType::F32) => join!(F32),
        Some(DType::I8) => join!(I8),
        Some(DType::U8) => join!(U8),
        Some(DType::I16) => join!(I16),
        Some(DType::I32) => join!(I32),
        Some(DType::I64) => join!(I64),
        Some(DType::Bool) => join!(Bool),
    })
}

fn eval_concat(axis: usize, inputs: &[&Tensor]) -> Result<TensorData, OpError> {
    let parts: Vec<&TensorData> = inputs.iter().map(|t| t.data()).collect();
    let joined = concat_data(&parts)?;
    let Some(x) = inputs.first() else {
        return invalid!("Concat takes at least 1 input");
    };
    let outer: usize = x.shape()[..axis].iter().product();
    let inner: usize = x.shape()[axis + 1..].iter().product();
    // Each input contributes one contiguous run of `dim * inner` elements per outer index.
    let mut src = Vec::with_capacity(joined.len());
    for o in 0..outer {
        let mut offset = 0usize;
        for t in inputs {
            let run = t.shape()[axis] * inner;
            src.extend((0..run).map(|j| offset + o * run + j));
            offset += t.numel();
        }
    }
    take(&joined, &src)
}

/// ONNX Split.
fn infer_split(
    axis: usize,
    sizes: &[usize],
    inputs: &[&TensorType],
) -> Result<Vec<TensorType>, OpError> {
    let x = single("Split", inputs)?;
    let Some(&dim) = x.shape.get(axis) else {
        return invalid!("Split: axis {axis} is out of range for rank {}", x.rank());
    };
    let total = sizes.iter().try_fold(0usize, |acc, &s| acc.checked_add(s));
    if sizes.is_empty() || total != Some(dim) {
        return invalid!("Split: sizes {sizes:?} do not add up to dimension {axis} of {x}");
    }
    sizes
        .iter()
        .map(|&s| {
            let mut shape = x.shape.clone();
            shape[axis] = s;
            out_type(x.dtype, shape)
        })
        .collect()
}

fn eval_split(axis: usize, sizes: &[usize], x: &Tensor) -> Result<Vec<TensorData>, OpError> {
    let mut tables: Vec<Vec<Option<usize>>> = x
        .shape()
        .iter()
        .map(|&n| (0..n).map(Some).collect())
        .collect();
    let mut begin = 0usize;
    let mut out = Vec::with_capacity(sizes.len());
    for &s in sizes {
        if let Some(t) = tables.get_mut(axis) {
            *t = (begin..begin + s).map(Some).collect();
        }
        out.push(take_or_fill(
            x.data(),
            &table_sources(x.shape(), &tables),
            0.0,
        )?);
        begin += s;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Slice

/// Number of elements `start, start + step, ..` before reaching `end` (exclusive).
fn slice_len(start: i64, end: i64, step: i64) -> usize {
    let (start, end, step) = (i128::from(start), i128::from(end), i128::from(step));
    let n = if step > 0 {
        (end - start + step - 1) / step
    } else {
        (start - end - step - 1) / -step
    };
    n.max(0) as usize
}

/// ONNX Slice, with starts/ends already clamped per dimension.
fn infer_slice(
    starts: &[i64],
    ends: &[i64],
    steps: &[i64],
    inputs: &[&TensorType],
) -> Result<TensorType, OpError> {
    let x = single("Slice", inputs)?;
    let r = x.rank();
    if starts.len() != r || ends.len() != r || steps.len() != r {
        return invalid!("Slice needs one start, end and step per dimension of {x}");
    }
    let mut shape = Vec::with_capacity(r);
    for d in 0..r {
        let (start, end, step, dim) = (starts[d], ends[d], steps[d], x.shape[d]);
        if step == 0 {
            return invalid!("Slice: step of dimension {d} is 0");
        }
        let n = slice_len(start, end, step);
        if n > 0 {
            let last = i128::from(start) + (n as i128 - 1) * i128::from(step);
            let in_range = |i: i128| i >= 0 && i < dim as i128;
            if !in_range(i128::from(start)) || !in_range(last) {
                return invalid!(
                    "Slice: {start}..{end} step {step} leaves dimension {d} of size {dim}"
                );
            }
        }
        shape.push(n);
    }
    out_type(x.dtype, shape)
}

fn eval_slice(
    x: &Tensor,
    starts: &[i64],
    steps: &[i64],
    out_shape: &[usize],
) -> Result<TensorData, OpError> {
    let tables: Vec<Vec<Option<usize>>> = out_shape
        .iter()
        .zip(starts.iter().zip(steps))
        .map(|(&n, (&start, &step))| {
            (0..n as i64)
                .map(|k| usize::try_from(start + k * step).ok())
                .collect()
        })
        .collect();
    take_or_fill(x.data(), &table_sources(x.shape(), &tables), 0.0)
}

// ---------------------------------------------------------------------------------------------
// Pad

/// How one dimension is padded: negative pads first crop the input (`crop` elements from the
/// start, `kept` remain), then `before`/`after` elements are added.
#[derive(Debug, Clone, Copy)]
struct PadDim {
    crop: usize,
    kept: usize,
    before: usize,
    after: usize,
}

fn pad_dim(n: usize, begin: i64, end: i64) -> Option<PadDim> {
    let crop_begin = usize::try_from(begin.min(0).unsigned_abs()).ok()?;
    let crop_end = usize::try_from(end.min(0).unsigned_abs()).ok()?;
    let kept = n.checked_sub(crop_begin)?.checked_sub(crop_end)?;
    Some(PadDim {
        crop: crop_begin,
        kept,
        before: usize::try_from(begin.max(0)).ok()?,
        after: usize::try_from(end.max(0)).ok()?,
    })
}

/// ONNX Pad.
fn infer_pad(pads: &[i64], mode: PadMode, inputs: &[&TensorType]) -> Result<TensorType, OpError> {
    let x = single("Pad", inputs)?;
    let r = x.rank();
    if pads.len() != 2 * r {
        return invalid!(
            "Pad: {} pads given for rank {r} (need {})",
            pads.len(),
            2 * r
        );
    }
    let mut shape = Vec::with_capacity(r);
    for (d, &n) in x.shape.iter().enumerate() {
        let (begin, end) = (pads[d], pads[r + d]);
        let Some(p) = pad_dim(n, begin, end) else {
            return invalid!("Pad: pads {begin}, {end} crop more than dimension {d} of size {n}");
        };
        if mode != PadMode::Constant && p.kept == 0 && p.before + p.after > 0 {
            return invalid!("Pad: cannot pad empty dimension {d} in {mode:?} mode");
        }
        let out = p
            .before
            .checked_add(p.kept)
            .and_then(|v| v.checked_add(p.after));
        shape.push(out.ok_or_else(|| OpError::Invalid("Pad: output is too large".into()))?);
    }
    out_type(x.dtype, shape)
}

/// The input coordinate that output coordinate `o` of one padded dimension reads.
fn pad_source(p: PadDim, mode: PadMode, o: usize) -> Option<usize> {
    let m = p.kept as i64;
    let rel = o as i64 - p.before as i64;
    let inside = if (0..m).contains(&rel) {
        rel
    } else if m == 0 {
        // Only reachable in constant mode: inference refuses padding an empty dimension.
        return None;
    } else {
        match mode {
            PadMode::Constant => return None,
            PadMode::Edge => rel.clamp(0, m - 1),
            // numpy's reflect repeats: a triangle wave of period 2 * (m - 1).
            PadMode::Reflect if m == 1 => 0,
            PadMode::Reflect => {
                let period = 2 * (m - 1);
                let k = rel.rem_euclid(period);
                if k < m {
                    k
                } else {
                    period - k
                }
            }
            PadMode::Wrap => rel.rem_euclid(m),
        }
    };
    usize::try_from(inside).ok().map(|i| i + p.crop)
}

fn eval_pad(x: &Tensor, pads: &[i64], mode: PadMode, value: f64) -> Result<TensorData, OpError> {
    let r = x.shape().len();
    let mut tables = Vec::with_capacity(r);
    for (d, &n) in x.shape().iter().enumerate() {
        let (begin, end) = (
            pads.get(d).copied().unwrap_or(0),
            pads.get(r + d).copied().unwrap_or(0),
        );
        let Some(p) = pad_dim(n, begin, end) else {
            return invalid!("Pad: pads {begin}, {end} crop more than dimension {d} of size {n}");
        };
        let len = p.before + p.kept + p.after;
        tables.push((0..len).map(|o| pad_source(p, mode, o)).collect());
    }
    take_or_fill(x.data(), &table_sources(x.shape(), &tables), value)
}

// ---------------------------------------------------------------------------------------------
// Gather, Expand, Tile

/// ONNX Gather.
fn infer_gather(axis: usize, inputs: &[&TensorType]) -> Result<TensorType, OpError> {
    check_arity("Gather", inputs.len(), 2, 2)?;
    let [data, indices] = inputs else {
        return invalid!("Gather takes 2 inputs");
    };
    if !matches!(indices.dtype, DType::I32 | DType::I64) {
        return invalid!("Gather: indices must be i32 or i64, got {}", indices.dtype);
    }
    if axis >= data.rank() {
        return invalid!(
            "Gather: axis {axis} is out of range for rank {}",
            data.rank()
        );
    }
    let mut shape = data.shape[..axis].to_vec();
    shape.extend_from_slice(&indices.shape);
    shape.extend_from_slice(&data.shape[axis + 1..]);
    out_type(data.dtype, shape)
}

fn eval_gather(axis: usize, inputs: &[&Tensor]) -> Result<TensorData, OpError> {
    let [data, indices] = inputs else {
        return invalid!("Gather takes 2 inputs");
    };
    let shape = data.shape();
    let Some(&n) = shape.get(axis) else {
        return invalid!(
            "Gather: axis {axis} is out of range for rank {}",
            shape.len()
        );
    };
    let Some(raw) = indices.to_i64_vec() else {
        return invalid!(
            "Gather: indices must be i32 or i64, got {}",
            indices.dtype()
        );
    };
    let mut idx = Vec::with_capacity(raw.len());
    for i in raw {
        let wrapped = if i < 0 { i + n as i64 } else { i };
        match usize::try_from(wrapped) {
            Ok(k) if k < n => idx.push(k),
            _ => {
                return invalid!(
                    "Gather: index {i} is out of range for dimension {axis} of size {n}"
                )
            }
        }
    }
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut src = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &k in &idx {
            src.extend((0..inner).map(|j| (o * n + k) * inner + j));
        }
    }
    take(data.data(), &src)
}

/// ONNX Expand: `shape` is already the full broadcast shape.
fn infer_expand(shape: &[usize], inputs: &[&TensorType]) -> Result<TensorType, OpError> {
    let x = single("Expand", inputs)?;
    if x.rank() > shape.len() || broadcast_shapes(&x.shape, shape)? != shape {
        return invalid!("Expand: {x} does not broadcast to {shape:?}");
    }
    out_type(x.dtype, shape.to_vec())
}

/// ONNX Tile.
fn infer_tile(repeats: &[usize], inputs: &[&TensorType]) -> Result<TensorType, OpError> {
    let x = single("Tile", inputs)?;
    if repeats.len() != x.rank() {
        return invalid!(
            "Tile: {} repeats given for rank {}",
            repeats.len(),
            x.rank()
        );
    }
    let shape: Option<Vec<usize>> = x
        .shape
        .iter()
        .zip(repeats)
        .map(|(&d, &r)| d.checked_mul(r))
        .collect();
    match shape {
        Some(s) => out_type(x.dtype, s),
        None => invalid!("Tile: output is too large"),
    }
}

fn eval_tile(x: &Tensor, repeats: &[usize]) -> Result<TensorData, OpError> {
    let tables: Vec<Vec<Option<usize>>> = x
        .shape()
        .iter()
        .zip(repeats)
        .map(|(&n, &r)| (0..n * r).map(|o| Some(o % n)).collect())
        .collect();
    take_or_fill(x.data(), &table_sources(x.shape(), &tables), 0.0)
}

// ---------------------------------------------------------------------------------------------
// DepthToSpace, SpaceToDepth

fn nchw<'a>(
    name: &str,
    inputs: &[&'a TensorType],
    blocksize: usize,
) -> Result<(&'a TensorType, [usize; 4]), OpError> {
    let x = single(name, inputs)?;
    let [n, c, h, w] = x.shape[..] else {
        return invalid!("{name} needs a 4-D input, got {x}");
    };
    if blocksize == 0 {
        return invalid!("{name}: blocksize must be positive");
    }
    Ok((x, [n, c, h, w]))
}

/// ONNX DepthToSpace.
fn infer_depth_to_space(b: usize, inputs: &[&TensorType]) -> Result<TensorType, OpError> {
    let (x, [n, c, h, w]) = nchw("DepthToSpace", inputs, b)?;
    let bb = b.saturating_mul(b);
    if !c.is_multiple_of(bb) {
        return invalid!("DepthToSpace: channels {c} are not divisible by blocksize^2 = {bb}");
    }
    match (h.checked_mul(b), w.checked_mul(b)) {
        (Some(hb), Some(wb)) => out_type(x.dtype, vec![n, c / bb, hb, wb]),
        _ => invalid!("DepthToSpace: output is too large"),
    }
}

/// DCR splits channels as (b, b, c'), CRD as (c', b, b); both then interleave the blocks into
/// the spatial dimensions: a reshape, a transpose and a reshape.
fn eval_depth_to_space(
    x: &Tensor,
    b: usize,
    mode: DepthToSpaceMode,
) -> Result<TensorData, OpError> {
    let [n, c, h, w] = x.shape()[..] else {
        return invalid!("DepthToSpace needs a 4-D input");
    };
    let c2 = c / (b * b);
    let (shape, perm) = match mode {
        DepthToSpaceMode::Dcr => ([n, b, b, c2, h, w], [0, 3, 4, 1, 5, 2]),
        DepthToSpaceMode::Crd => ([n, c2, b, b, h, w], [0, 1, 4, 2, 5, 3]),
    };
    take(x.data(), &transposed_sources(&shape, &perm))
}

/// ONNX SpaceToDepth.
fn infer_space_to_depth(b: usize, inputs: &[&TensorType]) -> Result<TensorType, OpError> {
    let (x, [n, c, h, w]) = nchw("SpaceToDepth", inputs, b)?;
    if !h.is_multiple_of(b) || !w.is_multiple_of(b) {
        return invalid!("SpaceToDepth: spatial size {h}x{w} is not divisible by blocksize {b}");
    }
    match c.checked_mul(b).and_then(|v| v.checked_mul(b)) {
        Some(cb) => out_type(x.dtype, vec![n, cb, h / b, w / b]),
        None => invalid!("SpaceToDepth: output is too large"),
    }
}

/// The inverse of [`eval_depth_to_space`]: blocks of the spatial dimensions move into the
/// channels, ahead of them (DCR: (b, b, c)) or after them (CRD: (c, b, b)).
fn eval_space_to_depth(
    x: &Tensor,
    b: usize,
    mode: DepthToSpaceMode,
) -> Result<TensorData, OpError> {
    let [n, c, h, w] = x.shape()[..] else {
        return invalid!("SpaceToDepth needs a 4-D input");
    };
    let shape = [n, c, h / b, b, w / b, b];
    let perm = match mode {
        DepthToSpaceMode::Dcr => [0, 3, 5, 1, 2, 4],
        DepthToSpaceMode::Crd => [0, 1, 3, 5, 2, 4],
    };
    take(x.data(), &transposed_sources(&shape, &perm))
}

// ---------------------------------------------------------------------------------------------
// Resize

/// ONNX Resize (nearest, N-linear and N-cubic, with antialiasing and tf_crop_and_resize).
fn infer_resize(op: &Op, inputs: &[&TensorType]) -> Result<TensorType, OpError> {
    let Op::Resize {
        mode,
        coord,
        scales,
        out_shape,
        cubic_coeff_a,
        antialias,
        roi,
        ..
    } = op
    else {
        return Err(wrong_family(op));
    };
    let x = single("Resize", inputs)?;
    if x.dtype == DType::Bool {
        return invalid!("Resize: bool input is not allowed");
    }
    if scales.len() != x.rank() || out_shape.len() != x.rank() {
        return invalid!("Resize needs one scale and one output size per dimension of {x}");
    }
    if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return invalid!("Resize: scale {s} must be positive and finite");
    }
    if x.shape
        .iter()
        .zip(out_shape)
        .any(|(&i, &o)| i == 0 && o > 0)
    {
        return invalid!("Resize: cannot resize an empty dimension of {x} to {out_shape:?}");
    }
    let roi_needed = *coord == CoordTransform::TfCropAndResize;
    if (roi_needed || !roi.is_empty()) && roi.len() != 2 * x.rank() {
        return invalid!(
            "Resize: roi needs {} values (start and end per dimension), got {}",
            2 * x.rank(),
            roi.len()
        );
    }
    if let Some(r) = roi.iter().find(|r| !r.is_finite()) {
        return invalid!("Resize: roi value {r} must be finite");
    }
    if !cubic_coeff_a.is_finite() {
        return invalid!("Resize: cubic_coeff_a {cubic_coeff_a} must be finite");
    }
    if *antialias {
        let Some(reach) = kernel_reach(*mode) else {
            return invalid!("Resize: antialias applies only to linear and cubic modes");
        };
        // A legitimate downscale has out >= 1/2 * in * scale, so its widened filter spans at
        // most a few times the input; anything wider would only burn memory.
        for ((&s, &i), &o) in scales.iter().zip(&x.shape).zip(out_shape) {
            let taps = antialias_taps(reach, s) as f64;
            if o > 0 && taps > 4.0 * reach as f64 * (i as f64 + 1.0) + 2.0 {
                return invalid!("Resize: scale {s} is too small for an antialiased filter");
            }
        }
    }
    out_type(x.dtype, out_shape.to_vec())
}

/// Half the support of the unscaled filter, in input pixels (`None` for nearest).
fn kernel_reach(mode: ResizeMode) -> Option<i64> {
    match mode {
        ResizeMode::Nearest => None,
        ResizeMode::Linear => Some(1),
        ResizeMode::Cubic => Some(2),
    }
}

/// First tap offset of the antialiased filter relative to the pixel left of the source
/// coordinate; the filter is stretched by 1/scale when downsampling (as the reference does).
fn antialias_start(reach: i64, scale: f64) -> i64 {
    let s = scale.min(1.0);
    (-(reach as f64) / s).floor() as i64 + 1
}

fn antialias_taps(reach: i64, scale: f64) -> i64 {
    2 - 2 * antialias_start(reach, scale)
}

/// Resize attributes that define the filter, shared by every axis.
#[derive(Clone, Copy)]
struct Filter {
    mode: ResizeMode,
    coord: CoordTransform,
    nearest: NearestMode,
    cubic_a: f64,
    exclude_outside: bool,
    antialias: bool,
    extrapolation: f64,
}

/// One axis of a resize: sizes, scale and the region of interest (start, end) as fractions.
#[derive(Clone, Copy)]
struct Axis {
    in_n: usize,
    out_n: usize,
    scale: f64,
    roi: (f64, f64),
}

/// Python's `math.isclose` with its default tolerances.
fn is_close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

impl Axis {
    /// The reference skips axes that keep their size at scale 1 over the full region.
    fn is_identity(&self) -> bool {
        self.in_n == self.out_n
            && is_close(self.scale, 1.0)
            && is_close(self.roi.0, 0.0)
            && is_close(self.roi.1, 1.0)
    }

    /// The scale as onnxruntime holds it: f32, the given value, or `out / in` divided in f32
    /// when the model gave sizes.
    fn scale_f32(&self) -> f32 {
        if self.scale == self.out_n as f64 / self.in_n as f64 {
            self.out_n as f32 / self.in_n as f32
        } else {
            self.scale as f32
        }
    }

    /// Where output coordinate `y` falls in the input; `None` when tf_crop_and_resize samples
    /// outside the input.
    ///
    /// Computed exactly as onnxruntime computes it, in f32 with its formulas and its order of
    /// operations (f64 where its code promotes to double), rather than in exact arithmetic as
    /// the ONNX reference evaluator does, because users validate against onnxruntime and
    /// PyTorch: the coordinate decides which pixel nearest rounding, floors and ceilings take
    /// and whether tf_crop_and_resize extrapolates, and an ulp either side of an integer or a
    /// tie flips them. In particular align_corners, pytorch_half_pixel and tf_crop_and_resize
    /// divide by the integer output length (and test it against 1), where the reference uses
    /// the unrounded `scale * in` (1x1x3x4 at scale 1.5: up to 0.55 apart).
    fn source(&self, coord: CoordTransform, y: usize) -> Option<f64> {
        let y = y as f32;
        let in_w = self.in_n as f32;
        let out_len = self.out_n as f32;
        let scale = self.scale_f32();
        let x: f32 = match coord {
            CoordTransform::TfCropAndResize => {
                let (start, end) = (self.roi.0 as f32, self.roi.1 as f32);
                let x = if out_len > 1.0 {
                    start * (in_w - 1.0) + (y * (end - start) * (in_w - 1.0)) / (out_len - 1.0)
                } else {
                    (0.5 * f64::from(start + end) * f64::from(in_w - 1.0)) as f32
                };
                if x < 0.0 || x > in_w - 1.0 {
                    return None;
                }
                x
            }
            CoordTransform::HalfPixel => (y + 0.5) / scale - 0.5,
            CoordTransform::HalfPixelSymmetric => {
                let output_width = scale * in_w;
                let adjustment = out_len / output_width;
                let center = in_w / 2.0;
                let offset = center * (1.0 - adjustment);
                (f64::from(offset) + (f64::from(y) + 0.5) / f64::from(scale) - 0.5) as f32
            }
            CoordTransform::PytorchHalfPixel if out_len > 1.0 => (y + 0.5) / scale - 0.5,
            CoordTransform::PytorchHalfPixel => 0.0,
            CoordTransform::AlignCorners if out_len == 1.0 => 0.0,
            CoordTransform::AlignCorners => y * (in_w - 1.0) / (out_len - 1.0),
            CoordTransform::Asymmetric => y / scale,
        };
        Some(f64::from(x))
    }
}

/// How one output coordinate along a resized axis is computed (see [`resize_axis_samples`]).
#[derive(Clone, Debug, PartialEq)]
pub enum ResizeSample {
    /// A constant: tf_crop_and_resize's `extrapolation_value`, for a coordinate whose source
    /// lies outside the input.
    Fill(f64),
    /// The weighted sum of the input pixels `start..start + weights.len()`, each index clamped
    /// into the axis (as the reference's edge padding does). Nearest mode yields one-hot
    /// weights (all zero when `exclude_outside` dropped the hot tap): use
    /// [`ResizeSample::nearest_source`] for it.
    Taps { start: i64, weights: Vec<f64> },
}

/// Where a nearest-resized value comes from: an input index, or a constant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ResizeSource {
    Index(usize),
    Fill(f64),
}

impl ResizeSample {
    /// For nearest mode, on an axis of `in_n` input pixels: the (clamped) index of the hot
    /// tap, or the constant the coordinate takes (its fill value, or 0 when every weight was
    /// excluded, as the reference's weighted sum gives).
    pub fn nearest_source(&self, in_n: usize) -> ResizeSource {
        match self {
            ResizeSample::Fill(v) => ResizeSource::Fill(*v),
            ResizeSample::Taps { start, weights } => match weights.iter().position(|&w| w != 0.0) {
                Some(k) => ResizeSource::Index(clamp_tap(*start, k, in_n)),
                None => ResizeSource::Fill(0.0),
            },
        }
    }
}

/// The samples of ONNX Resize `op` (an [`Op::Resize`] whose input has shape `in_shape`) along
/// dimension `axis`, one per output coordinate, exactly as the interpreter resamples that
/// axis: the filter taps and weights of `mode` (nearest, linear or cubic, antialiased or not,
/// with `exclude_outside`) at the source coordinate given by the coordinate transform, or
/// [`ResizeSample::Fill`] where tf_crop_and_resize extrapolates.
///
/// Returns `Ok(None)` for an axis the reference leaves untouched (same size, scale 1 and the
/// full region of interest): output coordinate `y` then reads input `y`. Axes are resampled
/// in increasing order, so a later axis's fill constant overrides an earlier one's.
pub fn resize_axis_samples(
    op: &Op,
    axis: usize,
    in_shape: &[usize],
) -> Result<Option<Vec<ResizeSample>>, OpError> {
    let Op::Resize {
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
    } = op
    else {
        return Err(wrong_family(op));
    };
    let rank = in_shape.len();
    let Some(&in_n) = in_shape.get(axis) else {
        return invalid!("Resize: axis {axis} is out of range for rank {rank}");
    };
    let filter = Filter {
        mode: *mode,
        coord: *coord,
        nearest: *nearest,
        cubic_a: *cubic_coeff_a,
        exclude_outside: *exclude_outside,
        antialias: *antialias,
        extrapolation: *extrapolation_value,
    };
    let a = Axis {
        in_n,
        out_n: out_shape.get(axis).copied().unwrap_or(0),
        scale: scales.get(axis).copied().unwrap_or(1.0),
        roi: (
            roi.get(axis).copied().unwrap_or(0.0),
            roi.get(rank + axis).copied().unwrap_or(1.0),
        ),
    };
    if a.is_identity() {
        return Ok(None);
    }
    Ok(Some((0..a.out_n).map(|y| sample(&filter, &a, y)).collect()))
}

/// The reference's `_nearest_coeffs`: one-hot over the two neighbours.
fn nearest_coeffs(ratio: f64, mode: NearestMode) -> Vec<f64> {
    let up = if ratio.fract() == 0.0 {
        true
    } else {
        match mode {
            NearestMode::RoundPreferFloor => ratio > 0.5,
            NearestMode::RoundPreferCeil => ratio >= 0.5,
            NearestMode::Floor => false,
            NearestMode::Ceil => true,
        }
    };
    if up {
        vec![0.0, 1.0]
    } else {
        vec![1.0, 0.0]
    }
}

/// The reference's `_cubic_coeffs` (Keys' kernel with parameter `a`) for the four taps
/// around a point `ratio` past the second one.
fn cubic_coeffs(ratio: f64, a: f64) -> Vec<f64> {
    let r = ratio;
    let s = 1.0 - r;
    vec![
        ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
        ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
        ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0,
        ((a * (s + 1.0) - 5.0 * a) * (s + 1.0) + 8.0 * a) * (s + 1.0) - 4.0 * a,
    ]
}

fn cubic_kernel(x: f64, a: f64) -> f64 {
    let x = x.abs();
    let (x2, x3) = (x * x, x * x * x);
    if x <= 1.0 {
        (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
    } else if x < 2.0 {
        a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
    } else {
        0.0
    }
}

/// The reference's `_linear_coeffs_antialias` / `_cubic_coeffs_antialias`: the kernel
/// stretched by 1/scale when downsampling, normalized to sum 1.
fn antialias_coeffs(mode: ResizeMode, ratio: f64, scale: f64, a: f64) -> Vec<f64> {
    let reach = kernel_reach(mode).unwrap_or(1);
    let s = scale.min(1.0);
    let start = antialias_start(reach, scale);
    let raw: Vec<f64> = (start..2 - start)
        .map(|i| {
            let x = (i as f64 - ratio) * s;
            match mode {
                ResizeMode::Cubic => cubic_kernel(x, a),
                _ => (1.0 - x.abs()).clamp(0.0, 1.0),
            }
        })
        .collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|c| c / sum).collect()
}

fn coeffs(f: &Filter, ratio: f64, scale: f64) -> Vec<f64> {
    match (f.mode, f.antialias) {
        (ResizeMode::Nearest, _) => nearest_coeffs(ratio, f.nearest),
        (ResizeMode::Linear, false) => vec![1.0 - ratio, ratio],
        (ResizeMode::Cubic, false) => cubic_coeffs(ratio, f.cubic_a),
        (mode, true) => antialias_coeffs(mode, ratio, scale, f.cubic_a),
    }
}

/// First input index of the `n` taps nearest to `x`, ties going to the smaller index (the
/// reference's `_get_neighbor`, computed in its edge-padded coordinates).
fn window_start(x: f64, n: usize) -> i64 {
    let pad = n.div_ceil(2) as i64;
    let padded = x + pad as f64;
    let p = padded.floor();
    let frac = padded - p;
    let half = (n / 2) as i64;
    let offset = if n.is_multiple_of(2) {
        if frac == 0.0 {
            -half
        } else {
            1 - half
        }
    } else {
        let base = -(((n as i64) - 1) / 2);
        if frac <= 0.5 {
            base
        } else {
            base + 1
        }
    };
    (p as i64).saturating_add(offset).saturating_sub(pad)
}

/// The sample for output coordinate `y` along `axis`.
fn sample(f: &Filter, axis: &Axis, y: usize) -> ResizeSample {
    let Some(x) = axis.source(f.coord, y) else {
        return ResizeSample::Fill(f.extrapolation);
    };
    // The ratio lies in (0, 1]: an integer coordinate counts as 1 past its left neighbour.
    let base = x.floor();
    let ratio = if x == base { 1.0 } else { x - base };
    let mut weights = coeffs(f, ratio, axis.scale);
    let start = window_start(x, weights.len());
    if f.exclude_outside {
        for (k, w) in weights.iter_mut().enumerate() {
            let i = start.saturating_add(k as i64);
            if i < 0 || i >= axis.in_n as i64 {
                *w = 0.0;
            }
        }
        let sum: f64 = weights.iter().sum();
        let sum = if sum == 0.0 { 1.0 } else { sum };
        weights.iter_mut().for_each(|w| *w /= sum);
    }
    ResizeSample::Taps { start, weights }
}

/// Input index `start + k` clamped into `0..n` (0 when `n` is 0; callers never read an empty
/// axis).
fn clamp_tap(start: i64, k: usize, n: usize) -> usize {
    start.saturating_add(k as i64).min(n as i64 - 1).max(0) as usize
}

fn eval_resize(x: &Tensor, op: &Op) -> Result<TensorData, OpError> {
    let Op::Resize { mode, .. } = op else {
        return Err(wrong_family(op));
    };
    let in_shape = x.shape();
    let tables = (0..in_shape.len())
        .map(|d| resize_axis_samples(op, d, in_shape))
        .collect::<Result<Vec<_>, _>>()?;
    match mode {
        ResizeMode::Nearest => resize_nearest(x, &tables),
        ResizeMode::Linear | ResizeMode::Cubic => {
            let mut buf = x.to_f64_vec();
            let mut shape = in_shape.to_vec();
            for (d, samples) in tables.iter().enumerate() {
                let Some(samples) = samples else { continue };
                buf = interpolate_axis(&buf, &shape, d, samples);
                shape[d] = samples.len();
            }
            Ok(from_f64_saturating(x.dtype(), &buf))
        }
    }
}

/// Nearest resize copies input elements (exact for every dtype); a one-hot sample picks its
/// tap, and a sample whose weights were all excluded reads 0 as the reference's weighted sum
/// does.
fn resize_nearest(x: &Tensor, tables: &[Option<Vec<ResizeSample>>]) -> Result<TensorData, OpError> {
    let in_shape = x.shape();
    let in_strides = strides(in_shape);
    let out_shape: Vec<usize> = in_shape
        .iter()
        .zip(tables)
        .map(|(&n, t)| t.as_ref().map_or(n, Vec::len))
        .collect();
    let mut src = Vec::with_capacity(checked_numel(&out_shape).unwrap_or(0));
    for_each_index(&out_shape, |idx| {
        let mut flat = 0usize;
        let mut fill = None;
        for (((&n, table), &y), &st) in in_shape.iter().zip(tables).zip(idx).zip(&in_strides) {
            let i = match table.as_ref().and_then(|t| t.get(y)) {
                None => y,
                Some(s) => match s.nearest_source(n) {
                    ResizeSource::Index(i) => i,
                    ResizeSource::Fill(v) => {
                        // Later axes are resized after earlier ones, so their constants win.
                        fill = Some(v);
                        0
                    }
                },
            };
            flat += i * st;
        }
        src.push(match fill {
            Some(v) => ResizeSource::Fill(v),
            None => ResizeSource::Index(flat),
        });
    });
    let round = x.dtype().is_integer();
    let convert = |v: f64| if round { v.round_ties_even() } else { v };
    Ok(map_data!(x.data(), v => src
        .iter()
        .map(|s| match *s {
            ResizeSource::Index(i) => v.get(i).copied().ok_or_else(|| out_of_range(i)),
            ResizeSource::Fill(f) => Ok(Elem::from_f64(convert(f))),
        })
        .collect::<Result<Vec<_>, OpError>>()?))
}

/// Resamples axis `d` of a row-major buffer of `shape`.
fn interpolate_axis(buf: &[f64], shape: &[usize], d: usize, samples: &[ResizeSample]) -> Vec<f64> {
    let n = shape.get(d).copied().unwrap_or(1);
    let outer: usize = shape[..d].iter().product();
    let inner: usize = shape[d + 1..].iter().product();
    let at =
        |o: usize, k: usize, j: usize| buf.get((o * n + k) * inner + j).copied().unwrap_or(0.0);
    let mut out = Vec::with_capacity(outer * samples.len() * inner);
    for o in 0..outer {
        for s in samples {
            match s {
                ResizeSample::Fill(v) => out.extend(std::iter::repeat_n(*v, inner)),
                ResizeSample::Taps { start, weights } => out.extend((0..inner).map(|j| {
                    weights
                        .iter()
                        .enumerate()
                        .map(|(k, w)| w * at(o, clamp_tap(*start, k, n), j))
                        .sum::<f64>()
                })),
            }
        }
    }
    out
}

/// Interpolated values back to the element type: integers round half to even and saturate,
/// as the ONNX reference's `saturate_cast` does.
fn from_f64_saturating(dtype: DType, v: &[f64]) -> TensorData {
    let round = dtype.is_integer();
    build_data!(dtype, T => v
        .iter()
        .map(|&x| T::from_f64(if round { x.round_ties_even() } else { x }))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Shape, Range

/// ONNX Shape.
fn infer_shape(start: usize, end: usize, inputs: &[&TensorType]) -> Result<TensorType, OpError> {
    let x = single("Shape", inputs)?;
    if start > end || end > x.rank() {
        return invalid!(
            "Shape: dims {start}..{end} are out of range for rank {}",
            x.rank()
        );
    }
    out_type(DType::I64, vec![end - start])
}

/// ONNX Range.
fn infer_range(
    start: f64,
    delta: f64,
    count: usize,
    dtype: DType,
    inputs: &[&TensorType],
) -> Result<TensorType, OpError> {
    check_arity("Range", inputs.len(), 0, 0)?;
    if dtype == DType::Bool {
        return invalid!("Range: bool output is not allowed");
    }
    if !start.is_finite() || !delta.is_finite() {
        return invalid!("Range: start {start} and delta {delta} must be finite");
    }
    out_type(dtype, vec![count])
}

/// Floats compute `start + i * delta` in f64; integers in wrapping i64, cast like C.
fn eval_range(start: f64, delta: f64, count: usize, dtype: DType) -> TensorData {
    let (s, d) = (start as i64, delta as i64);
    build_data!(dtype, T => (0..count)
        .map(|i| {
            if dtype.is_float() {
                T::from_f64(start + i as f64 * delta)
            } else {
                T::from_i64(s.wrapping_add((i as i64).wrapping_mul(d)))
            }
        })
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn f32s(shape: Vec<usize>, v: &[f32]) -> Tensor {
        Tensor::from_f32(shape, v.to_vec()).unwrap()
    }

    fn run(op: Op, inputs: &[&Tensor]) -> Vec<Tensor> {
        eval(&op, inputs).unwrap()
    }

    fn iota(shape: Vec<usize>) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_f32(shape, (0..n).map(|v| v as f32).collect()).unwrap()
    }

    #[test]
    fn transpose_2x3() {
        let x = iota(vec![2, 3]);
        let y = run(Op::Transpose { perm: vec![1, 0] }, &[&x]).remove(0);
        assert_eq!(y.shape(), &[3, 2]);
        assert_eq!(y.as_f32().unwrap(), &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }

    #[test]
    fn concat_and_split_middle_axis() {
        let a = iota(vec![2, 1]);
        let b = f32s(vec![2, 2], &[10.0, 11.0, 12.0, 13.0]);
        let c = run(Op::Concat { axis: 1 }, &[&a, &b]).remove(0);
        assert_eq!(c.as_f32().unwrap(), &[0.0, 10.0, 11.0, 1.0, 12.0, 13.0]);
        let parts = run(
            Op::Split {
                axis: 1,
                sizes: vec![1, 2],
            },
            &[&c],
        );
        assert_eq!(parts[0], a);
        assert_eq!(parts[1], b);
    }

    #[test]
    fn slice_negative_step() {
        let x = iota(vec![5]);
        // x[4:0:-2] = [4, 2]
        let y = run(
            Op::Slice {
                starts: vec![4],
                ends: vec![0],
                steps: vec![-2],
            },
            &[&x],
        )
        .remove(0);
        assert_eq!(y.as_f32().unwrap(), &[4.0, 2.0]);
        // x[3::-1] (end clamped to -1) = [3, 2, 1, 0]
        let y = run(
            Op::Slice {
                starts: vec![3],
                ends: vec![-1],
                steps: vec![-1],
            },
            &[&x],
        )
        .remove(0);
        assert_eq!(y.as_f32().unwrap(), &[3.0, 2.0, 1.0, 0.0]);
        let bad = Op::Slice {
            starts: vec![5],
            ends: vec![0],
            steps: vec![-1],
        };
        assert!(infer(&bad, &[&x.ty()]).is_err());
    }

    #[test]
    fn pad_modes() {
        let x = iota(vec![3]);
        let pad = |mode, pads: Vec<i64>| {
            run(
                Op::Pad {
                    pads,
                    mode,
                    value: 9.0,
                },
                &[&x],
            )
            .remove(0)
            .as_f32()
            .unwrap()
            .to_vec()
        };
        assert_eq!(
            pad(PadMode::Constant, vec![1, 2]),
            vec![9.0, 0.0, 1.0, 2.0, 9.0, 9.0]
        );
        assert_eq!(
            pad(PadMode::Edge, vec![2, 1]),
            vec![0.0, 0.0, 0.0, 1.0, 2.0, 2.0]
        );
        // numpy: np.pad([0, 1, 2], (4, 3), 'reflect') = [0 1 2 1 0 1 2 1 0 1]
        assert_eq!(
            pad(PadMode::Reflect, vec![4, 3]),
            vec![0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0, 1.0, 0.0, 1.0]
        );
        assert_eq!(
            pad(PadMode::Wrap, vec![2, 2]),
            vec![1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0]
        );
        // Negative pads crop before padding.
        assert_eq!(pad(PadMode::Constant, vec![-1, 1]), vec![1.0, 2.0, 9.0]);
        assert_eq!(pad(PadMode::Edge, vec![1, -1]), vec![0.0, 0.0, 1.0]);
        assert!(infer(
            &Op::Pad {
                pads: vec![-2, -2],
                mode: PadMode::Constant,
                value: 0.0
            },
            &[&x.ty()]
        )
        .is_err());
    }

    #[test]
    fn gather_wraps_negative_and_rejects_out_of_range() {
        let x = iota(vec![3, 2]);
        let idx = Tensor::new(vec![2], TensorData::I32(vec![-1, 0])).unwrap();
        let y = run(Op::Gather { axis: 0 }, &[&x, &idx]).remove(0);
        assert_eq!(y.as_f32().unwrap(), &[4.0, 5.0, 0.0, 1.0]);
        let idx = Tensor::from_i64(vec![1], vec![3]).unwrap();
        assert!(matches!(
            eval(&Op::Gather { axis: 0 }, &[&x, &idx]),
            Err(OpError::Invalid(_))
        ));
        let idx = Tensor::from_i64(vec![], vec![1]).unwrap();
        let y = run(Op::Gather { axis: 1 }, &[&x, &idx]).remove(0);
        assert_eq!(y.shape(), &[3]);
        assert_eq!(y.as_f32().unwrap(), &[1.0, 3.0, 5.0]);
    }

    #[test]
    fn expand_and_tile() {
        let x = f32s(vec![2, 1], &[1.0, 2.0]);
        let y = run(
            Op::Expand {
                shape: vec![2, 2, 3],
            },
            &[&x],
        )
        .remove(0);
        assert_eq!(y.as_f32().unwrap()[..6], [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        let y = run(
            Op::Tile {
                repeats: vec![2, 2],
            },
            &[&x],
        )
        .remove(0);
        assert_eq!(
            y.as_f32().unwrap(),
            &[1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]
        );
    }

    #[test]
    fn depth_space_round_trip() {
        let x = iota(vec![1, 8, 2, 3]);
        let d2s = run(
            Op::DepthToSpace {
                blocksize: 2,
                mode: DepthToSpaceMode::Dcr,
            },
            &[&x],
        )
        .remove(0);
        assert_eq!(d2s.shape(), &[1, 2, 4, 6]);
        // DCR: channel = (row offset * b + column offset) * C/b^2 + c, so out[0, 0, 0, 1] (column
        // offset 1) comes from channel 2, pixel (0, 0).
        assert_eq!(d2s.as_f32().unwrap()[1], 12.0);
        let s2d = |mode, x: &Tensor| run(Op::SpaceToDepth { blocksize: 2, mode }, &[x]).remove(0);
        assert_eq!(s2d(DepthToSpaceMode::Dcr, &d2s), x);
        let crd = run(
            Op::DepthToSpace {
                blocksize: 2,
                mode: DepthToSpaceMode::Crd,
            },
            &[&x],
        )
        .remove(0);
        // CRD: channel = c * b^2 + row offset * b + column offset, so out[0, 0, 0, 1] comes from
        // channel 1 and out[0, 1, 0, 0] from channel 4.
        assert_eq!(crd.as_f32().unwrap()[1], 6.0);
        assert_eq!(crd.as_f32().unwrap()[24], 24.0);
        assert_eq!(s2d(DepthToSpaceMode::Crd, &crd), x);
    }

    fn resize(mode: ResizeMode, coord: CoordTransform, scales: Vec<f64>, out: Vec<usize>) -> Op {
        Op::Resize {
            mode,
            coord,
            nearest: NearestMode::RoundPreferFloor,
            scales,
            out_shape: out,
            cubic_coeff_a: -0.75,
            exclude_outside: false,
            antialias: false,
            roi: Vec::new(),
            extrapolation_value: 0.0,
        }
    }

    fn close(got: &Tensor, want: &[f32]) -> bool {
        let got = got.as_f32().unwrap();
        got.len() == want.len() && got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-5)
    }

    #[test]
    fn resize_nearest_and_linear() {
        let x = f32s(vec![1, 2], &[1.0, 2.0]);
        let op = |mode, coord| resize(mode, coord, vec![1.0, 2.0], vec![1, 4]);
        let y = run(op(ResizeMode::Nearest, CoordTransform::Asymmetric), &[&x]).remove(0);
        assert_eq!(y.as_f32().unwrap(), &[1.0, 1.0, 2.0, 2.0]);
        let y = run(op(ResizeMode::Linear, CoordTransform::HalfPixel), &[&x]).remove(0);
        assert_eq!(y.as_f32().unwrap(), &[1.0, 1.25, 1.75, 2.0]);
        let y = run(op(ResizeMode::Linear, CoordTransform::AlignCorners), &[&x]).remove(0);
        let want = [1.0, 4.0 / 3.0, 5.0 / 3.0, 2.0];
        assert!(y
            .as_f32()
            .unwrap()
            .iter()
            .zip(want)
            .all(|(a, b)| (a - b).abs() < 1e-6));
        // Integers round half to even.
        let xi = Tensor::new(vec![2], TensorData::U8(vec![1, 2])).unwrap();
        let lin = resize(
            ResizeMode::Linear,
            CoordTransform::HalfPixel,
            vec![2.0],
            vec![4],
        );
        assert_eq!(
            run(lin, &[&xi])[0].data(),
            &TensorData::U8(vec![1, 1, 2, 2])
        );
    }

    #[test]
    fn resize_cubic_taps() {
        // Asymmetric x2 of [0, 1, 2, 3]: output 1 sits at 0.5, between taps -1 (clamped to 0),
        // 0, 1, 2 with Keys weights (a = -0.75) [-0.09375, 0.59375, 0.59375, -0.09375].
        let x = iota(vec![4]);
        let op = resize(
            ResizeMode::Cubic,
            CoordTransform::Asymmetric,
            vec![2.0],
            vec![8],
        );
        let y = run(op.clone(), &[&x]).remove(0);
        let at_half = -0.09375 * 0.0 + 0.59375 * 0.0 + 0.59375 * 1.0 - 0.09375 * 2.0;
        assert!((y.as_f32().unwrap()[1] - at_half).abs() < 1e-6);
        // Integer coordinates reproduce the input.
        assert_eq!(y.as_f32().unwrap()[2], 1.0);
        // exclude_outside drops the tap at -1 and renormalizes the other three.
        let mut excl = op;
        if let Op::Resize {
            exclude_outside, ..
        } = &mut excl
        {
            *exclude_outside = true;
        }
        let y = run(excl, &[&x]).remove(0);
        let want = (0.59375 * 1.0 - 0.09375 * 2.0) / (1.0 + 0.09375);
        assert!((y.as_f32().unwrap()[1] - want).abs() < 1e-6);
    }

    #[test]
    fn resize_antialias_linear_downsample() {
        // Half-pixel /2 of [0, 1, 2, 3]: output 0 sits at 0.5; the triangle filter widened to
        // radius 2 covers taps -1..=2 with weights [1/8, 3/8, 3/8, 1/8] (tap -1 clamped to 0):
        // 3/8 * 1 + 1/8 * 2 (values checked against the onnx reference).
        let x = iota(vec![4]);
        let mut op = resize(
            ResizeMode::Linear,
            CoordTransform::HalfPixel,
            vec![0.5],
            vec![2],
        );
        if let Op::Resize { antialias, .. } = &mut op {
            *antialias = true;
        }
        let y = run(op, &[&x]).remove(0);
        assert!(close(&y, &[0.625, 2.375]));
    }

    #[test]
    fn resize_tf_crop_and_resize_extrapolates() {
        // roi [0.5, 1.5] of [0, 10, 20] in 3 outputs samples 1, 2 and 3 (outside: fill).
        let x = f32s(vec![3], &[0.0, 10.0, 20.0]);
        let mut op = resize(
            ResizeMode::Linear,
            CoordTransform::TfCropAndResize,
            vec![1.0],
            vec![3],
        );
        if let Op::Resize {
            roi,
            extrapolation_value,
            ..
        } = &mut op
        {
            *roi = vec![0.5, 1.5];
            *extrapolation_value = -1.0;
        }
        let y = run(op.clone(), &[&x]).remove(0);
        assert!(close(&y, &[10.0, 20.0, -1.0]));
        if let Op::Resize { mode, .. } = &mut op {
            *mode = ResizeMode::Nearest;
        }
        let y = run(op.clone(), &[&x]).remove(0);
        assert!(close(&y, &[10.0, 20.0, -1.0]));
        if let Op::Resize { roi, .. } = &mut op {
            roi.pop();
        }
        assert!(infer(&op, &[&x.ty()]).is_err());
    }

    #[test]
    fn shape_constant_range() {
        let x = iota(vec![2, 3, 4]);
        let s = run(Op::Shape { start: 1, end: 3 }, &[&x]).remove(0);
        assert_eq!(s.data(), &TensorData::I64(vec![3, 4]));
        let c = run(
            Op::ConstantOfShape {
                shape: vec![2],
                value: 7.0,
                dtype: DType::I32,
            },
            &[],
        )
        .remove(0);
        assert_eq!(c.data(), &TensorData::I32(vec![7, 7]));
        let r = run(
            Op::Range {
                start: 10.0,
                delta: -3.0,
                count: 2,
                dtype: DType::I32,
            },
            &[],
        )
        .remove(0);
        assert_eq!(r.data(), &TensorData::I32(vec![10, 7]));
    }

    #[test]
    fn reshape_checks_element_count() {
        let x = iota(vec![2, 3]);
        assert!(infer(&Op::Reshape { shape: vec![3, 2] }, &[&x.ty()]).is_ok());
        assert!(infer(&Op::Reshape { shape: vec![4] }, &[&x.ty()]).is_err());
    }
}
