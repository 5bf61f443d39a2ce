//! Matrix products (MatMul and Gemm): shape inference and reference evaluation.
//!
//! Both run on one kernel, [`matmul_into`], which uses the i-k-j loop order so the innermost
//! loop streams contiguous rows of B and of the output. Integer products wrap, as C would.

use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::op::Op;
use crate::ops::util::{
    acc_i32, broadcast_index_map, broadcast_shapes, check_arity, check_requant_inputs,
    expect_dtype, int_input, int_tensor, make, out_type, wrong_family,
};
use crate::tensor::{Tensor, TensorData, TensorType};

pub fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, OpError> {
    if let Op::QMatMul { output, .. } = op {
        return infer_qmatmul(inputs, output.as_ref()).map(|(t, _)| vec![t]);
    }
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape.as_slice()).collect();
    let dtype = common_dtype(op, inputs.iter().map(|t| t.dtype))?;
    let shape = match op {
        Op::MatMul { a_perm, b_perm, .. } => {
            check_arity("MatMul", inputs.len(), 2, 2)?;
            let a = permuted(shapes[0], a_perm)?;
            let b = permuted(shapes[1], b_perm)?;
            MatMulDims::new(&a, &b)?.out_shape
        }
        Op::Gemm {
            trans_a, trans_b, ..
        } => {
            check_arity("Gemm", inputs.len(), 2, 3)?;
            let (m, _, n) = gemm_dims(shapes[0], shapes[1], *trans_a, *trans_b)?;
            if let Some(c) = shapes.get(2) {
                check_gemm_bias(c, m, n)?;
            }
            vec![m, n]
        }
        _ => return Err(wrong_family(op)),
    };
    Ok(vec![out_type(dtype, shape)?])
}

pub fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
    if let Op::QMatMul { output, rounding } = op {
        return eval_qmatmul(inputs, output.as_ref(), *rounding).map(|t| vec![t]);
    }
    common_dtype(op, inputs.iter().map(|t| t.dtype()))?;
    let out = match (op, inputs) {
        (Op::MatMul { a_perm, b_perm, .. }, [a, b]) => {
            let a = transposed(a, a_perm)?;
            let b = transposed(b, b_perm)?;
            matmul(&a, &b)?
        }
        (Op::MatMul { .. }, _) => return invalid!("MatMul takes 2 inputs, got {}", inputs.len()),
        (
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
                ..
            },
            [a, b, rest @ ..],
        ) if rest.len() <= 1 => {
            let params = GemmParams {
                alpha: *alpha,
                beta: *beta,
                trans_a: *trans_a,
                trans_b: *trans_b,
            };
            gemm(a, b, rest.first().copied(), &params)?
        }
        (Op::Gemm { .. }, _) => return invalid!("Gemm takes 2 to 3 inputs, got {}", inputs.len()),
        _ => return Err(wrong_family(op)),
    };
    Ok(vec![out])
}

/// `shape` read through the axis permutation `perm` (empty: as is).
pub fn permuted(shape: &[usize], perm: &[usize]) -> Result<Vec<usize>, OpError> {
    if perm.is_empty() {
        return Ok(shape.to_vec());
    }
    let mut seen = vec![false; perm.len()];
    let valid = perm.len() == shape.len()
        && shape.len() >= 2
        && perm
            .iter()
            .all(|&p| p < seen.len() && !std::mem::replace(&mut seen[p], true));
    if !valid {
        return invalid!("operand permutation {perm:?} does not fit an operand of shape {shape:?}");
    }
    Ok(perm.iter().map(|&p| shape[p]).collect())
}

/// `t` with its axes permuted (a copy only when `perm` is not empty).
fn transposed<'a>(t: &'a Tensor, perm: &[usize]) -> Result<std::borrow::Cow<'a, Tensor>, OpError> {
    if perm.is_empty() {
        return Ok(std::borrow::Cow::Borrowed(t));
    }
    permuted(t.shape(), perm)?;
    let op = Op::Transpose {
        perm: perm.to_vec(),
    };
    let out = crate::ops::movement::eval(&op, &[t])?;
    out.into_iter()
        .next()
        .map(std::borrow::Cow::Owned)
        .ok_or_else(|| OpError::Invalid("Transpose gave no result".into()))
}

