//! Windowed and global pooling (MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool) over
//! any number of spatial dimensions: shape inference and reference evaluation.
//!
//! Windows follow onnxruntime: window `o` starts at `o * stride - pad_begin` and reads taps
//! `k * dilation` from there; taps outside the input are skipped. With `ceil_mode` the output
//! may get one more, partial window, but never one that starts in the end padding.

use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::op::Op;
use crate::ops::util::{check_arity, make, out_type, wrong_family};
use crate::tensor::{strides as row_major_strides, Tensor, TensorData, TensorType};

pub fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, OpError> {
    check_arity(op.name(), inputs.len(), 1, 1)?;
    let x = inputs[0];
    check_dtype(op, x.dtype)?;
    Ok(vec![out_type(x.dtype, output_shape(op, &x.shape)?)?])
}

pub fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
    check_arity(op.name(), inputs.len(), 1, 1)?;
    let x = inputs[0];
    check_dtype(op, x.dtype())?;
    let out_shape = output_shape(op, x.shape())?;
    let data = match (op, x.data()) {
        (Op::MaxPool { .. }, TensorData::F32(v)) => TensorData::F32(max_pool(op, x.shape(), v)?),
        (Op::MaxPool { .. }, TensorData::I8(v)) => TensorData::I8(max_pool(op, x.shape(), v)?),
        (Op::MaxPool { .. }, TensorData::U8(v)) => TensorData::U8(max_pool(op, x.shape(), v)?),
        (Op::AveragePool { .. }, TensorData::F32(v)) => {
            TensorData::F32(average_pool(op, x.shape(), v)?)
        }
        (Op::GlobalAveragePool, TensorData::F32(v)) => {
            TensorData::F32(global_pool(x.shape(), v, mean))
        }
        (Op::GlobalMaxPool, TensorData::F32(v)) => {
            TensorData::F32(global_pool(x.shape(), v, max_of))
        }
        _ => return Err(wrong_family(op)),
    };
    Ok(vec![make(Tensor::new(out_shape, data))?])
}

/// MaxPool takes f32, i8 and u8; the other pools f32 only, as ONNX specifies.
fn check_dtype(op: &Op, dtype: DType) -> Result<(), OpError> {
    let ok = match op {
        Op::MaxPool { .. } => matches!(dtype, DType::F32 | DType::I8 | DType::U8),
        Op::AveragePool { .. } | Op::GlobalAveragePool | Op::GlobalMaxPool => dtype == DType::F32,
        _ => return Err(wrong_family(op)),
    };
    if ok {
        Ok(())
    } else {
        Err(OpError::Unsupported(format!(
            "{} on {dtype} input",
            op.name()
        )))
    }
}

/// The attributes of a windowed pool.
#[derive(Debug)]
struct Window<'a> {
    kernel: &'a [usize],
    strides: &'a [usize],
    dilations: &'a [usize],
    pads: &'a [usize],
    ceil_mode: bool,
}

impl<'a> Window<'a> {
    fn of(op: &'a Op) -> Option<Self> {
        match op {
            Op::MaxPool {
                kernel_shape,
                strides,
                dilations,
                pads,
                ceil_mode,
                ..
            }
            | Op::AveragePool {
                kernel_shape,
                strides,
                dilations,
                pads,
                ceil_mode,
                ..
            } => Some(Window {
                kernel: kernel_shape,
                strides,
                dilations,
                pads,
                ceil_mode: *ceil_mode,
            }),
            _ => None,
        }
    }

    fn check(&self, x: &[usize]) -> Result<(), OpError> {
        if x.len() < 3 {
            return invalid!("input must have rank 3 or more (N, C, spatial..), got shape {x:?}");
        }
        let n = x.len() - 2;
        if self.kernel.len() != n
            || self.strides.len() != n
            || self.dilations.len() != n
            || self.pads.len() != 2 * n
        {
            return invalid!(
                "kernel_shape, strides, dilations and pads must have {n}, {n}, {n} and {} entries for input {x:?}",
                2 * n
            );
        }
        if self.kernel.contains(&0) || self.strides.contains(&0) || self.dilations.contains(&0) {
            return invalid!("kernel_shape, strides and dilations must be positive");
        }
        Ok(())
    }

