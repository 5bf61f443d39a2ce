//! Kernel lowering of MatMul (numpy semantics: 1-D promotion, broadcast batches) and Gemm.
//!
//! Each output element is a dot product accumulated in a local of the element type, summing
//! over `k` upward from zero as the reference does; integer sums wrap as C's do. QMatMul
//! accumulates narrow integers in i32 from its bias through the shared multiply-accumulate
//! (`integer::mac`), then requantizes per column or per tensor.

use kiln_ir::{DType, Op, QOut, TensorType};

use super::conv::{add, counter, hoist, wrap};
use super::elementwise::broadcast_index;
use super::integer::{mac, requantized, value_range, widen, Requant};
use super::Lowering;
use crate::error::BackendError;
use crate::kernel::{Expr, Stmt, Var};

pub fn lower(op: &Op, cx: &mut Lowering) -> Result<Vec<Stmt>, BackendError> {
    if let Op::QMatMul { output, rounding } = op {
        return Ok(super::conv::fold(qmatmul(cx, output.as_ref(), *rounding)?));
    }
    let dtype = match cx.inputs.first() {
        Some(t) if matches!(t.dtype, DType::F32 | DType::I32 | DType::I64) => t.dtype,
        _ => return crate::cannot!("{} supports f32, i32 and i64 only", op.name()),
    };
    if cx.inputs.iter().any(|t| t.dtype != dtype) {
        return crate::cannot!("{} inputs have different types", op.name());
    }
    let body = match op {
        Op::MatMul { a_perm, b_perm, .. } => matmul(cx, dtype, a_perm, b_perm)?,
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
            ..
        } => gemm(
            cx,
            dtype,
            &GemmParams {
                alpha: *alpha,
                beta: *beta,
                trans_a: *trans_a,
                trans_b: *trans_b,
            },
        )?,
        _ => return crate::cannot!("{} is not a matrix product", op.name()),
    };
    Ok(super::conv::fold(body))
}

/// A zero of `t`.
fn zero(t: DType) -> Expr {
    Expr::Const(0.0, t)
}

/// How a dot product multiplies and accumulates.
#[derive(Clone, Copy)]
enum Acc {
    /// In the element type, from zero (MatMul, Gemm).
    Same(DType),
    /// Narrow integers into i32 through [`mac`] (QMatMul), from a seed per output.
    Int,
}

/// `acc_t = seed_t; for k: acc_t += a(k) * b(k, t)` for `width` output elements sharing `a`,
/// returning the statements and the accumulators. With several accumulators `a(k)` is loaded
/// once per `k` into a local (register tiling); each sum keeps the reference's order.
#[allow(clippy::too_many_arguments)] // the shape of the product and one closure per operand
fn dot_product(
    cx: &mut Lowering,
    kind: Acc,
    k_len: usize,
    width: usize,
    a: &dyn Fn(&Expr) -> Expr,
    b: &dyn Fn(&Expr, usize) -> Expr,
    seed: &dyn Fn(usize) -> Expr,
) -> (Vec<Stmt>, Vec<Var>) {
    let dtype = match kind {
        Acc::Same(t) => t,
        Acc::Int => DType::I32,
    };
    let accs: Vec<Var> = (0..width).map(|_| cx.var(dtype)).collect();
    let mut stmts: Vec<Stmt> = accs
        .iter()
        .enumerate()
        .map(|(t, &acc)| Stmt::Let {
            var: acc,
            ty: dtype,
            init: seed(t),
        })
        .collect();
    if k_len == 0 {
        return (stmts, accs);
    }
    let (kv, k) = counter(cx, k_len);
    let (ap, bp) = (cx.input(0), cx.input(1));
    let a_val = match kind {
        Acc::Same(_) => Expr::load(ap, a(&k)),
        Acc::Int => widen(Expr::load(ap, a(&k))),
    };
    let mut update = Vec::new();
    let a_val = if width > 1 {
        let av = cx.var(dtype);
        stmts.push(Stmt::Let {
            var: av,
            ty: dtype,
            init: zero(dtype),
        });
        update.push(Stmt::Assign {
            var: av,
            value: a_val,
        });
        Expr::Var(av)
    } else {
        a_val
    };
    update.extend(accs.iter().enumerate().map(|(t, &acc)| {
        let b_val = Expr::load(bp, b(&k, t));
        match kind {
            Acc::Same(_) => Stmt::Assign {
                var: acc,
                value: Expr::Var(acc).add(a_val.clone().mul(b_val)),
            },
            Acc::Int => mac(acc, a_val.clone(), b_val),
        }
    }));
    stmts.extend(wrap(kv, k_len, update));
    (stmts, accs)
}

