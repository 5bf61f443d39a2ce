//! Reductions over axes (ReduceMean, ReduceSum, ReduceMax, ReduceMin) and ArgMax: shape
//! inference and reference evaluation.

use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::op::Op;
use crate::ops::util::{broadcast_index_map, check_arity, make, out_type, wrong_family};
use crate::tensor::{Tensor, TensorData, TensorType};

/// The combining rule of a `ReduceX` op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Sum,
    Mean,
    Max,
    Min,
}

fn reduce_kind(op: &Op) -> Option<(Kind, &[usize], bool)> {
    match op {
        Op::ReduceSum { axes, keepdims } => Some((Kind::Sum, axes, *keepdims)),
        Op::ReduceMean { axes, keepdims } => Some((Kind::Mean, axes, *keepdims)),
        Op::ReduceMax { axes, keepdims } => Some((Kind::Max, axes, *keepdims)),
        Op::ReduceMin { axes, keepdims } => Some((Kind::Min, axes, *keepdims)),
        _ => None,
    }
}

pub fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, OpError> {
    if let Some((kind, axes, keepdims)) = reduce_kind(op) {
        return infer_reduce(op.name(), kind, axes, keepdims, inputs);
    }
    match op {
        Op::ArgMax { axis, keepdims, .. } => infer_argmax(*axis, *keepdims, inputs),
        _ => Err(wrong_family(op)),
    }
}

pub fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
    // Re-running inference validates the inputs, so the kernels below index only within shapes
    // that are known to be consistent.
    let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
    let type_refs: Vec<&TensorType> = types.iter().collect();
    let out = infer(op, &type_refs)?;
    let (Some(x), Some(out_ty)) = (inputs.first(), out.into_iter().next()) else {
        return invalid!("{} takes 1 input", op.name());
    };
    let data = if let Some((kind, axes, _)) = reduce_kind(op) {
        eval_reduce(kind, axes, x)?
    } else {
        match op {
            Op::ArgMax {
                axis,
                select_last_index,
                ..
            } => eval_argmax(*axis, *select_last_index, x)?,
            _ => return Err(wrong_family(op)),
        }
    };
    Ok(vec![make(Tensor::new(out_ty.shape, data))?])
}

/// The input shape with every reduced axis set to 1: the output shape under `keepdims`.
fn kept_shape(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .map(|(d, &n)| if axes.contains(&d) { 1 } else { n })
        .collect()
}

fn output_shape(shape: &[usize], axes: &[usize], keepdims: bool) -> Vec<usize> {
    if keepdims {
        return kept_shape(shape, axes);
    }
    shape
        .iter()
        .enumerate()
        .filter(|(d, _)| !axes.contains(d))
        .map(|(_, &n)| n)
        .collect()
}

/// ONNX ReduceSum, ReduceMean, ReduceMax, ReduceMin.
fn infer_reduce(
    name: &str,
    kind: Kind,
    axes: &[usize],
    keepdims: bool,
    inputs: &[&TensorType],
) -> Result<Vec<TensorType>, OpError> {
    check_arity(name, inputs.len(), 1, 1)?;
    let [x] = inputs else {
        return invalid!("{name} takes 1 input");
    };
    let bool_ok = matches!(kind, Kind::Max | Kind::Min);
    if x.dtype == DType::Bool && !bool_ok {
        return Err(OpError::Unsupported(format!("{name} on bool input")));
    }
    if axes.is_empty() {
        return invalid!("{name}: axes must not be empty");
    }
    if axes.windows(2).any(|w| w[0] >= w[1]) {
        return invalid!("{name}: axes {axes:?} must be sorted and distinct");
    }
    if let Some(&bad) = axes.iter().find(|&&a| a >= x.rank()) {
        return invalid!("{name}: axis {bad} is out of range for rank {}", x.rank());
    }
    Ok(vec![out_type(
        x.dtype,
        output_shape(&x.shape, axes, keepdims),
    )?])
}

