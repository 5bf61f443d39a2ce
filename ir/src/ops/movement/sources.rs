//! The element-copy machinery every movement kernel shares.
//!
//! A kernel describes its output as a source map: for every output element, the flat index of
//! the input element it copies (`None`: a constant, such as padding). `table_sources` builds
//! that map from one coordinate table per dimension and `transposed_sources` from a
//! permutation; `take` and `take_or_fill` then apply it to any `TensorData`. `map_data!` and
//! `build_data!` write one generic expression for every dtype, and `Elem` casts the constants
//! (fill values, generated sequences) to the element type.

use crate::error::OpError;
use crate::tensor::{strides, TensorData};

pub(super) fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Element types, with the conversions padding values and generated sequences need.
pub(super) trait Elem: Copy {
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
pub(super) use map_data;

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
pub(super) use build_data;

pub(super) fn out_of_range(i: usize) -> OpError {
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
pub(super) fn take(data: &TensorData, src: &[usize]) -> Result<TensorData, OpError> {
    Ok(map_data!(data, v => take_vec(v, src)?))
}

/// Like [`take`], with `None` meaning "the constant `fill`, cast to the element type".
pub(super) fn take_or_fill(
    data: &TensorData,
    src: &[Option<usize>],
    fill: f64,
) -> Result<TensorData, OpError> {
    Ok(map_data!(data, v => take_or_fill_vec(v, src, fill)?))
}

/// Calls `f` with every multi-index of `shape` in row-major order.
pub(super) fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
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
pub(super) fn table_sources(
    in_shape: &[usize],
    tables: &[Vec<Option<usize>>],
) -> Vec<Option<usize>> {
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
pub(super) fn transposed_sources(in_shape: &[usize], perm: &[usize]) -> Vec<usize> {
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