/// The element type all inputs share: f32, i32 or i64, as ONNX allows for both ops.
fn common_dtype(op: &Op, mut dtypes: impl Iterator<Item = DType>) -> Result<DType, OpError> {
    let Some(first) = dtypes.next() else {
        return invalid!("{} has no inputs", op.name());
    };
    if !matches!(first, DType::F32 | DType::I32 | DType::I64) {
        return Err(OpError::Unsupported(format!(
            "{} on {first} inputs",
            op.name()
        )));
    }
    if let Some(other) = dtypes.find(|&d| d != first) {
        return invalid!(
            "{} inputs have different types ({first} and {other})",
            op.name()
        );
    }
    Ok(first)
}

/// Element types the product kernel runs on.
trait Element: Copy + Default {
    /// `acc + a * b`, wrapping for integers.
    fn mul_add(acc: Self, a: Self, b: Self) -> Self;
}

impl Element for f32 {
    fn mul_add(acc: Self, a: Self, b: Self) -> Self {
        acc + a * b
    }
}

impl Element for i32 {
    fn mul_add(acc: Self, a: Self, b: Self) -> Self {
        acc.wrapping_add(a.wrapping_mul(b))
    }
}

impl Element for i64 {
    fn mul_add(acc: Self, a: Self, b: Self) -> Self {
        acc.wrapping_add(a.wrapping_mul(b))
    }
}

/// `out[m][n] += sum_k a[m][k] * b[k][n]` for row-major `a` (m x k), `b` (k x n), `out` (m x n).
fn matmul_into<T: Element>(a: &[T], b: &[T], out: &mut [T], k: usize, n: usize) {
    if k == 0 || n == 0 {
        return;
    }
    for (out_row, a_row) in out.chunks_exact_mut(n).zip(a.chunks_exact(k)) {
        for (&av, b_row) in a_row.iter().zip(b.chunks_exact(n)) {
            for (o, &bv) in out_row.iter_mut().zip(b_row) {
                *o = T::mul_add(*o, av, bv);
            }
        }
    }
}

/// MatMul shapes after numpy's 1-D promotion, with broadcast batch dimensions.
#[derive(Debug)]
struct MatMulDims {
    m: usize,
    k: usize,
    n: usize,
    a_batch: Vec<usize>,
    b_batch: Vec<usize>,
    batch: Vec<usize>,
    out_shape: Vec<usize>,
}

impl MatMulDims {
    fn new(a: &[usize], b: &[usize]) -> Result<Self, OpError> {
        if a.is_empty() || b.is_empty() {
            return invalid!("MatMul operands must have rank 1 or more, got {a:?} and {b:?}");
        }
        // A 1-D A is a row vector, a 1-D B a column vector; the added dimension is dropped.
        let (a_batch, m, k) = match a {
            [k] => (&[][..], 1, *k),
            [batch @ .., m, k] => (batch, *m, *k),
            [] => return invalid!("MatMul operand A is a scalar"),
        };
        let (b_batch, kb, n) = match b {
            [k] => (&[][..], *k, 1),
            [batch @ .., k, n] => (batch, *k, *n),
            [] => return invalid!("MatMul operand B is a scalar"),
        };
        if k != kb {
            return invalid!("MatMul operands {a:?} and {b:?} have mismatched inner dimensions");
        }
        let batch = broadcast_shapes(a_batch, b_batch)?;
        let mut out_shape = batch.clone();
        if a.len() > 1 {
            out_shape.push(m);
        }
        if b.len() > 1 {
            out_shape.push(n);
        }
        Ok(MatMulDims {
            m,
            k,
            n,
            a_batch: a_batch.to_vec(),
            b_batch: b_batch.to_vec(),
            batch,
            out_shape,
        })
    }
}