/// The statements of `width` output columns starting at column `j0`.
type ColumnBody<'f> = dyn FnMut(&mut Lowering, &Expr, usize) -> Vec<Stmt> + 'f;

/// Loops over the `n` output columns of a row in tiles of the schedule's `oc_tile` (plus a
/// narrower remainder tile), or one by one when tiling is off or the row is narrower.
fn column_tiles(cx: &mut Lowering, n: usize, body: &mut ColumnBody) -> Vec<Stmt> {
    let tile = cx.schedule.oc_tile;
    if tile <= 1 || n < tile {
        let (jv, j) = counter(cx, n);
        let inner = body(cx, &j, 1);
        return wrap(jv, n, inner);
    }
    let (full, rest) = (n / tile, n % tile);
    let (tv, t) = counter(cx, full);
    let j0 = t.affine(tile as i64, 0);
    let mut stmts = body(cx, &j0, tile);
    stmts = wrap(tv, full, stmts);
    if rest > 0 {
        stmts.extend(body(cx, &Expr::int((full * tile) as i64), rest));
    }
    stmts
}

/// Shapes of a MatMul after 1-D promotion.
struct Dims {
    m: usize,
    k: usize,
    n: usize,
    a_batch: Vec<usize>,
    b_batch: Vec<usize>,
    batch: Vec<usize>,
}

fn matmul_dims(a: &TensorType, b: &TensorType, y: &TensorType) -> Result<Dims, BackendError> {
    let (a_batch, m, k) = match a.shape.as_slice() {
        [k] => (Vec::new(), 1, *k),
        [batch @ .., m, k] => (batch.to_vec(), *m, *k),
        [] => return crate::cannot!("MatMul on a scalar"),
    };
    let (b_batch, kb, n) = match b.shape.as_slice() {
        [k] => (Vec::new(), *k, 1),
        [batch @ .., k, n] => (batch.to_vec(), *k, *n),
        [] => return crate::cannot!("MatMul on a scalar"),
    };
    let rank = a_batch.len().max(b_batch.len());
    let batch: Vec<usize> = y.shape.iter().take(rank).copied().collect();
    if k != kb || batch.len() != rank {
        return crate::cannot!("MatMul operands do not match");
    }
    Ok(Dims {
        m,
        k,
        n,
        a_batch,
        b_batch,
        batch,
    })
}

/// An operand as MatMul reads it: its shape through the op's axis permutation, and the
/// element stride of each of those axes in the stored (unpermuted) tensor.
struct OperandView {
    ty: TensorType,
    strides: Vec<i64>,
}

impl OperandView {
    fn new(t: &TensorType, perm: &[usize]) -> Result<OperandView, BackendError> {
        let stored = super::conv::strides(&t.shape);
        if perm.is_empty() {
            return Ok(OperandView {
                ty: t.clone(),
                strides: stored.iter().map(|&s| s as i64).collect(),
            });
        }
        let shape = kiln_ir::ops::matmul::permuted(&t.shape, perm)
            .map_err(|e| BackendError::Lowering(e.to_string()))?;
        Ok(OperandView {
            ty: TensorType::new(t.dtype, shape),
            strides: perm.iter().map(|&p| stored[p] as i64).collect(),
        })
    }

    /// The flat offset of the batch `idx` (the output's batch indices; axes of size 1
    /// broadcast) plus `row * stride of the second-to-last axis`.
    fn batch_offset(&self, idx: &[Expr], out_rank: usize) -> Expr {
        let rank = self.ty.rank();
        let batch = rank.saturating_sub(2);
        let offset = out_rank - batch;
        let mut e = Expr::int(0);
        for d in 0..batch {
            if self.ty.shape[d] != 1 {
                e = add(e, idx[d + offset].clone().affine(self.strides[d], 0));
            }
        }
        e
    }