    fn pad_begin(&self, d: usize) -> usize {
        self.pads[d]
    }

    fn pad_end(&self, d: usize) -> usize {
        self.pads[self.kernel.len() + d]
    }

    /// Output length along spatial dimension `d` for an input of length `len`.
    fn out_len(&self, d: usize, len: usize) -> Result<usize, OpError> {
        let too_large = || OpError::Invalid("pooling window or pads are too large".into());
        let (pb, pe, s) = (self.pad_begin(d), self.pad_end(d), self.strides[d]);
        let padded = len
            .checked_add(pb)
            .and_then(|v| v.checked_add(pe))
            .ok_or_else(too_large)?;
        let window = (self.kernel[d] - 1)
            .checked_mul(self.dilations[d])
            .and_then(|v| v.checked_add(1))
            .ok_or_else(too_large)?;
        // Signed, because with ceil_mode a window may overhang an input smaller than itself.
        let (room, s) = (padded as i128 - window as i128, s as i128);
        let mut out = if self.ceil_mode {
            room.div_euclid(s) + i128::from(room.rem_euclid(s) != 0) + 1
        } else {
            room.div_euclid(s) + 1
        };
        // The extra ceil_mode window must start inside the input or its begin padding.
        if self.ceil_mode && out > 1 && (out - 1) * s >= (len + pb) as i128 {
            out -= 1;
        }
        if out < 1 {
            return invalid!(
                "pooling window ({window}) is larger than padded input ({padded}) in spatial dimension {d}"
            );
        }
        Ok(out as usize)
    }

    /// Per spatial dimension, what each output index reads.
    fn axes(&self, x: &[usize]) -> Result<Vec<PoolAxis>, OpError> {
        (0..self.kernel.len())
            .map(|d| self.axis(d, x[d + 2]))
            .collect()
    }

    fn axis(&self, d: usize, len: usize) -> Result<PoolAxis, OpError> {
        let out_len = self.out_len(d, len)?;
        let (pb, pe) = (self.pad_begin(d) as i128, self.pad_end(d) as i128);
        let mut taps = Vec::with_capacity(out_len);
        let mut padded_counts = Vec::with_capacity(out_len);
        for o in 0..out_len {
            let start = (o * self.strides[d]) as i128 - pb;
            let positions = (0..self.kernel[d]).map(|k| start + (k * self.dilations[d]) as i128);
            taps.push(
                positions
                    .clone()
                    .filter(|&p| p >= 0 && p < len as i128)
                    .map(|p| p as usize)
                    .collect(),
            );
            // Taps in the explicit end padding count; the extra ceil_mode overhang does not.
            padded_counts.push(positions.filter(|&p| p < len as i128 + pe).count());
        }
        Ok(PoolAxis {
            taps,
            padded_counts,
        })
    }
}

/// One spatial dimension of a windowed pool.
#[derive(Debug)]
struct PoolAxis {
    /// For each output index, the input indices its window reads.
    taps: Vec<Vec<usize>>,
    /// For each output index, how many window taps lie within the input and its explicit pads
    /// (the divisor of AveragePool with `count_include_pad`).
    padded_counts: Vec<usize>,
}

fn output_shape(op: &Op, x: &[usize]) -> Result<Vec<usize>, OpError> {
    if let Some(w) = Window::of(op) {
        w.check(x)?;
        let mut shape = x[..2].to_vec();
        for d in 0..w.kernel.len() {
            shape.push(w.out_len(d, x[d + 2])?);
        }
        return Ok(shape);
    }
    if x.len() < 3 {
        return invalid!("input must have rank 3 or more (N, C, spatial..), got shape {x:?}");
    }
    let mut shape = x[..2].to_vec();
    shape.resize(x.len(), 1);
    Ok(shape)
}