/// MatMul: numpy `matmul`.
fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor, OpError> {
    let dims = MatMulDims::new(a.shape(), b.shape())?;
    let data = match (a.data(), b.data()) {
        (TensorData::F32(x), TensorData::F32(y)) => TensorData::F32(batched_matmul(x, y, &dims)),
        (TensorData::I32(x), TensorData::I32(y)) => TensorData::I32(batched_matmul(x, y, &dims)),
        (TensorData::I64(x), TensorData::I64(y)) => TensorData::I64(batched_matmul(x, y, &dims)),
        _ => {
            return Err(OpError::Unsupported(format!(
                "MatMul on {} inputs",
                a.dtype()
            )))
        }
    };
    make(Tensor::new(dims.out_shape, data))
}

fn batched_matmul<T: Element>(a: &[T], b: &[T], d: &MatMulDims) -> Vec<T> {
    let (a_size, b_size, out_size) = (d.m * d.k, d.k * d.n, d.m * d.n);
    let a_map = broadcast_index_map(&d.a_batch, &d.batch);
    let b_map = broadcast_index_map(&d.b_batch, &d.batch);
    let mut out = vec![T::default(); a_map.len() * out_size];
    if out_size == 0 {
        return out;
    }
    for ((o, &ai), &bi) in out.chunks_exact_mut(out_size).zip(&a_map).zip(&b_map) {
        if let (Some(a), Some(b)) = (
            a.get(ai * a_size..(ai + 1) * a_size),
            b.get(bi * b_size..(bi + 1) * b_size),
        ) {
            matmul_into(a, b, o, d.k, d.n);
        }
    }
    out
}

/// QMatMul: A i8/u8 `[.., M, K]`, B i8/i16 `[.., K, N]` (both rank 2 or more), bias i32 with
/// B's shape minus K, and multiplier and shift when requantized.
fn infer_qmatmul(
    inputs: &[&TensorType],
    output: Option<&crate::op::QOut>,
) -> Result<(TensorType, MatMulDims), OpError> {
    let name = "QMatMul";
    let n_in = if output.is_some() { 5 } else { 3 };
    check_arity(name, inputs.len(), n_in, n_in)?;
    expect_dtype(name, inputs, 0, "A", &[DType::I8, DType::U8])?;
    expect_dtype(name, inputs, 1, "B", &[DType::I8, DType::I16])?;
    expect_dtype(name, inputs, 2, "bias", &[DType::I32])?;
    let (a, b) = (&inputs[0].shape, &inputs[1].shape);
    if a.len() < 2 || b.len() < 2 {
        return invalid!("{name}: operands must have rank 2 or more, got {a:?} and {b:?}");
    }
    let dims = MatMulDims::new(a, b)?;
    let mut bias_shape = b[..b.len() - 2].to_vec();
    bias_shape.push(dims.n);
    if inputs[2].shape != bias_shape {
        return invalid!(
            "{name}: bias has shape {:?}, expected {bias_shape:?}",
            inputs[2].shape
        );
    }
    let dtype = match output {
        Some(out) => {
            check_requant_inputs(name, inputs, 3, dims.n)?;
            out.check()?;
            out.dtype
        }
        None => DType::I32,
    };
    Ok((out_type(dtype, dims.out_shape.clone())?, dims))
}