fn eval_reduce(kind: Kind, axes: &[usize], x: &Tensor) -> Result<TensorData, OpError> {
    let kept = kept_shape(x.shape(), axes);
    // For every input element, the flat index of the output element it contributes to.
    let map = broadcast_index_map(&kept, x.shape());
    let out_len: usize = kept.iter().product();
    let count: usize = axes.iter().filter_map(|&a| x.shape().get(a)).product();
    let data = match x.data() {
        TensorData::F32(v) => TensorData::F32(reduce_f32(kind, v, &map, out_len, count)),
        TensorData::I8(v) => TensorData::I8(reduce_int(kind, v, &map, out_len, count)),
        TensorData::U8(v) => TensorData::U8(reduce_int(kind, v, &map, out_len, count)),
        TensorData::I16(v) => TensorData::I16(reduce_int(kind, v, &map, out_len, count)),
        TensorData::I32(v) => TensorData::I32(reduce_int(kind, v, &map, out_len, count)),
        TensorData::I64(v) => TensorData::I64(reduce_int(kind, v, &map, out_len, count)),
        TensorData::Bool(v) => TensorData::Bool(reduce_bool(kind, v, &map, out_len)),
    };
    Ok(data)
}

/// Sums accumulate in f64 for accuracy. Max/Min propagate NaN as numpy does, and an empty
/// reduction gives -inf / +inf (ONNX), 0 for Sum and NaN for Mean (numpy).
fn reduce_f32(kind: Kind, v: &[f32], map: &[usize], out_len: usize, count: usize) -> Vec<f32> {
    match kind {
        Kind::Sum | Kind::Mean => {
            let mut acc = vec![0f64; out_len];
            for (&x, &o) in v.iter().zip(map) {
                if let Some(a) = acc.get_mut(o) {
                    *a += f64::from(x);
                }
            }
            let div = if kind == Kind::Mean {
                count as f64
            } else {
                1.0
            };
            acc.into_iter().map(|a| (a / div) as f32).collect()
        }
        Kind::Max | Kind::Min => {
            let max = kind == Kind::Max;
            let init = if max {
                f32::NEG_INFINITY
            } else {
                f32::INFINITY
            };
            let mut acc = vec![init; out_len];
            for (&x, &o) in v.iter().zip(map) {
                if let Some(a) = acc.get_mut(o) {
                    let better = if max { x > *a } else { x < *a };
                    if x.is_nan() || (better && !a.is_nan()) {
                        *a = x;
                    }
                }
            }
            acc
        }
    }
}

/// Integer element types, widened to i64 for sums.
trait IntElem: Copy + Ord {
    const MIN: Self;
    const MAX: Self;
    fn widen(self) -> i64;
    /// Truncates like a C cast: sums wrap as they would in the element type.
    fn narrow(v: i64) -> Self;
}

macro_rules! int_elem {
    ($($t:ty),*) => {$(
        impl IntElem for $t {
            const MIN: Self = <$t>::MIN;
            const MAX: Self = <$t>::MAX;
            fn widen(self) -> i64 {
                self as i64
            }
            fn narrow(v: i64) -> Self {
                v as $t
            }
        }
    )*};
}
int_elem!(i8, u8, i16, i32, i64);

/// Sums wrap; Mean truncates toward zero (numpy's float mean cast back to the integer type) and
/// is 0 over an empty set; Max/Min of an empty set give the type's min/max (ONNX).
fn reduce_int<T: IntElem>(
    kind: Kind,
    v: &[T],
    map: &[usize],
    out_len: usize,
    count: usize,
) -> Vec<T> {
    match kind {
        Kind::Sum | Kind::Mean => {
            let mut acc = vec![0i64; out_len];
            for (&x, &o) in v.iter().zip(map) {
                if let Some(a) = acc.get_mut(o) {
                    *a = a.wrapping_add(x.widen());
                }
            }
            let div = if kind == Kind::Mean { count as i64 } else { 1 };
            acc.into_iter()
                .map(|a| T::narrow(if div > 0 { a / div } else { 0 }))
                .collect()
        }
        Kind::Max | Kind::Min => {
            let max = kind == Kind::Max;
            let mut acc = vec![if max { T::MIN } else { T::MAX }; out_len];
            for (&x, &o) in v.iter().zip(map) {
                if let Some(a) = acc.get_mut(o) {
                    *a = if max { (*a).max(x) } else { (*a).min(x) };
                }
            }
            acc
        }
    }
}