    /// Strides of the last two axes (for a 1-D operand: the one axis, and 0).
    fn matrix_strides(&self) -> (i64, i64) {
        match self.strides.as_slice() {
            [.., r, c] => (*r, *c),
            [c] => (0, *c),
            [] => (0, 0),
        }
    }
}

/// MatMul: for every broadcast batch, `y[i][j] = sum_k a[i][k] * b[k][j]`, each operand read
/// through its axis permutation (strides), so folded Transposes cost no copy.
fn matmul(
    cx: &mut Lowering,
    dtype: DType,
    a_perm: &[usize],
    b_perm: &[usize],
) -> Result<Vec<Stmt>, BackendError> {
    let (Some(a), Some(b), Some(y)) = (cx.inputs.first(), cx.inputs.get(1), cx.outputs.first())
    else {
        return crate::cannot!("MatMul takes 2 inputs");
    };
    let (av, bv) = (OperandView::new(a, a_perm)?, OperandView::new(b, b_perm)?);
    let d = matmul_dims(&av.ty, &bv.ty, y)?;
    let (batch_vars, batch_idx): (Vec<_>, Vec<_>) = d.batch.iter().map(|&e| counter(cx, e)).unzip();
    let mut head = Vec::new();
    let a_base = av.batch_offset(&batch_idx, d.batch.len());
    let b_base = bv.batch_offset(&batch_idx, d.batch.len());
    // A's rows and depth, B's depth and columns: a 1-D A is one row, a 1-D B one column.
    let (a_row_stride, a_k_stride) = av.matrix_strides();
    let (b_k_stride, b_col_stride) = match bv.ty.rank() {
        1 => (bv.matrix_strides().1, 0),
        _ => bv.matrix_strides(),
    };
    let y_base =
        super::conv::dot(&batch_idx, &super::conv::strides(&d.batch)).affine((d.m * d.n) as i64, 0);
    let a_base = hoist(cx, &mut head, a_base);
    let b_base = hoist(cx, &mut head, b_base);
    let y_base = hoist(cx, &mut head, y_base);
    let (iv, i) = counter(cx, d.m);
    let mut row = Vec::new();
    let a_row = hoist(cx, &mut row, add(a_base, i.clone().affine(a_row_stride, 0)));
    let y_row = hoist(cx, &mut row, add(y_base, i.affine(d.n as i64, 0)));
    let (k_len, yp) = (d.k, cx.output(0));
    row.extend(column_tiles(cx, d.n, &mut |cx, j0, width| {
        let col = |t: usize| add(j0.clone(), Expr::int(t as i64));
        let (mut body, accs) = dot_product(
            cx,
            Acc::Same(dtype),
            k_len,
            width,
            &|k| add(a_row.clone(), k.clone().affine(a_k_stride, 0)),
            &|k, t| {
                add(
                    add(b_base.clone(), k.clone().affine(b_k_stride, 0)),
                    col(t).affine(b_col_stride, 0),
                )
            },
            &|_| zero(dtype),
        );
        body.extend(accs.iter().enumerate().map(|(t, &acc)| Stmt::Store {
            param: yp,
            index: add(y_row.clone(), col(t)),
            value: Expr::Var(acc),
        }));
        body
    }));
    head.extend(wrap(iv, d.m, row));
    let mut stmts = head;
    for (v, &e) in batch_vars.iter().zip(&d.batch).rev() {
        stmts = wrap(*v, e, stmts);
    }
    Ok(stmts)
}