/// Applies `reduce(window values, padded count)` to every window of every (N, C) plane.
fn windowed<T: Copy + Default>(
    op: &Op,
    x_shape: &[usize],
    x: &[T],
    reduce: impl Fn(&[T], usize) -> T,
) -> Result<Vec<T>, OpError> {
    let w = Window::of(op).ok_or_else(|| wrong_family(op))?;
    w.check(x_shape)?;
    let axes = w.axes(x_shape)?;
    let in_strides = row_major_strides(&x_shape[2..]);
    let in_plane: usize = x_shape[2..].iter().product();
    let out_plane: usize = axes.iter().map(|a| a.taps.len()).product();
    let planes = x_shape[0] * x_shape[1];
    let mut out = Vec::with_capacity(planes * out_plane);
    let mut values = Vec::new();
    let mut pos = vec![0usize; axes.len()];
    for p in 0..planes {
        let plane = x.get(p * in_plane..(p + 1) * in_plane).unwrap_or(&[]);
        pos.fill(0);
        for _ in 0..out_plane {
            values.clear();
            gather_window(plane, &axes, &in_strides, &pos, 0, 0, &mut values);
            let padded: usize = axes
                .iter()
                .zip(&pos)
                .map(|(a, &o)| a.padded_counts[o])
                .product();
            out.push(reduce(&values, padded));
            advance(&mut pos, &axes);
        }
    }
    Ok(out)
}

/// Appends the values of the window at output position `pos` (from spatial dimension `dim` on).
fn gather_window<T: Copy>(
    plane: &[T],
    axes: &[PoolAxis],
    strides: &[usize],
    pos: &[usize],
    dim: usize,
    base: usize,
    values: &mut Vec<T>,
) {
    let Some(axis) = axes.get(dim) else {
        values.extend(plane.get(base).copied());
        return;
    };
    for &i in &axis.taps[pos[dim]] {
        gather_window(
            plane,
            axes,
            strides,
            pos,
            dim + 1,
            base + i * strides[dim],
            values,
        );
    }
}

/// Steps a row-major output position.
fn advance(pos: &mut [usize], axes: &[PoolAxis]) {
    for d in (0..pos.len()).rev() {
        pos[d] += 1;
        if pos[d] < axes[d].taps.len() {
            return;
        }
        pos[d] = 0;
    }
}

/// Element types MaxPool runs on.
trait Lowest: Copy + Default + PartialOrd {
    /// The start of a max: what an all-padding window yields, as in onnxruntime.
    const LOWEST: Self;
}

impl Lowest for f32 {
    const LOWEST: Self = f32::MIN;
}
impl Lowest for i8 {
    const LOWEST: Self = i8::MIN;
}
impl Lowest for u8 {
    const LOWEST: Self = u8::MIN;
}

/// The largest value; NaNs are skipped, as onnxruntime does.
fn max_of<T: Lowest>(values: &[T]) -> T {
    values
        .iter()
        .fold(T::LOWEST, |m, &v| if v > m { v } else { m })
}

fn mean(values: &[f32]) -> f32 {
    let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
    (sum / values.len() as f64) as f32
}

/// MaxPool (output Y only).
fn max_pool<T: Lowest>(op: &Op, shape: &[usize], x: &[T]) -> Result<Vec<T>, OpError> {
    windowed(op, shape, x, |values, _| max_of(values))
}

/// AveragePool: the divisor counts the taps inside the input, plus those in the explicit pads
/// with `count_include_pad`.
fn average_pool(op: &Op, shape: &[usize], x: &[f32]) -> Result<Vec<f32>, OpError> {
    let include_pad = matches!(
        op,
        Op::AveragePool {
            count_include_pad: true,
            ..
        }
    );
    windowed(op, shape, x, |values, padded| {
        let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
        let count = if include_pad { padded } else { values.len() };
        (sum / count as f64) as f32
    })
}