/// Max is "any", Min is "all" (so an empty set gives false / true).
fn reduce_bool(kind: Kind, v: &[bool], map: &[usize], out_len: usize) -> Vec<bool> {
    let max = kind == Kind::Max;
    let mut acc = vec![!max; out_len];
    for (&x, &o) in v.iter().zip(map) {
        if let Some(a) = acc.get_mut(o) {
            *a = if max { *a || x } else { *a && x };
        }
    }
    acc
}

/// ONNX ArgMax.
fn infer_argmax(
    axis: usize,
    keepdims: bool,
    inputs: &[&TensorType],
) -> Result<Vec<TensorType>, OpError> {
    check_arity("ArgMax", inputs.len(), 1, 1)?;
    let [x] = inputs else {
        return invalid!("ArgMax takes 1 input");
    };
    if x.dtype == DType::Bool {
        return Err(OpError::Unsupported("ArgMax on bool input".into()));
    }
    match x.shape.get(axis) {
        None => invalid!("ArgMax: axis {axis} is out of range for rank {}", x.rank()),
        Some(0) => invalid!("ArgMax: axis {axis} has size 0, so there is no maximum"),
        Some(_) => Ok(vec![out_type(
            DType::I64,
            output_shape(&x.shape, &[axis], keepdims),
        )?]),
    }
}

fn eval_argmax(axis: usize, last: bool, x: &Tensor) -> Result<TensorData, OpError> {
    let shape = x.shape();
    let Some(&n) = shape.get(axis) else {
        return invalid!(
            "ArgMax: axis {axis} is out of range for rank {}",
            shape.len()
        );
    };
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    // NaN counts as the largest value, as in numpy.
    let f32_greater = |a: f32, b: f32| a > b || (a.is_nan() && !b.is_nan());
    let out = match x.data() {
        TensorData::F32(v) => argmax(v, outer, n, inner, last, f32_greater),
        TensorData::I8(v) => argmax(v, outer, n, inner, last, |a, b| a > b),
        TensorData::U8(v) => argmax(v, outer, n, inner, last, |a, b| a > b),
        TensorData::I16(v) => argmax(v, outer, n, inner, last, |a, b| a > b),
        TensorData::I32(v) => argmax(v, outer, n, inner, last, |a, b| a > b),
        TensorData::I64(v) => argmax(v, outer, n, inner, last, |a, b| a > b),
        TensorData::Bool(_) => return Err(OpError::Unsupported("ArgMax on bool input".into())),
    };
    Ok(TensorData::I64(out))
}