/// QMatMul: for every broadcast batch, `y[i][j] = bias[j] + sum_k a[i][k] * b[k][j]` in i32
/// (the bias indexed by B's batch and the column), requantized by column `j`'s multiplier and
/// shift to `output`, or stored raw without one.
fn qmatmul(
    cx: &mut Lowering,
    output: Option<&QOut>,
    rounding: kiln_ir::fixed_point::Rounding,
) -> Result<Vec<Stmt>, BackendError> {
    let (Some(a), Some(b), Some(y)) = (cx.inputs.first(), cx.inputs.get(1), cx.outputs.first())
    else {
        return crate::cannot!("QMatMul takes 3 or 5 inputs");
    };
    value_range(a.dtype)?;
    value_range(b.dtype)?;
    if a.shape.len() < 2
        || b.shape.len() < 2
        || cx.inputs.get(2).map(|t| t.dtype) != Some(DType::I32)
    {
        return crate::cannot!("QMatMul takes operands of rank 2 or more and an i32 bias");
    }
    let d = matmul_dims(a, b, y)?;
    let mut head = Vec::new();
    let requant = match output {
        Some(_) => Some(Requant::new(cx, 3, d.n, &mut head)?),
        None => None,
    };
    let (batch_vars, batch_idx): (Vec<_>, Vec<_>) = d.batch.iter().map(|&e| counter(cx, e)).unzip();
    let mut body = Vec::new();
    let rank = d.batch.len();
    let a_base = broadcast_index(&batch_idx, &d.a_batch, rank).affine((d.m * d.k) as i64, 0);
    let b_batch = broadcast_index(&batch_idx, &d.b_batch, rank);
    let b_base = b_batch.clone().affine((d.k * d.n) as i64, 0);
    let bias_base = b_batch.affine(d.n as i64, 0);
    let y_base =
        super::conv::dot(&batch_idx, &super::conv::strides(&d.batch)).affine((d.m * d.n) as i64, 0);
    let a_base = hoist(cx, &mut body, a_base);
    let b_base = hoist(cx, &mut body, b_base);
    let bias_base = hoist(cx, &mut body, bias_base);
    let y_base = hoist(cx, &mut body, y_base);
    let (iv, i) = counter(cx, d.m);
    let mut row = Vec::new();
    let a_row = hoist(cx, &mut row, add(a_base, i.clone().affine(d.k as i64, 0)));
    let y_row = hoist(cx, &mut row, add(y_base, i.affine(d.n as i64, 0)));
    let (n, k_len, yp, biasp) = (d.n as i64, d.k, cx.output(0), cx.input(2));
    row.extend(column_tiles(cx, d.n, &mut |cx, j0, width| {
        let col = |t: usize| add(j0.clone(), Expr::int(t as i64));
        let (mut body, accs) = dot_product(
            cx,
            Acc::Int,
            k_len,
            width,
            &|k| add(a_row.clone(), k.clone()),
            &|k, t| add(add(b_base.clone(), k.clone().affine(n, 0)), col(t)),
            &|t| Expr::load(biasp, add(bias_base.clone(), col(t))),
        );
        body.extend(accs.iter().enumerate().map(|(t, &acc)| {
            let value = match (output, &requant) {
                (Some(out), Some(r)) => requantized(Expr::Var(acc), r.at(&col(t)), out, rounding),
                _ => Expr::Var(acc),
            };
            Stmt::Store {
                param: yp,
                index: add(y_row.clone(), col(t)),
                value,
            }
        }));
        body
    }));
    body.extend(wrap(iv, d.m, row));
    for (v, &e) in batch_vars.iter().zip(&d.batch).rev() {
        body = wrap(*v, e, body);
    }
    head.extend(body);
    Ok(head)
}

#[derive(Debug)]
struct GemmParams {
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
}

/// An integer Gemm coefficient: whole numbers only, as the reference requires.
fn integral(name: &str, v: f32) -> Result<f64, BackendError> {
    if v.fract() == 0.0 && v.abs() <= i32::MAX as f32 {
        Ok(f64::from(v))
    } else {
        crate::cannot!("integer Gemm with {name}={v}")
    }
}