/// GlobalAveragePool and GlobalMaxPool: one value per (N, C) plane.
fn global_pool(shape: &[usize], x: &[f32], reduce: fn(&[f32]) -> f32) -> Vec<f32> {
    let planes = shape.iter().take(2).product();
    let plane: usize = shape.iter().skip(2).product();
    if plane == 0 {
        return vec![reduce(&[]); planes];
    }
    x.chunks_exact(plane).map(reduce).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn pool(op: &Op, shape: &[usize], v: Vec<f32>) -> Tensor {
        let x = Tensor::from_f32(shape.to_vec(), v).unwrap();
        let ty = infer(op, &[&x.ty()]).unwrap().remove(0);
        let y = eval(op, &[&x]).unwrap().remove(0);
        assert_eq!(y.ty(), ty);
        y
    }

    fn avg(k: usize, s: usize, p: [usize; 4], ceil_mode: bool, count_include_pad: bool) -> Op {
        Op::AveragePool {
            kernel_shape: vec![k, k],
            strides: vec![s, s],
            dilations: vec![1, 1],
            pads: p.to_vec(),
            ceil_mode,
            count_include_pad,
        }
    }

    #[test]
    fn average_pool_pads_and_divisors() {
        // 2x2 input [[1,2],[3,4]], 3x3 window, pads 1, stride 1.
        let x = vec![1.0, 2.0, 3.0, 4.0];
        let y = pool(&avg(3, 1, [1; 4], false, false), &[1, 1, 2, 2], x.clone());
        assert_eq!(y.as_f32().unwrap(), &[2.5; 4]);
        let y = pool(&avg(3, 1, [1; 4], false, true), &[1, 1, 2, 2], x);
        assert_eq!(y.as_f32().unwrap(), &[10.0 / 9.0; 4]);
    }

    #[test]
    fn ceil_mode_drops_windows_starting_in_end_padding() {
        // onnx test_averagepool_2d_ceil_last_window_starts_on_pad: one output per dimension.
        let op = avg(3, 3, [1; 4], true, true);
        let y = pool(&op, &[1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(y.shape(), &[1, 1, 1, 1]);
        assert_eq!(y.as_f32().unwrap(), &[10.0 / 9.0]);
    }

    #[test]
    fn ceil_mode_overhang_is_not_counted_as_padding() {
        // 4 wide, window 3, stride 2, ceil: windows at 0..3 and 2..5 (overhang of 1).
        let op = Op::AveragePool {
            kernel_shape: vec![3],
            strides: vec![2],
            dilations: vec![1],
            pads: vec![0, 0],
            ceil_mode: true,
            count_include_pad: true,
        };
        let y = pool(&op, &[1, 1, 4], vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(y.as_f32().unwrap(), &[2.0, 3.5]);
    }

    #[test]
    fn ceil_mode_window_may_overhang_a_smaller_input() {
        // Window 5 (k 3, dilation 2) over 4 elements: one window reading 0 and 2.
        let op = Op::AveragePool {
            kernel_shape: vec![3],
            strides: vec![2],
            dilations: vec![2],
            pads: vec![0, 0],
            ceil_mode: true,
            count_include_pad: true,
        };
        let y = pool(&op, &[1, 1, 4], vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(y.as_f32().unwrap(), &[2.0]);
    }

    #[test]
    fn max_pool_dilations_and_ints() {
        let op = Op::MaxPool {
            kernel_shape: vec![2],
            strides: vec![1],
            dilations: vec![2],
            pads: vec![0, 1],
            ceil_mode: false,
        };
        let y = pool(&op, &[1, 1, 4], vec![1.0, 5.0, 3.0, 2.0]);
        // Windows {0,2}, {1,3}, {2,4 (pad)}.
        assert_eq!(y.as_f32().unwrap(), &[3.0, 5.0, 3.0]);
        let x = Tensor::new(vec![1, 1, 4], TensorData::U8(vec![1, 5, 3, 2])).unwrap();
        let y = eval(&op, &[&x]).unwrap().remove(0);
        assert_eq!(y.data(), &TensorData::U8(vec![3, 5, 3]));
    }

    #[test]
    fn global_pools() {
        let x = (1..=8).map(|i| i as f32).collect();
        let y = pool(&Op::GlobalAveragePool, &[1, 2, 2, 2], x);
        assert_eq!(y.shape(), &[1, 2, 1, 1]);
        assert_eq!(y.as_f32().unwrap(), &[2.5, 6.5]);
        let y = pool(&Op::GlobalMaxPool, &[2, 1, 2], vec![1.0, -3.0, 0.0, 9.0]);
        assert_eq!(y.as_f32().unwrap(), &[1.0, 9.0]);
    }

    #[test]
    fn window_larger_than_input_is_invalid() {
        let x = TensorType::new(DType::F32, vec![1, 1, 2, 2]);
        assert!(matches!(
            infer(&avg(3, 1, [0; 4], false, false), &[&x]),
            Err(OpError::Invalid(_))
        ));
    }
}
