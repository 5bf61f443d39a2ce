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
use crate::ops::util::{
    check_arity, expect_dtype, int_input, int_tensor, make, out_type, wrong_family,
};
use crate::tensor::{strides as row_major_strides, Tensor, TensorData, TensorType};

pub fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, OpError> {
    if let Op::QAveragePool { .. } = op {
        return infer_qaverage_pool(op, inputs).map(|t| vec![t]);
    }
    check_arity(op.name(), inputs.len(), 1, 1)?;
    let x = inputs[0];
    check_dtype(op, x.dtype)?;
    let shape = output_shape(op, &x.shape)?;
    let mut outputs = vec![out_type(x.dtype, shape.clone())?];
    if wants_indices(op) {
        outputs.push(out_type(DType::I64, shape)?);
    }
    Ok(outputs)
}

pub fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
    if let Op::QAveragePool { .. } = op {
        return eval_qaverage_pool(op, inputs).map(|t| vec![t]);
    }
    check_arity(op.name(), inputs.len(), 1, 1)?;
    let x = inputs[0];
    check_dtype(op, x.dtype())?;
    let out_shape = output_shape(op, x.shape())?;
    if let Op::MaxPool { .. } = op {
        let (y, indices) = match x.data() {
            TensorData::F32(v) => max_pool(op, x.shape(), v, TensorData::F32)?,
            TensorData::I8(v) => max_pool(op, x.shape(), v, TensorData::I8)?,
            TensorData::U8(v) => max_pool(op, x.shape(), v, TensorData::U8)?,
            _ => return Err(wrong_family(op)),
        };
        let mut outputs = vec![make(Tensor::new(out_shape.clone(), y))?];
        if wants_indices(op) {
            outputs.push(make(Tensor::new(out_shape, TensorData::I64(indices)))?);
        }
        return Ok(outputs);
    }
    let data = match (op, x.data()) {
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

/// Whether the op also produces MaxPool's Indices output.
fn wants_indices(op: &Op) -> bool {
    matches!(op, Op::MaxPool { indices: true, .. })
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
            }
            | Op::QAveragePool {
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
        let (kernel, dilation) = (self.kernel[d] as i128, self.dilations[d] as i128);
        // Tap k reads position start + k * dilation. The tap ranges are computed rather than
        // enumerated, so a huge kernel that lies mostly in the padding costs nothing.
        let taps_below = |start: i128, end: i128| -> i128 {
            // Number of k in 0..kernel with start + k * dilation < end.
            if end <= start {
                0
            } else {
                ((end - start + dilation - 1) / dilation).min(kernel)
            }
        };
        for o in 0..out_len {
            let start = o as i128 * self.strides[d] as i128 - pb;
            let first = taps_below(start, 0);
            let last = taps_below(start, len as i128);
            taps.push(
                (first..last)
                    .map(|k| (start + k * dilation) as usize)
                    .collect(),
            );
            // Taps in the explicit end padding count; the extra ceil_mode overhang does not.
            padded_counts.push(taps_below(start, len as i128 + pe) as usize);
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

/// Applies `reduce(window taps, padded count)` to every window of every (N, C) plane, in
/// row-major output order. Each tap is a value and its row-major offset within the plane.
fn windowed<T: Copy, R>(
    op: &Op,
    x_shape: &[usize],
    x: &[T],
    reduce: impl Fn(&[(T, usize)], usize) -> R,
) -> Result<Vec<R>, OpError> {
    let w = Window::of(op).ok_or_else(|| wrong_family(op))?;
    w.check(x_shape)?;
    let axes = w.axes(x_shape)?;
    let in_strides = row_major_strides(&x_shape[2..]);
    let in_plane: usize = x_shape[2..].iter().product();
    let out_plane: usize = axes.iter().map(|a| a.taps.len()).product();
    let planes = x_shape[0] * x_shape[1];
    let mut out = Vec::with_capacity(planes * out_plane);
    let mut taps = Vec::new();
    let mut pos = vec![0usize; axes.len()];
    for p in 0..planes {
        let plane = x.get(p * in_plane..(p + 1) * in_plane).unwrap_or(&[]);
        pos.fill(0);
        for _ in 0..out_plane {
            taps.clear();
            gather_window(plane, &axes, &in_strides, &pos, 0, 0, &mut taps);
            let padded: usize = axes
                .iter()
                .zip(&pos)
                .map(|(a, &o)| a.padded_counts[o])
                // Only a huge window in huge pads gets here; its average is 0 either way.
                .fold(1usize, usize::saturating_mul);
            out.push(reduce(&taps, padded));
            advance(&mut pos, &axes);
        }
    }
    Ok(out)
}

/// Appends the taps of the window at output position `pos` (from spatial dimension `dim` on).
fn gather_window<T: Copy>(
    plane: &[T],
    axes: &[PoolAxis],
    strides: &[usize],
    pos: &[usize],
    dim: usize,
    base: usize,
    taps: &mut Vec<(T, usize)>,
) {
    let Some(axis) = axes.get(dim) else {
        taps.extend(plane.get(base).map(|&v| (v, base)));
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
            taps,
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

/// The largest tap and its plane offset: the first maximum in row-major order wins, NaNs are
/// skipped, and a window with nothing above `LOWEST` has no position, as in onnxruntime.
fn arg_max<T: Lowest>(taps: &[(T, usize)]) -> (T, Option<usize>) {
    taps.iter().fold((T::LOWEST, None), |(m, at), &(v, i)| {
        if v > m {
            (v, Some(i))
        } else {
            (m, at)
        }
    })
}

fn mean(values: &[f32]) -> f32 {
    let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
    (sum / values.len() as f64) as f32
}

/// ONNX MaxPool: Y as `wrap(values)` and the Indices output (computed even when unused; it
/// is cheap next to the window scan).
fn max_pool<T: Lowest>(
    op: &Op,
    shape: &[usize],
    x: &[T],
    wrap: fn(Vec<T>) -> TensorData,
) -> Result<(TensorData, Vec<i64>), OpError> {
    let best = windowed(op, shape, x, |taps, _| arg_max(taps))?;
    let column_major = matches!(
        op,
        Op::MaxPool {
            column_major_indices: true,
            ..
        }
    );
    let flat = FlatIndex::new(shape, column_major);
    let out_plane = best.len().checked_div(shape[0] * shape[1]).unwrap_or(0);
    let indices = best
        .iter()
        .enumerate()
        .map(|(j, &(_, at))| flat.of(j.checked_div(out_plane).unwrap_or(0), at))
        .collect();
    Ok((wrap(best.into_iter().map(|(v, _)| v).collect()), indices))
}

/// Maps (plane, row-major offset in the plane) to MaxPool's flat Indices value: over the whole
/// tensor, with the spatial dimensions row-major or (storage_order=1) column-major.
#[derive(Debug)]
struct FlatIndex {
    plane: usize,
    row_major: Vec<usize>,
    /// The stride of each spatial dimension in the index's storage order.
    target: Vec<usize>,
}

impl FlatIndex {
    fn new(shape: &[usize], column_major: bool) -> Self {
        let spatial = &shape[2..];
        let row_major = row_major_strides(spatial);
        let target = if column_major {
            let mut strides = Vec::with_capacity(spatial.len());
            let mut s = 1usize;
            for &len in spatial {
                strides.push(s);
                s *= len;
            }
            strides
        } else {
            row_major.clone()
        };
        FlatIndex {
            plane: spatial.iter().product(),
            row_major,
            target,
        }
    }

    /// A window without a maximum gets position -1 in every spatial dimension, which is what
    /// onnxruntime's formula yields.
    fn of(&self, plane: usize, offset: Option<usize>) -> i64 {
        let base = (plane * self.plane) as i64;
        let Some(mut rest) = offset else {
            return self.target.iter().fold(base, |acc, &s| acc - s as i64);
        };
        let mut index = base;
        for (&rm, &t) in self.row_major.iter().zip(&self.target) {
            let coord = rest.checked_div(rm).unwrap_or(0);
            rest -= coord * rm;
            index += (coord * t) as i64;
        }
        index
    }
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
    windowed(op, shape, x, |taps, padded| {
        let sum: f64 = taps.iter().map(|&(v, _)| f64::from(v)).sum();
        let count = if include_pad { padded } else { taps.len() };
        (sum / count as f64) as f32
    })
}

/// QAveragePool: X i8/u8, and with `rescale` a multiplier and a shift per count (i32
/// `[taps + 1]`).
fn infer_qaverage_pool(op: &Op, inputs: &[&TensorType]) -> Result<TensorType, OpError> {
    let Op::QAveragePool {
        kernel_shape,
        output,
        rescale,
        rounding,
        ..
    } = op
    else {
        return Err(wrong_family(op));
    };
    let name = op.name();
    if !*rescale && *rounding != crate::fixed_point::Rounding::TfLite {
        return invalid!(
            "{name}: without rescale (TFLite's rounding division) the rounding must be tf_lite"
        );
    }
    check_arity(name, inputs.len(), 1 + 2 * usize::from(*rescale), 3)?;
    expect_dtype(name, inputs, 0, "X", &[DType::I8, DType::U8])?;
    if *rescale {
        let counts = kernel_shape.iter().product::<usize>() + 1;
        for (slot, what) in [(1, "multiplier"), (2, "shift")] {
            expect_dtype(name, inputs, slot, what, &[DType::I32])?;
            // One entry serves every window when all of them count every tap.
            let uniform = inputs[slot].shape == [1] && uniform_windows(op);
            if inputs[slot].shape != [counts] && !uniform {
                return invalid!(
                    "{name}: {what} has shape {:?}, expected [{counts}] (one per window count)",
                    inputs[slot].shape
                );
            }
        }
    } else if inputs.len() != 1 {
        return invalid!("{name} without rescale takes 1 input, got {}", inputs.len());
    }
    output.check()?;
    out_type(output.dtype, output_shape(op, &inputs[0].shape)?)
}

/// Whether every window of a QAveragePool covers all its taps (no padding, no partial
/// `ceil_mode` window), so one multiplier serves them all.
pub fn uniform_windows(op: &Op) -> bool {
    matches!(
        op,
        Op::QAveragePool {
            pads,
            ceil_mode: false,
            ..
        } if pads.iter().all(|&p| p == 0)
    )
}

/// QAveragePool, integer only: TFLite's rounding division of the raw sum when input and output
/// share their quantization, else the centered sum requantized by the count's multiplier.
fn eval_qaverage_pool(op: &Op, inputs: &[&Tensor]) -> Result<Tensor, OpError> {
    let Op::QAveragePool {
        count_include_pad,
        x_zero_point,
        output,
        rescale,
        rounding,
        ..
    } = op
    else {
        return Err(wrong_family(op));
    };
    let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    let out_ty = infer_qaverage_pool(op, &refs)?;
    let name = op.name();
    let x = int_input(name, inputs, 0)?;
    let tables = if *rescale {
        Some((int_input(name, inputs, 1)?, int_input(name, inputs, 2)?))
    } else {
        None
    };
    let zp = i64::from(*x_zero_point);
    let values = windowed(op, inputs[0].shape(), &x, |taps, padded| {
        let mut sum: i64 = taps.iter().map(|&(v, _)| i64::from(v)).sum();
        let count = if *count_include_pad {
            sum += (padded as i64 - taps.len() as i64) * zp;
            padded
        } else {
            taps.len()
        };
        qaverage(sum, count, zp, output, tables.as_ref(), *rounding)
    })?;
    int_tensor(out_ty.dtype, out_ty.shape, values)
}

/// One integer average: `sum` of `count` raw values.
fn qaverage(
    sum: i64,
    count: usize,
    zp: i64,
    output: &crate::op::QOut,
    tables: Option<&(Vec<i32>, Vec<i32>)>,
    rounding: crate::fixed_point::Rounding,
) -> i32 {
    if count == 0 {
        return output.store(0);
    }
    let n = count as i64;
    match tables {
        // TFLite: (sum +- count / 2) / count, truncating, so halves round away from zero.
        None => {
            let avg = if sum > 0 {
                (sum + n / 2) / n
            } else {
                (sum - n / 2) / n
            };
            (avg.clamp(i64::from(output.min), i64::from(output.max))) as i32
        }
        Some((m, s)) => {
            let centered = (sum - n * zp).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
            let entry = |t: &[i32]| {
                let i = if t.len() == 1 { 0 } else { count };
                t.get(i).copied().unwrap_or(0)
            };
            let (m, s) = (entry(m), entry(s));
            output.store(rounding.requantize(centered, m, s))
        }
    }
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
    fn huge_window_in_huge_pads_is_cheap() {
        // The window mostly covers padding: taps are computed, not enumerated, and the
        // count_include_pad divisor saturates instead of overflowing.
        let k = 1usize << 40;
        // Each of the 2x2 windows reaches exactly one input element.
        let y = pool(
            &avg(k, k, [k - 1; 4], false, false),
            &[1, 1, 2, 2],
            vec![4.0; 4],
        );
        assert_eq!(y.as_f32().unwrap(), &[4.0; 4]);
        let y = pool(
            &avg(k, k, [k - 1; 4], false, true),
            &[1, 1, 2, 2],
            vec![4.0; 4],
        );
        assert!(y
            .as_f32()
            .unwrap()
            .iter()
            .all(|&v| (0.0..1e-18).contains(&v)));
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
            indices: false,
            column_major_indices: false,
        };
        let y = pool(&op, &[1, 1, 4], vec![1.0, 5.0, 3.0, 2.0]);
        // Windows {0,2}, {1,3}, {2,4 (pad)}.
        assert_eq!(y.as_f32().unwrap(), &[3.0, 5.0, 3.0]);
        let x = Tensor::new(vec![1, 1, 4], TensorData::U8(vec![1, 5, 3, 2])).unwrap();
        let y = eval(&op, &[&x]).unwrap().remove(0);
        assert_eq!(y.data(), &TensorData::U8(vec![3, 5, 3]));
    }

    fn max_with_indices(column_major: bool) -> Op {
        Op::MaxPool {
            kernel_shape: vec![2, 2],
            strides: vec![2, 2],
            dilations: vec![1, 1],
            pads: vec![0, 0, 0, 0],
            ceil_mode: false,
            indices: true,
            column_major_indices: column_major,
        }
    }

    fn pool_with_indices(op: &Op, shape: &[usize], v: Vec<f32>) -> (Vec<f32>, Vec<i64>) {
        let x = Tensor::from_f32(shape.to_vec(), v).unwrap();
        let types = infer(op, &[&x.ty()]).unwrap();
        let out = eval(op, &[&x]).unwrap();
        assert_eq!(out.iter().map(Tensor::ty).collect::<Vec<_>>(), types);
        let TensorData::I64(indices) = out[1].data().clone() else {
            panic!("indices must be i64")
        };
        (out[0].as_f32().unwrap().to_vec(), indices)
    }

    #[test]
    fn max_pool_indices_are_flat_over_the_whole_tensor() {
        // Two planes of 2x4 ([[0,1,2,3],[4,5,6,7]] and its negation); windows 2x2 stride 2.
        let mut x: Vec<f32> = (0..8).map(|i| i as f32).collect();
        x.extend((0..8).map(|i| -(i as f32)));
        let (y, i) = pool_with_indices(&max_with_indices(false), &[1, 2, 2, 4], x.clone());
        assert_eq!(y, &[5.0, 7.0, 0.0, -2.0]);
        assert_eq!(i, &[5, 7, 8, 10]);
        // Column-major over the spatial dims: (h, w) -> plane * 8 + h + w * 2.
        let (_, i) = pool_with_indices(&max_with_indices(true), &[1, 2, 2, 4], x);
        assert_eq!(i, &[3, 7, 8, 12]);
    }

    #[test]
    fn max_pool_index_of_ties_and_nan() {
        // The first maximum in row-major order wins; NaN is skipped.
        let x = vec![1.0, 3.0, 3.0, f32::NAN];
        let (y, i) = pool_with_indices(&max_with_indices(false), &[1, 1, 2, 2], x);
        assert_eq!((y, i), (vec![3.0], vec![1]));
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