/// QMatMul: `bias[.., n] + sum_k A[.., m, k] * B[.., k, n]` in i64, checked to fit i32, then
/// requantized per column.
fn eval_qmatmul(
    inputs: &[&Tensor],
    output: Option<&crate::op::QOut>,
    rounding: crate::fixed_point::Rounding,
) -> Result<Tensor, OpError> {
    let name = "QMatMul";
    let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    let (out_ty, d) = infer_qmatmul(&refs, output)?;
    let a: Vec<i64> = int_input(name, inputs, 0)?
        .into_iter()
        .map(i64::from)
        .collect();
    let b: Vec<i64> = int_input(name, inputs, 1)?
        .into_iter()
        .map(i64::from)
        .collect();
    let bias = int_input(name, inputs, 2)?;
    let requant = match output {
        Some(_) => Some((int_input(name, inputs, 3)?, int_input(name, inputs, 4)?)),
        None => None,
    };
    let acc = batched_matmul(&a, &b, &d);
    let b_map = broadcast_index_map(&d.b_batch, &d.batch);
    let mut out = Vec::with_capacity(acc.len());
    for (i, &v) in acc.iter().enumerate() {
        let n = i % d.n.max(1);
        let batch = i / (d.m * d.n).max(1);
        let bias_at = b_map.get(batch).copied().unwrap_or(0) * d.n + n;
        let acc = acc_i32(name, v + i64::from(bias.get(bias_at).copied().unwrap_or(0)))?;
        out.push(match (output, &requant) {
            (Some(o), Some((m, s))) => {
                // Multiplier and shift are each per tensor or per channel.
                let at = |t: &[i32]| t[if t.len() == 1 { 0 } else { n }];
                o.store(rounding.requantize(acc, at(m), at(s)))
            }
            _ => acc,
        });
    }
    int_tensor(out_ty.dtype, out_ty.shape, out)
}

/// (M, K, N) of a Gemm, after the optional transposes.
fn gemm_dims(
    a: &[usize],
    b: &[usize],
    trans_a: bool,
    trans_b: bool,
) -> Result<(usize, usize, usize), OpError> {
    let (&[a0, a1], &[b0, b1]) = (a, b) else {
        return invalid!("Gemm operands must be 2-D, got {a:?} and {b:?}");
    };
    let (m, k) = if trans_a { (a1, a0) } else { (a0, a1) };
    let (kb, n) = if trans_b { (b1, b0) } else { (b0, b1) };
    if k != kb {
        return invalid!("Gemm operands {a:?} and {b:?} have mismatched inner dimensions");
    }
    Ok((m, k, n))
}

/// C must broadcast to [M, N] without changing it (unidirectional broadcasting).
fn check_gemm_bias(c: &[usize], m: usize, n: usize) -> Result<(), OpError> {
    match broadcast_shapes(c, &[m, n]) {
        Ok(s) if s == [m, n] => Ok(()),
        _ => invalid!("Gemm bias {c:?} does not broadcast to [{m}, {n}]"),
    }
}

#[derive(Debug)]
struct GemmParams {
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
}

/// Gemm: `alpha * A' * B' + beta * C`.
fn gemm(a: &Tensor, b: &Tensor, c: Option<&Tensor>, p: &GemmParams) -> Result<Tensor, OpError> {
    let dims = gemm_dims(a.shape(), b.shape(), p.trans_a, p.trans_b)?;
    let (m, _, n) = dims;
    if let Some(c) = c {
        check_gemm_bias(c.shape(), m, n)?;
    }
    // C broadcast to [M, N]; a zero beta drops C entirely, as onnxruntime does.
    let bias = c.filter(|_| p.beta != 0.0).map(|c| Bias {
        data: c.data(),
        map: broadcast_index_map(c.shape(), &[m, n]),
    });
    let data = match (a.data(), b.data()) {
        (TensorData::F32(x), TensorData::F32(y)) => {
            let mut out = gemm_product(x, y, dims, p);
            for (i, o) in out.iter_mut().enumerate() {
                *o *= p.alpha;
                if let Some(c) = &bias {
                    *o += p.beta * c.get(i) as f32;
                }
            }
            TensorData::F32(out)
        }
        (TensorData::I32(x), TensorData::I32(y)) => {
            let out = int_gemm(x, y, dims, p, bias.as_ref())?;
            TensorData::I32(out.iter().map(|&v| v as i32).collect())
        }
        (TensorData::I64(x), TensorData::I64(y)) => {
            TensorData::I64(int_gemm(x, y, dims, p, bias.as_ref())?)
        }
        _ => {
            return Err(OpError::Unsupported(format!(
                "Gemm on {} inputs",
                a.dtype()
            )))
        }
    };
    make(Tensor::new(vec![m, n], data))
}

/// Gemm's C, broadcast to [M, N].
#[derive(Debug)]
struct Bias<'a> {
    data: &'a TensorData,
    map: Vec<usize>,
}