/// Gemm: `y = alpha * A' * B' + beta * C` (C broadcast; dropped when beta is 0).
fn gemm(cx: &mut Lowering, dtype: DType, p: &GemmParams) -> Result<Vec<Stmt>, BackendError> {
    let (Some(a), Some(y)) = (cx.inputs.first(), cx.outputs.first()) else {
        return crate::cannot!("Gemm takes 2 or 3 inputs");
    };
    let (&[a0, a1], &[m, n]) = (a.shape.as_slice(), y.shape.as_slice()) else {
        return crate::cannot!("Gemm operands must be 2-D");
    };
    let k_len = if p.trans_a { a0 } else { a1 };
    let c_shape = cx.inputs.get(2).map(|t| t.shape.clone());
    let (alpha, beta) = if dtype == DType::F32 {
        (f64::from(p.alpha), f64::from(p.beta))
    } else {
        (integral("alpha", p.alpha)?, integral("beta", p.beta)?)
    };
    let (iv, i) = counter(cx, m);
    let (mi, ni, ki) = (m as i64, n as i64, k_len as i64);
    let mut row = Vec::new();
    // Row bases of A (when not transposed) and of Y, computed once per row.
    let a_row = if p.trans_a {
        i.clone()
    } else {
        hoist(cx, &mut row, i.clone().affine(ki, 0))
    };
    let y_row = hoist(cx, &mut row, i.clone().affine(ni, 0));
    let (ta, tb) = (p.trans_a, p.trans_b);
    let (yp, cp) = (cx.output(0), cx.input(2));
    row.extend(column_tiles(cx, n, &mut |cx, j0, width| {
        let col = |t: usize| add(j0.clone(), Expr::int(t as i64));
        let (mut body, accs) = dot_product(
            cx,
            Acc::Same(dtype),
            k_len,
            width,
            &|k| {
                if ta {
                    add(k.clone().affine(mi, 0), a_row.clone())
                } else {
                    add(a_row.clone(), k.clone())
                }
            },
            &|k, t| {
                if tb {
                    add(col(t).affine(ki, 0), k.clone())
                } else {
                    add(k.clone().affine(ni, 0), col(t))
                }
            },
            &|_| zero(dtype),
        );
        for (t, &acc) in accs.iter().enumerate() {
            let mut value = Expr::Var(acc);
            if alpha != 1.0 {
                value = value.mul(Expr::Const(alpha, dtype));
            }
            if let (Some(shape), true) = (&c_shape, beta != 0.0) {
                let c = Expr::load(cp, broadcast_index(&[i.clone(), col(t)], shape, 2));
                let c = if beta == 1.0 {
                    c
                } else {
                    Expr::Const(beta, dtype).mul(c)
                };
                value = value.add(c);
            }
            body.push(Stmt::Store {
                param: yp,
                index: add(y_row.clone(), col(t)),
                value,
            });
        }
        body
    }));
    Ok(wrap(iv, m, row))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    //! MatMul and Gemm kernels against the reference interpreter: broadcast batches, 1-D
    //! operands, integer types and every Gemm attribute.

    use kiln_ir::{Op, Tensor, TensorData};

    use super::super::conv::tests::{check, check_schedules, f};

    fn ints(shape: &[usize], seed: i64, wide: bool) -> Tensor {
        let n: usize = shape.iter().product();
        let v = (0..n as i64).map(|i| (i * 7 + seed) % 11 - 5);
        let data = if wide {
            TensorData::I64(v.collect())
        } else {
            TensorData::I32(v.map(|x| x as i32).collect())
        };
        Tensor::new(shape.to_vec(), data).unwrap()
    }

    #[test]
    fn fused_activations() {
        use kiln_ir::Activation;
        let relu6 = Activation::Clip {
            min: Some(0.0),
            max: Some(6.0),
        };
        let op = Op::MatMul {
            activation: relu6,
            a_perm: Vec::new(),
            b_perm: Vec::new(),
        };
        check_schedules(op, vec![f(&[2, 3, 5], 60), f(&[5, 4], 61)]);
        let op = Op::Gemm {
            alpha: 0.5,
            beta: 2.0,
            trans_a: true,
            trans_b: false,
            activation: Activation::Sigmoid,
        };
        check_schedules(op, vec![f(&[5, 3], 62), f(&[5, 4], 63), f(&[4], 64)]);
    }

    #[test]
    fn matmul_shapes_and_types() {
        check(
            Op::MatMul {
                activation: Default::default(),
                a_perm: Vec::new(),
                b_perm: Vec::new(),
            },
            vec![f(&[2, 1, 3, 4], 1), f(&[3, 4, 2], 2)],
        );
        check(
            Op::MatMul {
                activation: Default::default(),
                a_perm: Vec::new(),
                b_perm: Vec::new(),
            },
            vec![f(&[4], 3), f(&[2, 4, 3], 4)],
        );
        check(
            Op::MatMul {
                activation: Default::default(),
                a_perm: Vec::new(),
                b_perm: Vec::new(),
            },
            vec![f(&[2, 3, 4], 5), f(&[4], 6)],
        );
        check(
            Op::MatMul {
                activation: Default::default(),
                a_perm: Vec::new(),
                b_perm: Vec::new(),
            },
            vec![f(&[4], 7), f(&[4], 8)],
        );
        for wide in [false, true] {
            check(
                Op::MatMul {
                    activation: Default::default(),
                    a_perm: Vec::new(),
                    b_perm: Vec::new(),
                },
                vec![ints(&[2, 3, 4], 1, wide), ints(&[4, 5], 2, wide)],
            );
        }
    }

    #[test]
    fn gemm_attributes() {
        for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
            let op = Op::Gemm {
                alpha: 0.5,
                beta: -2.0,
                trans_a,
                trans_b,
                activation: Default::default(),
            };
            let a = if trans_a { [4, 3] } else { [3, 4] };
            let b = if trans_b { [5, 4] } else { [4, 5] };
            check(op.clone(), vec![f(&a, 9), f(&b, 10), f(&[3, 1], 11)]);
            check(op, vec![f(&a, 12), f(&b, 13)]);
        }
        let op = Op::Gemm {
            alpha: 3.0,
            beta: 2.0,
            trans_a: false,
            trans_b: true,
            activation: Default::default(),
        };
        for wide in [false, true] {
            let c = ints(&[4], 5, wide);
            check(
                op.clone(),
                vec![ints(&[2, 3], 3, wide), ints(&[4, 3], 4, wide), c],
            );
        }
    }

    #[test]
    fn tiled_columns() {
        // Widths below, equal to and not divisible by the tiles (1, 2, 3, 4).
        for n in [1, 3, 4, 7, 9] {
            check_schedules(
                Op::MatMul {
                    activation: Default::default(),
                    a_perm: Vec::new(),
                    b_perm: Vec::new(),
                },
                vec![f(&[2, 3, 5], 40), f(&[5, n], 41)],
            );
        }
        check_schedules(
            Op::MatMul {
                activation: Default::default(),
                a_perm: Vec::new(),
                b_perm: Vec::new(),
            },
            vec![f(&[3, 0], 42), f(&[0, 6], 43)],
        );
        check_schedules(
            Op::MatMul {
                activation: Default::default(),
                a_perm: Vec::new(),
                b_perm: Vec::new(),
            },
            vec![f(&[4], 44), f(&[2, 4, 7], 45)],
        );
        check_schedules(
            Op::MatMul {
                activation: Default::default(),
                a_perm: Vec::new(),
                b_perm: Vec::new(),
            },
            vec![ints(&[2, 3], 1, false), ints(&[3, 7], 2, false)],
        );
        for (trans_a, trans_b) in [(false, false), (true, true), (false, true)] {
            let op = Op::Gemm {
                alpha: 0.5,
                beta: -2.0,
                trans_a,
                trans_b,
                activation: Default::default(),
            };
            let a = if trans_a { [4, 3] } else { [3, 4] };
            let b = if trans_b { [7, 4] } else { [4, 7] };
            check_schedules(op.clone(), vec![f(&a, 46), f(&b, 47), f(&[7], 48)]);
            check_schedules(op, vec![f(&a, 49), f(&b, 50), f(&[3, 7], 51)]);
        }
        let op = Op::Gemm {
            alpha: 3.0,
            beta: 2.0,
            trans_a: false,
            trans_b: true,
            activation: Default::default(),
        };
        check_schedules(
            op,
            vec![
                ints(&[2, 3], 3, true),
                ints(&[5, 3], 4, true),
                ints(&[5], 5, true),
            ],
        );
    }
}