/// Index of the greatest element along the middle dimension of an `[outer, n, inner]` view.
/// Ties go to the first index, or the last with `last`.
fn argmax<T: Copy>(
    v: &[T],
    outer: usize,
    n: usize,
    inner: usize,
    last: bool,
    greater: impl Fn(T, T) -> bool,
) -> Vec<i64> {
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| v.get((o * n + k) * inner + i).copied();
            let Some(mut best) = at(0) else {
                out.push(0);
                continue;
            };
            let mut best_k = 0usize;
            for k in 1..n {
                let Some(x) = at(k) else { break };
                let take = if last {
                    !greater(best, x)
                } else {
                    greater(x, best)
                };
                if take {
                    best = x;
                    best_k = k;
                }
            }
            out.push(best_k as i64);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn run(op: Op, x: Tensor) -> Tensor {
        eval(&op, &[&x]).unwrap().remove(0)
    }

    #[test]
    fn sum_and_mean_over_middle_axis() {
        let x = Tensor::from_f32(vec![2, 2, 2], (1..=8).map(|v| v as f32).collect()).unwrap();
        let s = run(
            Op::ReduceSum {
                axes: vec![1],
                keepdims: false,
            },
            x.clone(),
        );
        assert_eq!(s.shape(), &[2, 2]);
        assert_eq!(s.as_f32().unwrap(), &[4.0, 6.0, 12.0, 14.0]);
        let m = run(
            Op::ReduceMean {
                axes: vec![0, 2],
                keepdims: true,
            },
            x,
        );
        assert_eq!(m.shape(), &[1, 2, 1]);
        assert_eq!(m.as_f32().unwrap(), &[3.5, 5.5]);
    }

    #[test]
    fn empty_reductions() {
        let x = Tensor::from_f32(vec![2, 0], vec![]).unwrap();
        let mx = run(
            Op::ReduceMax {
                axes: vec![1],
                keepdims: false,
            },
            x.clone(),
        );
        assert_eq!(mx.as_f32().unwrap(), &[f32::NEG_INFINITY; 2]);
        let s = run(
            Op::ReduceSum {
                axes: vec![1],
                keepdims: false,
            },
            x.clone(),
        );
        assert_eq!(s.as_f32().unwrap(), &[0.0, 0.0]);
        let m = run(
            Op::ReduceMean {
                axes: vec![1],
                keepdims: false,
            },
            x,
        );
        assert!(m.as_f32().unwrap().iter().all(|v| v.is_nan()));
        let xi = Tensor::new(vec![0], TensorData::I8(vec![])).unwrap();
        let mn = run(
            Op::ReduceMin {
                axes: vec![0],
                keepdims: false,
            },
            xi,
        );
        assert_eq!(mn.data(), &TensorData::I8(vec![i8::MAX]));
        let xb = Tensor::new(vec![1, 0], TensorData::Bool(vec![])).unwrap();
        let mb = run(
            Op::ReduceMin {
                axes: vec![1],
                keepdims: true,
            },
            xb,
        );
        assert_eq!(mb.data(), &TensorData::Bool(vec![true]));
    }

    #[test]
    fn integer_sum_wraps_and_mean_truncates() {
        let x = Tensor::new(vec![3], TensorData::I8(vec![100, 100, -7])).unwrap();
        let s = run(
            Op::ReduceSum {
                axes: vec![0],
                keepdims: false,
            },
            x.clone(),
        );
        assert_eq!(s.data(), &TensorData::I8(vec![(193i32 as i8)]));
        let m = run(
            Op::ReduceMean {
                axes: vec![0],
                keepdims: false,
            },
            x,
        );
        assert_eq!(m.data(), &TensorData::I8(vec![64]));
        let y = Tensor::new(vec![2], TensorData::I32(vec![-3, 0])).unwrap();
        let m = run(
            Op::ReduceMean {
                axes: vec![0],
                keepdims: false,
            },
            y,
        );
        assert_eq!(m.data(), &TensorData::I32(vec![-1]));
    }

    #[test]
    fn max_propagates_nan() {
        let x = Tensor::from_f32(vec![3], vec![1.0, f32::NAN, 2.0]).unwrap();
        let m = run(
            Op::ReduceMax {
                axes: vec![0],
                keepdims: false,
            },
            x,
        );
        assert!(m.as_f32().unwrap()[0].is_nan());
    }

    #[test]
    fn argmax_ties_and_last_index() {
        let x = Tensor::from_f32(vec![2, 3], vec![1.0, 5.0, 5.0, 2.0, 2.0, 1.0]).unwrap();
        let op = |last| Op::ArgMax {
            axis: 1,
            keepdims: false,
            select_last_index: last,
        };
        assert_eq!(
            run(op(false), x.clone()).data(),
            &TensorData::I64(vec![1, 0])
        );
        assert_eq!(run(op(true), x).data(), &TensorData::I64(vec![2, 1]));
        let y = Tensor::from_f32(vec![3, 1], vec![1.0, f32::NAN, 3.0]).unwrap();
        let a = run(
            Op::ArgMax {
                axis: 0,
                keepdims: true,
                select_last_index: false,
            },
            y,
        );
        assert_eq!(a.shape(), &[1, 1]);
        assert_eq!(a.data(), &TensorData::I64(vec![1]));
    }

    #[test]
    fn rejects_bad_axes() {
        let t = TensorType::new(DType::F32, vec![2, 3]);
        let bad = |axes: Vec<usize>| {
            infer(
                &Op::ReduceSum {
                    axes,
                    keepdims: true,
                },
                &[&t],
            )
            .is_err()
        };
        assert!(bad(vec![]));
        assert!(bad(vec![1, 0]));
        assert!(bad(vec![2]));
        let z = TensorType::new(DType::F32, vec![0, 3]);
        assert!(infer(
            &Op::ArgMax {
                axis: 0,
                keepdims: true,
                select_last_index: false
            },
            &[&z]
        )
        .is_err());
    }
}