impl Bias<'_> {
    /// Element `i` of the broadcast C, for f32 Gemm.
    fn get(&self, i: usize) -> f64 {
        match self.map.get(i) {
            Some(&j) if j < self.data.len() => self.data.get_f64(j),
            _ => 0.0,
        }
    }

    /// Element `i` of the broadcast C, for integer Gemm (exact for i64 too).
    fn get_i64(&self, i: usize) -> i64 {
        match (self.data, self.map.get(i)) {
            (TensorData::I64(v), Some(&j)) => v.get(j).copied().unwrap_or(0),
            _ => self.get(i) as i64,
        }
    }
}

/// Integer Gemm in wrapping i64 arithmetic; the caller narrows to the element type, which
/// wraps the same way.
fn int_gemm<T: Element + Into<i64>>(
    a: &[T],
    b: &[T],
    dims: (usize, usize, usize),
    p: &GemmParams,
    bias: Option<&Bias>,
) -> Result<Vec<i64>, OpError> {
    let (alpha, beta) = (
        integral_coeff("alpha", p.alpha)?,
        integral_coeff("beta", p.beta)?,
    );
    let product = gemm_product(a, b, dims, p);
    Ok(product
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let c = bias.map_or(0, |c| c.get_i64(i));
            v.into()
                .wrapping_mul(alpha)
                .wrapping_add(c.wrapping_mul(beta))
        })
        .collect())
}

/// Integer Gemm is defined only for whole-number coefficients (the result type is integer).
fn integral_coeff(name: &str, v: f32) -> Result<i64, OpError> {
    if v.fract() == 0.0 && v.abs() <= i32::MAX as f32 {
        Ok(v as i64)
    } else {
        Err(OpError::Unsupported(format!(
            "integer Gemm with {name}={v}"
        )))
    }
}

/// `A' * B'` for row-major A and B, transposing them first when asked.
fn gemm_product<T: Element>(
    a: &[T],
    b: &[T],
    (m, k, n): (usize, usize, usize),
    p: &GemmParams,
) -> Vec<T> {
    let a = if p.trans_a {
        transpose(a, k, m)
    } else {
        a.to_vec()
    };
    let b = if p.trans_b {
        transpose(b, n, k)
    } else {
        b.to_vec()
    };
    let mut out = vec![T::default(); m * n];
    matmul_into(&a, &b, &mut out, k, n);
    out
}

/// The transpose of a row-major `rows x cols` matrix.
fn transpose<T: Copy + Default>(v: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = vec![T::default(); rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            if let (Some(o), Some(&x)) = (out.get_mut(c * rows + r), v.get(r * cols + c)) {
                *o = x;
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn f(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v).unwrap()
    }

    fn run(op: &Op, inputs: &[&Tensor]) -> Tensor {
        let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
        let refs: Vec<&TensorType> = types.iter().collect();
        let ty = infer(op, &refs).unwrap().remove(0);
        let out = eval(op, inputs).unwrap().remove(0);
        assert_eq!(out.ty(), ty);
        out
    }

    #[test]
    fn matmul_2d() {
        let a = f(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = f(&[3, 2], vec![7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
        let y = run(
            &Op::MatMul {
                activation: Default::default(),
                a_perm: Vec::new(),
                b_perm: Vec::new(),
            },
            &[&a, &b],
        );
        assert_eq!(y.as_f32().unwrap(), &[58.0, 64.0, 139.0, 154.0]);
    }

    #[test]
    fn matmul_promotes_vectors() {
        let v = f(&[3], vec![1.0, 2.0, 3.0]);
        let m = f(&[2, 3, 2], (0..12).map(|i| i as f32).collect());
        let y = run(
            &Op::MatMul {
                activation: Default::default(),
                a_perm: Vec::new(),
                b_perm: Vec::new(),
            },
            &[&v, &m],
        );
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(y.as_f32().unwrap(), &[16.0, 22.0, 52.0, 58.0]);
        let y = run(
            &Op::MatMul {
                activation: Default::default(),
                a_perm: Vec::new(),
                b_perm: Vec::new(),
            },
            &[&v, &v],
        );
        assert_eq!(y.shape(), &[] as &[usize]);
        assert_eq!(y.as_f32().unwrap(), &[14.0]);
        let mt = f(&[2, 3], vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        let y = run(
            &Op::MatMul {
                activation: Default::default(),
                a_perm: Vec::new(),
                b_perm: Vec::new(),
            },
            &[&mt, &v],
        );
        assert_eq!(y.shape(), &[2]);
        assert_eq!(y.as_f32().unwrap(), &[1.0, 3.0]);
    }

    #[test]
    fn matmul_broadcasts_batches() {
        let a = f(&[2, 1, 1, 2], vec![1.0, 2.0, 3.0, 4.0]);
        let b = f(&[3, 2, 1], vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let y = run(
            &Op::MatMul {
                activation: Default::default(),
                a_perm: Vec::new(),
                b_perm: Vec::new(),
            },
            &[&a, &b],
        );
        assert_eq!(y.shape(), &[2, 3, 1, 1]);
        assert_eq!(y.as_f32().unwrap(), &[1.0, 2.0, 3.0, 3.0, 4.0, 7.0]);
    }

    #[test]
    fn matmul_integers_wrap() {
        let a = Tensor::new(vec![1, 2], TensorData::I32(vec![i32::MAX, 1])).unwrap();
        let b = Tensor::new(vec![2, 1], TensorData::I32(vec![2, 3])).unwrap();
        let y = run(
            &Op::MatMul {
                activation: Default::default(),
                a_perm: Vec::new(),
                b_perm: Vec::new(),
            },
            &[&a, &b],
        );
        assert_eq!(
            y.data(),
            &TensorData::I32(vec![i32::MAX.wrapping_mul(2).wrapping_add(3)])
        );
    }

    #[test]
    fn gemm_all_attributes() {
        let op = Op::Gemm {
            alpha: 0.5,
            beta: 2.0,
            trans_a: true,
            trans_b: true,
            activation: Default::default(),
        };
        // A' = [[1, 2]], B' = [[1, 0, 1], [0, 1, 1]].
        let a = f(&[2, 1], vec![1.0, 2.0]);
        let b = f(&[3, 2], vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let c = f(&[3], vec![1.0, 0.0, -1.0]);
        let y = run(&op, &[&a, &b, &c]);
        assert_eq!(y.as_f32().unwrap(), &[2.5, 1.0, -0.5]);
        assert!(infer(&op, &[&a.ty(), &b.ty(), &f(&[2, 1], vec![0.0; 2]).ty()]).is_err());
    }

    #[test]
    fn integer_gemm_with_bias() {
        let op = Op::Gemm {
            alpha: 2.0,
            beta: -1.0,
            trans_a: false,
            trans_b: false,
            activation: Default::default(),
        };
        let a = Tensor::new(vec![1, 2], TensorData::I64(vec![1, 2])).unwrap();
        let b = Tensor::new(vec![2, 2], TensorData::I64(vec![3, 4, 5, 6])).unwrap();
        let c = Tensor::new(vec![1], TensorData::I64(vec![(1 << 60) + 1])).unwrap();
        let y = run(&op, &[&a, &b, &c]);
        // 2 * [13, 16] - C, exact beyond f64's 53 bits.
        assert_eq!(
            y.data(),
            &TensorData::I64(vec![25 - (1 << 60), 31 - (1 << 60)])
        );
        let half = Op::Gemm {
            alpha: 0.5,
            beta: 1.0,
            trans_a: false,
            trans_b: false,
            activation: Default::default(),
        };
        assert!(matches!(
            eval(&half, &[&a, &b]),
            Err(OpError::Unsupported(_))
        ));
    }

    #[test]
    fn mismatched_inner_dims_are_invalid() {
        let a = TensorType::new(DType::F32, vec![2, 3]);
        assert!(matches!(
            infer(
                &Op::MatMul {
                    activation: Default::default(),
                    a_perm: Vec::new(),
                    b_perm: Vec::new(),
                },
                &[&a, &a]
            ),
            Err(OpError::Invalid(_))
        ));
    }
}
